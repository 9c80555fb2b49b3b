"""The analysis kinds a study step can name: each one call into :mod:`seelike.analyses`, bounded by the study's n.

Single-pass analyses register a *planner* (:func:`planner`) that gives their accumulators instead of running
them: the engine puts the accumulators of every such step into one pass of :func:`seelike.driver.run`, so
each model forwards each of the study's images once for all of them (ERF's gradient pass runs on its own;
the probes' training passes run when their step is planned, and their scoring joins the shared pass).

A runner takes the step's models by role, the study's data set and settings and the step's
``params``, and returns one :class:`~seelike.results.Result`; per-model analyses return a
:class:`~seelike.results.ResultBundle` keyed by role. Every runner reads at most ``settings.n``
images of each split it touches (:func:`images_needed` says how many, for ``--plan``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from seelike.analyses.base import Accumulator
from seelike.checkpoints import PassCheckpoint
from seelike.driver import run
from seelike.errors import InvalidInputError
from seelike.models.model import Model
from seelike.results import Result, ResultBundle
from seelike.study.engine import StudySettings, StudyStep

log = logging.getLogger(__name__)
Runner = Callable[..., Result]
ANALYSES: dict[str, Runner] = {}


@dataclass(frozen=True)
class Planned:
    """A step's share of a pass: its accumulators, and how their results make the step's result."""

    accumulators: list[Accumulator]
    finish: Callable[[list[Result]], Result]


Planner = Callable[..., Planned]
#: analyses that read the study's data in one forward pass: the engine runs all of them in a single pass
PLANNERS: dict[str, Planner] = {}

ERF_IMAGES = 32  # the paper averages ERFs over 32 images
ERF_BATCH = 8  # in batches that do not depend on the number of ranks (up to 4 ranks share them; same numbers on 1)
PROBE_TRAIN_IMAGES = 10_000  # full-data probes train on at most this many training images (and at most n)
TOKEN_PROBE_BYTES = 4 * 2**30  # per-token probe statistics a study step holds per model at most (ViT-B/16 at 224 px: ~21 GiB)


def analysis(name: str) -> Callable[[Runner], Runner]:
    """Register a runner under ``name`` (a step's ``analysis``)."""

    def register(runner: Runner) -> Runner:
        ANALYSES[name] = runner
        return runner

    return register


def planner(name: str) -> Callable[[Planner], Planner]:
    """Register ``name`` as a single-pass analysis: a planner gives its accumulators, the runner is derived."""

    def register(plan: Planner) -> Planner:
        PLANNERS[name] = plan

        def run_alone(models: Mapping[str, Model], dataset: Any, settings: StudySettings, **params: Any) -> Result:
            planned = plan(models, settings, **params)
            return planned.finish(run(planned.accumulators, dataset, settings.n, settings.batch_size, settings.seed))

        ANALYSES[name] = run_alone
        return plan

    return register


def planning() -> AbstractContextManager[None]:
    """Around the planning of a study's steps: what their training passes share (the probes' drawn few-shot
    images, forwarded once per model for every probe step that draws them)."""
    from seelike.analyses.probes import sharing_drawn_features

    return sharing_drawn_features()


def plan_step(step: StudyStep, models: Mapping[str, Model], settings: StudySettings) -> Planned | None:
    """``step``'s accumulators for the shared pass, or None when its analysis needs passes of its own."""
    if step.analysis not in PLANNERS:
        return None
    return PLANNERS[step.analysis](models, settings, **step.params)


def run_shared_pass(plans: Sequence[Planned], dataset: Any, settings: StudySettings,
                    checkpoint: PassCheckpoint | None = None) -> list[Result]:
    """Every plan's accumulators in one pass over the study's images (each model forwards each image once);
    ``checkpoint``: where the pass keeps its state, to resume after an interruption."""
    accumulators = [accumulator for planned in plans for accumulator in planned.accumulators]
    results = run(accumulators, dataset, settings.n, settings.batch_size, settings.seed, checkpoint=checkpoint)
    finished, start = [], 0
    for planned in plans:
        finished.append(planned.finish(results[start:start + len(planned.accumulators)]))
        start += len(planned.accumulators)
    return finished


def run_analysis(step: StudyStep, models: Mapping[str, Model], dataset: Any, settings: StudySettings) -> Result:
    """Run ``step``'s analysis on the models that are available (by role)."""
    if step.analysis not in ANALYSES:
        raise InvalidInputError(f"step {step.name}: unknown analysis {step.analysis!r}; known: {', '.join(sorted(ANALYSES))}")
    return ANALYSES[step.analysis](models, dataset, settings, **step.params)


def images_needed(step: StudyStep, settings: StudySettings) -> str:
    """What the step reads, in words, for ``--plan``."""
    if step.analysis == "receptive_field":
        return f"{min(ERF_IMAGES, settings.n)} test images"
    if step.analysis == "probes" and step.params.get("full_data", False):
        return f"{min(PROBE_TRAIN_IMAGES, settings.n)} training + {settings.n} test images"
    if step.analysis == "probes":
        return f"10 shots per class (x2 for lambda) x {step.params.get('samples', 5)} samples + {settings.n} test images"
    return f"{settings.n} {settings.split} images"


def _per_model(models: Mapping[str, Model], analyse: Callable[[Model], Result]) -> ResultBundle:
    return ResultBundle.of({role: analyse(model) for role, model in models.items()})


def _distinct(models: Mapping[str, Model]) -> list[Model]:
    return list({id(m): m for m in models.values()}.values())


def _bundle(roles: Sequence[str]) -> Callable[[list[Result]], Result]:
    return lambda results: ResultBundle.of(dict(zip(roles, results)))


@planner("cka")
def cka(models: Mapping[str, Model], settings: StudySettings, layers: str = "blocks") -> Planned:
    from seelike.analyses.layer_similarity import LayerSimilarity

    return Planned([LayerSimilarity(_distinct(models), layers)], lambda results: results[0])


@planner("attention_distance")
def attention_distance(models: Mapping[str, Model], settings: StudySettings) -> Planned:
    from seelike.analyses.attention_distance import AttentionDistance

    return Planned([AttentionDistance(m) for m in models.values()], _bundle(list(models)))


@analysis("receptive_field")
def receptive_field(models: Mapping[str, Model], dataset: Any, settings: StudySettings, channels: str = "exact",
                    patch_size: int | None = None, exact_limit: int | None = None) -> Result:
    """ERFs of every model with one channel averaging (``auto``: exact when every model has at most
    ``exact_limit`` channels in its layers), the patch embedding first, and the mass outside the
    ``patch_size`` cell (default: the first ViT's patch size, so CNNs are read on the same grid)."""
    from seelike.analyses.receptive_field import EXACT_LIMIT, effective_receptive_fields, resolve_channel_average

    mode = resolve_channel_average(list(models.values()), channels, exact_limit=exact_limit or EXACT_LIMIT)
    if patch_size is None:
        patch_size = next((m.token_layout.patch_size for m in models.values() if m.token_layout is not None), None)
    n = min(ERF_IMAGES, settings.n)
    return _per_model(models, lambda m: effective_receptive_fields(m, dataset, n=n, batch_size=min(ERF_BATCH, n), channels=mode, seed=settings.seed,
                                                                    embedding=True, patch_size=patch_size))


@planner("skip_norms")
def skip_norms(models: Mapping[str, Model], settings: StudySettings) -> Planned:
    from seelike.analyses.skip_norms import SkipNorms

    return Planned([SkipNorms(m) for m in models.values()], _bundle(list(models)))


@planner("head_similarity")
def head_similarity(models: Mapping[str, Model], settings: StudySettings, cnn: str = "resnet") -> Planned:
    """Heads of each ViT role against the CNN role (the random-init ViT gives the chance level)."""
    from seelike.analyses.head_similarity import HeadSimilarity

    roles = [role for role in models if role != cnn]
    return Planned([HeadSimilarity(models[role], models[cnn]) for role in roles], _bundle(roles))


@planner("localization")
def localization(models: Mapping[str, Model], settings: StudySettings) -> Planned:
    from seelike.analyses.localization import Localization

    return Planned([Localization(m) for m in models.values()], _bundle(list(models)))


@planner("probes")
def probes(models: Mapping[str, Model], settings: StudySettings, full_data: bool = False, readouts: str = "gap",
           shots: int = 10, samples: int = 5) -> Planned:
    """Ridge probes: full-data (on min(10,000, n) training images) and/or few-shot, scored on the study's n test images.

    The training phase (few-shot draws, full-data fits: passes over training images) runs here, when the
    step is planned; the scoring joins the pass over the study's test images."""
    from seelike.analyses.probes import check_test_set, fit_probes
    from seelike.data import check_disjoint, load_dataset

    train_set, test_set = load_dataset(settings.data, split="train"), load_dataset(settings.data, split=settings.split)
    check_disjoint(train_set, test_set)  # never test on images the probe was fit on
    check_test_set(train_set, test_set, settings.n)
    n_train = min(PROBE_TRAIN_IMAGES, settings.n, len(train_set)) if full_data else 0
    fitted = {role: fit_probes(m, train_set, n_train=n_train, batch_size=settings.batch_size, readouts=_affordable_readouts(m, readouts) if n_train else readouts,
                               shots=shots or None, samples=samples, seed=settings.seed) for role, m in models.items()}
    scorers = {role: fit.scorer() for role, fit in fitted.items()}
    return Planned(list(scorers.values()),
                   lambda results: ResultBundle.of({role: fitted[role].result(scorers[role], test_set) for role in fitted}))


def _affordable_readouts(model: Model, readouts: str) -> list[str]:
    """``readouts`` without the per-token probes when their statistics (a width² Gram and its eigenvectors, float64,
    per token or feature-map position and block) exceed :data:`TOKEN_PROBE_BYTES`: at ViT-B/16 and 224 px they need ~21 GiB."""
    from seelike.analyses.probes import resolve_readouts
    from seelike.capture import output_shapes

    chosen = resolve_readouts(model, readouts)
    if "tokens" not in chosen:
        return chosen
    shapes = output_shapes(model, model.block_layers())
    positions_and_width = [(s[1], s[2]) if len(s) == 3 else (s[2] * s[3], s[1]) for s in shapes.values() if len(s) in (3, 4)]
    needed = sum(16 * positions * width**2 for positions, width in positions_and_width)
    if needed <= TOKEN_PROBE_BYTES:
        return chosen
    log.warning("%s: per-token probes left out (their statistics need %.1f GiB, over the study's %.0f GiB); the pooled readouts are probed",
                model.name, needed / 2**30, TOKEN_PROBE_BYTES / 2**30)
    return [readout for readout in chosen if readout != "tokens"]


@planner("data_scale")
def data_scale(models: Mapping[str, Model], settings: StudySettings, reference: str = "vit", seed_twin: str = "vit_seed1") -> Planned:
    """Per-block CKA of every other role against ``reference``, beside the ``seed_twin`` baseline."""
    from seelike.analyses.data_scale import check_data_scale_models, data_scale_from_cka
    from seelike.analyses.layer_similarity import LayerSimilarity

    others = [model for role, model in models.items() if role not in (reference, seed_twin)]
    unique = check_data_scale_models(models[reference], others, models[seed_twin])
    return Planned([LayerSimilarity(unique, "blocks")],
                   lambda results: data_scale_from_cka(results[0], models[reference], others, models[seed_twin]))
