"""Local attention heads vs lower CNN layers (paper Fig 5; docs/methods.md §3).

The heads of one ViT block (default the first) are sorted by mean attention distance; windows of
k consecutive heads (default k = max(1, H // 4), sliding by 1) and single heads are compared by
minibatch CKA with each lower CNN unit (default the first half of the CNN's blocks). A window's
representation is its heads' outputs A·V (before the output projection) concatenated and
flattened per image (all tokens × channels, as §1).

One pass over the data serves every window: with the linear kernel the Gram of a concatenation
is the sum of its parts' Grams, and U-centring and HSIC₁ are linear in the Gram, so
HSIC₁(window, unit) = Σ_{h∈W} HSIC₁(h, unit) and HSIC₁(W, W) = Σ_{h,h'∈W} HSIC₁(h, h'). The head
order (which needs the distances) is only applied after the pass; the CKA values equal the
minibatch CKA of the concatenated windows on the same batches (up to float32
rounding of the Grams).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor

from seelike.analyses.attention_distance import AttentionDistance
from seelike.analyses.base import Accumulator, Batch, activation
from seelike.capture import output_shapes
from seelike.data import ImageDataset
from seelike.driver import run
from seelike.errors import InvalidInputError
from seelike.models.model import Layer, Model
from seelike.results import Result
from seelike.similarity import MinibatchCKA

__all__ = ["HeadSimilarity", "HeadSimilarityResult", "head_similarity", "head_windows", "rank", "spearman_correlation"]


def rank(values: Sequence[float] | np.ndarray) -> np.ndarray:
    """Ranks 1..n of ``values``, ties getting the mean of their ranks."""
    values = np.asarray(values, dtype=np.float64)
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values))
    ranks[order] = np.arange(1, len(values) + 1)
    _, groups = np.unique(values, return_inverse=True)
    return (np.bincount(groups, weights=ranks) / np.bincount(groups))[groups]


def spearman_correlation(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> float:
    """Spearman's rank correlation: Pearson's correlation of the ranks (mean ranks for ties).

    NaN, with a warning, when it is undefined (fewer than 2 points, or one side constant).
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise InvalidInputError(f"x and y must be 1-D of the same length, got shapes {x.shape} and {y.shape}")
    rx, ry = rank(x) - (len(x) + 1) / 2, rank(y) - (len(y) + 1) / 2
    denominator = np.sqrt((rx**2).sum() * (ry**2).sum())
    if len(x) < 2 or not denominator > 0:
        warnings.warn("Spearman correlation is undefined (fewer than 2 points or constant values): NaN", RuntimeWarning, stacklevel=2)
        return float("nan")
    return float((rx * ry).sum() / denominator)


def head_windows(order: Sequence[int], size: int) -> list[list[int]]:
    """Windows of ``size`` consecutive heads of ``order`` (sliding by 1), then single heads (when size > 1)."""
    order = [int(h) for h in order]
    if not 1 <= size <= len(order):
        raise InvalidInputError(f"window size must be between 1 and the number of heads ({len(order)}), got {size}")
    windows = [order[i : i + size] for i in range(len(order) - size + 1)]
    return windows + ([[h] for h in order] if size > 1 else [])


@dataclass(frozen=True)
class HeadSimilarityResult(Result):
    """Arrays: ``cka`` [windows, units], ``window_distance`` / ``window_size`` [windows], ``window_heads``
    [windows, k] (head indices, −1 padded), ``head_distance`` [heads], ``head_order`` [heads],
    ``spearman`` [units] (k-windows) and ``spearman_single_heads`` [units]; metadata names the units."""

    kind: ClassVar[str] = "head_similarity"

    @property
    def units(self) -> list[str]:
        return list(self.metadata["units"])

    @property
    def cka(self) -> np.ndarray:
        return self.arrays["cka"]


class HeadSimilarity(Accumulator):
    """Attention distances of one ViT block's heads and the unbiased HSIC between every head and CNN unit (§3).

    Children: an :class:`AttentionDistance` of the block and one :class:`MinibatchCKA` over the heads'
    outputs and the units; the windows are formed in :meth:`compute`, once the distances are known.
    """

    kind: ClassVar[str] = "head_similarity"

    def __init__(self, vit: Model, cnn: Model, block: int = 0, window: int | None = None,
                 cnn_blocks: Sequence[int] | None = None) -> None:
        super().__init__([vit, cnn])
        self.vit, self.cnn, self.block = vit, cnn, block
        self.distances = AttentionDistance(vit, blocks=[block])
        self.heads_layer = next((layer for layer in vit.layers if layer.block == block and layer.role == "heads"), None)
        if self.heads_layer is None:
            raise InvalidInputError(
                f"{vit.spec} exposes no per-head outputs (role 'heads') in block {block}; head similarity needs a ViT whose "
                "attention output projection seelike can read (own, timm or hf); it does not apply to CNNs or to Swin, whose heads see windows"
            )
        if cnn.token_layout is not None or not any(layer.kind == "feature_map" for layer in cnn.block_layers()):
            raise InvalidInputError(f"{cnn.spec} is not a CNN (its blocks give no feature maps); head similarity compares a ViT's heads with a CNN's units")
        if window is not None and window < 1:
            raise InvalidInputError(f"window size must be at least 1 head, got {window}")
        self.window = window
        self.cnn_blocks = list(range(max(1, cnn.num_blocks // 2))) if cnn_blocks is None else list(cnn_blocks)
        self.units = [cnn.role(b, "output") for b in self.cnn_blocks]
        if not self.units:
            raise InvalidInputError(f"no CNN units to compare with; pick blocks of {cnn.spec} (0..{cnn.num_blocks - 1})")
        self.add_child("distances", self.distances)
        self.num_heads = next(iter(output_shapes(vit, self.distances.attention).values()))[1]  # attention [1, H, T, T]
        names = [f"{vit.name}/head.{h}" for h in range(self.num_heads)] + [f"{cnn.name}/{unit.name}" for unit in self.units]
        self.cka = MinibatchCKA(names=names)
        self._attention_keys = {f"{vit.name}/{layer.name}" for layer in self.distances.attention}
        self._heads_key = f"{vit.name}/{self.heads_layer.name}"
        self.add_child("cka", self.cka)

    def layers(self) -> dict[str, list[Layer]]:
        return {self.vit.name: [*self.distances.attention, self.heads_layer], self.cnn.name: self.units}

    def reduce(self, key: str, tensor: Tensor) -> Tensor:
        """Attention: per-head distance sums; head outputs: each head's U-centred Gram row [H, n(n−1)/2]; units: theirs."""
        if key in self._attention_keys:
            return self.distances.reduce(key, tensor)
        if key == self._heads_key:
            per_head = tensor.reshape(tensor.shape[0], tensor.shape[1], self.num_heads, -1)  # [B, T, H, hd]
            return torch.stack([self.cka.centred_row(per_head[:, :, h], f"head {h}") for h in range(self.num_heads)])
        return self.cka.centred_row(tensor, key)

    def update(self, activations: Mapping[str, Tensor], batch: Batch) -> None:
        self.distances.update(activations, batch)
        heads = activation(activations, self.vit, self.heads_layer)
        rows = {f"{self.vit.name}/head.{h}": heads[h] for h in range(self.num_heads)}
        rows.update({f"{self.cnn.name}/{unit.name}": activation(activations, self.cnn, unit) for unit in self.units})
        self.cka.update_rows(rows)
        self.count(batch)

    def compute(self) -> HeadSimilarityResult:
        similarity = self.cka.result()
        hsic = similarity["hsic"]  # weighted mean HSIC₁ between every head and unit
        position = {name: i for i, name in enumerate(similarity.names)}
        attention = self.distances.compute()
        head_distance = attention.distance[0]
        num_heads = len(head_distance)
        head_rows = np.array([position[f"{self.vit.name}/head.{h}"] for h in range(num_heads)])
        unit_rows = np.array([position[f"{self.cnn.name}/{unit.name}"] for unit in self.units])
        order = np.argsort(head_distance, kind="stable")
        size = max(1, num_heads // 4) if self.window is None else self.window
        windows = head_windows(order, size)
        cka = np.empty((len(windows), len(self.units)))
        for row, members in enumerate(windows):
            rows = head_rows[members]
            within = hsic[np.ix_(rows, rows)].sum()  # HSIC₁(W, W) = Σ_{h,h'∈W} HSIC₁(h, h')
            cka[row] = hsic[np.ix_(rows, unit_rows)].sum(axis=0) / np.sqrt(within * np.diag(hsic)[unit_rows])
        window_distance = np.array([head_distance[w].mean() for w in windows])
        main = np.array([len(w) == size for w in windows])
        single = np.array([len(w) == 1 for w in windows])
        units = range(len(self.units))
        arrays = {
            "cka": cka,
            "window_distance": window_distance,
            "window_size": np.array([len(w) for w in windows]),
            "window_heads": np.array([w + [-1] * (size - len(w)) for w in windows]),
            "head_distance": head_distance,
            "head_renormalised_distance": attention.arrays["renormalised"][0],
            "head_prefix_mass": attention.arrays["prefix_mass"][0],
            "head_order": order,
            "spearman": np.array([spearman_correlation(window_distance[main], cka[main, u]) for u in units]),
            "spearman_single_heads": np.array([spearman_correlation(window_distance[single], cka[single, u]) for u in units]),
        }
        metadata = {
            "vit": self.vit.name,
            "cnn": self.cnn.name,
            "block": self.block,
            "heads_layer": self.heads_layer.name,
            "units": [unit.name for unit in self.units],
            "unit_blocks": self.cnn_blocks,
            "window": size,
            "num_heads": num_heads,
            "representation": "heads' outputs A·V before the output projection, concatenated, all tokens × channels flattened",
            "estimator": "minibatch CKA, unbiased HSIC, linear kernel (window HSIC summed from per-head HSIC: exact)",
            "spearman_over": "windows of `window` heads (spearman) and single heads (spearman_single_heads)",
            "patch_size": attention.metadata["patch_size"],
            "grid": attention.metadata["grid"],
            "image_width": attention.metadata["image_width"],
            "n": self.num_images,
        }
        return HeadSimilarityResult(arrays=arrays, metadata=metadata)


def head_similarity(
    vit: Model,
    cnn: Model,
    dataset: ImageDataset,
    n: int | None = None,
    batch_size: int = 256,
    seed: int = 0,
    block: int = 0,
    window: int | None = None,
    cnn_blocks: Sequence[int] | None = None,
    progress: bool | None = None,
) -> HeadSimilarityResult:
    """CKA between windows of ``vit``'s heads of ``block`` (sorted by attention distance) and ``cnn``'s lower units (§3)."""
    accumulator = HeadSimilarity(vit, cnn, block, window, cnn_blocks)
    return run([accumulator], dataset, n, batch_size, seed, progress=progress)[0]
