"""The analysis kinds a study step can name: each one call into :mod:`seelike.analyses`, bounded by the study's n.

A runner takes the step's models by role, the study's data set and settings and the step's
``params``, and returns one :class:`~seelike.results.Result`; per-model analyses return a
:class:`~seelike.results.ResultBundle` keyed by role. Every runner reads at most ``settings.n``
images of each split it touches (:func:`images_needed` says how many, for ``--plan``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from seelike.errors import InvalidInputError
from seelike.models.model import Model
from seelike.results import Result, ResultBundle
from seelike.study.engine import StudySettings, StudyStep

Runner = Callable[..., Result]
ANALYSES: dict[str, Runner] = {}

ERF_IMAGES = 32  # the paper averages ERFs over 32 images
PROBE_TRAIN_IMAGES = 10_000  # full-data probes train on at most this many training images (and at most n)


def analysis(name: str) -> Callable[[Runner], Runner]:
    """Register a runner under ``name`` (a step's ``analysis``)."""

    def register(runner: Runner) -> Runner:
        ANALYSES[name] = runner
        return runner

    return register


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


def _per_model(models: Mapping[str, Model], run: Callable[[Model], Result]) -> ResultBundle:
    return ResultBundle.of({role: run(model) for role, model in models.items()})


@analysis("cka")
def cka(models: Mapping[str, Model], dataset: Any, settings: StudySettings, layers: str = "blocks") -> Result:
    from seelike.analyses.layer_similarity import layer_similarity

    distinct = list({id(m): m for m in models.values()}.values())
    return layer_similarity(distinct, dataset, n=settings.n, batch_size=settings.batch_size, layers=layers, seed=settings.seed)


@analysis("attention_distance")
def attention_distance(models: Mapping[str, Model], dataset: Any, settings: StudySettings) -> Result:
    from seelike.analyses.attention_distance import attention_distances

    return _per_model(models, lambda m: attention_distances(m, dataset, n=settings.n, batch_size=settings.batch_size, seed=settings.seed))


@analysis("receptive_field")
def receptive_field(models: Mapping[str, Model], dataset: Any, settings: StudySettings, channels: str = "exact",
                    patch_size: int | None = None) -> Result:
    """ERFs of every model with one channel averaging, the patch embedding first, and the mass outside
    the ``patch_size`` cell (default: the first ViT's patch size, so CNNs are read on the same grid)."""
    from seelike.analyses.receptive_field import effective_receptive_fields, resolve_channel_average

    mode = resolve_channel_average(list(models.values()), channels)
    if patch_size is None:
        patch_size = next((m.token_layout.patch_size for m in models.values() if m.token_layout is not None), None)
    n = min(ERF_IMAGES, settings.n)
    return _per_model(models, lambda m: effective_receptive_fields(m, dataset, n=n, batch_size=n, channels=mode, seed=settings.seed,
                                                                    embedding=True, patch_size=patch_size))


@analysis("skip_norms")
def skip_norms(models: Mapping[str, Model], dataset: Any, settings: StudySettings) -> Result:
    from seelike.analyses.skip_norms import skip_norm_ratios

    return _per_model(models, lambda m: skip_norm_ratios(m, dataset, n=settings.n, batch_size=settings.batch_size, seed=settings.seed))


@analysis("head_similarity")
def head_similarity(models: Mapping[str, Model], dataset: Any, settings: StudySettings, cnn: str = "resnet") -> Result:
    """Heads of each ViT role against the CNN role (the random-init ViT gives the chance level)."""
    from seelike.analyses.head_similarity import head_similarity as compare

    return ResultBundle.of({role: compare(model, models[cnn], dataset, n=settings.n, batch_size=settings.batch_size, seed=settings.seed)
                            for role, model in models.items() if role != cnn})


@analysis("localization")
def localization(models: Mapping[str, Model], dataset: Any, settings: StudySettings) -> Result:
    from seelike.analyses.localization import spatial_localization

    return _per_model(models, lambda m: spatial_localization(m, dataset, n=settings.n, batch_size=settings.batch_size, seed=settings.seed))


@analysis("probes")
def probes(models: Mapping[str, Model], dataset: Any, settings: StudySettings, full_data: bool = False, readouts: str = "gap",
           shots: int = 10, samples: int = 5) -> Result:
    """Ridge probes: full-data (on min(10,000, n) training images) and/or few-shot, scored on n test images."""
    from seelike.analyses.probes import probe_layers
    from seelike.data import load_dataset

    train_set = load_dataset(settings.data, split="train")
    n_train = min(PROBE_TRAIN_IMAGES, settings.n, len(train_set)) if full_data else 0
    return _per_model(models, lambda m: probe_layers(m, train_set, dataset, n_train=n_train, n_test=settings.n, batch_size=settings.batch_size,
                                                     readouts=readouts, shots=shots or None, samples=samples, seed=settings.seed))


@analysis("data_scale")
def data_scale(models: Mapping[str, Model], dataset: Any, settings: StudySettings, reference: str = "vit",
               seed_twin: str = "vit_seed1") -> Result:
    """Per-block CKA of every other role against ``reference``, beside the ``seed_twin`` baseline."""
    from seelike.analyses.data_scale import data_scale as compare

    others = [model for role, model in models.items() if role not in (reference, seed_twin)]
    return compare(models[reference], others, models[seed_twin], dataset, n=settings.n, batch_size=settings.batch_size, seed=settings.seed)
