"""Local attention heads vs lower CNN layers (paper Fig 5; PAPER.md §3).

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

import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from seelike.analyses.attention_distance import AttentionDistance
from seelike.capture import capture_batches
from seelike.data import ImageDataset, iterate_batches
from seelike.errors import InvalidInputError
from seelike.models.model import Model
from seelike.results import Result
from seelike.similarity import MinibatchCKA

__all__ = ["HeadSimilarityResult", "head_similarity", "head_windows", "rank", "spearman_correlation"]


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
    distances = AttentionDistance(vit, blocks=[block])
    heads_layer = next((layer for layer in vit.layers if layer.block == block and layer.role == "heads"), None)
    if heads_layer is None:
        raise InvalidInputError(
            f"{vit.spec} exposes no per-head outputs (role 'heads') in block {block}; head similarity needs a ViT whose "
            "attention output projection seelike can read (own, timm or hf); it does not apply to CNNs or to Swin, whose heads see windows"
        )
    if window is not None and window < 1:
        raise InvalidInputError(f"window size must be at least 1 head, got {window}")
    cnn_blocks = list(range(max(1, cnn.num_blocks // 2))) if cnn_blocks is None else list(cnn_blocks)
    units = [cnn.role(b, "output") for b in cnn_blocks]
    if not units:
        raise InvalidInputError(f"no CNN units to compare with; pick blocks of {cnn.spec} (0..{cnn.num_blocks - 1})")
    n = len(dataset) if n is None else n
    started = time.perf_counter()
    accumulator = MinibatchCKA()
    batches = iterate_batches(dataset, batch_size, n=n, shuffle=True, seed=seed)
    layers = [[distances.layers[0], heads_layer], units]
    num_heads = None
    for activations, _, _ in capture_batches([vit, cnn], layers, batches, progress=progress, total=n):
        distances.update(activations)
        heads = activations.pop(f"{vit.name}/{heads_layer.name}")  # [B, T, H·hd]
        num_heads = activations.pop(f"{vit.name}/{distances.layers[0].name}").shape[1]
        per_head = heads.reshape(heads.shape[0], heads.shape[1], num_heads, -1)
        representations = {f"{vit.name}/head.{h}": per_head[:, :, h] for h in range(num_heads)}
        accumulator.update({**representations, **activations})
    similarity = accumulator.result()
    hsic = similarity["hsic"]  # weighted mean HSIC₁ between every head and unit
    position = {name: i for i, name in enumerate(similarity.names)}
    head_rows = np.array([position[f"{vit.name}/head.{h}"] for h in range(num_heads)])
    unit_rows = np.array([position[f"{cnn.name}/{unit.name}"] for unit in units])

    attention = distances.result()
    head_distance = attention.distance[0]
    order = np.argsort(head_distance, kind="stable")
    size = max(1, num_heads // 4) if window is None else window
    windows = head_windows(order, size)
    cka = np.empty((len(windows), len(units)))
    for row, members in enumerate(windows):
        rows = head_rows[members]
        within = hsic[np.ix_(rows, rows)].sum()  # HSIC₁(W, W) = Σ_{h,h'∈W} HSIC₁(h, h')
        cka[row] = hsic[np.ix_(rows, unit_rows)].sum(axis=0) / np.sqrt(within * np.diag(hsic)[unit_rows])
    window_distance = np.array([head_distance[w].mean() for w in windows])
    main = np.array([len(w) == size for w in windows])
    single = np.array([len(w) == 1 for w in windows])
    arrays = {
        "cka": cka,
        "window_distance": window_distance,
        "window_size": np.array([len(w) for w in windows]),
        "window_heads": np.array([w + [-1] * (size - len(w)) for w in windows]),
        "head_distance": head_distance,
        "head_renormalised_distance": attention.arrays["renormalised"][0],
        "head_prefix_mass": attention.arrays["prefix_mass"][0],
        "head_order": order,
        "spearman": np.array([spearman_correlation(window_distance[main], cka[main, u]) for u in range(len(units))]),
        "spearman_single_heads": np.array([spearman_correlation(window_distance[single], cka[single, u]) for u in range(len(units))]),
    }
    metadata = {
        "vit": vit.name,
        "cnn": cnn.name,
        "models": {vit.name: vit.spec, cnn.name: cnn.spec},
        "model_fingerprints": {vit.name: vit.fingerprint(), cnn.name: cnn.fingerprint()},
        "block": block,
        "heads_layer": heads_layer.name,
        "units": [unit.name for unit in units],
        "unit_blocks": cnn_blocks,
        "window": size,
        "num_heads": num_heads,
        "representation": "heads' outputs A·V before the output projection, concatenated, all tokens × channels flattened",
        "estimator": "minibatch CKA, unbiased HSIC, linear kernel (window HSIC summed from per-head HSIC: exact)",
        "spearman_over": "windows of `window` heads (spearman) and single heads (spearman_single_heads)",
        "patch_size": attention.metadata["patch_size"],
        "grid": attention.metadata["grid"],
        "image_width": attention.metadata["image_width"],
        "data": dataset.spec,
        "split": dataset.split,
        "n": n,
        "batch_size": batch_size,
        "seed": seed,
        "seconds": round(time.perf_counter() - started, 2),
    }
    return HeadSimilarityResult(arrays=arrays, metadata=metadata)
