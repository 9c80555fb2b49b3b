"""CKA: centred kernel alignment between representations (docs/methods.md §1), pure maths.

Read beside docs/methods.md §1, line by line:

- X (n × p1), Y (n × p2): two layers' activations on the same n images, each flattened per image;
  K = XXᵀ, L = YYᵀ (:func:`gram_linear`), or RBF Grams (:func:`gram_rbf`).
- Biased HSIC₀ = tr(KHLH)/(n−1)², H = I − 11ᵀ/n (Kornblith 2019; :func:`hsic_biased`). Strongly
  inflated when p ≫ n: only for small checks.
- Unbiased HSIC₁ (Song 2012; :func:`hsic_unbiased`): needs n ≥ 4, can be negative, never clamped.
- Efficient form HSIC₁(K, L) = ⟨U(K), U(L)⟩/(n(n−3)) (:func:`u_centre`); with the U(K) of every layer
  as rows of G, GGᵀ gives all pairwise terms of a batch in one product (:class:`MinibatchCKA`).
- Minibatch CKA (Nguyen, Raghu, Kornblith 2021): numerator and denominator accumulated separately
  over batches, never per-batch CKA averaged (:func:`minibatch_cka`, :class:`MinibatchCKA`).
- CKA = HSIC(K, L)/√(HSIC(K, K)·HSIC(L, L)) (:func:`cka`).
"""

from __future__ import annotations

import functools
import itertools
import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from seelike.analyses.base import SummedState
from seelike.errors import InvalidInputError
from seelike.results import Result

__all__ = [
    "CKAResult",
    "ESTIMATORS",
    "KERNELS",
    "MinibatchCKA",
    "cka",
    "gram_linear",
    "gram_rbf",
    "hsic_biased",
    "hsic_unbiased",
    "minibatch_cka",
    "split_name",
    "symmetric_gram",
    "u_centre",
]

KERNELS = ("linear", "rbf")
ESTIMATORS = ("unbiased", "biased")
MIN_UNBIASED_N = 4  # HSIC₁ divides by n(n−3) and (n−1)(n−2)

ArrayLike = Tensor | np.ndarray


# ---------------------------------------------------------------------------------------------
# Inputs


def _as_matrix(x: ArrayLike, name: str = "x") -> Tensor:
    """[n, ...] tensor or array -> [n, p] tensor, flattened per example (p = product of the rest)."""
    if isinstance(x, np.ndarray):
        try:
            x = torch.from_numpy(x if x.flags.writeable else x.copy())
        except TypeError as error:
            raise InvalidInputError(f"{name} must hold numbers, got a numpy array of dtype {x.dtype}.") from error
    if not isinstance(x, Tensor):
        raise InvalidInputError(f"{name} must be a torch.Tensor or numpy.ndarray of shape [n, ...], got {type(x).__name__}.")
    if x.dtype.is_complex:
        raise InvalidInputError(f"{name} is complex ({x.dtype}); CKA needs real-valued representations.")
    if x.ndim == 0 or x.shape[0] == 0:
        raise InvalidInputError(f"{name} must have shape [n, ...] with n >= 1 examples, got shape {tuple(x.shape)}.")
    x = x.detach().reshape(x.shape[0], -1)
    return x if x.is_floating_point() else x.to(torch.float64)


def _check_choice(parameter: str, value: Any, allowed: tuple[str, ...]) -> None:
    if not isinstance(value, str) or value not in allowed:
        raise InvalidInputError(f"{parameter} must be one of {', '.join(map(repr, allowed))}; got {value!r}.")


def _resolve_sigma(kernel: str, sigma: float | None) -> float | None:
    """sigma: None for the linear kernel, 1.0 by default for the RBF kernel, positive and finite."""
    if kernel == "linear":
        if sigma is not None:
            raise InvalidInputError(f"sigma={sigma!r} only applies to kernel='rbf'; leave it out for kernel='linear'.")
        return None
    sigma = 1.0 if sigma is None else sigma
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not math.isfinite(sigma) or sigma <= 0:
        raise InvalidInputError(f"sigma must be a positive finite number (a multiple of the median distance), got {sigma!r}.")
    return float(sigma)


def _check_gram(K: ArrayLike, name: str, min_n: int) -> Tensor:
    """A square Gram [n, n] as float64, n >= min_n."""
    K = _as_matrix(K, name).to(torch.float64)
    n = K.shape[0]
    if K.shape != (n, n):
        raise InvalidInputError(f"{name} must be a square Gram matrix [n, n], got shape {tuple(K.shape)}.")
    if n < min_n:
        raise InvalidInputError(f"this estimator needs at least {min_n} examples, got n={n}: use more images per batch, or the biased estimator.")
    return K


def _check_grams(K: ArrayLike, L: ArrayLike, min_n: int) -> tuple[Tensor, Tensor]:
    K, L = _check_gram(K, "K", min_n), _check_gram(L, "L", min_n)
    if K.shape != L.shape:
        raise InvalidInputError(f"K and L must be Grams of the same examples: K has n={K.shape[0]}, L has n={L.shape[0]}.")
    return K, L.to(K.device)


# ---------------------------------------------------------------------------------------------
# Grams


def gram_linear(x: ArrayLike) -> Tensor:
    """Linear Gram K = XXᵀ [n, n] of x [n, ...] flattened per example, in x's dtype, on its device (§1)."""
    return symmetric_gram(_as_matrix(x))


_GRAM_PANEL_MIN_N = 64  # below this a single x @ x.T is as fast


def symmetric_gram(x: Tensor) -> Tensor:
    """x xᵀ over the last two dimensions, [..., n, p] -> [..., n, n], exactly symmetric.

    On CPU with n >= 64 it is built from row panels of b = max(32, n/4) rows: each panel times the rows
    from its own first row on, the block below the diagonal mirrored from the one above. That takes
    (1 + b/n)/2 of the multiply-adds of x @ xᵀ (about 0.6 at n = 512: torch has no syrk); the
    sums per entry are the same dot products as in x @ xᵀ. Used for CKA's Grams, the HSIC products
    between them and the probes' XᵀX.
    """
    n = x.shape[-2]
    if x.device.type != "cpu" or n < _GRAM_PANEL_MIN_N:
        return x @ x.transpose(-2, -1)
    if not x.is_contiguous():
        x = x.contiguous()  # once, not once per panel inside the products
    panel = max(32, n // 4)
    K = torch.empty(*x.shape[:-1], n, dtype=x.dtype)
    for start in range(0, n, panel):
        stop = min(start + panel, n)
        K[..., start:stop, start:] = x[..., start:stop, :] @ x[..., start:, :].transpose(-2, -1)
        K[..., stop:, start:stop] = K[..., start:stop, stop:].transpose(-2, -1)
    return K


def gram_rbf(x: ArrayLike, sigma: float = 1.0) -> Tensor:
    """RBF Gram K_ij = exp(−‖x_i − x_j‖² / (2 s²)) [n, n] of x [n, ...] flattened per example.

    Bandwidth s = sigma × the median Euclidean distance between distinct examples (over the
    n(n−1)/2 pairs i < j; mean of the two middle values when their count is even), as in
    Kornblith et al. 2019, where sigma is a fraction of the median distance. In x's dtype.
    """
    sigma = _resolve_sigma("rbf", sigma)
    x = _as_matrix(x)
    n = x.shape[0]
    if n < 2:
        raise InvalidInputError(f"gram_rbf needs at least 2 examples for a median distance, got n={n}.")
    dot = x @ x.T
    squared_norms = dot.diagonal()
    squared_distances = (squared_norms[:, None] + squared_norms[None, :] - 2 * dot).clamp_min(0)  # rounding < 0
    i, j = _upper_triangle_indices(n, x.device)
    median = _median(squared_distances[i, j].sqrt())
    if not median > 0:
        raise InvalidInputError(
            "gram_rbf: the median distance between examples is 0 (at least half the pairs coincide), "
            "so the RBF bandwidth is undefined; use kernel='linear' or more varied examples."
        )
    bandwidth = sigma * median
    return torch.exp(-squared_distances / (2 * bandwidth**2))


def _median(values: Tensor) -> Tensor:
    """Median of a 1-D tensor; the mean of the two middle values when their count is even."""
    count = values.numel()
    lower = values.kthvalue((count + 1) // 2).values
    upper = values.kthvalue(count // 2 + 1).values
    return (lower + upper) / 2


@functools.lru_cache(maxsize=16)
def _upper_triangle_indices(n: int, device: torch.device) -> Tensor:
    """Row and column indices [2, n(n−1)/2] of the strict upper triangle of an n × n matrix."""
    return torch.triu_indices(n, n, offset=1, device=device)


@functools.lru_cache(maxsize=16)
def _upper_triangle_flat(n: int, device: torch.device) -> Tensor:
    """Flat indices [n(n−1)/2] of the strict upper triangle of a contiguous n × n matrix, row-major (for torch.take)."""
    rows, columns = _upper_triangle_indices(n, device)
    return rows * n + columns


# ---------------------------------------------------------------------------------------------
# HSIC


def hsic_biased(K: ArrayLike, L: ArrayLike) -> Tensor:
    """HSIC₀ = tr(KHLH)/(n−1)², H = I − 11ᵀ/n (Kornblith 2019; §1). K, L: [n, n]. 0-d float64 tensor."""
    K, L = _check_grams(K, L, min_n=2)
    n = K.shape[0]
    centred_K = K - K.mean(dim=0, keepdim=True) - K.mean(dim=1, keepdim=True) + K.mean()  # HKH
    return (centred_K * L.T).sum() / (n - 1) ** 2  # tr(HKH·L) = tr(KHLH)


def hsic_unbiased(K: ArrayLike, L: ArrayLike) -> Tensor:
    """Unbiased HSIC₁ (Song 2012; §1). K, L: [n, n], n >= 4. 0-d float64 tensor; may be negative.

    With K̃, L̃ the Grams with zeroed diagonals:
    HSIC₁ = [tr(K̃L̃) + (1ᵀK̃1)(1ᵀL̃1)/((n−1)(n−2)) − 2/(n−2)·1ᵀK̃L̃1] / (n(n−3)).
    """
    K, L = _check_grams(K, L, min_n=MIN_UNBIASED_N)
    n = K.shape[0]
    K_tilde, L_tilde = K.clone().fill_diagonal_(0), L.clone().fill_diagonal_(0)
    trace = (K_tilde * L_tilde.T).sum()  # tr(K̃L̃)
    sums = K_tilde.sum() * L_tilde.sum() / ((n - 1) * (n - 2))  # (1ᵀK̃1)(1ᵀL̃1)/((n−1)(n−2))
    cross = 2 / (n - 2) * (K_tilde.sum(dim=0) @ L_tilde.sum(dim=1))  # 2/(n−2)·1ᵀK̃L̃1
    return (trace + sums - cross) / (n * (n - 3))


def u_centre(K: ArrayLike) -> Tensor:
    """U(K) [n, n] float64 of a Gram [n, n], n >= 4, so that HSIC₁(K, L) = ⟨U(K), U(L)⟩/(n(n−3)) (§1)."""
    return _u_centre(_check_gram(K, "K", MIN_UNBIASED_N))


def _u_centre(K: Tensor, overwrite: bool = False) -> Tensor:
    """U(K) for a float64 Gram [n, n] already validated; ``overwrite``: K is the caller's own fresh Gram, centred in place."""
    n = K.shape[0]
    K_tilde = (K if overwrite else K.clone()).fill_diagonal_(0)  # zero the diagonal
    row_means = K_tilde.sum(dim=1, keepdim=True) / (n - 2)  # row and column means with divisor n−2
    column_means = K_tilde.sum(dim=0, keepdim=True) / (n - 2)
    grand = K_tilde.sum() / ((n - 1) * (n - 2))  # grand sum over (n−1)(n−2)
    # ((K̃ − row means) − column means) + grand, in place: the same operations in the same order, no temporaries
    return K_tilde.sub_(row_means).sub_(column_means).add_(grand).fill_diagonal_(0)  # zero the diagonal again


# ---------------------------------------------------------------------------------------------
# Full-batch CKA


def cka(
    x: ArrayLike,
    y: ArrayLike,
    kernel: str = "linear",
    estimator: str = "unbiased",
    sigma: float | None = None,
) -> float:
    """CKA = HSIC(K, L)/√(HSIC(K, K)·HSIC(L, L)) of x [n, ...] and y [n, ...] on the same n examples (§1).

    Each is flattened per example and computed in float64. kernel: 'linear' | 'rbf' (sigma: multiple
    of the median distance, default 1.0; rbf only). estimator: 'unbiased' (HSIC₁, n >= 4; may be
    negative, never clamped) | 'biased' (HSIC₀; inflated when p ≫ n).
    """
    _check_choice("kernel", kernel, KERNELS)
    _check_choice("estimator", estimator, ESTIMATORS)
    sigma = _resolve_sigma(kernel, sigma)
    x, y = _as_matrix(x, "x").to(torch.float64), _as_matrix(y, "y").to(torch.float64)
    if x.shape[0] != y.shape[0]:
        raise InvalidInputError(f"x and y must hold the same examples: x has n={x.shape[0]}, y has n={y.shape[0]}.")
    n = x.shape[0]
    min_n = MIN_UNBIASED_N if estimator == "unbiased" else 2
    if n < min_n:
        raise InvalidInputError(f"estimator={estimator!r} needs at least {min_n} examples, got n={n}.")
    for name, z in (("x", x), ("y", y)):
        if not torch.isfinite(z).all():
            raise InvalidInputError(f"{name} contains NaN or inf values; CKA needs finite representations.")
        if (z == z[:1]).all():
            raise InvalidInputError(f"{name} is the same for every example, so CKA is undefined (0/0).")
    y = y.to(x.device)
    K, L = (gram_linear(x), gram_linear(y)) if kernel == "linear" else (gram_rbf(x, sigma), gram_rbf(y, sigma))
    hsic = hsic_unbiased if estimator == "unbiased" else hsic_biased
    denominator = float(hsic(K, K) * hsic(L, L))
    if not denominator > 0 or not math.isfinite(denominator):
        raise InvalidInputError(f"CKA is undefined here: HSIC(K, K)·HSIC(L, L) = {denominator} (degenerate or huge values).")
    return float(hsic(K, L)) / math.sqrt(denominator)


# ---------------------------------------------------------------------------------------------
# Minibatch CKA


def split_name(name: str) -> tuple[str, str]:
    """'vit/blocks.3' -> ('vit', 'blocks.3'): model before the first '/', layer after it.

    A name without '/' is a model of its own with one layer of the same name.
    """
    model, slash, layer = name.partition("/")
    return (model, layer) if slash else (name, name)


def _varies(x: Tensor, device: torch.device) -> Tensor | bool:
    """Whether x [n, p] differs between images. On CPU rows 0 and 1 usually settle it without a full pass."""
    if x.device.type == "cpu":
        return bool((x[1] != x[0]).any()) or bool((x != x[:1]).any())
    return (x != x[:1]).any().to(device)  # no sync on accelerators


class MinibatchCKA(SummedState):
    """Streaming minibatch CKA between every pair of named representations (§1; Nguyen, Raghu, Kornblith 2021).

    Names look like 'vit/blocks.3' (the model is the part before the first '/'). Each ``update``
    takes one batch, ``{name: tensor [n, ...]}`` for every name (same n >= 4). Per batch, each
    Gram is computed on its tensor's own device in its dtype (half precision in float32), promoted
    to float64 and U-centred; the m U(K) (strict upper triangles: symmetric, zero diagonal) are the
    rows of G [m, n(n−1)/2] and one product 2·GGᵀ/(n(n−3)) gives the [m, m] unbiased HSIC₁ matrix h.

    Weighting: batch i has weight wᵢ = nᵢ, and CKA = Σ wᵢ hᵢ,xy / √(Σ wᵢ hᵢ,xx · Σ wᵢ hᵢ,yy), numerator
    and denominator accumulated separately. With equal batches this is the paper's equal weighting;
    a short last batch counts with its fair, smaller weight instead of being dropped.

    Standard error (per cell): batches are independent replicates with Var(hᵢ) ∝ 1/nᵢ (the model
    under which wᵢ = nᵢ is the efficient weighting), so Cov(weighted mean) is estimated by
    Σ wᵢ (hᵢ − h̄)(hᵢ − h̄)ᵀ / ((k−1) Σ wᵢ); the delta method on f(a, b, c) = a/√(bc) turns that into
    the SE of CKA. It is NaN when only one batch was seen (no spread to estimate) and 0 on the diagonal.

    A representation identical for every image of a batch adds exactly 0 (its U(K) is 0); if it is
    so in every batch, its CKA row and column are NaN, with a warning and ``undefined_layers`` in
    the result's metadata. Every state is a plain sum over batches (batch sizes are concatenated),
    declared on :class:`~seelike.analyses.base.SummedState`, which merges, saves and all-reduces them.
    """

    _SUMS = ("hsic", "hsic_squared", "hsic_times_diagonal", "diagonal_outer")

    def __init__(self, kernel: str = "linear", sigma: float | None = None, names: list[str] | None = None) -> None:
        super().__init__()
        _check_choice("kernel", kernel, KERNELS)
        self.kernel = kernel
        self.sigma = _resolve_sigma(kernel, sigma)
        self._fixed_names = None if names is None else list(names)  # the order, when the caller knows it up front
        self._names: list[str] | None = self._fixed_names
        # Σ w h, Σ w h∘h, Σ w h_xy h_xx, Σ w h_xx h_yy: each [m, m] float64, on the first batch's device.
        for key in self._SUMS:
            self.add_state(key)
        self.add_state("batch_sizes", torch.zeros(0, dtype=torch.int64), reduce="cat")

    @property
    def names(self) -> list[str]:
        """Representation names in the order the first batch fixed (empty before any update)."""
        return list(self._names or [])

    @property
    def batch_sizes(self) -> list[int]:
        return self.state("batch_sizes").tolist()

    @property
    def num_batches(self) -> int:
        return len(self.state("batch_sizes"))

    @property
    def num_images(self) -> int:
        return int(self.state("batch_sizes").sum())

    def update(self, representations: Mapping[str, ArrayLike]) -> None:
        """Add one batch: ``{name: [n, ...]}``, every name every batch, the same n >= 4 images."""
        names, matrices = self._check_batch(representations)
        n = matrices[0].shape[0]
        device = matrices[0].device
        triangle = _upper_triangle_flat(n, device)
        G = torch.empty(len(names), triangle.numel(), dtype=torch.float64, device=device)
        finite_diagonals = []
        for index, x in enumerate(matrices):
            K = self._gram(x)
            if self.kernel == "linear":
                finite_diagonals.append(torch.isfinite(K.diagonal()).all().to(device))
            U = _u_centre(K.to(torch.float64), overwrite=True).to(device)
            G[index] = torch.take(U, triangle) * _varies(x, device)  # identical for every image: U(K) is 0, not rounding noise
        if self.kernel == "linear":
            self._refuse_non_finite(names, matrices, finite_diagonals)
        self._add_rows(names, G, n, "overflows; scale those activations down.")

    def centred_row(self, x: ArrayLike, name: str = "x") -> Tensor:
        """U(K) of one representation x [n, ...] of a batch, as its strict upper triangle [n(n−1)/2] float64.

        What :meth:`update` computes per representation; computing it as each layer's activation appears
        and passing the rows to :meth:`update_rows` keeps only these rows, not the activations, in memory.
        """
        x = _as_matrix(x, name)
        n = x.shape[0]
        if n < MIN_UNBIASED_N:
            raise InvalidInputError(f"minibatch CKA needs at least 4 images per batch, got {n}; use a larger batch size")
        U = _u_centre(self._gram(x).to(torch.float64), overwrite=True).to(x.device)  # the Gram is this call's own
        return torch.take(U, _upper_triangle_flat(n, x.device)) * _varies(x, x.device)

    def update_rows(self, rows: Mapping[str, Tensor]) -> None:
        """Add one batch given as :meth:`centred_row` of every representation (same names as every batch)."""
        names = self._check_names(list(rows))
        length = {rows[name].numel() for name in names}
        if len(length) != 1:
            raise InvalidInputError("every representation of a batch must hold the same images (rows of one length).")
        n = round((1 + math.sqrt(1 + 8 * length.pop())) / 2)
        G = torch.stack([rows[name].reshape(-1).to(torch.float64) for name in names])
        self._add_rows(names, G, n, "has NaN or inf values, or its Gram overflows; check or scale those activations.")

    def update_between(self, first: Sequence[Tensor], second: Sequence[Tensor]) -> None:
        """Add one batch given as blocks of centred rows ([k, n(n−1)/2] each, rows of :meth:`centred_row`), computing
        only the pairs between a row of ``first`` and a row of ``second``, and each row with itself.

        The rows follow the names fixed at construction: every block of ``first``, then of ``second``. Every
        other pair (two rows of ``first``, or two of ``second``) is NaN in the result: localization needs each
        token position against each input cell, not the token positions against one another, and this skips
        those products and the copy of every row into one matrix.
        """
        if self._fixed_names is None:
            raise InvalidInputError("update_between() needs the names fixed at construction: MinibatchCKA(names=[...]).")
        names = self._fixed_names
        blocks = [block.to(torch.float64) for block in (*first, *second)]
        sizes = [len(block) for block in blocks]
        lengths = {block.shape[-1] for block in blocks}
        if sum(sizes) != len(names) or len(lengths) != 1 or any(block.ndim != 2 for block in blocks):
            raise InvalidInputError(f"update_between() got blocks of {sizes} rows for {len(names)} names, of lengths {sorted(lengths)}: "
                                    "pass one row per name, every row from the same images.")
        n = round((1 + math.sqrt(1 + 8 * lengths.pop())) / 2)
        scale = 2 / (n * (n - 3))  # ⟨U(K), U(L)⟩ = 2·Σ_{i<j} U(K)_ij U(L)_ij
        h = torch.full((len(names), len(names)), math.nan, dtype=torch.float64, device=blocks[0].device)
        starts = list(itertools.accumulate([0, *sizes]))
        for i in range(len(first)):
            for j in range(len(first), len(blocks)):
                cross = scale * (blocks[i] @ blocks[j].T)
                h[starts[i]:starts[i + 1], starts[j]:starts[j + 1]] = cross
                h[starts[j]:starts[j + 1], starts[i]:starts[i + 1]] = cross.T
        h.diagonal().copy_(scale * torch.cat([(block[:, None, :] @ block[:, :, None]).flatten() for block in blocks]))  # each row with itself
        # a row holding NaN or inf has a NaN or inf square; an overflowing product is inf (the skipped pairs are NaN)
        if not torch.isfinite(h.diagonal()).all() or torch.isinf(h).any():
            bad = [name for name, value in zip(names, h.diagonal().tolist()) if not math.isfinite(value)]
            raise InvalidInputError(f"the Gram of {', '.join(map(repr, bad)) or 'a representation'} has NaN or inf values, "
                                    "or overflows; check or scale those activations.")
        self._accumulate(names, h, n)

    def _add_rows(self, names: list[str], G: Tensor, n: int, problem: str) -> None:
        """h = 2·GGᵀ/(n(n−3)), the batch's unbiased HSIC₁ between every pair, into the sums."""
        h = 2 * symmetric_gram(G) / (n * (n - 3))  # ⟨U(K), U(L)⟩ = 2·Σ_{i<j} U(K)_ij U(L)_ij
        h = (h + h.T) / 2  # exactly symmetric despite matmul rounding
        if not torch.isfinite(h).all():
            bad = [name for name, value in zip(names, h.diagonal().tolist()) if not math.isfinite(value)]
            raise InvalidInputError(f"the Gram of {', '.join(map(repr, bad))} {problem}")
        self._accumulate(names, h, n)

    def _gram(self, x: Tensor) -> Tensor:
        if x.dtype not in (torch.float32, torch.float64):
            x = x.to(torch.float32)
        # Centring the features first changes neither U-centred Gram (exactly invariant to a shared offset)
        # nor any RBF distance, but keeps a float32 Gram of features far from 0 from losing its digits.
        x = x - x.mean(dim=0, keepdim=True)
        return gram_linear(x) if self.kernel == "linear" else gram_rbf(x, self.sigma)

    def _check_batch(self, representations: Mapping[str, ArrayLike]) -> tuple[list[str], list[Tensor]]:
        if not isinstance(representations, Mapping) or not representations:
            raise InvalidInputError("update() takes a non-empty mapping {name: tensor [n, ...]}.")
        names = self._check_names(list(representations))
        matrices = [_as_matrix(representations[name], name) for name in names]
        sizes = {name: x.shape[0] for name, x in zip(names, matrices)}
        if len(set(sizes.values())) > 1:
            raise InvalidInputError(f"every representation of a batch must hold the same images, got n per name: {sizes}.")
        n = matrices[0].shape[0]
        if n < MIN_UNBIASED_N:
            raise InvalidInputError(f"minibatch CKA needs at least 4 images per batch, got {n}; use a larger batch size")
        if self.kernel != "linear":  # linear: checked in update() on the Grams' diagonals, without a pass over x
            self._refuse_non_finite(names, matrices)
        return names, matrices

    def _check_names(self, names: list[str]) -> list[str]:
        """The batch's names in this accumulator's order; every name of the first batch, strings only."""
        if self._names is not None:
            if set(names) != set(self._names):
                missing = sorted(set(self._names) - set(names))
                unexpected = sorted(set(names) - set(self._names))
                raise InvalidInputError(
                    f"update() got other representations than the first batch (missing: {missing}, "
                    f"unexpected: {unexpected}); pass every name in every batch."
                )
            names = self._names
        for name in names:
            if not isinstance(name, str):
                raise InvalidInputError(f"representation names must be strings like 'vit/blocks.3', got {name!r}.")
        return names

    @staticmethod
    def _refuse_non_finite(names: list[str], matrices: list[Tensor], finite_diagonals: list[Tensor] | None = None) -> None:
        """Refuse NaN or inf values, naming the representations that hold them (one sync).

        With ``finite_diagonals`` (per matrix: is the diagonal of its linear Gram finite?), only the matrices
        whose diagonal is not finite are scanned: a NaN or inf in row i makes K_ii = ‖x_i‖² NaN or inf, so a
        finite diagonal proves a finite row. A finite x whose ‖x_i‖² overflows passes here, as before, and
        is reported as an overflowing Gram by update().
        """
        device = matrices[0].device
        candidates = list(range(len(matrices)))
        if finite_diagonals is not None:
            diagonal_ok = torch.stack(finite_diagonals).tolist()  # one sync
            candidates = [index for index, ok in zip(candidates, diagonal_ok) if not ok]
            if not candidates:
                return
        finite = torch.stack([torch.isfinite(matrices[index]).all().to(device) for index in candidates]).tolist()
        bad = [names[index] for index, ok in zip(candidates, finite) if not ok]
        if bad:
            raise InvalidInputError(f"representation {', '.join(map(repr, bad))} has NaN or inf values in this batch.")

    def _accumulate(self, names: list[str], h: Tensor, n: int) -> None:
        weight = float(n)
        diagonal = h.diagonal()
        self.accumulate(
            hsic=weight * h,
            hsic_squared=weight * h * h,
            hsic_times_diagonal=weight * h * diagonal[:, None],  # [x, y]: w·h_xy·h_xx
            diagonal_outer=weight * torch.outer(diagonal, diagonal),  # [x, y]: w·h_xx·h_yy
            batch_sizes=torch.tensor([n]),
        )
        self._names = names

    def signature(self) -> Any:
        return (type(self), self.kernel, self.sigma)

    def aligned_state(self, other: SummedState) -> dict[str, Tensor | None]:
        """``other``'s sums with rows and columns in this accumulator's name order (merge lines them up)."""
        assert isinstance(other, MinibatchCKA)
        state = dict(other._state)
        if other._names is None:
            return state
        if self._names is None:
            self._names = list(other._names)
            return state
        if set(other._names) != set(self._names):
            raise InvalidInputError(f"cannot merge accumulators of different representations: {other._names} vs {self._names}.")
        order = torch.tensor([other._names.index(name) for name in self._names])
        for key in self._SUMS:
            value = state[key]
            order_here = order.to(value.device)
            state[key] = value[order_here][:, order_here]
        return state

    def load_state_dict(self, states: Mapping[str, Tensor], names: list[str] | None = None) -> None:
        """Restore a :meth:`state_dict`; ``names`` gives the rows' order unless it was fixed at construction."""
        super().load_state_dict(states)
        if names is not None:
            self._names = list(names)

    def reset(self) -> None:
        super().reset()
        self._names = self._fixed_names

    def result(self, metadata: Mapping[str, Any] | None = None) -> CKAResult:
        """CKA, its standard error and the weighted mean HSIC₁, all [m, m], as a :class:`CKAResult`."""
        if not self.num_batches:
            raise InvalidInputError("MinibatchCKA.result() needs at least one update(); no batch has been seen.")
        names = list(self._names)
        weight_sum, k = float(self.num_images), self.num_batches
        sums = {key: self.state(key).to(torch.float64).cpu().numpy() for key in self._SUMS}
        hsic = sums["hsic"] / weight_sum  # weighted mean HSIC₁
        diagonal = np.diag(hsic)
        undefined = [name for name, value in zip(names, diagonal) if not value > 0]
        if undefined:
            warnings.warn(
                f"CKA is undefined (NaN) for {undefined}: identical for every image in every batch.",
                RuntimeWarning,
                stacklevel=2,
            )
        with np.errstate(divide="ignore", invalid="ignore"):
            matrix = hsic / np.sqrt(np.outer(diagonal, diagonal))
            standard_error = _delta_method_standard_error(hsic, matrix, sums, weight_sum, k)
        computed = {
            "names": names,
            "n": self.num_images,
            "num_batches": k,
            "batch_sizes": self.batch_sizes,
            "estimator": "unbiased",
            "kernel": self.kernel,
            "sigma": self.sigma,
            "weighting": "batch size",
            "undefined_layers": undefined,
        }
        clashes = sorted(set(computed) & set(metadata or {}))
        if clashes:
            raise InvalidInputError(f"metadata keys {clashes} are set by MinibatchCKA itself; use other names.")
        arrays = {"cka": matrix, "standard_error": standard_error, "hsic": hsic}
        return CKAResult(arrays=arrays, metadata={**computed, **dict(metadata or {})})


def _delta_method_standard_error(
    hsic: np.ndarray, matrix: np.ndarray, sums: Mapping[str, np.ndarray], weight_sum: float, k: int
) -> np.ndarray:
    """SE [m, m] of f = a/√(bc), a = h̄_xy, b = h̄_xx, c = h̄_yy, batches as replicates (see MinibatchCKA)."""
    if k < 2:
        return np.full_like(hsic, np.nan)
    scale = 1.0 / ((k - 1) * weight_sum)
    diagonal = np.diag(hsic)
    b, c = diagonal[:, None], diagonal[None, :]
    var_a = (sums["hsic_squared"] - weight_sum * hsic**2) * scale  # Var(h̄_xy)
    var_b, var_c = np.diag(var_a)[:, None], np.diag(var_a)[None, :]  # Var(h̄_xx), Var(h̄_yy)
    cov_ab = (sums["hsic_times_diagonal"] - weight_sum * hsic * b) * scale  # Cov(h̄_xy, h̄_xx)
    cov_ac = cov_ab.T  # Cov(h̄_xy, h̄_yy), h symmetric
    cov_bc = (sums["diagonal_outer"] - weight_sum * b * c) * scale  # Cov(h̄_xx, h̄_yy)
    grad_a, grad_b, grad_c = 1 / np.sqrt(b * c), -matrix / (2 * b), -matrix / (2 * c)  # ∂f/∂a, ∂f/∂b, ∂f/∂c
    variance = (
        grad_a**2 * var_a
        + grad_b**2 * var_b
        + grad_c**2 * var_c
        + 2 * grad_a * grad_b * cov_ab
        + 2 * grad_a * grad_c * cov_ac
        + 2 * grad_b * grad_c * cov_bc
    )
    standard_error = np.sqrt(np.maximum(variance, 0.0))  # rounding can take a true 0 slightly below 0
    np.fill_diagonal(standard_error, np.where(diagonal > 0, 0.0, np.nan))  # CKA(x, x) = 1 in every batch
    return standard_error


def minibatch_cka(
    batches_x: Iterable[ArrayLike],
    batches_y: Iterable[ArrayLike],
    kernel: str = "linear",
    sigma: float | None = None,
) -> float:
    """Minibatch CKA (§1; Nguyen, Raghu, Kornblith 2021) of two iterables of per-batch representations
    [nᵢ, ...] of the same images: Σ wᵢ HSIC₁(Kᵢ, Lᵢ)/√(Σ wᵢ HSIC₁(Kᵢ, Kᵢ)·Σ wᵢ HSIC₁(Lᵢ, Lᵢ)), wᵢ = nᵢ.
    """
    accumulator = MinibatchCKA(kernel=kernel, sigma=sigma)
    missing = object()
    for x, y in itertools.zip_longest(batches_x, batches_y, fillvalue=missing):
        if x is missing or y is missing:
            raise InvalidInputError("batches_x and batches_y must yield the same number of batches (the same images).")
        accumulator.update({"x": x, "y": y})
    return float(accumulator.result().matrix[0, 1])


# ---------------------------------------------------------------------------------------------
# Result


@dataclass(frozen=True)
class CKAResult(Result):
    """CKA between named representations: arrays ``cka``, ``standard_error``, ``hsic``, each [m, m].

    metadata: ``names`` (rows and columns, 'model/layer'), ``n``, ``batch_sizes``, ``estimator``,
    ``kernel``, and whatever the caller added (model specs, data spec, seed, ...).
    """

    kind: ClassVar[str] = "cka"

    @property
    def names(self) -> list[str]:
        return list(self.metadata["names"])

    @property
    def matrix(self) -> np.ndarray:
        """CKA [m, m]."""
        return self.arrays["cka"]

    @property
    def models(self) -> list[str]:
        """Model names in order of first appearance."""
        return list(dict.fromkeys(split_name(name)[0] for name in self.names))

    def layer_names(self, model: str) -> list[str]:
        """The layer names of ``model``, without the 'model/' prefix, in row order."""
        return [split_name(self.names[i])[1] for i in self._indices(model)]

    def block(self, model_a: str, model_b: str | None = None) -> tuple[np.ndarray, list[str], list[str]]:
        """CKA block, its row and its column layer names: rows model_a's layers, columns model_b's
        (model_b None: the within-model block of model_a)."""
        model_b = model_a if model_b is None else model_b
        rows, columns = self._indices(model_a), self._indices(model_b)
        return self.matrix[np.ix_(rows, columns)], self.layer_names(model_a), self.layer_names(model_b)

    def _indices(self, model: str) -> list[int]:
        if model not in self.models:
            raise InvalidInputError(f"no model {model!r} in this CKA result; known models: {self.models}.")
        return [i for i, name in enumerate(self.names) if split_name(name)[0] == model]
