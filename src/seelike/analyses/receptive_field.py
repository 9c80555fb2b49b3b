"""Effective receptive fields (paper Fig 6; docs/methods.md §4).

For a layer y (default the block output, after the residual add) and its central position — the
patch token at the grid centre of a ViT, the central feature-map position of a CNN — the map is
|∂ y_c(centre) / ∂ input| summed over input channels, averaged over channels c and images, and
normalised by its maximum to [0, 1]. Channels are averaged exactly (one backward pass per
channel: mean_c |∂y_c/∂x|) where affordable, else through the gradient of Σ_c y_c
(|∂Σ_c y_c/∂x| / C, one backward pass); the result records which. ``pre_residual`` reads the
branch instead (ViT: the MLP branch, role "mlp"; ResNet: role "branch"). Gradients need autograd:
the driver runs :class:`ReceptiveField` in a gradient pass (``Capture(..., grad=True)``).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np
import torch
from torch import Tensor

from seelike.analyses.base import Accumulator, Batch, activation
from seelike.capture import output_shapes
from seelike.data import ImageDataset
from seelike.driver import run
from seelike.errors import InvalidInputError
from seelike.models.model import Layer, Model
from seelike.results import Result
from seelike.statistics import bootstrap_means, standard_error

__all__ = [
    "ReceptiveField",
    "ReceptiveFieldResult",
    "centre_position",
    "effective_receptive_fields",
    "mass_outside_patch",
    "mass_radius",
    "resolve_channel_average",
    "receptive_field_layers",
    "receptive_field_maps",
]

ChannelAverage = Literal["auto", "exact", "sum"]
EXACT_LIMIT = 256  # "auto": exact per-channel gradients when Σ over layers of channels is at most this


def centre_position(model: Model, layer: Layer, shape: Sequence[int]) -> tuple[int | tuple[int, int], tuple[float, float]]:
    """Where the centre of ``layer``'s output [B, T, D] or [B, C, H, W] is, and its centre in input pixels (row, column).

    Token layers: the patch token at the grid centre (index after the prefix tokens), centred on
    its patch; feature maps: position (H//2, W//2), centred on input pixel (i·stride, j·stride),
    where a stack of 'same'-padded odd-kernel convolutions (PyTorch ResNets) centres it.
    """
    height, width = model.preprocessing.input_size[1:]
    if layer.kind == "tokens" and len(shape) == 3:
        layout = model.layout_of(layer)  # a hierarchical model's stage grid, else the model's
        if layout is None:
            raise InvalidInputError(f"{model.spec}: layer {layer.name!r} holds tokens but the model has no token layout")
        row, column = layout.grid[0] // 2, layout.grid[1] // 2
        index = layout.num_prefix_tokens + row * layout.grid[1] + column
        return index, ((row + 0.5) * layout.patch_size - 0.5, (column + 0.5) * layout.patch_size - 0.5)
    if len(shape) == 4:
        rows, columns = shape[2], shape[3]
        row, column = rows // 2, columns // 2
        return (row, column), (row * height / rows, column * width / columns)
    raise InvalidInputError(
        f"{model.spec}: layer {layer.name!r} has shape {tuple(shape)}; the ERF needs tokens [B, T, D] or feature maps [B, C, H, W]"
    )


def receptive_field_layers(model: Model, blocks: Sequence[int] | None = None, pre_residual: bool = False,
                           embedding: bool = False) -> list[Layer]:
    """The layers whose ERF is taken: each block's output, or its residual branch when ``pre_residual``;
    with ``embedding``, first the input of block 0 (a ViT's patch embedding, a ResNet's stem)."""
    blocks = list(range(model.num_blocks)) if blocks is None else list(blocks)
    if not blocks:
        raise InvalidInputError(f"{model.spec}: no blocks to take receptive fields of")
    layers = [model.role(0, "input")] if embedding else []
    for block in blocks:
        if not pre_residual:
            layers.append(model.role(block, "output"))
            continue
        roles = {layer.role for layer in model.layers if layer.block == block}
        role = next((r for r in ("mlp", "branch") if r in roles), None)
        if role is None:
            raise InvalidInputError(
                f"block {block} of {model.spec} has no residual branch role ('mlp' for ViTs, 'branch' for ResNets); "
                "drop --pre-residual"
            )
        layers.append(model.role(block, role))
    return layers


def _widths(layers: Sequence[Layer], shapes: Mapping[str, tuple[int, ...]]) -> list[int]:
    return [shapes[layer.name][-1 if layer.kind == "tokens" else 1] for layer in layers]


def resolve_channel_average(models: Sequence[Model], channels: str = "auto", blocks: Sequence[int] | None = None,
                            pre_residual: bool = False, exact_limit: int = EXACT_LIMIT) -> str:
    """One channel averaging for several models, so their ERFs are the same estimator side by side:
    "auto" is "exact" only when every model's layers have at most ``exact_limit`` channels in all."""
    if channels != "auto":
        return _resolve_channels(channels, [], exact_limit)
    modes = []
    for model in models:
        layers = receptive_field_layers(model, blocks, pre_residual)
        modes.append(_resolve_channels("auto", _widths(layers, output_shapes(model, layers)), exact_limit))
    return "exact" if all(mode == "exact" for mode in modes) else "sum"


def _resolve_channels(channels: str, widths: Sequence[int], exact_limit: int) -> str:
    if channels not in ("auto", "exact", "sum"):
        raise InvalidInputError(f"channels must be 'auto', 'exact' or 'sum', got {channels!r}")
    if channels == "auto":
        return "exact" if sum(widths) <= exact_limit else "sum"
    return channels


def receptive_field_maps(
    model: Model, outputs: Mapping[str, Tensor], inputs: Tensor, layers: Sequence[Layer], channels: Literal["exact", "sum"] = "sum",
    per_image: bool = False,
) -> tuple[Tensor, ...]:
    """Unnormalised ERF maps [L, H, W] summed over a batch (§4), from a forward pass run with autograd on;
    with ``per_image``, also one map per image [B, L, H, W] as a third element (images do not interact in
    an eval-mode forward; the sum is taken as before, so it does not change by rounding).

    ``outputs``: each layer's output by layer name, computed from ``inputs`` [B, C, H, W] (which requires
    grad). Each map is Σ_images mean_c Σ_input-channels |∂ y_c(centre) / ∂ x| for ``channels="exact"``, or
    Σ_images Σ_input-channels |∂ Σ_c y_c(centre) / ∂ x| / C for ``"sum"``. Also each layer's centre in input pixels.
    """
    maps, images, positions = [], [], []
    for layer in layers:
        output = outputs[layer.name]
        index, pixel = centre_position(model, layer, output.shape)
        y = output[:, index] if isinstance(index, int) else output[:, :, index[0], index[1]]  # [B, C]
        positions.append(pixel)
        total = torch.zeros(inputs.shape[-2:], dtype=torch.float64, device=inputs.device)
        each = torch.zeros((inputs.shape[0], *inputs.shape[-2:]), dtype=torch.float64, device=inputs.device)
        for c in range(y.shape[1]) if channels == "exact" else [None]:
            (gradient,) = torch.autograd.grad((y if c is None else y[:, c]).sum(), inputs, retain_graph=True)
            total += gradient.abs().sum(dim=(0, 1)).double()
            if per_image:
                each += gradient.abs().sum(dim=1).double()
        maps.append(total / y.shape[1])
        images.append(each / y.shape[1])
    if per_image:
        return torch.stack(maps).cpu(), positions, torch.stack(images, dim=1).cpu()
    return torch.stack(maps).cpu(), positions


class ReceptiveField(Accumulator):
    """Sums the ERF maps of each chosen layer's centre over images (§4), from a gradient pass of the driver.

    ``channels``: "exact" (mean over channels of |∂y_c/∂x|, one backward pass per channel), "sum"
    (|∂Σ_c y_c/∂x| / C, one pass) or "auto" (exact when the layers have at most ``exact_limit``
    channels in all), settled once from a probe pass so every batch averages channels alike.
    ``embedding`` adds the input of block 0 first (the patch embedding alone: Fig 6's baseline);
    ``patch_size`` (default: the model's; none for a CNN) gives the cell whose outside mass is reported.
    State: the summed maps, and each image's maps (concatenated) for the bootstrap over images.
    """

    kind: ClassVar[str] = "receptive_field"
    needs_grad: ClassVar[bool] = True

    def __init__(self, model: Model, blocks: Sequence[int] | None = None, pre_residual: bool = False,
                 channels: ChannelAverage = "auto", exact_limit: int = EXACT_LIMIT, embedding: bool = False,
                 patch_size: int | None = None) -> None:
        super().__init__([model])
        self.model, self.pre_residual, self.embedding = model, pre_residual, embedding
        self.patch_size = model.token_layout.patch_size if patch_size is None and model.token_layout is not None else patch_size
        self.chosen = receptive_field_layers(model, blocks, pre_residual, embedding)
        input_size = model.preprocessing.input_size
        shapes = output_shapes(model, self.chosen)
        self.centres = [centre_position(model, layer, shapes[layer.name])[1] for layer in self.chosen]
        self.mode = _resolve_channels(channels, _widths(self.chosen, shapes), exact_limit)
        self.add_state("maps", torch.zeros(len(self.chosen), *input_size[1:], dtype=torch.float64))
        self.add_state("per_image", reduce="cat")  # [images, L, H, W] float32: the bootstrap over images

    def layers(self) -> dict[str, list[Layer]]:
        return {self.model.name: self.chosen}

    def update(self, activations: Mapping[str, Tensor], batch: Batch) -> None:
        outputs = {layer.name: activation(activations, self.model, layer) for layer in self.chosen}
        maps, _, per_image = receptive_field_maps(self.model, outputs, batch.inputs[self.model.name], self.chosen, self.mode, per_image=True)
        self.accumulate(maps=maps, per_image=per_image.float())
        self.count(batch)

    def compute(self) -> ReceptiveFieldResult:
        total = (self.state("maps") / self.num_images).numpy()
        layers, centres = self.chosen, self.centres
        scale = total.reshape(len(layers), -1).max(axis=1)
        zero = [layer.name for layer, s in zip(layers, scale) if not s > 0]
        if zero:  # e.g. a zero-initialised residual branch: kept as an all-zero map, radii NaN
            warnings.warn(f"{self.model.spec}: the ERF of {zero} is 0 everywhere (constant in the input); radii are NaN", RuntimeWarning, stacklevel=2)
        normalised = total / np.where(scale > 0, scale, 1.0)[:, None, None]
        arrays = {"maps": normalised, **_radii(normalised, centres, self.patch_size)}
        draws = [_radii(draw, centres, self.patch_size) for draw in bootstrap_means(self.state("per_image").numpy(), seed=0)]
        for name in list(arrays)[1:]:  # radii and shares are scale-free: the draws need no normalising
            arrays[f"{name}_bootstrap"] = np.stack([draw[name] for draw in draws])
            arrays[f"{name}_se"] = standard_error(arrays[f"{name}_bootstrap"])
        arrays.update({
            "centre": np.array(centres, dtype=np.float64),
            "blocks": np.array([layer.block for layer in layers]),
            "scale": scale,
        })
        metadata = {
            "model": self.model.name,
            "model_spec": self.model.spec,
            "layers": [layer.name for layer in layers],
            "zero_layers": zero,
            "roles": [layer.role for layer in layers],
            "pre_residual": self.pre_residual,
            "embedding": self.embedding,
            "patch_size": self.patch_size,
            "uncertainty": "bootstrap over images (seed 0): <name>_bootstrap [draws, layers], <name>_se",
            "channel_average": self.mode,
            "channel_average_meaning": (
                "mean over channels of |dy_c/dx| (exact)" if self.mode == "exact" else "|d(sum_c y_c)/dx| / C (gradient of the channel sum)"
            ),
            "input_size": list(self.model.preprocessing.input_size),
            "gradient_of": "preprocessed model input, |.| summed over input channels, mean over images, normalised by the max",
            "n": self.num_images,
        }
        return ReceptiveFieldResult(arrays=arrays, metadata=metadata)


def mass_radius(erf: np.ndarray, centre: tuple[float, float], fraction: float) -> float:
    """The smallest distance r (px) from ``centre`` such that pixels within r hold ``fraction`` of the map's mass (§4)."""
    rows, columns = np.indices(erf.shape)
    distance = np.hypot(rows - centre[0], columns - centre[1]).ravel()
    order = np.argsort(distance, kind="stable")
    mass = np.cumsum(erf.ravel()[order])
    if not mass[-1] > 0:
        return float("nan")
    return float(distance[order][np.searchsorted(mass / mass[-1], fraction * (1 - 1e-12))])


def mass_outside_patch(erf: np.ndarray, centre: tuple[float, float], patch_size: int) -> float:
    """Share of the map's mass outside the ``patch_size`` cell (of a grid from the top-left corner) holding ``centre``:
    0 for a patch embedding by construction, large once a block mixes in other patches (§4)."""
    total = float(erf.sum())
    if not total > 0:
        return float("nan")
    top, left = (int(np.floor(c / patch_size)) * patch_size for c in centre)
    return 1.0 - float(erf[top:top + patch_size, left:left + patch_size].sum()) / total


def _radii(maps: np.ndarray, centres: Sequence[tuple[float, float]], patch_size: int | None) -> dict[str, np.ndarray]:
    """Radii (and the mass outside the own patch) of each map [L, H, W]."""
    values = {
        "radius_50": np.array([mass_radius(m, c, 0.5) for m, c in zip(maps, centres)]),
        "radius_90": np.array([mass_radius(m, c, 0.9) for m, c in zip(maps, centres)]),
    }
    if patch_size:
        values["outside_patch"] = np.array([mass_outside_patch(m, c, patch_size) for m, c in zip(maps, centres)])
    return values


@dataclass(frozen=True)
class ReceptiveFieldResult(Result):
    """Arrays ``maps`` [layers, H, W] in [0, 1], ``radius_50`` / ``radius_90`` [layers] (px), ``centre``
    [layers, 2] (px), ``blocks`` [layers], ``scale`` [layers] (each map's maximum before normalising);
    with a patch size, ``outside_patch`` [layers] (share of mass outside the centre's own patch). Each
    radius and share has ``<name>_bootstrap`` [draws, layers] (bootstrap over images) and ``<name>_se``."""

    kind: ClassVar[str] = "receptive_field"

    @property
    def maps(self) -> np.ndarray:
        return self.arrays["maps"]

    @property
    def layer_names(self) -> list[str]:
        return list(self.metadata["layers"])


def effective_receptive_fields(
    model: Model,
    dataset: ImageDataset,
    n: int = 32,
    batch_size: int = 32,
    blocks: Sequence[int] | None = None,
    pre_residual: bool = False,
    channels: ChannelAverage = "auto",
    exact_limit: int = EXACT_LIMIT,
    seed: int = 0,
    embedding: bool = False,
    patch_size: int | None = None,
) -> ReceptiveFieldResult:
    """ERF map of each block's centre (§4) over ``n`` images of ``dataset`` (default 32, as the paper).

    ``channels``: "exact" (mean over channels of |∂y_c/∂x|, one backward pass per channel), "sum"
    (|∂Σ_c y_c/∂x| / C, one pass) or "auto" (exact when the layers have at most ``exact_limit``
    channels in all). Maps are normalised by their maximum; radii hold 50% and 90% of the mass.
    """
    accumulator = ReceptiveField(model, blocks, pre_residual, channels, exact_limit, embedding, patch_size)
    return run([accumulator], dataset, n, batch_size, seed)[0]
