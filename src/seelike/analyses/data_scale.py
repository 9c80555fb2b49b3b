"""How much data do the blocks need? Per-block CKA against the 100%-data model (paper Fig 12; docs/methods.md §7).

All models — the reference (trained on 100% of the data), the reduced-data models and a second-seed
100% model (the seed baseline) — go through :func:`~seelike.analyses.layer_similarity.layer_similarity`
in one pass; for each other model we keep block i against block i of the reference (the diagonal of
their cross block). The models must have as many blocks as the reference (same architecture, other
data); a different count is an error — no mapping by relative depth is attempted, as block i of a
shallower model is not "the same block".

A block counts as *changed by data scale* only where its CKA lies below the seed baseline's by more
than two combined standard errors: cka < baseline − 2·√(se² + se_baseline²), with the standard errors
of the CKA result (the delta method over batches; with repeats, its mean over repeats).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from seelike.analyses.layer_similarity import layer_similarity
from seelike.data import ImageDataset
from seelike.errors import InvalidInputError
from seelike.models.model import Model
from seelike.results import Result
from seelike.similarity import CKAResult, split_name
from seelike.validation import check_same_architecture

__all__ = ["DataScaleResult", "SIGNIFICANCE", "compare_to_reference", "data_scale", "training_fraction"]

SIGNIFICANCE = 2.0  # combined standard errors a block's CKA must fall below the seed baseline


@dataclass(frozen=True)
class DataScaleResult(Result):
    """Per-block CKA of reduced-data models against the 100% model (Fig 12).

    Arrays: ``per_block_cka``, ``standard_error``, ``changed`` (bool), ``threshold`` [models, blocks];
    ``baseline``, ``baseline_standard_error``, ``blocks`` [blocks]. Metadata: reference, models,
    baseline (names), model specs, fractions, significance, n, data, seed.
    """

    kind: ClassVar[str] = "data_scale"

    @property
    def models(self) -> list[str]:
        return list(self.metadata["models"])

    @property
    def fractions(self) -> dict[str, float | None]:
        return dict(self.metadata.get("fractions", {}))

    def changed_blocks(self, model: str) -> list[int]:
        """Blocks of ``model`` whose CKA falls significantly below the seed baseline."""
        if model not in self.models:
            raise InvalidInputError(f"no model {model!r} in this data-scale result; models: {', '.join(self.models)}")
        return [int(b) for b in np.flatnonzero(self.arrays["changed"][self.models.index(model)])]


def compare_to_reference(result: CKAResult, reference: str, models: Sequence[str], baseline: str,
                         significance: float = SIGNIFICANCE) -> dict[str, np.ndarray]:
    """Block-i-vs-block-i CKA of ``models`` and ``baseline`` against ``reference`` in ``result``, and the
    changed rule: cka < baseline − significance·√(se² + se_baseline²) (Fig 12). Pure arithmetic."""
    reference_blocks = len(result.layer_names(reference))
    for name in [*models, baseline]:
        count = len(result.layer_names(name))
        if count != reference_blocks:
            raise InvalidInputError(
                f"{name} has {count} blocks but the reference {reference} has {reference_blocks}; data-scale CKA "
                "compares block i with block i, so compare models of the same architecture"
            )
    def indices(model: str) -> list[int]:
        return [i for i, full in enumerate(result.names) if split_name(full)[0] == model]

    rows = indices(reference)

    def diagonal(name: str) -> tuple[np.ndarray, np.ndarray]:
        columns = indices(name)
        return result.matrix[rows, columns], result.arrays["standard_error"][rows, columns]

    baseline_cka, baseline_se = diagonal(baseline)
    pairs = [diagonal(name) for name in models]
    cka = np.array([p[0] for p in pairs]).reshape(len(models), reference_blocks)
    se = np.array([p[1] for p in pairs]).reshape(len(models), reference_blocks)
    if np.isnan(se).any() or np.isnan(baseline_se).any():
        warnings.warn("some CKA standard errors are NaN (one batch only?): those blocks are never counted as changed; "
                      "use more images or a smaller batch size", RuntimeWarning, stacklevel=2)
    threshold = baseline_cka[None, :] - significance * np.sqrt(se**2 + baseline_se[None, :] ** 2)
    with np.errstate(invalid="ignore"):
        changed = cka < threshold
    return {
        "per_block_cka": cka,
        "standard_error": se,
        "baseline": baseline_cka,
        "baseline_standard_error": baseline_se,
        "threshold": threshold,
        "changed": changed,
    }


def training_fraction(model: Model) -> float | None:
    """The share of the training set a zoo model saw (from its recipe); None when unknown."""
    scheme, _, name = model.spec.partition(":")
    if scheme != "zoo":
        return None
    from seelike.models.zoo import RECIPES

    recipe = RECIPES.get(name.partition("?")[0])
    return float(recipe[0].fraction) if recipe else None


def check_data_scale_models(reference: Model, others: Sequence[Model], baseline: Model) -> list[Model]:
    """The distinct models of a data-scale comparison, after checking they can be compared block by block."""
    if not others:
        raise InvalidInputError("give at least one reduced-data model to compare with the reference")
    for model in [*others, baseline]:
        if model.num_blocks != reference.num_blocks:
            raise InvalidInputError(
                f"{model.name} has {model.num_blocks} blocks but the reference {reference.name} has {reference.num_blocks}; "
                "data-scale CKA compares block i with block i, so compare models of the same architecture"
            )
    check_same_architecture(reference, [*others, baseline])  # a ResNet is no data-scale variant of a ViT
    unique: dict[str, Model] = {}
    for model in [reference, *others, baseline]:
        if unique.setdefault(model.name, model) is not model:
            raise InvalidInputError(f"two different models are both named {model.name!r}; give each its own label (model.label)")
    return list(unique.values())


def data_scale_from_cka(
    cka: CKAResult,
    reference: Model,
    others: Sequence[Model],
    baseline: Model,
    fractions: Mapping[str, float | None] | None = None,
    significance: float = SIGNIFICANCE,
) -> DataScaleResult:
    """The Fig 12 comparison read from a CKA result over the block outputs of every model (one pass, pure)."""
    unique = check_data_scale_models(reference, others, baseline)
    names = [model.name for model in others]
    arrays = compare_to_reference(cka, reference.name, names, baseline.name, significance)
    arrays["blocks"] = np.array([layer.block for layer in reference.block_layers()])
    fractions = dict(fractions or {})
    metadata: dict[str, Any] = {
        "reference": reference.name,
        "models": names,
        "baseline": baseline.name,
        "model_specs": {model.name: model.spec for model in unique},
        "model_fingerprints": {model.name: model.fingerprint() for model in unique},
        "fractions": {model.name: fractions.get(model.name, training_fraction(model)) for model in unique},
        "num_blocks": reference.num_blocks,
        "layers": reference.layer_names(),
        "significance": significance,
        "rule": f"changed where cka < baseline - {significance:g} * sqrt(se^2 + se_baseline^2)",
        "n": cka.metadata["n"],
        "num_batches": cka.metadata.get("num_batches"),
        "data": cka.metadata.get("data"),
        "split": cka.metadata.get("split"),
        "batch_size": cka.metadata.get("batch_size"),
        "repeats": cka.metadata.get("repeats", 1),
        "seed": cka.metadata.get("seed"),
        "seconds": cka.metadata.get("seconds"),
    }
    return DataScaleResult(arrays=arrays, metadata=metadata)


def data_scale(
    reference: Model,
    others: Sequence[Model],
    baseline: Model,
    dataset: ImageDataset,
    n: int | None = None,
    batch_size: int = 256,
    repeats: int = 1,
    seed: int = 0,
    fractions: Mapping[str, float | None] | None = None,
    significance: float = SIGNIFICANCE,
    progress: bool | None = None,
) -> DataScaleResult:
    """Per-block CKA of ``others`` (reduced-data models) and ``baseline`` (a second seed) against
    ``reference`` (100% data) on ``n`` images of ``dataset``, all in one pass (Fig 12).

    ``fractions`` (by model name) label the lines; by default they come from the zoo recipes.
    The same model object may appear more than once (it is run once).
    """
    unique = check_data_scale_models(reference, others, baseline)
    cka = layer_similarity(unique, dataset, n=n, batch_size=batch_size, layers="blocks", repeats=repeats, seed=seed, progress=progress)
    return data_scale_from_cka(cka, reference, others, baseline, fractions, significance)
