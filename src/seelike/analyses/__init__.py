"""One module per question of the paper; each streams activations into an accumulator."""

from __future__ import annotations

import time
from typing import Any, Protocol

from seelike.capture import capture_batches
from seelike.data import ImageDataset, iterate_batches
from seelike.models.model import Layer, Model
from seelike.results import Result


class LayerAccumulator(Protocol):
    """An analysis that reads ``layers`` of one model batch by batch (DESIGN.md: Accumulator)."""

    layers: list[Layer]

    def update(self, activations: Any) -> None: ...

    def result(self, metadata: Any = None) -> Result: ...


def run_metadata(model: Model, dataset: ImageDataset, batch_size: int, seed: int, started: float) -> dict[str, Any]:
    """What every streamed result records about its run besides its own settings."""
    return {
        "model_fingerprint": model.fingerprint(),
        "data": dataset.spec,
        "split": dataset.split,
        "batch_size": batch_size,
        "seed": seed,
        "seconds": round(time.perf_counter() - started, 2),
    }


def stream(accumulator: LayerAccumulator, model: Model, dataset: ImageDataset, n: int | None, batch_size: int,
           seed: int, progress: bool | None = None) -> Result:
    """Feed ``n`` shuffled images of ``dataset`` (default: all) through ``model`` into ``accumulator``, one pass."""
    n = len(dataset) if n is None else n
    started = time.perf_counter()
    batches = iterate_batches(dataset, batch_size, n=n, shuffle=True, seed=seed)
    for activations, _, _ in capture_batches([model], [accumulator.layers], batches, progress=progress, total=n):
        accumulator.update(activations)
    return accumulator.result(run_metadata(model, dataset, batch_size, seed, started))
