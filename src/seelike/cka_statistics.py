"""Statistics of a CKA heatmap, shared by the commands' summaries and the study's rules.

Each takes the :class:`~seelike.similarity.CKAResult` (for its layer names) and a matrix: the measured
``result.matrix`` or one draw of it, so the study can put standard errors on the same statistic.
"""

from __future__ import annotations

import numpy as np

from seelike.similarity import CKAResult, split_name


def block_of(result: CKAResult, matrix: np.ndarray, model_a: str, model_b: str | None = None) -> np.ndarray:
    """The [a-layers, b-layers] block of ``matrix`` (the measured one or a draw) for two models of ``result``."""
    def indices(model: str) -> list[int]:
        return [i for i, name in enumerate(result.names) if split_name(name)[0] == model]

    return matrix[np.ix_(indices(model_a), indices(model_b if model_b is not None else model_a))]


def uniformity(result: CKAResult, matrix: np.ndarray, model: str) -> float:
    """Mean CKA between distinct layers of one model: high means uniform representations (Fig 1)."""
    block = block_of(result, matrix, model)
    return float(block[~np.eye(len(block), dtype=bool)].mean())


def best_match_depth(cross: np.ndarray) -> np.ndarray:
    """For each column layer (e.g. ResNet), the relative depth in [0, 1] of its most similar row layer (e.g. ViT)."""
    return cross.argmax(axis=0) / max(1, cross.shape[0] - 1)


def lower_half_match(result: CKAResult, matrix: np.ndarray, vit: str, cnn: str) -> tuple[float, float]:
    """Mean relative ViT depth of the best match of the lower and of the upper half of the ResNet's layers."""
    cross = block_of(result, matrix, vit, cnn)
    if np.isnan(cross).any():  # argmax would silently pick the NaN
        return float("nan"), float("nan")
    depth = best_match_depth(cross)
    half = len(depth) // 2
    return float(depth[:half].mean()), float(depth[half:].mean())


def best_match_per_layer(result: CKAResult, matrix: np.ndarray, model: str, other: str) -> np.ndarray:
    """For each layer of ``model``, its highest CKA with any layer of ``other``."""
    return block_of(result, matrix, model, other).max(axis=1)


def best_match_cka(result: CKAResult, matrix: np.ndarray, model: str, other: str) -> float:
    """Mean over ``model``'s layers of its best CKA against any layer of ``other`` (appendix H)."""
    return float(best_match_per_layer(result, matrix, model, other).mean())


def top_third_best(result: CKAResult, matrix: np.ndarray, vit: str, cnn: str) -> tuple[float, float]:
    """Mean best CKA against any ResNet layer of the top third of ViT layers, and of the other ViT layers (Fig 2)."""
    best = best_match_per_layer(result, matrix, vit, cnn)
    top = max(1, len(best) // 3)
    return float(best[-top:].mean()), float(best[:-top].mean())
