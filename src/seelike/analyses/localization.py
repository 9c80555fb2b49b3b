"""Do high-layer tokens still know where they are? (paper Fig 9, 10; docs/methods.md §6).

For a token at grid position p (ViT: patch token p, prefix tokens skipped; CNN: the channel vector
at position p of a feature map) and the raw pixels of the input cell at every grid position q,
heatmapₚ[q] = CKA over images. Raw pixels are the model's preprocessed input cut into the layer's
grid (cell = input size / grid size). Every position of every layer and every input cell go into
ONE :class:`~seelike.similarity.MinibatchCKA` per batch, which computes each token position against
each input cell (``update_between``: the token-token pairs are never needed), so the scores use the
full grid: the share of positions whose own cell ranks first, and the mean CKA on the diagonal
(p = q) minus the mean off it.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

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
    """Near-corner, edge and interior positions that hold image content, without repeats (Fig 9).

    Centred objects (Fashion-MNIST, most photographs) leave the outermost ring of cells empty or
    background, so on grids of 5 or more the near-corner and edge positions sit one cell in:
    (1, 1), (1, mid), (mid, mid); smaller grids use the corner, edge and centre themselves."""
    rows, columns = grid
    inset = 1 if min(rows, columns) >= 5 else 0
    return list(dict.fromkeys([(inset, inset), (inset, columns // 2), (rows // 2, columns // 2)]))


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
    grid is NaN-padded beyond it; use :meth:`heatmap`), ``standard_error`` [layers, P, Q] (each cell's
    delta-method SE), ``share_first``, ``diagonal_gap``,
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


class Localization(Accumulator):
    """Streams token (or feature-map position) and input-cell representations into one MinibatchCKA (Fig 9).

    ``layers``: None (the penultimate and last block), names / globs (``Model.select``). Each must be
    tokens [B, T, D] with T = prefix tokens + grid, or a feature map [B, C, H, W]; the grids are read
    from one probe forward pass. ``update`` reads the captured layers and the preprocessed input the
    model ran on (``batch.inputs``), cut into each layer's grid.
    """

    kind: ClassVar[str] = "localization"

    def __init__(self, model: Model, layers: str | Sequence[str] | None = None,
                 positions: Sequence[Position] | None = None) -> None:
        super().__init__([model])
        self.model = model
        self.chosen: list[Layer] = model.block_layers()[-2:] if layers is None else model.select(layers)
        if not self.chosen:
            raise InvalidInputError(f"{model.spec} has no layers to localize")
        self.grids: list[Position] = _probe_grids(model, self.chosen)
        self.positions = [tuple(p) for p in positions] if positions else None
        for position in self.positions or []:
            for layer, (rows, columns) in zip(self.chosen, self.grids):
                if not (0 <= position[0] < rows and 0 <= position[1] < columns):
                    raise InvalidInputError(f"position {tuple(position)} is outside the {rows}×{columns} grid of {layer.name}")
        self.prefix = model.token_layout.num_prefix_tokens if model.token_layout else 0
        names = [f"{layer.name}/token/{r},{c}" for layer, grid in zip(self.chosen, self.grids) for r, c in np.ndindex(*grid)]
        names += [f"pixels/{grid[0]}x{grid[1]}/{r},{c}" for grid in dict.fromkeys(self.grids) for r, c in np.ndindex(*grid)]
        self.cka = MinibatchCKA(names=names)
        self.add_child("cka", self.cka)
        self._grid_of = {f"{model.name}/{layer.name}": (layer, grid) for layer, grid in zip(self.chosen, self.grids)}

    def layers(self) -> dict[str, list[Layer]]:
        return {self.model.name: self.chosen}

    def reduce(self, key: str, tensor: Tensor) -> Tensor:
        """A layer's positions [B, P, D] -> each position's U-centred Gram row [P, n(n−1)/2]."""
        layer, grid = self._grid_of[key]
        positions = _positions(tensor, layer, self.prefix)
        if positions.shape[1] != grid[0] * grid[1]:
            raise InvalidInputError(f"{layer.name}: {positions.shape[1]} positions in this batch, the first batch had a {grid[0]}×{grid[1]} grid: feed every batch at the model's input size (Model.preprocess does)")
        return torch.stack([self.cka.centred_row(positions[:, index], key) for index in range(positions.shape[1])])

    def update(self, activations: Mapping[str, Tensor], batch: Batch) -> None:
        """Add one batch: each layer's position rows against the input cells of the preprocessed input they came from."""
        tokens = [activation(activations, self.model, layer) for layer in self.chosen]
        inputs = batch.inputs[self.model.name]
        # models that ran on the same input share its cells' rows
        cells = [batch.derive(f"localization cells {grid}", inputs, lambda x, grid=grid: self._cell_rows(x, grid))
                 for grid in dict.fromkeys(self.grids)]
        self.cka.update_between(tokens, cells)
        self.count(batch)

    def _cell_rows(self, inputs: Tensor, grid: Position) -> Tensor:
        """The centred rows [cells, n(n−1)/2] of the input cut into ``grid`` (row-major)."""
        return torch.stack([self.cka.centred_row(cell) for cell in pixel_cells(inputs, grid)])

    def compute(self) -> LocalizationResult:
        """CKA grids [layers, P, Q] and the localization scores of every layer."""
        with warnings.catch_warnings(record=True):  # re-warned below, with the model named
            warnings.simplefilter("always")
            cka = self.cka.result()
        undefined = list(cka.metadata["undefined_layers"])
        if undefined:
            warnings.warn(f"{self.model.spec}: CKA undefined (NaN) for {len(undefined)} representations identical in every image "
                          f"(e.g. {undefined[:3]}): left out of the scores", RuntimeWarning, stacklevel=2)
        index = {name: i for i, name in enumerate(cka.names)}
        size = max(rows * columns for rows, columns in self.grids)
        grids = np.full((len(self.chosen), size, size), np.nan)
        errors = np.full((len(self.chosen), size, size), np.nan)
        scores: dict[str, list[float]] = {}
        for k, (layer, grid) in enumerate(zip(self.chosen, self.grids)):
            cells = list(np.ndindex(*grid))
            tokens = [index[f"{layer.name}/token/{r},{c}"] for r, c in cells]
            pixels = [index[f"pixels/{grid[0]}x{grid[1]}/{r},{c}"] for r, c in cells]
            grids[k, :len(cells), :len(cells)] = cka.matrix[np.ix_(tokens, pixels)]
            errors[k, :len(cells), :len(cells)] = cka.arrays["standard_error"][np.ix_(tokens, pixels)]
            for key, value in localization_scores(grids[k, :len(cells), :len(cells)]).items():
                scores.setdefault(key, []).append(value)
        computed = {
            "model": self.model.name, "model_spec": self.model.spec, "family": self.model.family,
            "layers": [layer.name for layer in self.chosen], "grids": [list(grid) for grid in self.grids],
            "positions": [list(p) for p in self.positions] if self.positions else None,
            "num_prefix_tokens": self.prefix, "n": cka.metadata["n"], "batch_sizes": cka.metadata["batch_sizes"],
            "estimator": "minibatch CKA, linear kernel, unbiased HSIC", "undefined": undefined,
            "pixels": "the model's preprocessed input cut into each layer's grid",
        }
        arrays = {"cka": grids, "standard_error": errors, **{key: np.array(values) for key, values in scores.items()}}
        return LocalizationResult(arrays=arrays, metadata=computed)


def _positions(tensor: Tensor, layer: Layer, prefix: int) -> Tensor:
    """Tokens [B, T, D] → patch tokens [B, P, D]; feature map [B, C, H, W] → [B, H·W, C] (row-major)."""
    if tensor.ndim == 4:
        return tensor.flatten(2).transpose(1, 2)
    return tensor[:, prefix:]


def _probe_grids(model: Model, layers: Sequence[Layer]) -> list[Position]:
    """Each layer's spatial grid from one forward pass; InvalidInputError naming the layers that work."""
    layout = model.token_layout
    shapes = output_shapes(model, layers)
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
    return run([Localization(model, layers, positions)], dataset, n, batch_size, seed, progress=progress)[0]
