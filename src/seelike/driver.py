"""The one driver: stream each batch once through each model, for every analysis at once (DESIGN.md).

:func:`run` takes accumulators (:class:`~seelike.analyses.base.Accumulator`) that may read different
layers of different models; it captures, per model, the union of the layers they ask for, runs
each model once per batch and hands every accumulator what it reads. As each hook fires, every
accumulator that reads the layer reduces the tensor to what it keeps (:meth:`Accumulator.reduce`:
a Gram, per-head sums, per-token norms), so peak memory does not grow with the layers read. Command-line analyses
and the study both use it, so k analyses of one model cost one forward pass per batch, not k.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from seelike.analyses.base import Accumulator, Batch, RunInfo
from seelike.capture import Capture, ThroughputMeter
from seelike.checkpoints import PassCheckpoint
from seelike.data import BatchIterator, ImageDataset, fetch, iterate_batches
from seelike.distributed import RankFailedError, all_ranks_ok, rank_share, world
from seelike.errors import InvalidInputError
from seelike.models.model import Layer, Model
from seelike.results import Result

__all__ = ["PRECISIONS", "RunOptions", "feed", "models_and_layers", "run", "run_options"]


def models_and_layers(accumulators: Sequence[Accumulator]) -> tuple[list[Model], dict[str, list[Layer]]]:
    """The models the accumulators read (in first-use order) and, per model, the union of their layers in depth order."""
    models: dict[str, Model] = {}
    wanted: dict[str, set[str]] = {}
    for accumulator in accumulators:
        for model in accumulator.models:
            if models.setdefault(model.name, model) is not model:
                raise InvalidInputError(
                    f"two different models are both named {model.name!r}; give each model its own name (Model.label)"
                )
        for name, layers in accumulator.layers().items():
            if name not in models:
                raise InvalidInputError(f"{type(accumulator).__name__} asks for layers of {name!r}, which is not one of its models")
            wanted.setdefault(name, set()).update(layer.name for layer in layers)
    layers = {name: [layer for layer in models[name].layers if layer.name in wanted.get(name, set())] for name in models}
    return list(models.values()), layers


PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class RunOptions:
    """How passes run, whatever analysis asks for them: forward precision and data-loading workers."""

    precision: str = "fp32"
    workers: int = 0


_OPTIONS: ContextVar[RunOptions] = ContextVar("seelike_run_options", default=RunOptions())


@contextmanager
def run_options(precision: str = "fp32", workers: int = 0) -> Iterator[RunOptions]:
    """Within the block, every :func:`run` that is not told otherwise uses ``precision`` and ``workers``
    (how the command line's ``--precision`` and ``--workers`` reach every analysis)."""
    if precision not in PRECISIONS:
        raise InvalidInputError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise InvalidInputError(f"workers must be a whole number >= 0, got {workers!r}")
    token = _OPTIONS.set(RunOptions(precision, workers))
    try:
        yield _OPTIONS.get()
    finally:
        _OPTIONS.reset(token)


def feed(
    accumulators: Sequence[Accumulator],
    batches: Iterable[tuple[Tensor, Tensor, Tensor]],
    progress: bool | None = None,
    total: int | None = None,
    precision: str = "fp32",
    shared: bool = False,
    checkpoint: PassCheckpoint | None = None,
) -> None:
    """Stream ``batches`` (images, labels, indices) once through every model into every accumulator.

    In a distributed run (:mod:`seelike.distributed`) each rank streams its share of the batches and the
    accumulators' state is all-reduced at the end, so every rank holds the state of the whole pass (plus
    what earlier passes left in them, counted once: an accumulator may be fed several passes).
    ``precision``: "fp32", or "bf16" / "fp16" autocast for the forward passes; what the accumulators
    compute from the activations (Grams, sums) stays in float32 or float64. ``shared``: the batches are
    already this rank's share (a loader that skips the other ranks' batches itself). ``checkpoint``: save the
    accumulators' state as the pass goes and resume from it (:mod:`seelike.checkpoints`); removed when the pass ends.
    """
    if precision not in PRECISIONS:
        raise InvalidInputError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if not accumulators:
        raise InvalidInputError("nothing to run: give at least one analysis")
    grad = {accumulator.needs_grad for accumulator in accumulators}
    if len(grad) > 1:
        raise InvalidInputError("gradient analyses (ERF) run in passes of their own; run them apart from forward-only ones")
    grad_mode = grad.pop()
    rank, size = world()
    if size > 1 and hasattr(batches, "__len__") and len(batches) < size:  # type: ignore[arg-type]
        raise InvalidInputError(f"{len(batches)} batches cannot be shared by {size} ranks; use a smaller batch size or more images")  # type: ignore[arg-type]
    # state from earlier passes is already every rank's sum: set it aside so the all-reduce adds only this pass
    earlier = [accumulator.state_dict() for accumulator in accumulators] if size > 1 else []
    for accumulator in accumulators if size > 1 else []:
        accumulator.reset()
    done = checkpoint.restore(accumulators, precision) if checkpoint is not None else 0  # this rank's batches already summed
    if done:
        batches, skipped = _skip(batches, done if shared else done * size)  # whole rounds of K batches: the ranks' shares stay
        total = None if total is None else total - skipped
    saving = None if checkpoint is None else lambda count: checkpoint.save_if_due(accumulators, done + count, precision)
    try:
        _stream(accumulators, batches if shared else rank_share(batches), grad_mode, progress, None if total is None else -(-total // size),
                PRECISIONS[precision], saving)
    except BaseException:
        if size > 1:  # tell the other ranks, so they stop instead of waiting in the all-reduce
            try:
                all_ranks_ok(False)
            except RankFailedError:
                pass
        raise
    all_ranks_ok(True)
    if size > 1:
        for accumulator, states in zip(accumulators, earlier):
            accumulator.sync()
            accumulator.add_state_dict(states)
    if checkpoint is not None:
        checkpoint.remove()


def _skip(batches: Iterable[Any], count: int) -> tuple[Iterable[Any], int]:
    """``batches`` without the first ``count`` (a :class:`BatchIterator` skips them without reading their images),
    and how many images those held (0 where the batches cannot say)."""
    if isinstance(batches, BatchIterator):
        skipped = sum(batches.sizes[:count])
        return BatchIterator(batches.dataset, batches.order[skipped:], batches.sizes[count:]), skipped
    return itertools.islice(batches, count, None), 0


def _stream(accumulators: Sequence[Accumulator], batches: Iterable[tuple[Tensor, Tensor, Tensor]], grad_mode: bool,
            progress: bool | None, total: int | None, autocast_dtype: torch.dtype | None,
            after_batch: Callable[[int], None] | None = None) -> None:
    """Every batch once through every model, each accumulator updated with what it reads; ``after_batch(count)``
    after each batch's updates (count: the batches streamed so far)."""
    models, layers = models_and_layers(accumulators)
    readers: dict[str, list[int]] = {}  # "model/layer" -> the accumulators that read it
    for index, accumulator in enumerate(accumulators):
        for name, model_layers in accumulator.layers().items():
            for layer in model_layers:
                readers.setdefault(f"{name}/{layer.name}", []).append(index)

    def reducer(model_name: str):
        def reduce(layer: str, tensor: Tensor) -> dict[int, Any]:
            key = f"{model_name}/{layer}"
            reduced, shared = {}, {}  # shared: one value per reduction_key, for accumulators that compute the same
            with torch.autocast(tensor.device.type, enabled=False):  # Grams and sums at full precision
                for index in readers[key]:
                    name = accumulators[index].reduction_key(key)
                    if name is None or name not in shared:
                        value = accumulators[index].reduce(key, tensor)
                        if name is None:
                            reduced[index] = value
                            continue
                        shared[name] = value
                    reduced[index] = shared[name]
            return reduced

        return reduce

    captures = [Capture(model, layers[model.name], grad=grad_mode, reduce=reducer(model.name)) for model in models if layers[model.name]]
    kinds = ", ".join(dict.fromkeys(accumulator.kind.replace("_", " ") for accumulator in accumulators if accumulator.kind))
    meter = ThroughputMeter(progress if world()[0] == 0 else False, total,  # ranks other than 0 stay quiet
                            f"{kinds}: images" if kinds else "images")
    streamed = 0
    try:
        for capture in captures:
            capture.__enter__()
        for images, labels, indices in batches:
            activations: list[dict[str, Any]] = [{} for _ in accumulators]
            inputs: dict[str, Tensor] = {}
            for capture in captures:
                model = capture.model
                with torch.inference_mode(not grad_mode), torch.set_grad_enabled(grad_mode):
                    model_input = model.preprocess(images.to(model.device, non_blocking=True))
                    if grad_mode:
                        model_input = model_input.detach().requires_grad_(True)
                inputs[model.name] = model_input
                with torch.autocast(model.device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
                    captured = capture(model_input, preprocess=False)
                for layer, reduced in captured.items():
                    for index, value in reduced.items():
                        activations[index][f"{model.name}/{layer}"] = value
            batch = Batch(images=images, labels=labels, indices=indices, inputs=inputs)
            with torch.inference_mode(not grad_mode), torch.set_grad_enabled(grad_mode):  # ERF differentiates here
                for accumulator, seen in zip(accumulators, activations):
                    accumulator.update(seen, batch)
            del activations
            meter.update(len(images))
            streamed += 1
            if after_batch is not None:
                after_batch(streamed)
    finally:
        for capture in captures:
            capture.remove()
        meter.close()


def run(
    accumulators: Sequence[Accumulator],
    dataset: ImageDataset,
    n: int | None = None,
    batch_size: int = 256,
    seed: int = 0,
    indices: Tensor | None = None,
    reshuffle: int = 0,
    progress: bool | None = None,
    precision: str | None = None,
    workers: int | None = None,
    checkpoint: PassCheckpoint | None = None,
) -> list[Result]:
    """Run ``accumulators`` over ``n`` seeded-random images of ``dataset`` (default: all) in one pass; their results.

    ``indices`` (instead of ``n``): exactly these images, in this order. ``reshuffle`` > 0: the same
    images in another seeded batch order (repeated minibatch CKA). ``precision``: see :func:`feed`.
    ``workers`` > 0 reads and decodes images in that many DataLoader processes (pinned memory when a
    GPU is present), so decoding JPEGs does not starve the models. Both default to :func:`run_options`.
    ``checkpoint``: an interrupted pass resumes at the batch it reached (:class:`~seelike.checkpoints.PassCheckpoint`).
    Every result carries the run's :class:`~seelike.analyses.base.RunInfo`.
    """
    started = time.perf_counter()
    options = _OPTIONS.get()
    precision = options.precision if precision is None else precision
    workers = options.workers if workers is None else workers
    if indices is not None:
        indices = torch.as_tensor(indices).long()
        total = len(indices)
        sizes = [min(batch_size, total - start) for start in range(0, total, batch_size)]
        batches: Iterable = BatchIterator(dataset, indices, sizes)
    else:
        total = len(dataset) if n is None else n
        batches = iterate_batches(dataset, batch_size, n=total, shuffle=True, seed=seed, reshuffle=reshuffle)
    if workers:
        rank, size = world()
        batches = torch.utils.data.DataLoader(
            _BatchesOf(batches, [i for i in range(len(batches)) if i % size == rank]), batch_size=None,
            num_workers=workers, pin_memory=torch.cuda.is_available())
        feed(accumulators, batches, progress=progress, total=total, precision=precision, shared=True, checkpoint=checkpoint)
    else:
        feed(accumulators, batches, progress=progress, total=total, precision=precision, checkpoint=checkpoint)
    return [accumulator.result(RunInfo.of(accumulator.models, dataset, total, batch_size, seed, started)) for accumulator in accumulators]


class _BatchesOf(torch.utils.data.Dataset):
    """The chosen batches of a :class:`~seelike.data.BatchIterator`, one item per batch, for DataLoader workers."""

    def __init__(self, batches: BatchIterator, chosen: list[int]) -> None:
        self.dataset, self.chosen = batches.dataset, chosen
        starts = [0]
        for size in batches.sizes:
            starts.append(starts[-1] + size)
        self.indices = [batches.order[starts[i]:starts[i + 1]] for i in range(len(batches.sizes))]

    def __len__(self) -> int:
        return len(self.chosen)

    def __getitem__(self, item: int) -> tuple[Tensor, Tensor, Tensor]:
        indices = self.indices[self.chosen[item]]
        return (*fetch(self.dataset, indices), indices)
