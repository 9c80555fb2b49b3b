"""Figures in the paper's style, drawn from saved results only (never recomputed here).

One convention for every result kind: :func:`figures` draws a result's figures as ``{name: Figure}`` and
:func:`save_figures` writes each as ``NAME.png`` and ``NAME.svg`` and closes it. The command line and the
study both save through :func:`save_figures`; the study picks which names it shows (``names=``).

Figures per result kind (pass one result; the kinds marked *several* also take a list of results):

================== ================================================================================
kind               figures
================== ================================================================================
cka                ``cka_MODEL`` per model (Fig 1), ``cka_A_vs_B`` per pair of models (Fig 2), and
                   with two or more models ``cka_grid``: every block of the k × k matrix in one figure
attention_distance ``attention_distance_heads`` (Fig 3, chosen blocks; option ``blocks``),
                   ``attention_distance_depth`` (every head against depth)
head_similarity    ``head_similarity`` (Fig 5)
receptive_field    ``receptive_field`` (Fig 6), ``receptive_field_pre_residual`` for a pre-residual result
skip_norms         ``skip_norms`` (Fig 7; *several*: one panel per result, side by side)
localization       ``localization`` (Fig 9, 10; option ``positions``)
probes             ``probes`` (Fig 11, 13 for one model); *several* or option ``comparison``:
                   ``probe_comparison`` (Fig 13; options ``readout``, ``regime``, ``labels``)
data_scale         ``data_scale`` (Fig 12)
================== ================================================================================

CKA heatmap ticks: block numbers for block outputs; ``BLOCK.ROLE`` (``3.attn``, ``3.mlp``, ``3.norm1``) for
sub-layers (``--layers all``), thinned so that every block shows the same roles (:func:`thinned_ticks`).
"""

from __future__ import annotations

import logging
import multiprocessing
import traceback
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from seelike.errors import InvalidInputError  # noqa: E402

if TYPE_CHECKING:
    from seelike.analyses.attention_distance import AttentionDistanceResult
    from seelike.analyses.data_scale import DataScaleResult
    from seelike.analyses.head_similarity import HeadSimilarityResult
    from seelike.analyses.localization import LocalizationResult
    from seelike.analyses.probes import ProbeResult
    from seelike.analyses.receptive_field import ReceptiveFieldResult
    from seelike.analyses.skip_norms import SkipNormResult
    from seelike.results import Result
    from seelike.similarity import CKAResult

__all__ = ["FIGURE_KINDS", "FigureQueue", "cka_heatmaps", "figure_names", "figures", "layer_labels", "save_figures", "thinned_ticks"]

log = logging.getLogger(__name__)

FORMATS = ("png", "svg")
#: a kind's figures, planned: figure name -> a function that draws it (so a caller that shows a few draws only those)
Plan = dict[str, Callable[[], Figure]]
#: every result kind with figures: ``plan(results, **options)`` for a list of results of that kind
FIGURE_KINDS: dict[str, Callable[..., Plan]] = {}


def _kind(kind: str, several: bool = False) -> Callable[[Callable[..., Plan]], Callable[..., Plan]]:
    """Register a kind's plan; a kind that is not ``several`` refuses more than one result."""
    def register(plan: Callable[..., Plan]) -> Callable[..., Plan]:
        def checked(results: list[Any], **options: Any) -> Plan:
            if len(results) != 1 and not several:
                raise InvalidInputError(f"{kind} figures draw one result at a time, got {len(results)}; call once per result")
            return plan(results if several else results[0], **options)

        FIGURE_KINDS[kind] = checked
        return plan

    return register


def _plan(results: Result | Sequence[Result], **options: Any) -> Plan:
    results = list(results) if isinstance(results, Sequence) else [results]
    kinds = {result.kind for result in results}
    if len(kinds) != 1:
        raise InvalidInputError(f"figures need results of one kind, got {sorted(kinds) or 'none'}")
    kind = kinds.pop()
    if kind not in FIGURE_KINDS:
        raise InvalidInputError(f"no figures for results of kind {kind!r}; kinds with figures: {', '.join(sorted(FIGURE_KINDS))}")
    return FIGURE_KINDS[kind](results, **options)


def _select(plan: Plan, names: Iterable[str] | Mapping[str, str] | None) -> dict[str, str]:
    """Figure name -> file stem for the chosen figures (all of them, under their own names, when ``names`` is None)."""
    if names is None:
        return {name: name for name in plan}
    chosen = dict(names) if isinstance(names, Mapping) else {name: name for name in names}
    unknown = [name for name in chosen if name not in plan]
    if unknown:
        raise InvalidInputError(f"no figure {', '.join(unknown)} for this result; its figures are {', '.join(plan)}")
    return chosen


def figure_names(results: Result | Sequence[Result], **options: Any) -> list[str]:
    """The names of the figures :func:`figures` draws for ``results`` (nothing is drawn)."""
    return list(_plan(results, **options))


def figures(results: Result | Sequence[Result], names: Iterable[str] | None = None, **options: Any) -> dict[str, Figure]:
    """Draw the figures of a result (or of several results of one kind) as ``{name: Figure}``; the caller closes them.

    ``names`` picks some of them; ``options`` go to the kind's figures (see the module docstring)."""
    plan = _plan(results, **options)
    drawn: dict[str, Figure] = {}
    try:
        for name in _select(plan, names):
            drawn[name] = plan[name]()
    except BaseException:
        for figure in drawn.values():  # a figure that fails to draw leaves none of the others open
            plt.close(figure)
        raise
    return drawn


def save_figures(results: Result | Sequence[Result], directory: str | Path, names: Iterable[str] | Mapping[str, str] | None = None,
                 formats: Sequence[str] = FORMATS, **options: Any) -> dict[str, list[Path]]:
    """Draw, write (``directory/STEM.png`` and ``.svg``, or the ``formats`` asked for) and close each figure of ``results``, one at a time.

    ``names``: the figures to save (default all), or a mapping from figure name to file stem to save
    them under other names. ``formats``: the files written per figure (a subset of ``FORMATS``, in that
    order). Returns each figure's written paths, PNG first. Inside :meth:`FigureQueue.collecting` the figures
    are only queued (written when the queue draws), and the paths returned are where they will be."""
    unknown = [suffix for suffix in formats if suffix not in FORMATS]
    if unknown or not formats:
        raise InvalidInputError(f"figure formats must be some of {', '.join(FORMATS)}, got {list(formats)}")
    plan = _plan(results, **options)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written = {name: [directory / f"{stem}.{suffix}" for suffix in FORMATS if suffix in formats]
               for name, stem in _select(plan, names).items()}
    queued = _QUEUE.get()
    for name, paths in written.items():
        if queued is not None:
            queue, owner = queued
            queue.jobs.append((owner, plan[name], paths))
        else:
            _draw_and_write(plan[name], paths)
    return written


def _draw_and_write(draw: Callable[[], Figure], paths: Sequence[Path]) -> None:
    """Draw one figure, write it to each of ``paths`` (the format from the suffix) and close it."""
    figure = draw()
    try:
        for target in paths:
            figure.savefig(target, dpi=150, bbox_inches="tight")
    finally:
        plt.close(figure)


#: a queued figure: who it is for (e.g. a study step), the function that draws it, the paths it is written to
_Job = tuple[str, Callable[[], Figure], list[Path]]
#: the queue :func:`save_figures` leaves its figures in, and who they are for (inside :meth:`FigureQueue.collecting`)
_QUEUE: ContextVar[tuple[FigureQueue, str] | None] = ContextVar("seelike_figure_queue", default=None)
#: the jobs a forked drawing process reads (set just before the fork, so the children inherit them, closures and all)
_FORKED_JOBS: list[_Job] = []


class FigureQueue:
    """Figures left for later: within :meth:`collecting`, :func:`save_figures` returns the paths it will write and
    queues the drawing; :meth:`draw` then draws every queued figure, in several processes where it can.

    Matplotlib draws on one core: the zoo study's 57 figures, drawn one by one, left the second core idle (a fully
    cached study took 28 s at ``--threads 2``; its figures queued and drawn by two processes, 17 s, the same files).
    """

    def __init__(self) -> None:
        self.jobs: list[_Job] = []

    @contextmanager
    def collecting(self, owner: str) -> Iterator[None]:
        """Within the block, :func:`save_figures` queues its figures here on behalf of ``owner`` (e.g. a study step)."""
        token = _QUEUE.set((self, owner))
        try:
            yield
        finally:
            _QUEUE.reset(token)

    def draw(self, workers: int = 1) -> dict[str, str]:
        """Draw and write every queued figure, in up to ``workers`` forked processes (one: here, in turn), and empty
        the queue. Returns, per owner with a figure that failed, the first error; the other figures are written."""
        jobs, self.jobs = self.jobs, []
        workers = min(workers, len(jobs))
        errors: list[str | None] | None = None
        if workers > 1 and "fork" in multiprocessing.get_all_start_methods():
            _FORKED_JOBS[:] = jobs
            try:
                with warnings.catch_warnings():
                    # Python >= 3.12 warns when a process with threads (torch's) forks; the children only draw with
                    # matplotlib and numpy and never enter torch's thread pool, as DataLoader workers fork beside it
                    warnings.simplefilter("ignore", DeprecationWarning)
                    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
                        errors = list(pool.map(_draw_forked_job, range(len(jobs))))
            except BrokenProcessPool:  # a drawing process died (e.g. out of memory): draw them all here instead
                log.warning("a figure-drawing process died; drawing the %d figures in this process", len(jobs))
            finally:
                _FORKED_JOBS.clear()
        if errors is None:
            errors = [_draw_job(job) for job in jobs]
        failed: dict[str, str] = {}
        for (owner, _, paths), error in zip(jobs, errors):
            if error is not None:
                log.error("figure %s of %s failed to draw: %s", paths[0].name, owner, error.splitlines()[-1])
                failed.setdefault(owner, error)
        return failed


def _draw_job(job: _Job) -> str | None:
    """Draw one queued figure; the error (with its traceback) when it fails, else None."""
    try:
        _draw_and_write(job[1], job[2])
    except Exception:  # noqa: BLE001 -- reported per owner by FigureQueue.draw
        return f"figure {job[2][0].name} failed to draw:\n{traceback.format_exc(limit=4)}"
    return None


def _draw_forked_job(index: int) -> str | None:
    """:func:`_draw_job` of the job at ``index``, in a forked process that inherited :data:`_FORKED_JOBS`."""
    return _draw_job(_FORKED_JOBS[index])


# -- CKA heatmaps (Fig 1, 2) -------------------------------------------------------------------------
BLOCK_TICKS = 12  # block-level axes: at most this many ticks
SUBLAYER_TICKS = 32  # sub-layer axes (e.g. --layers all): at most this many, on a larger figure
#: roles labelled first when a sub-layer axis has too many layers to label each; then the others in depth order,
#: a block's input last (it is the previous block's output)
PREFERRED_ROLES = ("attn", "mlp", "output", "branch", "shortcut", "norm1", "norm2")
LAST_ROLES = ("input",)


def layer_labels(result: CKAResult, model: str) -> tuple[list[str], list[str | None]]:
    """Tick label and role of each of ``model``'s layers in ``result``: block outputs only give block
    numbers (``3``); sub-layers give block and role (``3.attn``, ``3.mlp``, ``3.norm1``); a layer outside
    the blocks keeps its name. Results that do not record roles are labelled by layer index."""
    names = result.layer_names(model)
    blocks, roles = result.metadata.get("layer_blocks") or {}, result.metadata.get("layer_roles") or {}
    keys = [f"{model}/{name}" for name in names]
    if not all(key in roles and key in blocks for key in keys):
        return [str(i) for i in range(len(names))], [None] * len(names)
    layer_roles = [roles[key] for key in keys]
    block_level = all(role == "output" for role in layer_roles)
    labels = [name if blocks[key] is None else str(blocks[key]) if block_level else f"{blocks[key]}.{roles[key]}"
              for key, name in zip(keys, names)]
    return labels, [role if blocks[key] is not None else None for key, role in zip(keys, layer_roles)]


def is_sublayer_axis(roles: Sequence[str | None]) -> bool:
    """Whether an axis shows sub-layers (some role other than a block output)."""
    return any(role not in (None, "output") for role in roles)


def thinned_ticks(roles: Sequence[str | None], max_ticks: int) -> list[int]:
    """Which positions of an axis get a tick: all if they fit; else, on a sub-layer axis, every layer of the
    most roles (``PREFERRED_ROLES`` first) that fit, so each block shows the same roles; else every k-th."""
    count = len(roles)
    if count <= max_ticks:
        return list(range(count))
    if is_sublayer_axis(roles):
        present = [role for role in dict.fromkeys(roles) if role is not None]
        order = ([role for role in PREFERRED_ROLES if role in present]
                 + [role for role in present if role not in PREFERRED_ROLES + LAST_ROLES]
                 + [role for role in LAST_ROLES if role in present])
        chosen: list[int] = []
        for size in range(1, len(order) + 1):
            keep = set(order[:size])
            positions = [i for i, role in enumerate(roles) if role is None or role in keep]
            if len(positions) > max_ticks:
                break
            chosen = positions
        if chosen:
            return chosen
    step = int(np.ceil(count / max_ticks))
    return list(range(0, count, step))


def _label_axis(axes: plt.Axes, which: str, labels: list[str], roles: list[str | None], max_ticks: int) -> None:
    """Tick an axis at the thinned positions; sub-layer labels small, and upright on the x axis."""
    ticks = thinned_ticks(roles, max_ticks)
    style = {"fontsize": 6, "rotation": 90 if which == "x" else 0} if is_sublayer_axis(roles) else {}
    (axes.set_xticks if which == "x" else axes.set_yticks)(ticks, [labels[t] for t in ticks], **style)


def cka_heatmaps(result: CKAResult) -> dict[str, tuple[str, str | None]]:
    """The heatmaps of a CKA result by figure name: ``cka_MODEL`` -> (MODEL, None) for each model, then
    ``cka_A_vs_B`` -> (A, B) for each pair in the result's model order. Lets a caller pick some by model."""
    models = result.models
    heatmaps: dict[str, tuple[str, str | None]] = {}
    for index, model_a in enumerate(models):
        heatmaps[f"cka_{model_a}"] = (model_a, None)
        heatmaps.update({f"cka_{model_a}_vs_{model_b}": (model_a, model_b) for model_b in models[index + 1:]})
    return heatmaps


def _cka_title(result: CKAResult) -> str:
    return f"(CKA, n={result.metadata.get('n')})"


def _cka_heatmap(result: CKAResult, model_a: str, model_b: str | None = None) -> Figure:
    """Paper Fig 1 (``model_b`` None) or Fig 2: layers input→output on both axes, origin bottom-left."""
    matrix, _, _ = result.block(model_a, model_b)
    (row_labels, row_roles), (column_labels, column_roles) = layer_labels(result, model_a), layer_labels(result, model_b or model_a)
    sublayers = is_sublayer_axis(row_roles) or is_sublayer_axis(column_roles)
    figure, axes = plt.subplots(figsize=(6.4, 5.6) if sublayers else (4.6, 4.0))
    image = axes.imshow(matrix, origin="lower", cmap="magma", vmin=0, vmax=1, interpolation="nearest", aspect="auto")
    axes.set_ylabel(f"layers of {model_a}")
    axes.set_xlabel(f"layers of {model_b or model_a}")
    max_ticks = SUBLAYER_TICKS if sublayers else BLOCK_TICKS
    _label_axis(axes, "y", row_labels, row_roles, max_ticks)
    _label_axis(axes, "x", column_labels, column_roles, max_ticks)
    axes.set_title((model_a if model_b is None else f"{model_a} vs {model_b}") + f"  {_cka_title(result)}", fontsize=9)
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04)
    return figure


def _cka_grid(result: CKAResult) -> Figure:
    """Every block of the k × k CKA matrix in one figure: row i, column j is model i's layers (y) against
    model j's (x), models labelled on the left and on top, one colour bar for all."""
    models = result.models
    k = len(models)
    figure, grid = plt.subplots(k, k, figsize=(2.2 * k + 1.2, 2.2 * k + 0.4), squeeze=False, layout="constrained")
    image = None
    for i, model_a in enumerate(models):
        for j, model_b in enumerate(models):
            axes = grid[i][j]
            image = axes.imshow(result.block(model_a, model_b)[0], origin="lower", cmap="magma", vmin=0, vmax=1,
                                interpolation="nearest", aspect="auto")
            (row_labels, row_roles), (column_labels, column_roles) = layer_labels(result, model_a), layer_labels(result, model_b)
            if j == 0:
                _label_axis(axes, "y", row_labels, row_roles, max_ticks=6)
                axes.set_ylabel(model_a, fontsize=8)
            else:
                axes.set_yticks([])
            if i == k - 1:
                _label_axis(axes, "x", column_labels, column_roles, max_ticks=6)
            else:
                axes.set_xticks([])
            if i == 0:
                axes.set_title(model_b, fontsize=8)
            axes.tick_params(labelsize=6)
    figure.suptitle(f"layers of each row model (y) against each column model (x) {_cka_title(result)}", fontsize=9)
    figure.colorbar(image, ax=grid, shrink=0.6)
    return figure


@_kind("cka")
def _cka_figures(result: CKAResult) -> Plan:
    plan: Plan = {name: (lambda pair=pair: _cka_heatmap(result, *pair)) for name, pair in cka_heatmaps(result).items()}
    if len(result.models) > 1:
        plan["cka_grid"] = lambda: _cka_grid(result)
    return plan


# -- skip connections (Fig 7) and spatial localization (Fig 9, 10) -------------------------------------------
_SKIP_STYLES = {"attention, CLS": ("C0", "-"), "attention, spatial": ("C0", "--"), "MLP, CLS": ("C1", "-"),
                "MLP, spatial": ("C1", "--"), "shortcut / branch": ("C2", "-")}


def _skip_norms(results: list[SkipNormResult]) -> Figure:
    """Paper Fig 7: ‖skip‖/‖branch‖ against block, one panel per model, shared log-scale y.

    Pre-norm models draw attention and MLP ratios for the CLS token (solid) and the spatial tokens
    (dashed); a ResNet draws one line. Blocks whose skip was removed are gaps, named in the title.
    """
    figure, axes = plt.subplots(1, len(results), figsize=(4.2 * len(results), 3.4), sharey=True, squeeze=False)
    for ax, result in zip(axes[0], results):
        for label, values in result.lines().items():
            colour, style = _SKIP_STYLES[label]
            ax.plot(result.blocks, values, style, color=colour, marker="o", markersize=3, label=label)
        ax.set_yscale("log")
        ax.set_xlabel("block" if result.structure == "prenorm" else "residual unit")
        removed = {k: v for k, v in result.metadata.get("no_skip", {}).items() if v}
        note = "  no skip: " + ", ".join(f"{k} {v}" for k, v in removed.items()) if removed else ""
        ax.set_title(f"{result.metadata['model']} (n={result.metadata['n']}){note}", fontsize=9)
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("‖skip‖ / ‖branch‖")
    figure.tight_layout()
    return figure


@_kind("skip_norms", several=True)
def _skip_norms_figures(results: list[SkipNormResult]) -> Plan:
    return {"skip_norms": lambda: _skip_norms(results)}


def _localization(result: LocalizationResult, positions: list[tuple[int, int]] | None = None) -> Figure:
    """Paper Fig 9, 10: per layer (rows) and chosen position (columns) the CKA of that token with
    every input cell, as a grid; the token's own cell is outlined. One colour scale per figure."""
    layers = result.layers
    columns = max(len(positions or result.positions(layer)) for layer in layers)
    figure, axes = plt.subplots(len(layers), columns, figsize=(2.3 * columns + 0.8, 2.3 * len(layers)), squeeze=False)
    top = np.nanmax(result["cka"]) if np.isfinite(result["cka"]).any() else 1.0
    image = None
    for row, layer in enumerate(layers):
        chosen = positions or result.positions(layer)
        for column, ax in enumerate(axes[row]):
            if column >= len(chosen):
                ax.axis("off")
                continue
            r, c = chosen[column]
            image = ax.imshow(result.heatmap(layer, (r, c)), cmap="magma", vmin=0, vmax=top, interpolation="nearest")
            ax.add_patch(Rectangle((c - 0.5, r - 0.5), 1, 1, fill=False, edgecolor="cyan", linewidth=1.5))
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{layer} @ ({r},{c})", fontsize=8)
        index = layers.index(layer)
        axes[row][0].set_ylabel(f"share first {result['share_first'][index]:.2f}\ngap {result['diagonal_gap'][index]:.2f}", fontsize=8)
    figure.suptitle(f"{result.metadata['model']}: token vs input-cell CKA (n={result.metadata['n']})", fontsize=9)
    if image is not None:
        figure.colorbar(image, ax=axes.ravel().tolist(), fraction=0.03, pad=0.02)
    return figure


@_kind("localization")
def _localization_figures(result: LocalizationResult, positions: list[tuple[int, int]] | None = None) -> Plan:
    return {"localization": lambda: _localization(result, positions)}


# -- probes and data scale (Fig 11-13) ------------------------------------------------------------------------
_READOUT_LABELS = {
    "cls": "CLS token",
    "first": "first token",
    "gap": "mean of spatial tokens",
    "mean": "mean of all tokens",
    "tokens": "per token (mean over positions)",
}


def _readout_label(result: ProbeResult, readout: str) -> str:
    if readout == "gap" and result.metadata.get("family") not in ("vit", "mixer"):
        return "global average pool"
    return _READOUT_LABELS.get(readout, readout)


def _probes(result: ProbeResult) -> Figure:
    """Paper Fig 11 (right) and 13 for one model: probe accuracy per block, one line per readout;
    one panel per regime (full data; few-shot with ±1 std over shot samples), chance dotted."""
    regimes = result.regimes
    figure, axes = plt.subplots(1, len(regimes), figsize=(4.6 * len(regimes), 3.4), squeeze=False)
    blocks = result.blocks
    for ax, regime in zip(axes[0], regimes):
        readouts = result.readouts if regime == "full" else result.few_shot_readouts
        for readout in readouts:
            accuracy, spread = result.curve(readout, regime)
            (line,) = ax.plot(blocks, accuracy, marker="o", markersize=3, label=_readout_label(result, readout))
            if spread is not None:
                ax.fill_between(blocks, accuracy - spread, accuracy + spread, color=line.get_color(), alpha=0.2, linewidth=0)
        ax.axhline(result.metadata["chance"], color="grey", linestyle=":", linewidth=1, label="chance")
        meta = result.metadata
        title = (f"full data (n={meta['n_train']})" if regime == "full"
                 else f"{meta['shots']}-shot, {meta['samples']} samples (±1 std)")
        ax.set_title(f"{result.model}: {title}", fontsize=9)
        ax.set_xlabel("block")
        ax.set_ylabel(f"test accuracy (n={meta['n_test']})")
        ax.set_ylim(0, 1.02)
        ax.set_xticks(blocks)
        ax.legend(fontsize=7)
    figure.tight_layout()
    return figure


def _probe_comparison(results: list[ProbeResult], readout: str = "gap", regime: str | None = None,
                      labels: list[str] | None = None) -> Figure:
    """Paper Fig 13: several models' probe accuracy against relative depth ((block + 1) / blocks), one
    line per result. ``regime`` None: few-shot where every result has it, else full data."""
    if regime is None:
        regime = "few_shot" if all("few_shot" in r.regimes for r in results) else "full"
    labels = labels or [r.model for r in results]
    figure, ax = plt.subplots(figsize=(5.0, 3.6))
    for result, label in zip(results, labels):
        accuracy, spread = result.curve(readout, regime)
        depth = (np.asarray(result.blocks) + 1) / len(result.blocks)
        (line,) = ax.plot(depth, accuracy, marker="o", markersize=3, label=label)
        if spread is not None:
            ax.fill_between(depth, accuracy - spread, accuracy + spread, color=line.get_color(), alpha=0.2, linewidth=0)
    ax.axhline(results[0].metadata["chance"], color="grey", linestyle=":", linewidth=1, label="chance")
    ax.set_xlabel("relative depth (block / blocks)")
    ax.set_ylabel(f"{'few-shot' if regime == 'few_shot' else 'full-data'} probe accuracy")
    ax.set_ylim(0, 1.02)
    ax.set_xlim(0, 1.02)
    ax.set_title(f"linear probes per layer ({_READOUT_LABELS.get(readout, readout)})", fontsize=9)
    ax.legend(fontsize=7)
    figure.tight_layout()
    return figure


@_kind("probes", several=True)
def _probe_figures(results: list[ProbeResult], readout: str = "gap", regime: str | None = None,
                   labels: list[str] | None = None, comparison: bool | None = None) -> Plan:
    """One result: its per-block curves (``probes``); several, or ``comparison``: the Fig 13 comparison
    (``probe_comparison``) of all of them."""
    if comparison or (comparison is None and len(results) > 1):
        return {"probe_comparison": lambda: _probe_comparison(results, readout, regime, labels)}
    if len(results) > 1:
        raise InvalidInputError(f"probes figures without comparison draw one result at a time, got {len(results)}")
    return {"probes": lambda: _probes(results[0])}


def _data_scale(result: DataScaleResult) -> Figure:
    """Paper Fig 12: per-block CKA against the 100%-data model, one line per reduced-data model (filled
    markers where the block is changed by data scale); the seed baseline dashed with its ±2 SE band."""
    meta = result.metadata
    blocks = np.asarray(result["blocks"])
    figure, ax = plt.subplots(figsize=(5.0, 3.6))
    baseline, band = result["baseline"], meta["significance"] * result["baseline_standard_error"]
    ax.plot(blocks, baseline, color="black", linestyle="--", label=f"seed baseline ({meta['baseline']})")
    ax.fill_between(blocks, baseline - band, baseline + band, color="black", alpha=0.15, linewidth=0,
                    label=f"baseline ±{meta['significance']:g} SE")
    fractions = result.fractions
    for row, model in enumerate(result.models):
        fraction = fractions.get(model)
        label = f"{model} ({fraction:.0%} data)" if fraction is not None else model
        (line,) = ax.plot(blocks, result["per_block_cka"][row], marker="o", markersize=4, markerfacecolor="white", label=label)
        changed = result["changed"][row].astype(bool)
        ax.plot(blocks[changed], result["per_block_cka"][row][changed], linestyle="none", marker="o", markersize=4, color=line.get_color())
    ax.set_xlabel("block")
    ax.set_ylabel(f"CKA with {meta['reference']} (same block)")
    ax.set_xticks(blocks)
    ax.set_title(f"data scale: filled = below baseline by > {meta['significance']:g} combined SE (n={meta['n']})", fontsize=9)
    ax.legend(fontsize=7)
    figure.tight_layout()
    return figure


@_kind("data_scale")
def _data_scale_figures(result: DataScaleResult) -> Plan:
    return {"data_scale": lambda: _data_scale(result)}


# -- attention distance (Fig 3), local heads vs CNN (Fig 5), effective receptive fields (Fig 6) ---------------
def _distance_references(axes: plt.Axes, result: AttentionDistanceResult) -> None:
    """Dashed: uniform attention over the grid; dotted: half the image width (the 'local' threshold)."""
    axes.axhline(result.metadata["uniform_distance"], color="0.5", linestyle="--", linewidth=0.8, label="uniform attention")
    axes.axhline(result.image_width / 2, color="0.5", linestyle=":", linewidth=0.8, label="half image width")


def default_attention_blocks(result: AttentionDistanceResult) -> list[int]:
    """First, middle and last block with attention (deduplicated)."""
    blocks = result.blocks
    return list(dict.fromkeys([blocks[0], blocks[len(blocks) // 2], blocks[-1]]))


def _attention_distance_heads(result: AttentionDistanceResult, blocks: list[int]) -> Figure:
    """Paper Fig 3: per chosen block, one point per head, heads sorted by mean attention distance."""
    figure, axes = plt.subplots(1, len(blocks), figsize=(2.6 * len(blocks) + 0.4, 2.8), sharey=True, squeeze=False)
    top = max(float(np.nanmax(result.distance)), result.metadata["uniform_distance"], result.image_width / 2) * 1.1
    for ax, block in zip(axes[0], blocks):
        distance = np.sort(result.distance[result.blocks.index(block)])
        ax.plot(np.arange(len(distance)), distance, "o", markersize=4)
        _distance_references(ax, result)
        ax.set_title(f"block {block}", fontsize=9)
        ax.set_xlabel("head (sorted by distance)")
        ax.set_ylim(0, top)
    axes[0][0].set_ylabel("mean attention distance (px)")
    axes[0][-1].legend(fontsize=7, loc="lower right")
    figure.suptitle(f"{result.metadata['model']}  (n={result.metadata['n']})", fontsize=9)
    figure.tight_layout()
    return figure


def _attention_distance_depth(result: AttentionDistanceResult) -> Figure:
    """All blocks: each head's mean attention distance (points) against depth, with the block mean (line)."""
    figure, ax = plt.subplots(figsize=(4.6, 3.2))
    blocks = np.array(result.blocks)
    heads = result.distance.shape[1]
    ax.scatter(np.repeat(blocks, heads), result.distance.ravel(), s=12, alpha=0.7, label="head")
    ax.plot(blocks, np.nanmean(result.distance, axis=1), color="C1", linewidth=1, label="block mean")
    _distance_references(ax, result)
    ax.set_xlabel("block")
    ax.set_ylabel("mean attention distance (px)")
    ax.set_xticks(blocks)
    ax.set_ylim(0, None)
    ax.legend(fontsize=7)
    ax.set_title(f"{result.metadata['model']}: attention distance by depth (n={result.metadata['n']})", fontsize=9)
    figure.tight_layout()
    return figure


@_kind("attention_distance")
def _attention_distance_figures(result: AttentionDistanceResult, blocks: list[int] | None = None) -> Plan:
    blocks = default_attention_blocks(result) if blocks is None else list(blocks)
    unknown = sorted(set(blocks) - set(result.blocks))
    if unknown:
        raise InvalidInputError(f"blocks {unknown} are not in this result; pick from {result.blocks}")
    return {"attention_distance_heads": lambda: _attention_distance_heads(result, blocks),
            "attention_distance_depth": lambda: _attention_distance_depth(result)}


def _head_similarity(result: HeadSimilarityResult) -> Figure:
    """Paper Fig 5: CKA of head windows with each lower CNN unit against the window's mean attention distance."""
    figure, ax = plt.subplots(figsize=(4.8, 3.4))
    meta = result.metadata
    distance, sizes = result["window_distance"], result["window_size"]
    main, single = sizes == meta["window"], sizes == 1
    order = np.argsort(distance[main], kind="stable")
    for u, (unit, rho) in enumerate(zip(result.units, result["spearman"])):
        line, = ax.plot(distance[main][order], result.cka[main, u][order], "o-", markersize=3, label=f"{unit} (ρ={rho:.2f})")
        if meta["window"] > 1:
            ax.plot(distance[single], result.cka[single, u], "o", markersize=4, mfc="none", color=line.get_color())
    ax.set_xlabel(f"mean attention distance of the window (px); block {meta['block']}")
    ax.set_ylabel(f"CKA with {meta['cnn']} unit")
    window = f"windows of {meta['window']} heads" + (", hollow: single heads" if meta["window"] > 1 else "")
    ax.set_title(f"{meta['vit']} heads vs {meta['cnn']} ({window}; n={meta['n']})", fontsize=8)
    ax.legend(fontsize=7)
    figure.tight_layout()
    return figure


@_kind("head_similarity")
def _head_similarity_figures(result: HeadSimilarityResult) -> Plan:
    return {"head_similarity": lambda: _head_similarity(result)}


def _receptive_fields(result: ReceptiveFieldResult) -> Figure:
    """Paper Fig 6: one normalised ERF map per layer, the centre marked, radii holding 50% / 90% of the mass."""
    maps, names = result.maps, result.layer_names
    columns = min(len(maps), 6)
    rows = int(np.ceil(len(maps) / columns))
    figure, axes = plt.subplots(rows, columns, figsize=(1.9 * columns, 2.1 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, erf, name, centre, r50, r90 in zip(axes.ravel(), maps, names, result["centre"], result["radius_50"], result["radius_90"]):
        ax.imshow(erf, cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
        ax.plot(centre[1], centre[0], "+", color="red", markersize=5)
        ax.set_title(f"{name}\nr50 {r50:.1f}, r90 {r90:.1f} px", fontsize=7)
    meta = result.metadata
    kind = "pre-residual (branch)" if meta["pre_residual"] else "after the residual add"
    figure.suptitle(f"{meta['model']}: ERF {kind}, channels {meta['channel_average']}, n={meta['n']}", fontsize=9)
    figure.tight_layout()
    return figure


@_kind("receptive_field")
def _receptive_field_figures(result: ReceptiveFieldResult) -> Plan:
    name = "receptive_field_pre_residual" if result.metadata["pre_residual"] else "receptive_field"
    return {name: lambda: _receptive_fields(result)}
