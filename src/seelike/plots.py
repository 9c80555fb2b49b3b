"""Figures in the paper's style, drawn from saved results only (never recomputed here)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from seelike.similarity import CKAResult  # noqa: E402

FORMATS = ("png", "svg")


def save_figure(figure: plt.Figure, path: str | Path) -> list[Path]:
    """Write ``figure`` as PNG and SVG beside each other (``path`` without suffix) and close it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    written = []
    for suffix in FORMATS:
        target = path.with_suffix(f".{suffix}")
        figure.savefig(target, dpi=150, bbox_inches="tight")
        written.append(target)
    plt.close(figure)
    return written


def _tick_labels(names: list[str]) -> tuple[list[int], list[str]]:
    """At most ~12 ticks, labelled with the layer index in depth order."""
    step = max(1, int(np.ceil(len(names) / 12)))
    ticks = list(range(0, len(names), step))
    return ticks, [str(t) for t in ticks]


def plot_cka_heatmap(result: CKAResult, model_a: str, model_b: str | None = None, title: str | None = None) -> plt.Figure:
    """Paper Fig 1 (``model_b`` None) or Fig 2: layers input→output on both axes, origin bottom-left."""
    matrix, rows, columns = result.block(model_a, model_b)
    figure, axes = plt.subplots(figsize=(4.6, 4.0))
    image = axes.imshow(matrix, origin="lower", cmap="magma", vmin=0, vmax=1, interpolation="nearest", aspect="auto")
    axes.set_ylabel(f"layers of {model_a}")
    axes.set_xlabel(f"layers of {model_b or model_a}")
    for set_ticks, set_labels, names in ((axes.set_yticks, axes.set_yticklabels, rows), (axes.set_xticks, axes.set_xticklabels, columns)):
        ticks, labels = _tick_labels(names)
        set_ticks(ticks)
        set_labels(labels)
    n = result.metadata.get("n")
    axes.set_title(title or (f"{model_a}" if model_b is None else f"{model_a} vs {model_b}") + f"  (CKA, n={n})", fontsize=9)
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04)
    return figure


def heatmap_figures(result: CKAResult, directory: str | Path) -> dict[str, list[Path]]:
    """Every within-model heatmap and every cross-model pair of a result, saved under ``directory``."""
    directory = Path(directory)
    models = result.models
    written: dict[str, list[Path]] = {}
    for index, model_a in enumerate(models):
        written[model_a] = save_figure(plot_cka_heatmap(result, model_a), directory / f"cka_{model_a}")
        for model_b in models[index + 1 :]:
            key = f"{model_a}_vs_{model_b}"
            written[key] = save_figure(plot_cka_heatmap(result, model_a, model_b), directory / f"cka_{key}")
    return written


# -- skip connections (Fig 7) and spatial localization (Fig 9, 10) -------------------------------
from matplotlib.patches import Rectangle  # noqa: E402

from seelike.analyses.localization import LocalizationResult  # noqa: E402
from seelike.analyses.skip_norms import SkipNormResult  # noqa: E402

_SKIP_STYLES = {"attention, CLS": ("C0", "-"), "attention, spatial": ("C0", "--"), "MLP, CLS": ("C1", "-"),
                "MLP, spatial": ("C1", "--"), "shortcut / branch": ("C2", "-")}


def plot_skip_norms(results: SkipNormResult | list[SkipNormResult]) -> plt.Figure:
    """Paper Fig 7: ‖skip‖/‖branch‖ against block, one panel per model, shared log-scale y.

    Pre-norm models draw attention and MLP ratios for the CLS token (solid) and the spatial tokens
    (dashed); a ResNet draws one line. Blocks whose skip was removed are gaps, named in the title.
    """
    results = [results] if isinstance(results, SkipNormResult) else list(results)
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


def plot_localization(result: LocalizationResult, positions: list[tuple[int, int]] | None = None) -> plt.Figure:
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


# -- probes and data scale (Fig 11-13) ---------------------------------------------------------
from seelike.analyses.data_scale import DataScaleResult  # noqa: E402
from seelike.analyses.probes import ProbeResult  # noqa: E402

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


def plot_probes(result: ProbeResult) -> plt.Figure:
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


def plot_probe_comparison(results: list[ProbeResult], readout: str = "gap", regime: str | None = None,
                          labels: list[str] | None = None) -> plt.Figure:
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


def plot_data_scale(result: DataScaleResult) -> plt.Figure:
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


# --- attention distance (Fig 3), local heads vs CNN (Fig 5), effective receptive fields (Fig 6) ---
from seelike.analyses.attention_distance import AttentionDistanceResult  # noqa: E402
from seelike.analyses.head_similarity import HeadSimilarityResult  # noqa: E402
from seelike.analyses.receptive_field import ReceptiveFieldResult  # noqa: E402


def _distance_references(axes: plt.Axes, result: AttentionDistanceResult) -> None:
    """Dashed: uniform attention over the grid; dotted: half the image width (the 'local' threshold)."""
    axes.axhline(result.metadata["uniform_distance"], color="0.5", linestyle="--", linewidth=0.8, label="uniform attention")
    axes.axhline(result.image_width / 2, color="0.5", linestyle=":", linewidth=0.8, label="half image width")


def default_attention_blocks(result: AttentionDistanceResult) -> list[int]:
    """First, middle and last block with attention (deduplicated)."""
    blocks = result.blocks
    return list(dict.fromkeys([blocks[0], blocks[len(blocks) // 2], blocks[-1]]))


def plot_attention_distance_heads(result: AttentionDistanceResult, blocks: list[int] | None = None) -> plt.Figure:
    """Paper Fig 3: per chosen block, one point per head, heads sorted by mean attention distance."""
    blocks = default_attention_blocks(result) if blocks is None else blocks
    unknown = sorted(set(blocks) - set(result.blocks))
    if unknown:
        from seelike.errors import InvalidInputError

        raise InvalidInputError(f"blocks {unknown} are not in this result; pick from {result.blocks}")
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


def plot_attention_distance_depth(result: AttentionDistanceResult) -> plt.Figure:
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


def attention_distance_figures(result: AttentionDistanceResult, directory: str | Path, blocks: list[int] | None = None) -> dict[str, list[Path]]:
    """The per-block (Fig 3) and all-blocks attention distance figures, saved under ``directory``."""
    directory = Path(directory)
    return {
        "heads": save_figure(plot_attention_distance_heads(result, blocks), directory / "attention_distance_heads"),
        "depth": save_figure(plot_attention_distance_depth(result), directory / "attention_distance_depth"),
    }


def plot_head_similarity(result: HeadSimilarityResult) -> plt.Figure:
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


def head_similarity_figures(result: HeadSimilarityResult, directory: str | Path) -> dict[str, list[Path]]:
    return {"head_similarity": save_figure(plot_head_similarity(result), Path(directory) / "head_similarity")}


def plot_receptive_fields(result: ReceptiveFieldResult) -> plt.Figure:
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


def receptive_field_figures(result: ReceptiveFieldResult, directory: str | Path) -> dict[str, list[Path]]:
    suffix = "_pre_residual" if result.metadata["pre_residual"] else ""
    return {"receptive_field": save_figure(plot_receptive_fields(result), Path(directory) / f"receptive_field{suffix}")}
