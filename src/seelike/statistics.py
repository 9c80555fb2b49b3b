"""Uncertainty of the numbers analyses report: one small set of helpers shared by every analysis.

* :func:`bootstrap_means`: seeded bootstrap over images (or batches). ``per_item`` holds one row
  per resampling unit (an image's statistic, or a batch's sum with its count); each draw resamples
  rows with replacement and averages them. Analyses store the draws beside the value they report
  (``<name>_bootstrap`` [draws, ...]), so any statistic computed from the value can be computed on
  every draw too and its standard error read off (:func:`standard_error`).
* :func:`normal_draws`: draws of values with a known standard error (a CKA cell's delta-method SE,
  a probe accuracy's binomial SE), treated as independent; the same interface as bootstrap draws.
* :func:`binomial_standard_error`: √(p(1−p)/n) of an accuracy on n test images.
"""

from __future__ import annotations

import warnings

import numpy as np

__all__ = ["BOOTSTRAP_DRAWS", "binomial_standard_error", "bootstrap_means", "normal_draws", "standard_error"]

BOOTSTRAP_DRAWS = 200  # enough for a standard error to about ±5% of itself


def bootstrap_means(per_item: np.ndarray, counts: np.ndarray | None = None, draws: int = BOOTSTRAP_DRAWS, seed: int = 0) -> np.ndarray:
    """Bootstrap draws [draws, ...] of the mean of ``per_item`` [items, ...] over its first axis.

    Without ``counts`` each row is one item's statistic and a draw is the mean of ``items`` rows
    drawn with replacement. With ``counts`` [items], each row is a sum over ``counts[i]`` units (a
    batch) and a draw is Σ sums / Σ counts over the drawn rows (ratio estimator). NaN rows propagate.
    """
    per_item = np.asarray(per_item, dtype=np.float64)
    if per_item.ndim == 0 or len(per_item) == 0:
        raise ValueError("bootstrap_means needs at least one item")
    if draws < 1:
        raise ValueError(f"draws must be at least 1, got {draws}")
    flat = per_item.reshape(len(per_item), -1)
    order = np.lexsort(flat.T[::-1]) if flat.shape[1] else np.arange(len(flat))  # rows in a canonical order: the
    per_item = per_item[order]  # draws depend on the set of items, not on the order batches or shards came in
    if counts is not None:
        counts = np.asarray(counts, dtype=np.float64)[order]
    rng = np.random.default_rng(seed)
    items = len(per_item)
    picks = rng.integers(0, items, size=(draws, items))
    weights = np.zeros((draws, items))
    np.add.at(weights, (np.arange(draws)[:, None], picks), 1.0)  # how often each row is drawn
    flat = per_item.reshape(items, -1)
    sums = weights @ np.where(np.isfinite(flat), flat, 0.0)  # 0·inf would be NaN in the product: non-finite rows counted apart
    if counts is None:
        totals = np.full(draws, float(items))
    else:
        totals = weights @ np.asarray(counts, dtype=np.float64)
    means = sums / totals[:, None]
    if not np.isfinite(flat).all():
        positive, negative = weights @ (flat == np.inf), weights @ (flat == -np.inf)
        means = np.where(positive > 0, np.inf, means)
        means = np.where(negative > 0, -np.inf, means)
        means = np.where(((positive > 0) & (negative > 0)) | (weights @ np.isnan(flat) > 0), np.nan, means)
    return means.reshape(draws, *per_item.shape[1:])


def normal_draws(value: np.ndarray, standard_error: np.ndarray, draws: int = BOOTSTRAP_DRAWS, seed: int = 0) -> np.ndarray:
    """Draws [draws, ...] of ``value`` with independent normal errors of ``standard_error`` (NaN SE: treated as 0)."""
    value = np.asarray(value, dtype=np.float64)
    se = np.nan_to_num(np.broadcast_to(np.asarray(standard_error, dtype=np.float64), value.shape), nan=0.0)
    rng = np.random.default_rng(seed)
    return value[None] + rng.standard_normal((draws, *value.shape)) * se[None]


def standard_error(draws: np.ndarray) -> np.ndarray:
    """The standard deviation over the first axis of bootstrap (or normal) draws, ddof 1; NaN with fewer than 2 finite draws."""
    draws = np.asarray(draws, dtype=np.float64)
    finite = np.isfinite(draws).sum(axis=0)
    if len(draws) < 2:
        return np.full(draws.shape[1:], np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # columns with fewer than 2 finite draws: NaN below
        deviation = np.nanstd(np.where(np.isfinite(draws), draws, np.nan), axis=0, ddof=1)
    return np.where(finite >= 2, deviation, np.nan)


def binomial_standard_error(accuracy: np.ndarray | float, n: int) -> np.ndarray:
    """√(p(1−p)/n): the standard error of an accuracy ``p`` measured on ``n`` independent test images."""
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    p = np.asarray(accuracy, dtype=np.float64)
    return np.sqrt(np.clip(p * (1 - p), 0, None) / n)
