"""Layer-similarity heatmaps within and across models (paper Fig 1, 2, 13; docs/methods.md §1).

Every model sees each batch once; all layers of all models go into one
:class:`~seelike.similarity.MinibatchCKA`, so k models cost k forward passes per batch (pairwise
tools need k(k−1)) and every within- and cross-model block comes out of the same run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import ClassVar

import numpy as np
from torch import Tensor

from seelike.analyses.base import Accumulator, Batch, activation
from seelike.data import ImageDataset
from seelike.driver import run
from seelike.errors import InvalidInputError
from seelike.models.model import Layer, Model
from seelike.similarity import CKAResult, MinibatchCKA

__all__ = ["LayerSimilarity", "layer_similarity"]


class LayerSimilarity(Accumulator):
    """Minibatch CKA between the chosen layers of every model (one :class:`MinibatchCKA` as child state).

    Each activation is turned into its U-centred Gram as its hook fires (:meth:`reduce`), so memory holds
    the m Grams of a batch, never the m activations.

    ``layers`` per model: ``None``/``"blocks"`` (block outputs), ``"all"`` (every sub-layer) or
    names / globs (:meth:`Model.select`). Rows and columns are ``"model/layer"``, models in the
    order given, layers in depth order.
    """

    kind: ClassVar[str] = "cka"

    def __init__(self, models: Sequence[Model], layers: str | Sequence[str] | None = None, kernel: str = "linear",
                 sigma: float | None = None) -> None:
        super().__init__(list(models))
        self.chosen = {model.name: model.select(layers) for model in self.models}
        self.layer_spec = layers or "blocks"
        names = [f"{name}/{layer.name}" for name, chosen in self.chosen.items() for layer in chosen]
        self.cka = MinibatchCKA(kernel=kernel, sigma=sigma, names=names)
        self.add_child("cka", self.cka)

    def layers(self) -> dict[str, list[Layer]]:
        return dict(self.chosen)

    def reduce(self, key: str, tensor: Tensor) -> Tensor:
        return self.cka.centred_row(tensor, key)  # the activation is dropped; only its U-centred Gram is kept

    def reduction_key(self, key: str) -> tuple[str, str, float | None, str]:
        return ("centred_row", self.cka.kernel, self.cka.sigma, key)  # the same Gram for every CKA of this kernel

    def update(self, activations: Mapping[str, Tensor], batch: Batch) -> None:
        self.cka.update_rows({f"{model.name}/{layer.name}": activation(activations, model, layer)
                              for model in self.models for layer in self.chosen[model.name]})
        self.count(batch)

    def compute(self) -> CKAResult:
        """The CKA result; its metadata also gives each row's block and role (``layer_blocks``, ``layer_roles``,
        keyed by row name), so figures can label sub-layers ``3.attn`` rather than by index."""
        chosen = {f"{model}/{layer.name}": layer for model, layers in self.chosen.items() for layer in layers}
        return self.cka.result({"layers": self.layer_spec, "layer_blocks": {key: layer.block for key, layer in chosen.items()},
                                "layer_roles": {key: layer.role for key, layer in chosen.items()}})


def layer_similarity(
    models: Sequence[Model],
    dataset: ImageDataset,
    n: int | None = None,
    batch_size: int = 256,
    layers: str | Sequence[str] | None = None,
    repeats: int = 1,
    seed: int = 0,
    progress: bool | None = None,
) -> CKAResult:
    """Minibatch CKA between every analysis layer of every model on ``n`` images of ``dataset``.

    ``layers`` selects layers per model (``None``/``"blocks"``: block outputs, ``"all"``: every
    sub-layer, or globs). ``repeats`` > 1 reshuffles the same ``n`` images into other batches and
    averages the CKA matrices over repeats, as the paper does (each repeat costs one more pass over
    the data). The standard error stays the delta-method one (mean over repeats): the spread across
    repeats only measures how the batches were split, not which images were drawn, and is far smaller.
    """
    if repeats < 1:
        raise InvalidInputError(f"repeats must be >= 1, got {repeats}")
    results = [run([LayerSimilarity(models, layers)], dataset, n, batch_size, seed, reshuffle=repeat, progress=progress)[0]
               for repeat in range(repeats)]
    first = results[0]
    if repeats == 1:
        return first
    stack = np.stack([result.matrix for result in results])
    arrays = {
        "cka": stack.mean(axis=0),
        "standard_error": np.mean([result["standard_error"] for result in results], axis=0),
        "repeat_spread": stack.std(axis=0, ddof=1) / np.sqrt(repeats),
        "hsic": np.mean([result["hsic"] for result in results], axis=0),
        "cka_per_repeat": stack,
    }
    seconds = round(sum(result.metadata["seconds"] for result in results), 2)
    return CKAResult(arrays=arrays, metadata={**first.metadata, "repeats": repeats, "seconds": seconds})
