"""The whole paper as one run over a set of models (issue: `seelike study`).

A study is a list of :class:`StudyStep` objects, each a small analysis with a name, the
research question it answers (RQ1-RQ5, PAPER.md), the models it needs, ``run`` returning a
:class:`~seelike.results.Result`, and ``section`` turning that result into figures, numbers and
findings rows. Every result is cached under ``OUT/cache`` keyed by everything that changes it
(model specs and a hash of their weights, preprocessing, data spec, n, batch size, seed, the
step's own settings, seelike's version), so a re-run is nearly instant and an interrupted study
resumes where it stopped. A step that fails is reported in its section; the others go on.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import platform
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from seelike.errors import InvalidInputError, ModelLoadError, SeelikeError
from seelike.models.model import Model, unique_names
from seelike.results import Result, atomic_write_text, load_result, seelike_version

log = logging.getLogger(__name__)

QUESTIONS = {
    "RQ1": "Are ViT representations more uniform across layers than CNN ones?",
    "RQ2": "How do self-attention and skip connections shape information flow?",
    "RQ3": "Do ViTs keep spatial information at the top, and how does the classifier (CLS vs GAP) change that?",
    "RQ4": "How does data scale change intermediate representations?",
    "RQ5": "What follows for other architectures (MLP-Mixer)?",
}

Verdict = Literal["held", "not held", "not measured"]


@dataclass(frozen=True)
class Finding:
    """One row of a findings table: the paper's claim, what we measured, and the verdict at this scale."""

    claim: str
    measured: str
    verdict: Verdict
    baseline: str = ""


@dataclass
class Section:
    """What a step contributes to the report."""

    figures: list[Path] = field(default_factory=list)
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


@dataclass(frozen=True)
class StudyStep:
    """One analysis of a study: ``run(models, dataset, settings) -> Result``, ``section(result, figures_dir) -> Section``."""

    name: str
    question: str
    title: str
    models: tuple[str, ...]
    run: Callable[[dict[str, Model], Any, StudySettings], Result] = field(repr=False, compare=False)
    section: Callable[[Result, Path], Section] = field(repr=False, compare=False)
    params: dict[str, Any] = field(default_factory=dict)
    optional_models: bool = False  # run with the models that exist when some are not shipped
    required_models: tuple[str, ...] = ()  # with optional_models: the ones it still cannot run without


@dataclass
class StepOutcome:
    step: StudyStep
    status: Literal["ok", "cached", "error", "skipped"]
    seconds: float = 0.0
    section: Section | None = None
    error: str = ""
    cache_dir: Path | None = None


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
    package = Path(__file__).parent
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(path.relative_to(package).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def cache_key(step: StudyStep, models: Sequence[Model], settings: StudySettings) -> str:
    """A hash of everything that changes a step's numbers (a stale cache is a wrong number)."""
    document = {
        "code": code_fingerprint(),
        "step": step.name,
        "params": step.params,
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
) -> list[StepOutcome]:
    """Run (or load from cache) every step, then write ``results.json`` and ``report/index.html``."""
    from seelike.data import load_dataset
    from seelike.report import write_report

    out = Path(out)
    figures_dir = out / "report" / "figures"
    figures_dir.mkdir(parents=True, exist_ok=True)
    pool = ModelPool(settings.device, unique_names([spec for step in steps for spec in step.models]))
    dataset = None
    outcomes: list[StepOutcome] = []
    study_started = time.perf_counter()
    for index, step in enumerate(steps):
        started = time.perf_counter()
        loaded = {spec: pool.get(spec) for spec in step.models}
        available = {spec: model for spec, model in loaded.items() if model is not None}
        absent = [spec for spec, model in loaded.items() if model is None]
        if absent and (not step.optional_models or not available or set(absent) & set(step.required_models)):
            reasons = "; ".join(f"{spec}: {pool.missing[spec]}" for spec in absent)
            outcome = StepOutcome(step, "skipped", error=f"models not available: {reasons}")
        else:
            try:
                key = cache_key(step, list(available.values()), settings)
                cache_dir = out / "cache" / f"{step.name}-{key}"
                if (cache_dir / "result.json").exists():
                    result, status = load_result(cache_dir), "cached"
                else:
                    if dataset is None:
                        dataset = load_dataset(settings.data, split=settings.split)
                    result, status = step.run(available, dataset, settings), "ok"
                    result.save(cache_dir)
                section = step.section(result, figures_dir)
                if absent:
                    section.text += f" Not shipped here, so left out: {', '.join(absent)}."
                outcome = StepOutcome(step, status, section=section, cache_dir=cache_dir)
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
    total = round(time.perf_counter() - study_started, 1)
    write_results_json(outcomes, settings, out / "results.json", total)
    write_report(outcomes, settings, out / "report", environment(settings, total))
    return outcomes


def environment(settings: StudySettings, seconds: float) -> dict[str, Any]:
    import timm
    import torchvision

    return {
        "seelike": seelike_version(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "timm": timm.__version__,
        "numpy": np.__version__,
        "device": settings.device if settings.device != "cpu" else f"cpu ({platform.machine()}, {torch.get_num_threads()} threads)",
        "platform": platform.platform(),
        "total_seconds": seconds,
        "finished": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


def write_results_json(outcomes: Sequence[StepOutcome], settings: StudySettings, path: Path, seconds: float) -> None:
    """Every number of the study in one file, beside the environment and the time per step."""
    document = {
        "settings": asdict(settings),
        "environment": environment(settings, seconds),
        "steps": {
            outcome.step.name: {
                "question": outcome.step.question,
                "title": outcome.step.title,
                "models": list(outcome.step.models),
                "status": outcome.status,
                "seconds": outcome.seconds,
                "error": outcome.error,
                "numbers": outcome.section.numbers if outcome.section else {},
                "findings": [asdict(f) for f in outcome.section.findings] if outcome.section else [],
                "cache": str(outcome.cache_dir) if outcome.cache_dir else None,
            }
            for outcome in outcomes
        },
    }
    atomic_write_text(path, json.dumps(document, indent=2, default=_json_default))


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.generic,)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def verdict(condition: bool | None, *measured: Any) -> Verdict:
    """held / not held, or "not measured" when ``condition`` is None or any ``measured`` value is NaN or
    infinite (a comparison with NaN is False, which would pass for "not held")."""
    values = np.concatenate([np.ravel(np.asarray(value, dtype=float)) for value in measured]) if measured else np.zeros(0)
    if condition is None or not np.all(np.isfinite(values)):
        return "not measured"
    return "held" if condition else "not held"


def check_unique(steps: Sequence[StudyStep]) -> None:
    names = [step.name for step in steps]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise InvalidInputError(f"study steps must have distinct names; repeated: {duplicates}")
