"""Hooks that read the asked layers in one forward pass per batch (DESIGN.md: capture).

:class:`Capture` is a context manager: hooks are registered on entry and removed in
``finally`` on exit, also when the forward pass raises. Each call runs one forward pass
under ``torch.inference_mode`` and returns ``{layer name: tensor}`` in the order the layers
ran; nothing is kept after the call. A module that runs twice in one forward pass (a shared
block) is refused: its calls could not be told apart. ``grad=True`` runs the forward pass with
autograd on instead, so the tensors returned can be differentiated with respect to an input that
requires grad (effective receptive fields). ``reduce(layer, tensor)`` turns each tensor into what is
kept as its hook fires (e.g. its Gram), so memory does not grow with the number of layers read.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.utils.hooks import RemovableHandle

from seelike.errors import CaptureError, InvalidInputError
from seelike.models.model import Layer, Model

log = logging.getLogger(__name__)
progress_log = logging.getLogger("seelike.progress")  # shown by the command line even without --verbose


class Capture:
    """Read ``layers`` of ``model`` during its forward pass.

    >>> with Capture(model, model.select("blocks")) as capture:
    ...     activations = capture(images)   # {"blocks.0": tensor, ...}
    """

    def __init__(self, model: Model, layers: Sequence[Layer | str], grad: bool = False,
                 reduce: Callable[[str, Tensor], Any] | None = None) -> None:
        self.model = model
        self.grad = grad
        self.reduce = reduce  # applied as each hook fires: keep what the analyses need, drop the activation
        self.layers = [model.layer(layer) if isinstance(layer, str) else layer for layer in layers]
        if not self.layers:
            raise InvalidInputError(f"no layers to capture from {model.spec}")
        self._handles: list[RemovableHandle] = []
        self._tensors: dict[str, Tensor] = {}
        self.order: list[str] | None = None  # the order layers ran in, from the first call

    # -- hooks --------------------------------------------------------------------------
    def __enter__(self) -> Capture:
        modules = dict(self.model.module.named_modules())
        grouped: dict[tuple[str, str], list[Layer]] = {}
        for layer in self.layers:
            if layer.module not in modules:
                raise CaptureError(f"{self.model.spec}: module {layer.module!r} of layer {layer.name!r} does not exist")
            grouped.setdefault((layer.module, layer.hook), []).append(layer)
        try:
            for (path, hook), layers in grouped.items():
                if hook == "output":
                    handle = modules[path].register_forward_hook(self._output_hook(layers))
                else:
                    handle = modules[path].register_forward_pre_hook(self._input_hook(layers), with_kwargs=True)
                self._handles.append(handle)
        except BaseException:
            self.remove()
            raise
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.remove()

    def remove(self) -> None:
        """Remove every hook this capture registered."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._tensors.clear()

    def _store(self, layers: list[Layer], tensor: Any) -> None:
        if not isinstance(tensor, Tensor):  # e.g. a tuple output: analyses read the first tensor
            tensor = tensor[0]
        for layer in layers:
            if layer.name in self._tensors:
                raise CaptureError(
                    f"{self.model.spec}: module {layer.module!r} ran more than once in one forward pass "
                    f"(a shared block), so layer {layer.name!r} is ambiguous; pick a layer that runs once."
                )
            value = layer.transform(tensor) if layer.transform is not None else tensor
            value = value.clone() if layer.clone and layer.transform is None else value
            self._tensors[layer.name] = value if self.reduce is None else self.reduce(layer.name, value)

    def _output_hook(self, layers: list[Layer]):
        def hook(module: torch.nn.Module, inputs: Any, output: Any) -> None:
            self._store(layers, output)

        return hook

    def _input_hook(self, layers: list[Layer]):
        def hook(module: torch.nn.Module, inputs: Any, kwargs: dict[str, Any]) -> None:
            # the first input, positional or (Hugging Face layers) passed by keyword
            self._store(layers, inputs[0] if inputs else next(v for v in kwargs.values() if isinstance(v, Tensor)))

        return hook

    # -- running ------------------------------------------------------------------------
    def __call__(self, images: Tensor, preprocess: bool = True) -> dict[str, Tensor]:
        """One forward pass; returns every asked layer, in the order the layers ran."""
        if not self._handles:
            raise CaptureError("Capture is not active: use it as `with Capture(model, layers) as capture:`")
        device = self.model.device
        images = images.to(device, non_blocking=True)
        self._tensors = {}
        try:
            with torch.inference_mode(not self.grad), torch.set_grad_enabled(self.grad), _attention_for(self.grad, device):
                self.model.module(self.model.preprocess(images) if preprocess else images)
            missing = [layer.name for layer in self.layers if layer.name not in self._tensors]
            if missing:
                raise CaptureError(f"{self.model.spec}: layers {missing} did not run in the forward pass")
            tensors, self._tensors = self._tensors, {}
        finally:
            self._tensors = {}
        if self.order is None:
            self.order = list(tensors)
        return tensors


def _attention_for(grad: bool, device: torch.device | str) -> Any:
    """The scaled-dot-product attention kernels of a forward pass: in a gradient pass on CPU, the math one, whose
    backward is faster there than the fused kernel's (the zoo ViT's exact ERF over 32 images: 14.3 s against 17.3 s;
    timm ViT-B/16 at 224 px: 1.2-1.3 s against 1.4 s per backward pass of 4 images). The two agree to float32 rounding."""
    if not grad or torch.device(device).type != "cpu":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel(SDPBackend.MATH)


def output_shapes(model: Model, layers: Sequence[Layer]) -> dict[str, tuple[int, ...]]:
    """Each layer's output shape, from one forward pass of a blank image at the model's input size
    (what analyses need to know before the first batch: grids, head counts, channel widths)."""
    with Capture(model, layers) as capture:
        outputs = capture(torch.zeros(1, *model.preprocessing.input_size, device=model.device), preprocess=False)
    return {name: tuple(t.shape) for name, t in outputs.items()}


def forward_order(model: Model, layers: Sequence[Layer] | None = None) -> list[Layer]:
    """``layers`` (default: all of the model's) sorted by the order one forward pass runs them."""
    layers = list(model.layers if layers is None else layers)
    channels, height, width = model.preprocessing.input_size
    example = torch.rand(1, channels, height, width, device=model.device)
    with Capture(model, layers) as capture:
        ran = capture(example, preprocess=False)
    position = {name: i for i, name in enumerate(ran)}
    return sorted(layers, key=lambda layer: position[layer.name])


def capture_batches(
    models: Sequence[Model],
    layers: Sequence[Sequence[Layer]],
    batches: Iterable[tuple[Tensor, Tensor, Tensor]],
    progress: bool | None = None,
    total: int | None = None,
) -> Iterator[tuple[dict[str, Tensor], Tensor, Tensor]]:
    """Stream ``batches`` (images, labels, indices) through every model once.

    Yields ``({"model/layer": tensor}, labels, indices)`` per batch, keys in model order and,
    within a model, in the order its layers ran. Model names must be distinct.
    """
    # validated here, when called (a generator body would only run at the first batch)
    names = [model.name for model in models]
    if len(set(names)) != len(names):
        raise InvalidInputError(f"model names must be distinct, got {names}; give each model its own name")
    if len(layers) != len(models):
        raise InvalidInputError(f"got {len(models)} models but {len(layers)} layer lists; give one list per model")
    captures = [Capture(model, model_layers) for model, model_layers in zip(models, layers)]
    return _stream(names, captures, batches, progress, total)


def _stream(
    names: list[str],
    captures: list[Capture],
    batches: Iterable[tuple[Tensor, Tensor, Tensor]],
    progress: bool | None,
    total: int | None,
) -> Iterator[tuple[dict[str, Tensor], Tensor, Tensor]]:
    meter = ThroughputMeter(progress, total)
    try:
        for capture in captures:
            capture.__enter__()
        for images, labels, indices in batches:
            activations: dict[str, Tensor] = {}
            for name, capture in zip(names, captures):
                for layer, tensor in capture(images).items():
                    activations[f"{name}/{layer}"] = tensor
            yield activations, labels, indices
            meter.update(len(images))
    finally:
        for capture in captures:
            capture.remove()
        meter.close()


class ThroughputMeter:
    """Progress of a stream of images: a bar on a terminal; elsewhere (logs, CI, notebooks) a plain line every
    ``interval`` seconds with images done, images/s and the time left, on the ``seelike.progress`` logger.

    ``enabled=False`` silences both (e.g. on ranks other than 0); ``None`` picks the bar when stderr is a TTY.
    The interval runs across meters, so a step made of many short passes (probes) still logs every ``interval``.
    """

    _last_line = time.perf_counter()  # when any meter last logged a line

    def __init__(self, enabled: bool | None = None, total: int | None = None, description: str = "images",
                 interval: float = 10.0) -> None:
        self.silent = enabled is False
        self.total, self.description, self.interval = total, description, interval
        self.images = 0
        self.start = time.perf_counter()
        self._bar = None
        if enabled or (enabled is None and sys.stderr.isatty()):
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
            )

            self._bar = Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[rate]:.0f} img/s"), TimeRemainingColumn(), transient=True,
            )
            self._task = self._bar.add_task(description, total=total, rate=0.0)
            self._bar.start()

    @property
    def rate(self) -> float:
        return self.images / max(time.perf_counter() - self.start, 1e-9)

    def line(self) -> str:
        """``images 1536/5000, 212 img/s, 16 s left``."""
        done = f"{self.images}/{self.total}" if self.total else str(self.images)
        left = ""
        if self.total and self.images and self.rate > 0:
            left = f", {max(self.total - self.images, 0) / self.rate:.0f} s left"
        return f"{self.description} {done}, {self.rate:.0f} img/s{left}"

    def update(self, images: int) -> None:
        self.images += images
        if self._bar is not None:
            self._bar.update(self._task, advance=images, rate=self.rate)
        elif not self.silent and time.perf_counter() - ThroughputMeter._last_line >= self.interval:
            ThroughputMeter._last_line = time.perf_counter()
            progress_log.info(self.line())

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
        log.info("%d images at %.0f images/s", self.images, self.rate)
