"""Layer-similarity heatmaps within and across models (paper Fig 1, 2, 13; PAPER.md §1).

Every model sees each batch once; all layers of all models go into one
:class:`~seelike.similarity.MinibatchCKA`, so k models cost k forward passes per batch (pairwise
tools need k(k−1)) and every within- and cross-model block comes out of the same run.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from seelike.capture import capture_batches
from seelike.data import ImageDataset, iterate_batches
from seelike.errors import InvalidInputError
from seelike.models.model import Model
from seelike.similarity import CKAResult, MinibatchCKA


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
    n = len(dataset) if n is None else n
    selected = [model.select(layers) for model in models]
    started = time.perf_counter()
    results = []
    for repeat in range(repeats):
        batches = iterate_batches(dataset, batch_size, n=n, shuffle=True, seed=seed, reshuffle=repeat)
        accumulator = MinibatchCKA()
        for activations, _, _ in capture_batches(models, selected, batches, progress=progress, total=n):
            accumulator.update(activations)
        results.append(accumulator.result())
    metadata = {
        "models": {model.name: model.spec for model in models},
        "model_fingerprints": {model.name: model.fingerprint() for model in models},
        "data": dataset.spec,
        "split": dataset.split,
        "batch_size": batch_size,
        "layers": layers or "blocks",
        "repeats": repeats,
        "seed": seed,
        "seconds": round(time.perf_counter() - started, 2),
    }
    first = results[0]
    if repeats == 1:
        return CKAResult(arrays=dict(first.arrays), metadata={**first.metadata, **metadata})
    stack = np.stack([result.matrix for result in results])
    arrays = {
        "cka": stack.mean(axis=0),
        "standard_error": np.mean([result["standard_error"] for result in results], axis=0),
        "repeat_spread": stack.std(axis=0, ddof=1) / np.sqrt(repeats),
        "hsic": np.mean([result["hsic"] for result in results], axis=0),
        "cka_per_repeat": stack,
    }
    return CKAResult(arrays=arrays, metadata={**first.metadata, **metadata, "n": n})
