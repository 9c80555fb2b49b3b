"""Do high-layer tokens still know where they are? (paper Fig 9, 10; PAPER.md §6).

For a token at grid position p (ViT: patch token p, prefix tokens skipped; CNN: the channel vector
at position p of a feature map) and the raw pixels of the input cell at every grid position q,
heatmapₚ[q] = CKA over images. Raw pixels are the model's preprocessed input cut into the layer's
grid (cell = input size / grid size). Every position of every layer and every input cell go into
ONE :class:`~seelike.similarity.MinibatchCKA` per batch (all pairs in one matmul), so the scores
use the full grid: the share of positions whose own cell ranks first, and the mean CKA on the
diagonal (p = q) minus the mean off it.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from seelike.analyses import run_metadata
from seelike.capture import Capture, ThroughputMeter
from seelike.data import ImageDataset, iterate_batches
from seelike.errors import InvalidInputError
from seelike.models.model import Layer, Model
from seelike.results import Result
from seelike.similarity import MinibatchCKA

__all__ = [
    "Localization",
    "LocalizationResult",
    "default_positions",
    "localization_scores",
    "parse_positions",
    "pixel_cells",
    "spatial_localization",
]

Position = tuple[int, int]


def default_positions(grid: Sequence[int]) -> list[Position]:
    """Corner (0, 0), edge (0, mid) and interior (mid, mid) of a grid, without repeats (Fig 9)."""
    rows, columns = grid
    return list(dict.fromkeys([(0, 0), (0, columns // 2), (rows // 2, columns // 2)]))


def parse_positions(texts: Sequence[str]) -> list[Position]:
    """``["0,0", "3,3 0,3"]`` or ``["0,0;3,3"]`` → ``[(0, 0), (3, 3), (0, 3)]``."""
    positions = []
    for item in (part for text in texts for part in text.replace(";", " ").split()):
        try:
            row, column = (int(value) for value in item.split(","))
        except ValueError:
            raise InvalidInputError(f"a position is ROW,COLUMN with integers, e.g. 0,3; got {item!r}") from None
        positions.append((row, column))
    return positions


def pixel_cells(inputs: Tensor, grid: Sequence[int]) -> list[Tensor]:
    """The input [B, C, H, W] cut into grid cells, row-major: one [B, C·h·w] per cell.

    Cell edges are ``round(i · H / rows)``, so grids that do not divide the input still tile it.
    """
    height, width = inputs.shape[-2:]
    rows = [round(i * height / grid[0]) for i in range(grid[0] + 1)]
    columns = [round(j * width / grid[1]) for j in range(grid[1] + 1)]
    return [inputs[:, :, rows[i]:rows[i + 1], columns[j]:columns[j + 1]].flatten(1)
            for i in range(grid[0]) for j in range(grid[1])]


def localization_scores(heatmaps: np.ndarray) -> dict[str, float]:
    """Scores of one layer from its full CKA grid [P, Q] (P = Q, row-major positions).

    ``share_first``: share of positions whose own cell has the highest CKA in their row;
    ``diagonal_gap``: mean CKA on the diagonal minus mean off it (plus both means). Undefined
    (NaN) cells are left out; positions whose own cell is undefined count as not first.
    """
    if heatmaps.ndim != 2 or heatmaps.shape[0] != heatmaps.shape[1]:
        raise InvalidInputError(f"localization scores need a square CKA grid [P, P], got shape {heatmaps.shape}")
    diagonal = np.diag(heatmaps)
    off = heatmaps[~np.eye(len(heatmaps), dtype=bool)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows
        row_max = np.nanmax(heatmaps, axis=1)
        diagonal_mean, off_mean = float(np.nanmean(diagonal)), float(np.nanmean(off)) if off.size else math.nan
    first = np.isfinite(diagonal) & (diagonal >= row_max)
    return {"share_first": float(first.mean()), "diagonal_gap": diagonal_mean - off_mean,
            "diagonal_mean": diagonal_mean, "off_diagonal_mean": off_mean}


@dataclass(frozen=True)
class LocalizationResult(Result):
    """Token-vs-input-cell CKA per layer (Fig 9, 10).

    Arrays: ``cka`` [layers, P, Q] with P = Q = the largest grid's cell count (a layer with a smaller
    grid is NaN-padded beyond it; use :meth:`heatmap`), ``share_first``, ``diagonal_gap``,
    ``diagonal_mean``, ``off_diagonal_mean`` [layers]. Metadata: ``layers``, ``grids`` (rows,
    columns per layer), ``positions`` (asked for the figures, or None for the defaults), model, data, n.
    """

    kind: ClassVar[str] = "localization"

    @property
    def layers(self) -> list[str]:
        return list(self.metadata["layers"])

    def grid(self, layer: int | str) -> Position:
        rows, columns = self.metadata["grids"][self._index(layer)]
        return int(rows), int(columns)

    def positions(self, layer: int | str) -> list[Position]:
        """The positions to draw for ``layer``: the ones asked for, or corner, edge, interior."""
        asked = self.metadata.get("positions")
        return [tuple(p) for p in asked] if asked else default_positions(self.grid(layer))

    def heatmap(self, layer: int | str, position: Position) -> np.ndarray:
        """CKA of the token at ``position`` with every input cell, as [rows, columns]."""
        index = self._index(layer)
        rows, columns = self.grid(index)
        row, column = position
        if not (0 <= row < rows and 0 <= column < columns):
            raise InvalidInputError(f"position {position} is outside the {rows}×{columns} grid of {self.layers[index]}")
        cells = rows * columns
        return self.arrays["cka"][index, row * columns + column, :cells].reshape(rows, columns)

    def _index(self, layer: int | str) -> int:
        if isinstance(layer, str):
            if layer not in self.layers:
                raise InvalidInputError(f"no layer {layer!r} in this localization result; it has {self.layers}")
            return self.layers.index(layer)
        return int(layer)


class Localization:
    """Streams token (or feature-map position) and input-cell representations into one MinibatchCKA (Fig 9).

    ``layers``: None (the penultimate and last block), names / globs (``Model.select``). Each must be
    tokens [B, T, D] with T = prefix tokens + grid, or a feature map [B, C, H, W]; the grids are read
    from one probe forward pass. ``update(activations, inputs)`` takes the captured layers of one batch
    and the preprocessed input images [B, C, H, W]; ``merge`` adds another accumulator's sums.
    """

    def __init__(self, model: Model, layers: str | Sequence[str] | None = None) -> None:
        self.model = model
        self.layers: list[Layer] = model.block_layers()[-2:] if layers is None else model.select(layers)
        if not self.layers:
            raise InvalidInputError(f"{model.spec} has no layers to localize")
        self.grids: list[Position] = _probe_grids(model, self.layers)
        self.prefix = model.token_layout.num_prefix_tokens if model.token_layout else 0
        self.cka = MinibatchCKA()

    def _tensor(self, activations: Mapping[str, Tensor], layer: Layer) -> Tensor:
        for key in (f"{self.model.name}/{layer.name}", layer.name):
            if key in activations:
                return activations[key]
        raise InvalidInputError(f"the activations hold no {layer.name!r} of {self.model.name}; capture Localization(model).layers")

    def update(self, activations: Mapping[str, Tensor], inputs: Tensor) -> None:
        """Add one batch: captured layers and the preprocessed inputs they were computed from."""
        representations: dict[str, Tensor] = {}
        for layer, grid in zip(self.layers, self.grids):
            positions = _positions(self._tensor(activations, layer), layer, self.prefix)  # [B, P, D]
            if positions.shape[1] != grid[0] * grid[1]:
                raise InvalidInputError(f"{layer.name}: {positions.shape[1]} positions in this batch, the first batch had a {grid[0]}×{grid[1]} grid: feed every batch at the model's input size (Model.preprocess does)")
            for index, (row, column) in enumerate(np.ndindex(*grid)):
                representations[f"{layer.name}/token/{row},{column}"] = positions[:, index]
        for grid in dict.fromkeys(self.grids):
            for (row, column), cell in zip(np.ndindex(*grid), pixel_cells(inputs, grid)):
                representations[f"pixels/{grid[0]}x{grid[1]}/{row},{column}"] = cell
        self.cka.update(representations)

    def merge(self, other: Localization) -> None:
        if not isinstance(other, Localization) or [l.name for l in other.layers] != [l.name for l in self.layers]:
            raise InvalidInputError("merge() takes a Localization over the same model and layers")
        self.cka.merge(other.cka)

    def result(self, metadata: Mapping[str, Any] | None = None) -> LocalizationResult:
        """CKA grids [layers, P, Q] and the localization scores of every layer."""
        if not self.cka.num_batches:
            raise InvalidInputError("Localization.result() needs at least one update(); no batch has been seen")
        with warnings.catch_warnings(record=True):  # re-warned below, with the model named
            warnings.simplefilter("always")
            cka = self.cka.result()
        undefined = list(cka.metadata["undefined_layers"])
        if undefined:
            warnings.warn(f"{self.model.spec}: CKA undefined (NaN) for {len(undefined)} representations identical in every image "
                          f"(e.g. {undefined[:3]}): left out of the scores", RuntimeWarning, stacklevel=2)
        index = {name: i for i, name in enumerate(cka.names)}
        size = max(rows * columns for rows, columns in self.grids)
        grids = np.full((len(self.layers), size, size), np.nan)
        scores: dict[str, list[float]] = {}
        for k, (layer, grid) in enumerate(zip(self.layers, self.grids)):
            cells = list(np.ndindex(*grid))
            tokens = [index[f"{layer.name}/token/{r},{c}"] for r, c in cells]
            pixels = [index[f"pixels/{grid[0]}x{grid[1]}/{r},{c}"] for r, c in cells]
            grids[k, :len(cells), :len(cells)] = cka.matrix[np.ix_(tokens, pixels)]
            for key, value in localization_scores(grids[k, :len(cells), :len(cells)]).items():
                scores.setdefault(key, []).append(value)
        computed = {
            "model": self.model.name, "model_spec": self.model.spec, "family": self.model.family,
            "layers": [layer.name for layer in self.layers], "grids": [list(grid) for grid in self.grids],
            "num_prefix_tokens": self.prefix, "n": cka.metadata["n"], "batch_sizes": cka.metadata["batch_sizes"],
            "estimator": "minibatch CKA, linear kernel, unbiased HSIC", "undefined": undefined,
            "pixels": "the model's preprocessed input cut into each layer's grid",
        }
        arrays = {"cka": grids, **{key: np.array(values) for key, values in scores.items()}}
        return LocalizationResult(arrays=arrays, metadata={**computed, **dict(metadata or {})})


def _positions(tensor: Tensor, layer: Layer, prefix: int) -> Tensor:
    """Tokens [B, T, D] → patch tokens [B, P, D]; feature map [B, C, H, W] → [B, H·W, C] (row-major)."""
    if tensor.ndim == 4:
        return tensor.flatten(2).transpose(1, 2)
    return tensor[:, prefix:]


def _probe_grids(model: Model, layers: Sequence[Layer]) -> list[Position]:
    """Each layer's spatial grid from one forward pass; InvalidInputError naming the layers that work."""
    layout = model.token_layout
    channels, height, width = model.preprocessing.input_size
    with Capture(model, layers) as capture:
        shapes = {name: tuple(t.shape) for name, t in capture(torch.zeros(1, channels, height, width, device=model.device), preprocess=False).items()}
    grids, bad = [], []
    for layer in layers:
        shape = shapes[layer.name]
        layout = model.layout_of(layer)  # a hierarchical model's stage grid, else the model's
        if layer.kind == "feature_map" and len(shape) == 4:
            grids.append(shape[2:])
        elif layer.kind == "tokens" and layout is not None and len(shape) == 3 and shape[1] == layout.num_prefix_tokens + layout.num_patches:
            grids.append(tuple(layout.grid))
        else:
            bad.append(f"{layer.name} ({layer.kind} {list(shape)})")
    if bad:
        working = [l.name for l in model.block_layers() if l.kind == "feature_map" or (l.kind == "tokens" and layout is not None)]
        raise InvalidInputError(
            f"localization needs layers with a spatial grid: tokens [B, T, D] with T = prefix tokens + patch grid, or feature "
            f"maps [B, C, H, W]; {', '.join(bad)} has none. Layers that work include the block outputs "
            f"{', '.join(working[:3])}{' ... ' + working[-1] if len(working) > 3 else ''} (`seelike layers {model.spec}`)."
        )
    return [(int(rows), int(columns)) for rows, columns in grids]


def spatial_localization(
    model: Model,
    dataset: ImageDataset,
    n: int | None = None,
    batch_size: int = 256,
    layers: str | Sequence[str] | None = None,
    positions: Sequence[Position] | None = None,
    seed: int = 0,
    progress: bool | None = None,
) -> LocalizationResult:
    """Token-vs-input-cell CKA of ``layers`` (default: penultimate and last block) on ``n`` images (Fig 9, 10).

    ``positions`` only choose what the figures show; the scores always use every position.
    """
    accumulator = Localization(model, layers)
    for position in positions or []:
        for layer, (rows, columns) in zip(accumulator.layers, accumulator.grids):
            if not (0 <= position[0] < rows and 0 <= position[1] < columns):
                raise InvalidInputError(f"position {tuple(position)} is outside the {rows}×{columns} grid of {layer.name}")
    n = len(dataset) if n is None else n
    started = time.perf_counter()
    batches = iterate_batches(dataset, batch_size, n=n, shuffle=True, seed=seed)
    meter = ThroughputMeter(progress, n)
    try:
        with Capture(model, accumulator.layers) as capture:
            for images, _, _ in batches:
                with torch.inference_mode():
                    inputs = model.preprocess(images.to(model.device))
                accumulator.update(capture(inputs, preprocess=False), inputs)
                meter.update(len(images))
    finally:
        meter.close()
    return accumulator.result({
        "positions": [list(p) for p in positions] if positions else None,
        **run_metadata(model, dataset, batch_size, seed, started),
    })
