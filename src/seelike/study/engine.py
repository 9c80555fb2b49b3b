"""The study engine: settings, steps as data, the cache, the plan, the run, and each step's outcome.

A study is a list of :class:`StudyStep` records, each naming the research question it answers
(RQ1-RQ5), the analysis it runs (a kind of :data:`seelike.study.analyses.ANALYSES`, one call into
:mod:`seelike.analyses`), its models by role (trained models and their baselines), its parameters
and its section (figures, numbers and findings from the result; rules live in ``rq1`` .. ``rq5``).
Every result is cached under ``OUT/cache`` keyed by everything that changes it (model specs and a
hash of their weights, preprocessing, data spec, n, batch size, seed, the step's own settings,
seelike's code and version), so a re-run is nearly instant and an interrupted study resumes where it
stopped; a damaged cache entry is reported in one line and recomputed. A step that fails is reported
in its section; the others go on.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import json
import logging
import math
import platform
import shutil
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch

from seelike.errors import InvalidInputError, ModelLoadError, SeelikeError
from seelike.models.model import Model, unique_names
from seelike.results import Result, atomic_write_text, load_result, seelike_version
from seelike.study.verdicts import Finding

if TYPE_CHECKING:
    from seelike.plots import FigureQueue

log = logging.getLogger(__name__)

QUESTIONS = {
    "RQ1": "Are ViT representations more uniform across layers than CNN ones?",
    "RQ2": "How do self-attention and skip connections shape information flow?",
    "RQ3": "Do ViTs keep spatial information at the top, and how does the classifier (CLS vs GAP) change that?",
    "RQ4": "How does data scale change intermediate representations?",
    "RQ5": "What follows for other architectures (MLP-Mixer)?",
}
MIN_BATCH_SIZE = 4  # the unbiased HSIC of minibatch CKA needs at least 4 images per batch


@dataclass
class Section:
    """What a step contributes to the report.

    ``figures`` answer the step's question and lead its section; ``baseline_figures`` involve its
    baseline models (random-init twins, second seeds) and are shown folded away under "Baselines".
    """

    figures: list[Path] = field(default_factory=list)
    baseline_figures: list[Path] = field(default_factory=list)
    numbers: dict[str, Any] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    text: str = ""


@dataclass(frozen=True)
class StudySettings:
    """Data and sampling shared by every step; all of it is part of every cache key."""

    data: str = "fashion-mnist"
    split: str = "test"
    n: int = 5000
    batch_size: int = 500
    seed: int = 0
    device: str = "cpu"
    init: Literal["trained", "random"] = "trained"  # random: every preset model is its random-init twin (a dry run)

    def validate(self) -> None:
        """Refuse settings no step can use, before any work (one-line errors)."""
        if not isinstance(self.n, int) or self.n < MIN_BATCH_SIZE:
            raise InvalidInputError(f"--n must be an integer of at least {MIN_BATCH_SIZE} images, got {self.n!r}")
        if not isinstance(self.batch_size, int) or self.batch_size < MIN_BATCH_SIZE:
            raise InvalidInputError(f"--batch-size must be at least {MIN_BATCH_SIZE} (minibatch CKA's unbiased HSIC needs 4 images per batch), got {self.batch_size!r}")
        if self.init not in ("trained", "random"):
            raise InvalidInputError(f"--init must be trained or random, got {self.init!r}")
        if self.batch_size > self.n:
            raise InvalidInputError(f"--batch-size {self.batch_size} is larger than --n {self.n}; use at most n images per batch")


@dataclass(frozen=True)
class Cohort:
    """Roles trained alike that a step compares with each other: ``reference`` and its ``twins``
    (role → what it is to the reference, e.g. "reduced-data twin"). They differ in one factor
    only when they come from one source: all from the preset, or all given with ``--models``."""

    reference: str
    twins: Mapping[str, str]

    @property
    def roles(self) -> tuple[str, ...]:
        return (self.reference, *self.twins)


#: ``section(result, names, figures_dir)``: ``names`` maps each role the step ran with to its model's short name
SectionBuilder = Callable[[Result, Mapping[str, str], Path | None], Section]  # None: draw no figure (ranks other than 0)


@dataclass(frozen=True)
class StudyStep:
    """One step of a study, as data.

    ``models`` maps each role to a model spec, trained models first, then baselines; ``baselines``
    maps a baseline role to what it is ("random init of vit", "second seed of vit"). ``required``
    names the roles the step cannot run without (None: all); other missing models are left out and
    said so. ``cohorts`` name the roles that must come from one source to be compared
    (:class:`Cohort`). ``skip`` (set when the study is planned) says why the step does not run:
    its models are not in the preset or no longer belong together; such a step is reported, not
    an error. ``notes`` are appended to the step's text (how a preset model differs from the paper's).
    """

    name: str
    question: str
    title: str
    analysis: str
    models: Mapping[str, str]
    section: SectionBuilder = field(repr=False, compare=False)
    params: Mapping[str, Any] = field(default_factory=dict)
    baselines: Mapping[str, str] = field(default_factory=dict)
    required: tuple[str, ...] | None = None
    cohorts: tuple[Cohort, ...] = ()
    skip: str = ""
    notes: tuple[str, ...] = ()

    @property
    def specs(self) -> tuple[str, ...]:
        """The distinct model specs the step reads, in role order."""
        return tuple(dict.fromkeys(self.models.values()))

    @property
    def required_roles(self) -> tuple[str, ...]:
        return tuple(self.models) if self.required is None else self.required


@dataclass
class StepOutcome:
    step: StudyStep
    status: Literal["ok", "cached", "error", "skipped"]
    seconds: float = 0.0
    section: Section | None = None
    error: str = ""
    cache_dir: Path | None = None
    note: str = ""


class ModelPool:
    """Loads each model spec once per study and remembers what could not be loaded."""

    def __init__(self, device: str, names: dict[str, str] | None = None) -> None:
        self.device = device
        self.names = names or {}
        self._models: dict[str, Model] = {}
        self.missing: dict[str, str] = {}

    def get(self, spec: str) -> Model | None:
        if spec in self._models:
            return self._models[spec]
        if spec in self.missing:
            return None
        from seelike.models import load_model

        try:
            model = load_model(spec, device=self.device)
        except ModelLoadError as error:
            self.missing[spec] = str(error)
            return None
        model.label = self.names.get(spec)
        self._models[spec] = model
        return model


@functools.cache
def code_fingerprint() -> str:
    """A hash of seelike's own source: any change to an analysis, a constant or a preset makes its steps rerun."""
    package = Path(__file__).parent.parent
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(path.relative_to(package).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def cache_key(step: StudyStep, models: Sequence[Model], settings: StudySettings) -> str:
    """A hash of everything that changes a step's numbers (a stale cache is a wrong number)."""
    document = {
        "code": code_fingerprint(),
        "step": step.name,
        "params": dict(step.params),
        "models": [
            {"spec": m.spec, "weights": m.fingerprint(), "preprocessing": asdict(m.preprocessing)} for m in models
        ],
        "settings": {k: v for k, v in asdict(settings).items() if k != "device"},
        "seelike": seelike_version(),
    }
    return hashlib.sha256(json.dumps(document, sort_keys=True, default=str).encode()).hexdigest()[:16]


def run_study(
    steps: Sequence[StudyStep],
    settings: StudySettings,
    out: str | Path,
    on_step: Callable[[int, int, StepOutcome], None] | None = None,
    pool: ModelPool | None = None,
) -> list[StepOutcome]:
    """Run (or load from cache) every step, then write ``results.json`` and ``report/index.html``.

    ``pool``: the models :func:`validate_study` loaded (default: loaded as the steps need them)."""
    from seelike.distributed import is_main_process
    from seelike.plots import FigureQueue
    from seelike.report import write_report
    from seelike.study.analyses import run_analysis

    out = Path(out)
    writes = is_main_process()  # in a distributed run, the other ranks read the cache and help with the passes
    figures_dir = out / "report" / "figures" if writes else None  # other ranks draw nothing (sections take None)
    if figures_dir is not None:
        figures_dir.mkdir(parents=True, exist_ok=True)
    pool = pool or ModelPool(settings.device, unique_names([spec for step in steps for spec in step.specs]))
    data = _StudyData(settings)
    outcomes: list[StepOutcome] = []
    study_started = time.perf_counter()
    figures = FigureQueue()  # drawn after the last step, in parallel: matplotlib draws on one core
    cache_dirs: dict[str, Path] = {}  # of the steps that can run
    cached: dict[str, tuple[Result | None, str]] = {}  # each cache entry read once, before the shared pass
    for step in steps:
        if step.skip:
            continue
        available, absent = _step_models(step, pool)
        if available and not set(absent) & set(step.required_roles):
            cache_dirs[step.name] = _cache_dir(step, available, settings, out)
            cached[step.name] = read_cache(cache_dirs[step.name])
    to_compute = [step for step in steps if step.name in cached and cached[step.name][0] is None]
    shared, shared_errors = _shared_pass(to_compute, pool, settings, data, out / "cache" / "shared-pass.pt", cache_dirs)
    for name, result in shared.items() if writes else ():  # cached at once: a later step (ERF) may be interrupted
        try:
            result.save(cache_dirs[name])
        except Exception as error:  # e.g. a full disk: that step reports it, as when it saved its own result
            shared_errors[name] = error
    for index, step in enumerate(steps):
        started = time.perf_counter()
        available, absent = ({}, []) if step.skip else _step_models(step, pool)
        if step.skip:
            outcome = StepOutcome(step, "skipped", error=step.skip)
        elif step.name not in cached:
            reasons = "; ".join(f"{role} ({step.models[role]}): {pool.missing[step.models[role]]}" for role in absent)
            outcome = StepOutcome(step, "skipped", error=f"models not available: {reasons}")
        else:
            try:
                cache_dir = cache_dirs[step.name]
                result, note = cached[step.name]
                status = "cached"
                if step.name in shared_errors:
                    raise shared_errors[step.name]
                if result is None and step.name in shared:
                    result, status = shared[step.name], "ok"  # saved when the shared pass ended
                elif result is None:
                    result = run_analysis(step, available, data.get(), settings)
                    status = "ok"
                    if writes:
                        result.save(cache_dir)
                names = {role: model.name for role, model in available.items()}
                with figures.collecting(step.name):
                    section = step.section(result, names, figures_dir)
                if absent:
                    section.text += f" Not shipped here, so left out: {', '.join(f'{r} ({step.models[r]})' for r in absent)}."
                section.text = " ".join([section.text, *step.notes]).strip()
                if settings.init == "random":
                    section.findings = [dry_run_finding(finding) for finding in section.findings]
                if step.name in shared:
                    note = (note + " " if note else "") + "computed in the study's shared pass"
                outcome = StepOutcome(step, status, section=section, cache_dir=cache_dir, note=note)
            except Exception as error:  # one failing analysis must not lose the others
                log.exception("study step %s failed", step.name)
                detail = "".join(traceback.format_exception_only(type(error), error)).strip()
                if not isinstance(error, SeelikeError):
                    detail += "\n" + traceback.format_exc(limit=4)
                outcome = StepOutcome(step, "error", error=detail)
        outcome.seconds = round(time.perf_counter() - started, 2)
        outcomes.append(outcome)
        if on_step:
            on_step(index, len(steps), outcome)
    _draw_figures(figures, outcomes)
    total = round(time.perf_counter() - study_started, 1)
    if not writes:
        return outcomes
    document = results_document(outcomes, settings, environment(settings, total))
    atomic_write_text(out / "results.json", json.dumps(document, indent=2, allow_nan=False))
    write_report(document, out / "report")
    return outcomes


def _draw_figures(figures: FigureQueue, outcomes: Sequence[StepOutcome]) -> None:
    """Draw the steps' queued figures (:class:`~seelike.plots.FigureQueue`), one process per torch thread; a step
    whose figure fails to draw becomes an error, as when its section failed."""
    failed = figures.draw(workers=torch.get_num_threads())
    for outcome in outcomes:
        if outcome.step.name in failed:
            outcome.status, outcome.error, outcome.section = "error", failed[outcome.step.name], None


class _StudyData:
    """The study's data set, loaded on first use (a fully cached study never reads it)."""

    def __init__(self, settings: StudySettings) -> None:
        self.settings = settings
        self._dataset: Any = None

    def get(self) -> Any:
        if self._dataset is None:
            from seelike.data import load_dataset

            self._dataset = load_dataset(self.settings.data, split=self.settings.split)
        return self._dataset


DRY_RUN = ("random-init dry run: every model is at random init, so these numbers test the pipeline at the paper's "
           "scale, not the paper's claims")


def dry_run_finding(finding: Finding) -> Finding:
    """A finding of a random-init dry run, saying so in its ``why`` (its verdict is not the paper's claim)."""
    from dataclasses import replace

    return replace(finding, why=f"{DRY_RUN}. {finding.why}".strip())


def planned_skip(outcome: StepOutcome) -> bool:
    """A step the plan left out (its models are not in the preset or no longer belong together): not a failure."""
    return outcome.status == "skipped" and bool(outcome.step.skip)


def _step_models(step: StudyStep, pool: ModelPool) -> tuple[dict[str, Model], list[str]]:
    """The step's models by role that could be loaded, and the roles that could not."""
    loaded = {role: pool.get(spec) for role, spec in step.models.items()}
    return {role: model for role, model in loaded.items() if model is not None}, [role for role, model in loaded.items() if model is None]


def _cache_dir(step: StudyStep, available: Mapping[str, Model], settings: StudySettings, out: Path) -> Path:
    models = list({id(m): m for m in available.values()}.values())
    return out / "cache" / f"{step.name}-{cache_key(step, models, settings)}"


SHARED_PASS_SAVE_SECONDS = 60.0  # how often the shared pass saves its state (a save costs well under a second)


def _shared_pass(steps: Sequence[StudyStep], pool: ModelPool, settings: StudySettings, data: _StudyData,
                 checkpoint_path: Path, cache_dirs: Mapping[str, Path]) -> tuple[dict[str, Result], dict[str, Exception]]:
    """Run the single-pass ones of ``steps`` (uncached, models loaded) in one pass of the driver.

    Returns their results and the steps that failed to plan. When the pass itself fails, nothing is
    returned for its steps, so each runs alone afterwards and its own error (if any) stays with it.
    The pass saves its state to ``checkpoint_path`` every minute, under a key made of its steps' cache
    folders (``cache_dirs``) in order, so an interrupted study resumes the pass at the batch it reached.
    """
    from seelike.checkpoints import PassCheckpoint
    from seelike.study.analyses import plan_step, planning, run_shared_pass

    plans, errors = {}, {}
    with planning():
        for step in steps:
            available, _ = _step_models(step, pool)
            try:
                planned = plan_step(step, available, settings)
            except Exception as error:  # reported by the step itself
                errors[step.name] = error
                continue
            if planned is not None:
                plans[step.name] = planned
    if not plans:
        return {}, errors
    started = time.perf_counter()
    # the steps' cache keys in the order their accumulators join the pass: the same key, the same accumulators
    key = " ".join(cache_dirs[name].name for name in plans)
    try:
        checkpoint = PassCheckpoint(checkpoint_path, key, every_seconds=SHARED_PASS_SAVE_SECONDS)
        results = run_shared_pass(list(plans.values()), data.get(), settings, checkpoint)
    except Exception:
        log.warning("the shared pass of %s failed; running those steps one by one", ", ".join(plans), exc_info=True)
        return {}, errors
    log.info("shared pass: %d steps in %.1f s", len(plans), time.perf_counter() - started)
    return dict(zip(plans, results)), errors


def read_cache(cache_dir: Path) -> tuple[Result | None, str]:
    """The cached result of a step, or None when there is none; a damaged entry (truncated or corrupted
    ``result.npz`` / ``result.json``) is logged in one line, removed, and reported in the note."""
    if not (cache_dir / "result.json").exists() and not (cache_dir / "result.npz").exists():
        return None, ""
    try:
        result = load_result(cache_dir)
        for array in result.arrays.values():  # every array read in full: a truncated npz fails here, not later
            np.asarray(array).sum()
        return result, ""
    except Exception as error:  # noqa: BLE001 -- any damage means: recompute
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        note = f"cache entry {cache_dir.name} was damaged ({type(error).__name__}: {reason}); recomputed"
        log.warning(note)
        shutil.rmtree(cache_dir, ignore_errors=True)
        return None, note


def environment(settings: StudySettings, seconds: float) -> dict[str, Any]:
    """What ran the study. Versions of packages the study may not have imported come from their metadata
    (importing torchvision and timm only to read a version took 2.4 s; torch's version names the build)."""
    return {
        "seelike": seelike_version(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": importlib.metadata.version("torchvision"),
        "timm": importlib.metadata.version("timm"),
        "numpy": np.__version__,
        "device": settings.device if settings.device != "cpu" else f"cpu ({platform.machine()}, {torch.get_num_threads()} threads)",
        "platform": platform.platform(),
        "total_seconds": seconds,
        "finished": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


RESULTS_SCHEMA_VERSION = 3


def results_document(outcomes: Sequence[StepOutcome], settings: StudySettings, environment: Mapping[str, Any]) -> dict[str, Any]:
    """Every number of the study as one standard-JSON document (the report renders from it alone).

    Schema 3 (standard JSON: no NaN or Infinity, which are written as ``null``):

    * ``schema_version`` (3), ``settings`` (data, split, n, batch_size, seed, device, init: ``random`` for a
      dry run), ``dry_run`` (what a random-init dry run means; empty otherwise), ``environment``
      (versions, device, total_seconds, finished);
    * ``summary``: the count of each verdict over every finding (held, also at baseline, not held, not measured);
    * ``questions``: {RQ: question}; ``paper``: {citation, title, url, sections: {RQ: "§4, Fig. 1, 2"}};
    * ``steps``: {name: step}, each with ``question``, ``title``, ``analysis``, ``models`` {role: spec},
      ``baselines`` {role: what it is}, ``status`` (ok, cached, error, skipped), ``planned_skip`` (true: the
      plan left the step out, ``error`` says why; not a failure), ``seconds``, ``error``,
      ``note``, ``cache`` (its result folder, readable with :func:`seelike.results.load_result`), ``text``, and

      - ``figures``: a list of {path (relative to the report folder), baseline (true: involves a
        baseline model), width, height (pixels; null when unknown)};
      - ``numbers``: {key: number, list of numbers (per block or per layer) or list of names};
        ``null`` where a value is undefined (NaN) or infinite;
      - ``labels``: {key: {quantity, arguments, subject, label, unit}} for every key of ``numbers``
        (:mod:`seelike.study.labels`);
      - ``findings``: a list of every field of :class:`~seelike.study.verdicts.Finding` (claim, rule,
        measured, verdict, trained, trained_se, baseline, baseline_se, baseline_kind,
        baseline_measured, threshold, margin, why) and ``non_finite``: {field: "nan" | "inf" | "-inf"}
        for the fields that are ``null`` because they are undefined (NaN: the verdict says "not
        measured") or infinite (e.g. a skip ratio over a branch that is exactly zero; the verdict was
        judged on the infinite value).
    """
    from seelike.study.labels import PAPER_CITATION, PAPER_SECTIONS, PAPER_TITLE, PAPER_URL
    from seelike.study.verdicts import VERDICTS

    findings = [f for o in outcomes if o.section for f in o.section.findings]
    return _jsonable({
        "schema_version": RESULTS_SCHEMA_VERSION,
        "settings": asdict(settings),
        "environment": dict(environment),
        "summary": {verdict: sum(f.verdict == verdict for f in findings) for verdict in VERDICTS},
        "dry_run": DRY_RUN if settings.init == "random" else "",
        "questions": QUESTIONS,
        "paper": {"citation": PAPER_CITATION, "title": PAPER_TITLE, "url": PAPER_URL, "sections": PAPER_SECTIONS},
        "steps": {outcome.step.name: _step_document(outcome) for outcome in outcomes},
    })


def _step_document(outcome: StepOutcome) -> dict[str, Any]:
    from seelike.study.labels import describe

    section = outcome.section or Section()
    figures = [(path, False) for path in section.figures] + [(path, True) for path in section.baseline_figures]
    labels = {key: describe(key) for key in section.numbers}
    return {
        "question": outcome.step.question,
        "title": outcome.step.title,
        "analysis": outcome.step.analysis,
        "models": dict(outcome.step.models),
        "baselines": dict(outcome.step.baselines),
        "status": outcome.status,
        "planned_skip": planned_skip(outcome),
        "seconds": outcome.seconds,
        "error": outcome.error,
        "note": outcome.note,
        "cache": str(outcome.cache_dir) if outcome.cache_dir else None,
        "text": section.text,
        "figures": [{"path": _relative_figure(path), "baseline": baseline, **_png_size(path)} for path, baseline in figures],
        "numbers": section.numbers,
        "labels": {key: {"quantity": d.quantity, "arguments": d.arguments, "subject": d.subject, "label": d.label, "unit": d.unit}
                   for key, d in labels.items()},
        "findings": [_finding_document(f) for f in section.findings],
    }


def _finding_document(finding: Finding) -> dict[str, Any]:
    """A finding's fields, plus ``non_finite``: the fields that are NaN or ±inf (null in JSON) by name, as text."""
    fields = asdict(finding)
    return {**fields, "non_finite": {key: str(value) for key, value in fields.items() if isinstance(value, float) and not math.isfinite(value)}}


def _png_size(path: Path) -> dict[str, int | None]:
    """A PNG's width and height from its header (None when the file is not a readable PNG), so the report can lay it out."""
    try:
        with open(path, "rb") as f:
            header = f.read(24)
    except OSError:
        header = b""
    if len(header) < 24 or header[:8] != b"\x89PNG\r\n\x1a\n":
        return {"width": None, "height": None}
    return {"width": int.from_bytes(header[16:20], "big"), "height": int.from_bytes(header[20:24], "big")}


def _relative_figure(path: Path) -> str:
    """A figure's path relative to the report folder (figures live in ``report/figures``)."""
    parts = Path(path).parts
    if "figures" not in parts:
        return Path(path).as_posix()
    last = len(parts) - 1 - parts[::-1].index("figures")
    return Path(*parts[last:]).as_posix()


def _jsonable(value: Any) -> Any:
    """Standard JSON: numbers stay numbers, NaN and ±inf become None, arrays lists, paths and other objects strings."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        return _jsonable(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def check_spec(spec: str) -> None:
    """Refuse a model spec that cannot name a model, without loading weights (for ``--plan`` and before a run)."""
    from urllib.parse import parse_qsl

    scheme, _, rest = spec.partition(":") if ":" in spec and not Path(spec).exists() else ("path", "", spec)
    name = rest.partition("?")[0]
    parse_qsl(rest.partition("?")[2], strict_parsing=False)
    if scheme == "zoo":
        from seelike.models.zoo import RECIPES, manifests

        if name not in manifests() and name not in RECIPES:
            raise ModelLoadError(f"{spec}: no zoo model {name!r}; shipped: {', '.join(sorted(manifests()))}")
    elif scheme == "seelike":
        from seelike.models import ARCHITECTURES

        if name not in ARCHITECTURES:
            raise ModelLoadError(f"{spec}: unknown seelike architecture {name!r}; choose one of {', '.join(ARCHITECTURES)}")
    elif scheme == "timm":
        import timm

        if not timm.is_model(name):
            raise ModelLoadError(f"{spec}: timm has no model {name!r}; see timm.list_models()")
    elif scheme == "torchvision":
        import torchvision

        if name not in torchvision.models.list_models():
            raise ModelLoadError(f"{spec}: torchvision has no model {name!r}; see torchvision.models.list_models()")
    elif scheme == "path":
        if not Path(spec).expanduser().exists():
            raise ModelLoadError(f"{spec}: no checkpoint at this path")
    elif scheme not in ("hf",):
        raise ModelLoadError(f"unknown model spec {spec!r}: use zoo:NAME, timm:NAME, torchvision:NAME, seelike:vit|resnet|mixer or a checkpoint path")


def validate_study(steps: Sequence[StudyStep], settings: StudySettings, load: bool = True) -> ModelPool | None:
    """Check everything a study needs before its first step: settings, every model spec, and (when ``load``)
    the data split's size and every model, loaded once into the returned pool. Raises one
    :class:`~seelike.errors.SeelikeError` naming every problem found."""
    settings.validate()
    check_unique(steps)
    specs = list(dict.fromkeys(spec for step in steps if not step.skip for spec in step.specs))
    problems = []
    for spec in specs:
        try:
            check_spec(spec)
        except SeelikeError as error:
            problems.append(str(error))
    if problems:
        raise ModelLoadError("invalid model specs:\n  " + "\n  ".join(problems))
    if not load:
        return None
    from seelike.data import load_dataset

    dataset = load_dataset(settings.data, split=settings.split)
    if settings.n > len(dataset):
        raise InvalidInputError(f"--n {settings.n} is more than the {len(dataset)} images of {settings.data} ({settings.split} split); use --n {len(dataset)} or less")
    pool = ModelPool(settings.device, unique_names(specs))
    for spec in specs:
        pool.get(spec)
    unusable = {spec: reason for spec, reason in pool.missing.items() if "not shipped in this install" not in reason}
    if unusable:
        raise ModelLoadError("models that cannot be loaded:\n  " + "\n  ".join(f"{spec}: {reason}" for spec, reason in unusable.items()))
    return pool


def check_unique(steps: Sequence[StudyStep]) -> None:
    names = [step.name for step in steps]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise InvalidInputError(f"study steps must have distinct names; repeated: {duplicates}")
