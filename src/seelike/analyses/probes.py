"""Linear probes per block: closed-form ridge regression to ±1 targets (paper Fig 11, 13; docs/methods.md §6-7).

A probe maps a block's features to one-vs-rest targets (+1 for the class, −1 otherwise) by ridge
regression. Features are standardised with the training examples' mean and standard deviation and a
constant bias feature is appended; the weights solve

    (Z̃ᵀZ̃/n + λI) W = Z̃ᵀY/n,     Z̃ = [(X − μ)/σ, 1]

(λ is scaled by n, so one grid, 10⁻³..10³, serves 100 shots and 50 000 images alike; the bias is
penalised like any appended feature). Everything comes from sufficient statistics accumulated in
float64 — n, Σx, XᵀX, XᵀY, ΣY — so memory does not grow with the number of images:
μ = Σx/n, σ² = diag(XᵀX)/n − μ², Z̃ᵀZ̃/n = [[D⁻¹(XᵀX/n − μμᵀ)D⁻¹, 0], [0, 1]],
Z̃ᵀY/n = [D⁻¹(XᵀY/n − μȳᵀ), ȳ]. One eigendecomposition per probe serves every λ.

Readouts (features a block offers a probe):

* ``gap``: mean over the spatial positions — patch tokens *without* prefix tokens (CLS) for token
  models, global average pool for CNNs. The layer-wise curve of Fig 13 uses it.
* ``cls``: the CLS token (models with a prefix token only); ``first``: the first token of the
  sequence (CLS in CLS models, the top-left patch in GAP models); ``mean``: the mean of all tokens,
  prefix included. Fig 11 right: CLS model via cls / gap / mean; GAP model via first / gap.
* ``tokens``: one probe per spatial position (CLS excluded; a CNN's feature-map positions), accuracy
  averaged over positions (Fig 11 left). Its statistics are positions × width² per block.

Two regimes, one test pass: full-data probes (a share of the training images held out to pick λ by
accuracy, then refitted on all of them) and few-shot probes (``shots`` per class, ``samples`` draws,
as many held-out images per class to pick λ; pooled readouts only), reported as mean ± std.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from seelike.analyses.base import Accumulator, Batch, SummedState, activation
from seelike.capture import Capture
from seelike.data import ImageDataset, check_disjoint, iterate_batches
from seelike.distributed import batch_size_for_ranks
from seelike.driver import run
from seelike.errors import InvalidInputError
from seelike.models.model import Layer, Model
from seelike.results import Result
from seelike.similarity import symmetric_gram

__all__ = [
    "middle_blocks",
    "LAMBDAS",
    "READOUTS",
    "FittedProbes",
    "ProbeFeatures",
    "ProbeResult",
    "ProbeScores",
    "ProbeStatistics",
    "RidgeProbe",
    "few_shot_indices",
    "fit_probes",
    "probe_layers",
    "readout_features",
    "resolve_readouts",
    "sharing_drawn_features",
]

log = logging.getLogger(__name__)

LAMBDAS: tuple[float, ...] = tuple(10.0**k for k in range(-3, 4))
MAX_WIDENINGS = 3  # a λ chosen at an edge of the grid widens it by a decade on that side, up to this many times
READOUTS = ("gap", "cls", "first", "mean", "tokens")
POOLED_READOUTS = ("gap", "cls", "first", "mean")
MEMORY_WARNING_BYTES = 8 * 2**30
OUTPUT_BYTES = 64 * 2**20  # regression outputs scored at once (a probe's λ are scored in chunks under this)
KEPT_WEIGHTS_BYTES = 16 * 2**20  # a fitted probe keeps its raw weights for the next batch up to this size (a 28-px ViT's per-token probe: ~5 MB)


# ---------------------------------------------------------------------------------------------
# The probe


@dataclass(frozen=True)
class _Solution:
    """Standardisation and eigendecomposition of one fit; weights for λ are V diag(1/(e+λ)) proj."""

    mean: Tensor  # [G, d]
    scale: Tensor  # [G, d]
    eigenvalues: Tensor  # [G, d]
    eigenvectors: Tensor  # [G, d, d]
    projection: Tensor  # [G, d, C]  Vᵀ ZᵀY/n
    target_mean: Tensor  # [C]  ȳ = Z̃ᵀY/n of the bias feature
    lambdas: Tensor  # [L]


class RidgeProbe(SummedState):
    """Ridge regression to ±1 one-vs-rest targets from streamed sufficient statistics (§7, Fig 11, 13).

    ``update(features, labels)`` takes features [n, d] (one probe) or [n, G, d] (G probes sharing the
    labels, e.g. one per token position); the sums (n, Σx, XᵀX, XᵀY, ΣY) are declared summed state, so
    merging adds them; ``fit(lambdas)`` solves for each λ from the sums (later updates keep
    accumulating; fit again to use them); ``predict`` gives labels [n] ([L, n] for several λ; a
    trailing [G] for grouped features).
    """

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        if num_classes < 2:
            raise InvalidInputError(f"a probe needs at least 2 classes, got num_classes={num_classes}")
        self.num_classes = num_classes
        self.grouped: bool | None = None
        self.add_state("sum")  # Σx [G, d]
        self.add_state("gram")  # XᵀX [G, d, d]
        self.add_state("cross")  # XᵀY [G, d, C]
        self.add_state("target_sum")  # ΣY [C]
        self.add_state("count", torch.zeros((), dtype=torch.int64))
        self._solution: _Solution | None = None
        self._solved_sums: tuple[Tensor | None, ...] = ()  # the state tensors the solution was computed from
        self._single_lambda = False
        self._kept_weights: dict[tuple[int, int], tuple[Tensor, Tensor]] = {}  # λ chunk -> raw weights, of _kept_for
        self._kept_for: _Solution | None = None

    @property
    def n(self) -> int:
        """Training examples in the sums."""
        return int(self.state("count"))

    def signature(self) -> object:
        return (type(self), self.num_classes)

    def merge(self, other: SummedState) -> None:
        assert isinstance(other, RidgeProbe)
        if self.grouped is not None and other.grouped is not None and other.grouped != self.grouped:
            raise InvalidInputError("merge() of grouped into ungrouped probe features: merge only probes of the same readout")
        super().merge(other)
        self.grouped = self.grouped if self.grouped is not None else other.grouped

    def _features(self, features: Tensor) -> Tensor:
        if not isinstance(features, Tensor) or features.ndim not in (2, 3):
            shape = tuple(features.shape) if isinstance(features, Tensor) else type(features).__name__
            raise InvalidInputError(f"probe features must be [n, d] or [n, G, d], got {shape}")
        grouped = features.ndim == 3
        if self.grouped is not None and grouped != self.grouped:
            raise InvalidInputError("probe features changed between [n, d] and [n, G, d]; keep one form")
        x = features.detach().to(torch.float64)
        return x if grouped else x[:, None, :]

    def targets(self, labels: Tensor, device: torch.device) -> Tensor:
        """±1 one-vs-rest targets [n, C]."""
        labels = torch.as_tensor(labels, device=device).long()
        if len(labels) and (labels.min() < 0 or labels.max() >= self.num_classes):
            raise InvalidInputError(f"labels must lie in 0..{self.num_classes - 1}, got {labels.min()}..{labels.max()}")
        return torch.nn.functional.one_hot(labels, self.num_classes).to(torch.float64) * 2 - 1

    def update(self, features: Tensor, labels: Tensor) -> None:
        """Add a batch: features [n, d] or [n, G, d] and integer labels [n]."""
        x = self._features(features)
        if len(labels) != len(x):
            raise InvalidInputError(f"{len(x)} feature rows but {len(labels)} labels")
        previous = self.state("sum")
        if previous is not None and x.shape[1:] != previous.shape:
            raise InvalidInputError(f"features of shape {tuple(x.shape[1:])} after earlier batches of {tuple(previous.shape)}: give every batch the same layers at the same input size")
        y = self.targets(labels, x.device)
        self.grouped = features.ndim == 3
        xg = x.transpose(0, 1)  # [G, n, d]
        self.accumulate(sum=x.sum(dim=0), gram=symmetric_gram(x.permute(1, 2, 0)), cross=torch.einsum("gnd,nc->gdc", xg, y),
                        target_sum=y.sum(dim=0), count=torch.tensor(len(x)))

    def standardised_normal_equations(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """μ [G, d], σ [G, d], ZᵀZ/n [G, d, d] and ZᵀY/n [G, d, C] of the standardised features, from the sums."""
        if self.state("sum") is None or self.n < 2:
            raise InvalidInputError(f"a probe needs at least 2 training examples, got {self.n}")
        n = self.n
        gram, cross, target_sum = self.state("gram"), self.state("cross"), self.state("target_sum")
        mean = self.state("sum") / n
        covariance = gram / n - mean[:, :, None] * mean[:, None, :]
        variance = torch.diagonal(covariance, dim1=1, dim2=2).clamp_min(0)
        second_moment = torch.diagonal(gram, dim1=1, dim2=2) / n
        constant = variance <= 1e-12 * second_moment.clamp_min(torch.finfo(torch.float64).tiny)
        scale = torch.where(constant, torch.ones_like(variance), variance.sqrt())  # a constant feature standardises to 0
        covariance = covariance.masked_fill(constant[:, :, None] | constant[:, None, :], 0.0)
        zz = covariance / (scale[:, :, None] * scale[:, None, :])
        zy = (cross / n - mean[:, :, None] * (target_sum / n)[None, None, :]) / scale[:, :, None]
        zy = zy.masked_fill(constant[:, :, None], 0.0)
        return mean, scale, zz, zy

    def fit(self, lambdas: float | Sequence[float] = LAMBDAS) -> RidgeProbe:
        """Solve the ridge for each λ (objective (1/n)‖Y − Z̃W‖² + λ‖W‖²) from the current sums; returns self."""
        self._single_lambda = isinstance(lambdas, (int, float))
        values = [float(lambdas)] if self._single_lambda else [float(v) for v in lambdas]
        if not values or min(values) <= 0 or not all(math.isfinite(v) for v in values):
            raise InvalidInputError(f"lambdas must be positive finite numbers, got {lambdas!r}")
        sums = tuple(self.state(name) for name in ("sum", "gram", "cross", "target_sum", "count"))
        if self._solution is not None and all(a is b for a, b in zip(sums, self._solved_sums)):
            # the same sums as the last fit (every SummedState operation replaces a state tensor, never changes
            # it in place): only λ differs, so the eigendecomposition is reused (choosing λ refits many times)
            self._solution = replace(self._solution, lambdas=torch.tensor(values, dtype=torch.float64, device=self._solution.mean.device))
            return self
        mean, scale, zz, zy = self.standardised_normal_equations()
        eigenvalues, eigenvectors = torch.linalg.eigh(zz)
        self._solution = _Solution(
            mean, scale, eigenvalues.clamp_min(0), eigenvectors, eigenvectors.transpose(1, 2) @ zy,
            self.state("target_sum") / self.n, torch.tensor(values, dtype=torch.float64, device=mean.device),
        )
        self._solved_sums = sums
        return self

    @property
    def lambdas(self) -> list[float]:
        return self._require_fit().lambdas.tolist()

    def _require_fit(self) -> _Solution:
        if self._solution is None:
            raise InvalidInputError("call fit() before predict(): the probe has no weights yet")
        return self._solution

    def weights(self) -> tuple[Tensor, Tensor]:
        """Weights [L, G, d, C] on standardised features and bias [L, C] (materialised on demand)."""
        s = self._require_fit()
        inverse = 1.0 / (s.eigenvalues[None] + s.lambdas[:, None, None])  # [L, G, d]
        weights = torch.einsum("gde,lge,gec->lgdc", s.eigenvectors, inverse, s.projection)
        return weights, s.target_mean[None] / (1 + s.lambdas[:, None])

    def _raw_weights(self, lambdas: Tensor) -> tuple[Tensor, Tensor]:
        """Weights [G, d, k·C] and bias [G, 1, k·C] on the raw features for the k values of ``lambdas``, λ-major.

        The standardisation is folded in: ((x − μ)/σ)·W + ȳ/(1+λ) = x·(W/σ) + ȳ/(1+λ) − (μ/σ)·W, with
        W = V diag(1/(e+λ)) Vᵀ ZᵀY/n. Scoring then costs one product with the features per probe,
        (n + d)·d·k·C multiply-adds per group, not a rotation of the features into the eigenbasis (n·d²)."""
        s = self._require_fit()
        weights = torch.stack([torch.bmm(s.eigenvectors / (s.eigenvalues + lam)[:, None, :], s.projection) for lam in lambdas], dim=2)
        weights = weights / s.scale[:, :, None, None]  # [G, d, k, C]
        bias = s.target_mean / (1 + lambdas[:, None]) - torch.einsum("gd,gdkc->gkc", s.mean, weights)  # [G, k, C]
        groups, width = weights.shape[:2]
        return weights.reshape(groups, width, -1), bias.reshape(groups, 1, -1)

    def _output_chunks(self, features: Tensor) -> Iterator[tuple[int, Tensor]]:
        """Regression outputs [G, n, k, C] for the λ from index ``start`` on, k at a time (bounded by
        :data:`OUTPUT_BYTES`), as ``(start, outputs)``."""
        s = self._require_fit()
        x = self._features(features).to(s.mean.device).transpose(0, 1)  # [G, n, d]
        groups, n, classes = x.shape[0], x.shape[1], s.projection.shape[-1]
        step = max(1, OUTPUT_BYTES // (8 * groups * max(n, 1) * classes))
        for start in range(0, len(s.lambdas), step):
            weights, bias = self._chunk_weights(start, min(start + step, len(s.lambdas)))
            yield start, torch.baddbmm(bias, x, weights).view(groups, n, -1, classes)

    def _chunk_weights(self, start: int, stop: int) -> tuple[Tensor, Tensor]:
        """:meth:`_raw_weights` of λ[start:stop], kept while the fit stays the same and the kept weights stay under
        :data:`KEPT_WEIGHTS_BYTES`: a scoring pass then forms them once, not once per batch (they cost a
        d × d product per λ, about as much as scoring a batch)."""
        s = self._require_fit()
        if self._kept_for is not s:
            self._kept_weights, self._kept_for = {}, s
        if (start, stop) in self._kept_weights:
            return self._kept_weights[start, stop]
        weights, bias = self._raw_weights(s.lambdas[start:stop])
        kept = sum(w.numel() * w.element_size() for w, _ in self._kept_weights.values())
        if kept + weights.numel() * weights.element_size() <= KEPT_WEIGHTS_BYTES:
            self._kept_weights[start, stop] = weights, bias
        return weights, bias

    def _outputs(self, features: Tensor) -> Iterator[Tensor]:
        """Regression outputs [n, G, C] for each λ in turn."""
        for _, outputs in self._output_chunks(features):
            yield from outputs.permute(2, 1, 0, 3)

    def scores(self, features: Tensor) -> Tensor:
        """Regression outputs [L, n, G, C] for features [n, d] or [n, G, d]."""
        return torch.stack(list(self._outputs(features)))

    def _shape(self, values: Tensor) -> Tensor:
        """Drop the λ axis (fit with one λ) and the group axis (ungrouped features); λ is dim 0, G the last."""
        values = values if self.grouped else values[..., 0]
        return values[0] if self._single_lambda else values

    def predict(self, features: Tensor) -> Tensor:
        """Predicted labels: [n] (one λ, [n, d] features), [L, n] for several λ, [..., G] when grouped."""
        return self._shape(torch.stack([outputs.argmax(dim=-1) for outputs in self._outputs(features)]))

    def correct(self, features: Tensor, labels: Tensor) -> Tensor:
        """Number of correct predictions [L, G] (float64)."""
        counts = []
        labels = torch.as_tensor(labels, device=self._require_fit().mean.device).long()
        for _, outputs in self._output_chunks(features):
            counts.append((outputs.argmax(dim=-1) == labels[None, :, None]).sum(dim=1).T)  # [k, G]
        return torch.cat(counts).to(torch.float64)

    def accuracy(self, features: Tensor, labels: Tensor) -> Tensor:
        """Accuracy: a scalar for one λ and ungrouped features; [L] for several λ; [..., G] when grouped."""
        return self._shape(self.correct(features, labels) / len(labels))


def _best_lambda(validation_accuracy: Tensor, lambdas: Sequence[float]) -> int:
    """Index of the λ with the best validation accuracy [L] (ties: the largest λ, the most regularised)."""
    best = validation_accuracy.max().item()
    tied = [i for i, v in enumerate(validation_accuracy.tolist()) if v >= best - 1e-12]
    return max(tied, key=lambda i: lambdas[i])


def widen_lambdas(lambdas: Sequence[float], best: int) -> list[float] | None:
    """The grid widened by a decade beyond the edge where ``best`` sits, or None when ``best`` is inside it."""
    lambdas = list(lambdas)
    if len(lambdas) < 2 or 0 < best < len(lambdas) - 1:
        return None
    return [lambdas[0] / 10, *lambdas] if best == 0 else [*lambdas, lambdas[-1] * 10]


def _choose_lambda(score: Callable[[list[float]], Tensor], lambdas: Sequence[float], widenings: int = MAX_WIDENINGS) -> tuple[list[float], int]:
    """Choose λ by ``score(grid) -> validation accuracy [len(grid)]``, widening the grid while the choice is at an edge."""
    grid = list(lambdas)
    best = _best_lambda(score(grid), grid)
    for _ in range(widenings):
        wider = widen_lambdas(grid, best)
        if wider is None:
            break
        grid = wider
        best = _best_lambda(score(grid), grid)
    return grid, best


def reachable_lambdas(lambdas: Sequence[float], widenings: int = MAX_WIDENINGS) -> list[float]:
    """Every λ that :func:`_choose_lambda` can reach from ``lambdas``: ``widenings`` decades beyond each edge,
    computed as :func:`widen_lambdas` computes them (so the same floats)."""
    grid = list(lambdas)
    for _ in range(widenings if len(grid) >= 2 else 0):
        grid = [grid[0] / 10, *grid, grid[-1] * 10]
    return grid


def _looked_up(reach: Sequence[float], accuracy: Tensor) -> Callable[[list[float]], Tensor]:
    """A ``score`` for :func:`_choose_lambda` from accuracy already computed for every λ of ``reach``.

    A probe's outputs at one λ depend on its sums and that λ alone, so scoring every reachable λ at once
    gives the numbers a refit per widening gives, without streaming the images again."""
    position = {value: i for i, value in enumerate(reach)}
    return lambda grid: accuracy[[position[value] for value in grid]]


# ---------------------------------------------------------------------------------------------
# Readouts


def _is_cnn(model: Model) -> bool:
    return model.block_layers()[0].kind == "feature_map"


def native_readouts(model: Model) -> list[str]:
    """The readouts that make sense for ``model``: CNN gap, tokens; CLS ViT cls, gap, mean, tokens; GAP ViT first, gap, tokens."""
    if _is_cnn(model):
        return ["gap", "tokens"]
    prefix = model.token_layout.num_prefix_tokens if model.token_layout else 0
    return ["cls", "gap", "mean", "tokens"] if prefix else ["first", "gap", "tokens"]


def resolve_readouts(model: Model, readouts: str | Sequence[str]) -> list[str]:
    """Validate ``readouts`` for ``model`` ("all": its native readouts); errors say which readouts work."""
    if isinstance(readouts, str):
        readouts = [r.strip() for r in readouts.split(",") if r.strip()]
    if list(readouts) == ["all"]:
        return native_readouts(model)
    unknown = [r for r in readouts if r not in READOUTS]
    if unknown or not readouts:
        raise InvalidInputError(f"unknown readout(s) {unknown}; choose from {', '.join(READOUTS)} or 'all'")
    if _is_cnn(model):
        works = ["gap", "tokens"]
        bad = [r for r in readouts if r not in works]
        if bad:
            raise InvalidInputError(f"{model.spec} is a CNN (feature maps, no tokens): readout(s) {', '.join(bad)} do not apply; "
                                    f"readouts that work: {', '.join(works)} (gap = global average pool)")
    elif "cls" in readouts and not (model.token_layout and model.token_layout.num_prefix_tokens):
        raise InvalidInputError(f"{model.spec} has no CLS token (a GAP classifier); readouts that work: "
                                f"{', '.join(native_readouts(model))} (first = its first patch token)")
    return list(dict.fromkeys(readouts))


def readout_features(tensor: Tensor, readout: str, num_prefix_tokens: int = 0) -> Tensor:
    """Features of one readout: [B, d], or [B, P, d] for ``tokens`` (§6-7).

    ``tensor`` is a block output, tokens [B, T, D] (prefix tokens first) or a feature map [B, C, H, W].
    """
    if tensor.ndim == 4:  # feature map
        if readout == "gap":
            return tensor.mean(dim=(2, 3))
        if readout == "tokens":
            return tensor.flatten(2).transpose(1, 2)
    elif tensor.ndim == 3:
        p = num_prefix_tokens
        if readout == "gap":
            return tensor[:, p:].mean(dim=1)
        if readout == "mean":
            return tensor.mean(dim=1)
        if readout in ("cls", "first"):
            return tensor[:, 0]
        if readout == "tokens":
            return tensor[:, p:]
    raise InvalidInputError(f"readout {readout!r} does not apply to a tensor of shape {tuple(tensor.shape)}")


# ---------------------------------------------------------------------------------------------
# Sampling and streaming


def few_shot_indices(labels: Tensor, num_classes: int, shots: int, samples: int, seed: int = 0) -> list[tuple[Tensor, Tensor]]:
    """Per sample, (``shots`` training and ``shots`` held-out validation positions per class), sorted (§7).

    Deterministic by ``seed``; a class with fewer than 2 × ``shots`` images is an error naming it.
    """
    if shots < 1 or samples < 1:
        raise InvalidInputError(f"shots and samples must be >= 1, got shots={shots}, samples={samples}")
    labels = torch.as_tensor(labels).long()
    members = [torch.nonzero(labels == k).flatten() for k in range(num_classes)]
    for k, found in enumerate(members):
        if len(found) < 2 * shots:
            raise InvalidInputError(
                f"class {k} has {len(found)} training images, but {shots} shots need {2 * shots} per class "
                f"({shots} to fit, {shots} held out to choose λ); use fewer --shots or more training images"
            )
    generator = torch.Generator().manual_seed(int(seed))
    draws = []
    for _ in range(samples):
        orders = [found[torch.randperm(len(found), generator=generator)] for found in members]
        train = torch.sort(torch.cat([order[:shots] for order in orders])).values
        validation = torch.sort(torch.cat([order[shots : 2 * shots] for order in orders])).values
        draws.append((train, validation))
    return draws


def _block_features(activations: Mapping[str, dict[str, Tensor]], model: Model, readouts: Sequence[str]) -> dict[tuple[str, int], Tensor]:
    """{(readout, block index): features} of one batch, from the readouts :class:`_ReadsBlocks` kept per block."""
    return {(readout, b): activation(activations, model, layer)[readout]
            for b, layer in enumerate(model.block_layers()) for readout in readouts}


class _ReadsBlocks(Accumulator):
    """Probe passes read every block output and keep only the readouts' features of it."""

    model: Model
    readouts: list[str]

    def layers(self) -> dict[str, list[Layer]]:
        return {self.model.name: self.model.block_layers()}

    def reduce(self, key: str, tensor: Tensor) -> dict[str, Tensor]:
        prefix = self.model.token_layout.num_prefix_tokens if self.model.token_layout else 0
        return {readout: readout_features(tensor, readout, prefix) for readout in self.readouts}


class ProbeStatistics(_ReadsBlocks):
    """Sufficient statistics of one :class:`RidgeProbe` per (readout, block): a training pass (§7)."""

    kind: ClassVar[str] = "probe_statistics"

    def __init__(self, model: Model, readouts: Sequence[str], num_classes: int) -> None:
        super().__init__([model])
        self.model, self.readouts = model, list(readouts)
        self.probes = {(r, b): RidgeProbe(num_classes) for r in self.readouts for b in range(model.num_blocks)}
        for (readout, b), probe in self.probes.items():
            self.add_child(f"{readout}.{b}", probe)

    def update(self, activations: Mapping[str, Tensor], batch: Batch) -> None:
        for key, x in _block_features(activations, self.model, self.readouts).items():
            self.probes[key].update(x, batch.labels.to(x.device))
        self.count(batch)

    def compute(self) -> Result:
        return Result(arrays={"examples": np.array([probe.n for probe in self.probes.values()])},
                      metadata={"model": self.model.name, "probes": [f"{r}.{b}" for r, b in self.probes], "n": self.num_images})


class ProbeFeatures(_ReadsBlocks):
    """Keeps the pooled features of a few images per (readout, block): the few-shot draws' training pass (§7)."""

    kind: ClassVar[str] = "probe_features"

    def __init__(self, model: Model, readouts: Sequence[str]) -> None:
        super().__init__([model])
        self.model, self.readouts = model, list(readouts)
        self.keys = [(r, b) for r in self.readouts for b in range(model.num_blocks)]
        for readout, b in self.keys:
            self.add_state(f"{readout}.{b}", reduce="cat")
        self.add_state("labels", torch.zeros(0, dtype=torch.int64), reduce="cat")
        self.add_state("indices", torch.zeros(0, dtype=torch.int64), reduce="cat")

    def update(self, activations: Mapping[str, Tensor], batch: Batch) -> None:
        features = _block_features(activations, self.model, self.readouts)
        self.accumulate(**{f"{r}.{b}": x.to("cpu", torch.float32) for (r, b), x in features.items()},  # float64 inside the probe
                        labels=batch.labels.long(), indices=batch.indices.long())
        self.count(batch)

    def compute(self) -> Result:
        arrays = {name: self.state(name).numpy() for name in (*(f"{r}.{b}" for r, b in self.keys), "labels", "indices")}
        return Result(arrays=arrays, metadata={"model": self.model.name, "n": self.num_images})


class ProbeScores(_ReadsBlocks):
    """Correct predictions of fitted probes, summed over a scoring pass: counts [L, G] per probe key."""

    kind: ClassVar[str] = "probe_scores"

    def __init__(self, model: Model, probes: Mapping[tuple[str, int, int], RidgeProbe]) -> None:
        super().__init__([model])
        self.model, self.probes = model, dict(probes)
        self.readouts = list(dict.fromkeys(readout for readout, _, _ in self.probes))
        for readout, b, sample in self.probes:
            self.add_state(f"{readout}.{b}.{sample}")

    def update(self, activations: Mapping[str, Tensor], batch: Batch) -> None:
        features = _block_features(activations, self.model, self.readouts)
        for (readout, b, sample), probe in self.probes.items():
            x = features[readout, b]
            self.accumulate(**{f"{readout}.{b}.{sample}": probe.correct(x, batch.labels.to(x.device)).cpu()})
        self.count(batch)

    def correct(self, readout: str, block: int, sample: int = -1) -> Tensor:
        """Summed correct counts [L, G] of one probe."""
        return self.state(f"{readout}.{block}.{sample}")

    def compute(self) -> Result:
        arrays = {name: (value / self.num_images).numpy() for name, value in self.state_dict().items() if name != "images"}
        return Result(arrays=arrays, metadata={"model": self.model.name, "n": self.num_images, "unit": "accuracy [lambdas, groups]"})


def _warn_memory(model: Model, layers: Sequence[Layer], readouts: Sequence[str], num_classes: int) -> None:
    """Warn when the full-data statistics (and their eigendecompositions) would exceed a few GiB."""
    channels, height, width = model.preprocessing.input_size
    with Capture(model, layers) as capture:
        outputs = capture(torch.rand(1, channels, height, width, device=model.device), preprocess=False)
    prefix = model.token_layout.num_prefix_tokens if model.token_layout else 0
    total = 0
    for tensor in outputs.values():
        for readout in readouts:
            features = readout_features(tensor, readout, prefix)
            groups, d = (features.shape[1] if features.ndim == 3 else 1), features.shape[-1]
            total += 8 * groups * (2 * d * d + 2 * d * num_classes + 3 * d)
    if total > MEMORY_WARNING_BYTES:
        warnings.warn(f"probing {model.spec} with readouts {list(readouts)} needs about {total / 2**30:.1f} GiB for its "
                      "statistics ('tokens' costs positions x width^2 per block); drop 'tokens' to need far less",
                      RuntimeWarning, stacklevel=3)
    log.info("probe statistics: %.2f GiB", total / 2**30)


# ---------------------------------------------------------------------------------------------
# Result


def middle_blocks(blocks: int) -> slice:
    """The middle half of ``blocks`` blocks (Fig 13's intermediate layers): 1..3 of 6, 2..5 of 8."""
    return slice(blocks // 4, max(blocks // 4 + 1, 3 * blocks // 4))


@dataclass(frozen=True)
class ProbeResult(Result):
    """Probe accuracy per readout and block (Fig 11, 13).

    Arrays: ``accuracy``, ``validation_accuracy``, ``lambda`` [readouts, blocks] (full-data; absent with
    n_train = 0), ``token_accuracy`` [blocks, positions] (readout ``tokens``), ``few_shot_accuracy``,
    ``few_shot_std`` [few-shot readouts, blocks], ``few_shot_per_sample``, ``few_shot_lambda``
    [few-shot readouts, blocks, samples], ``blocks`` [blocks]. Metadata: model, readouts,
    few_shot_readouts, n_train, n_validation, n_test, shots, samples, lambdas, chance, data, seed.
    """

    kind: ClassVar[str] = "probes"

    @property
    def model(self) -> str:
        return str(self.metadata["model"])

    @property
    def readouts(self) -> list[str]:
        return list(self.metadata["readouts"])

    @property
    def few_shot_readouts(self) -> list[str]:
        return list(self.metadata.get("few_shot_readouts", []))

    @property
    def blocks(self) -> list[int]:
        return [int(b) for b in self.arrays["blocks"]]

    @property
    def regimes(self) -> list[str]:
        """``full`` and/or ``few_shot``: which probes this result holds."""
        return [r for r, key in (("full", "accuracy"), ("few_shot", "few_shot_accuracy")) if key in self.arrays]

    def curve(self, readout: str = "gap", regime: str = "full") -> tuple[np.ndarray, np.ndarray | None]:
        """Accuracy per block of one readout and its std over shot samples (None for full-data probes)."""
        if regime not in self.regimes:
            raise InvalidInputError(f"this probe result has no {regime!r} probes; it has: {', '.join(self.regimes)}")
        names = self.readouts if regime == "full" else self.few_shot_readouts
        if readout not in names:
            raise InvalidInputError(f"no {regime} probe for readout {readout!r}; readouts: {', '.join(names)}")
        row = names.index(readout)
        if regime == "full":
            return self.arrays["accuracy"][row], None
        return self.arrays["few_shot_accuracy"][row], self.arrays["few_shot_std"][row]


# ---------------------------------------------------------------------------------------------
# The analysis


def _fit_few_shot(model: Model, train_set: ImageDataset, readouts: Sequence[str], shots: int, samples: int,
                  lambdas: list[float], batch_size: int, seed: int, progress: bool | None, widenings: int = MAX_WIDENINGS
                  ) -> tuple[dict[tuple[str, int, int], RidgeProbe], np.ndarray]:
    """Few-shot probes per (readout, block, sample), refitted at their chosen λ, and the chosen λ [R, B, S]."""
    draws = few_shot_indices(train_set.labels, train_set.num_classes, shots, samples, seed)
    drawn = torch.unique(torch.cat([torch.cat(draw) for draw in draws]))  # each drawn image streamed once
    kept = _drawn_features(model, train_set, readouts, drawn, batch_size, progress)
    all_labels = torch.from_numpy(kept["labels"])
    probes, chosen = {}, np.zeros((len(readouts), model.num_blocks, samples))
    reach = reachable_lambdas(lambdas, widenings)
    for s, (train, validation) in enumerate(draws):
        train_rows, validation_rows = torch.searchsorted(drawn, train), torch.searchsorted(drawn, validation)
        for r, readout in enumerate(readouts):
            for b in range(model.num_blocks):
                x = torch.from_numpy(kept[f"{readout}.{b}"])
                probe = RidgeProbe(train_set.num_classes)
                probe.update(x[train_rows], all_labels[train_rows])

                accuracy = probe.fit(reach).correct(x[validation_rows], all_labels[validation_rows])[:, 0]
                grid, best = _choose_lambda(_looked_up(reach, accuracy), lambdas, widenings)  # widened while at an edge
                probes[readout, b, s] = probe.fit(grid[best])
                chosen[r, b, s] = grid[best]
    return probes, chosen


#: features already forwarded within :func:`sharing_drawn_features`: (model, data, images) -> {"readout.block" | "labels": array}
_DRAWN_FEATURES: ContextVar[dict[tuple[str, ...], dict[str, np.ndarray]] | None] = ContextVar("seelike_drawn_features", default=None)


@contextmanager
def sharing_drawn_features() -> Iterator[None]:
    """Within the block, few-shot probes of one model on the same drawn images forward them once: a study's
    probe steps (RQ3's readouts, RQ4's data scale) draw the same shots from one seed for several of the same models."""
    token = _DRAWN_FEATURES.set({})
    try:
        yield
    finally:
        _DRAWN_FEATURES.reset(token)


def _drawn_features(model: Model, train_set: ImageDataset, readouts: Sequence[str], drawn: Tensor, batch_size: int,
                    progress: bool | None) -> dict[str, np.ndarray]:
    """The pooled features ``"readout.block"`` [images, d] and ``"labels"`` of the ``drawn`` images, rows in ``drawn``
    order; within :func:`sharing_drawn_features`, the readouts an earlier call kept for these images are reused."""
    shared, kept = _DRAWN_FEATURES.get(), {}
    if shared is not None:
        images = hashlib.sha256(train_set.source_indices[drawn].numpy().tobytes()).hexdigest()  # which images, even of a subset
        kept = shared.setdefault((model.spec, model.fingerprint(), train_set.pool, repr(train_set.image_shape), images), {})
    missing = [readout for readout in readouts if f"{readout}.0" not in kept]
    if missing:
        features = run([ProbeFeatures(model, missing)], train_set, batch_size=batch_size_for_ranks(len(drawn), batch_size),
                       indices=drawn, progress=progress)[0]
        rows = np.argsort(features["indices"], kind="stable")  # rows in ``drawn`` order, whatever order the ranks sent them
        kept.update({name: values[rows] for name, values in features.arrays.items() if name != "indices"})
    return kept


def _fit_full(model: Model, train_set: ImageDataset, readouts: Sequence[str], order: Tensor, n_validation: int,
              lambdas: list[float], batch_size: int, progress: bool | None, widenings: int = MAX_WIDENINGS
              ) -> tuple[dict[tuple[str, int], RidgeProbe], np.ndarray, np.ndarray]:
    """Full-data probes: fit on ``order`` minus its last ``n_validation``, choose λ on those, refit on all.

    Returns the refitted probes, validation accuracy and chosen λ [R, B] (token probes: accuracy
    averaged over positions, one λ per block). The held-out pass scores the first fit at every λ the
    widening can reach and adds the held-out images to the sums in the same forward pass: two passes in all."""
    fitting, held_out = torch.sort(order[:-n_validation]).values, torch.sort(order[-n_validation:]).values
    _warn_memory(model, model.block_layers(), readouts, train_set.num_classes)
    statistics = ProbeStatistics(model, readouts, train_set.num_classes)
    # sums and counts, the same however the images are batched: every rank of a distributed run gets a batch
    run([statistics], train_set, batch_size=batch_size_for_ranks(len(fitting), batch_size), indices=fitting, progress=progress)
    probes = statistics.probes
    reach = reachable_lambdas(lambdas, widenings)
    for probe in probes.values():
        probe.fit(reach)
    scores = ProbeScores(model, {(r, b, -1): probe for (r, b), probe in probes.items()})
    run([scores, statistics], train_set, batch_size=batch_size_for_ranks(len(held_out), batch_size), indices=held_out,
        progress=progress)  # sums: every training image
    validation_accuracy, chosen = np.zeros((len(readouts), model.num_blocks)), np.zeros((len(readouts), model.num_blocks))
    for (readout, b), probe in probes.items():
        accuracy = scores.correct(readout, b).mean(dim=1) / len(held_out)  # averaged over token positions
        grid, best = _choose_lambda(_looked_up(reach, accuracy), lambdas, widenings)  # widened while at an edge
        row = readouts.index(readout)
        validation_accuracy[row, b], chosen[row, b] = accuracy[reach.index(grid[best])].item(), grid[best]
        probe.fit(grid[best])
    return probes, validation_accuracy, chosen


@dataclass
class FittedProbes:
    """The training phase of :func:`probe_layers`: fitted probes and what fitting chose, before any test image.

    :meth:`scorer` gives the accumulator that scores every probe in one pass over test images (on its
    own, or within a study's shared pass); :meth:`result` turns its counts into the :class:`ProbeResult`.
    """

    model: Model
    readouts: list[str]  # full-data readouts ([] without full-data probes)
    few_shot_readouts: list[str]
    full: dict[tuple[str, int], RidgeProbe]
    few_shot: dict[tuple[str, int, int], RidgeProbe]
    arrays: dict[str, np.ndarray]
    metadata: dict[str, Any]
    started: float

    def scorer(self) -> ProbeScores:
        """An accumulator scoring every fitted probe (full-data ones as sample -1)."""
        return ProbeScores(self.model, {**{(r, b, -1): probe for (r, b), probe in self.full.items()}, **self.few_shot})

    def result(self, scores: ProbeScores, test_set: ImageDataset) -> ProbeResult:
        """Test accuracy of every probe from ``scores`` (a :meth:`scorer` that has seen the test images)."""
        n_test, blocks = scores.num_images, self.model.num_blocks
        if n_test < 1:
            raise InvalidInputError("the probes' scoring pass saw no test image; give n_test >= 1")
        arrays = dict(self.arrays)
        token_positions: list[int] = []
        if self.full:
            per_group = {(r, b): (scores.correct(r, b)[0] / n_test).numpy() for r, b in self.full}
            arrays["accuracy"] = np.array([[per_group[r, b].mean() for b in range(blocks)] for r in self.readouts])
            if "tokens" in self.readouts:  # positions can differ per block (a CNN's stages): NaN-padded, counts in metadata
                token_positions = [len(per_group["tokens", b]) for b in range(blocks)]
                arrays["token_accuracy"] = np.full((blocks, max(token_positions)), np.nan)
                for b, count in enumerate(token_positions):
                    arrays["token_accuracy"][b, :count] = per_group["tokens", b]
        if self.few_shot_readouts:
            samples = self.metadata["samples"]
            per_sample = np.array([[[float(scores.correct(r, b, s)[0, 0]) / n_test for s in range(samples)] for b in range(blocks)]
                                   for r in self.few_shot_readouts])
            arrays["few_shot_per_sample"], arrays["few_shot_accuracy"] = per_sample, per_sample.mean(axis=2)
            arrays["few_shot_std"] = per_sample.std(axis=2, ddof=1) if samples > 1 else np.zeros(per_sample.shape[:2])
        metadata = {**self.metadata, "token_positions": token_positions, "split": test_set.split, "n_test": n_test,
                    "seconds": round(time.perf_counter() - self.started, 2)}
        return ProbeResult(arrays=arrays, metadata=metadata)


def fit_probes(
    model: Model,
    train_set: ImageDataset,
    n_train: int | None = None,
    batch_size: int = 256,
    readouts: str | Sequence[str] = ("gap",),
    shots: int | None = None,
    samples: int = 5,
    lambdas: Sequence[float] = LAMBDAS,
    validation_fraction: float = 0.2,
    seed: int = 0,
    progress: bool | None = None,
    widenings: int = MAX_WIDENINGS,
) -> FittedProbes:
    """The training phase of :func:`probe_layers` (its parameters): few-shot draws and full-data fits on ``train_set``."""
    started = time.perf_counter()
    readouts = resolve_readouts(model, readouts)
    layers, num_classes = model.block_layers(), train_set.num_classes
    lambdas = [float(v) for v in lambdas]
    n_train = len(train_set) if n_train is None else int(n_train)
    if not 0 <= n_train <= len(train_set):
        raise InvalidInputError(f"n_train={n_train} must lie in 0..{len(train_set)} (the images of its split)")
    if not 0 < validation_fraction < 1:
        raise InvalidInputError(f"validation_fraction must lie strictly between 0 and 1, got {validation_fraction}")
    if n_train == 0 and not shots:
        raise InvalidInputError("nothing to probe: n_train=0 and no shots; give n_train > 0 or shots")
    few_shot_readouts = [r for r in readouts if r in POOLED_READOUTS] if shots else []
    if shots and not few_shot_readouts:
        raise InvalidInputError("few-shot probes take pooled readouts (gap, cls, first, mean); add one besides 'tokens'")
    n_validation = max(1, round(validation_fraction * n_train)) if n_train else 0
    if n_train and n_train - n_validation < 2:
        raise InvalidInputError(f"n_train={n_train} is too few: a probe needs at least 2 fitting images and 1 held out")
    arrays: dict[str, np.ndarray] = {"blocks": np.array([layer.block for layer in layers])}

    few_shot: dict[tuple[str, int, int], RidgeProbe] = {}
    if few_shot_readouts:
        few_shot, arrays["few_shot_lambda"] = _fit_few_shot(
            model, train_set, few_shot_readouts, shots, samples, lambdas, batch_size, seed, progress, widenings)
    full: dict[tuple[str, int], RidgeProbe] = {}
    if n_train:
        order = torch.randperm(len(train_set), generator=torch.Generator().manual_seed(int(seed)))[:n_train]
        full, arrays["validation_accuracy"], arrays["lambda"] = _fit_full(
            model, train_set, readouts, order, n_validation, lambdas, batch_size, progress, widenings)
    metadata = {
        "model": model.name,
        "model_spec": model.spec,
        "models": {model.name: model.spec},
        "model_fingerprints": {model.name: model.fingerprint()},
        "family": model.family,
        "layers": [layer.name for layer in layers],
        "readouts": readouts if full else [],
        "few_shot_readouts": few_shot_readouts,
        "num_prefix_tokens": model.token_layout.num_prefix_tokens if model.token_layout else 0,
        "data": train_set.spec,
        "train_split": train_set.split,
        "num_classes": num_classes,
        "chance": 1.0 / num_classes,
        "n_train": n_train,
        "n_validation": n_validation,
        "shots": shots or 0,
        "samples": samples if shots else 0,
        "few_shot_validation_per_class": shots or 0,
        "lambdas": lambdas,
        "lambda_widening": f"a lambda chosen at an edge of the grid widens it by a decade on that side, up to {widenings} times; "
                           "the chosen values are in the lambda / few_shot_lambda arrays",
        "lambda_selection": "held-out accuracy, ties to the largest lambda; objective (1/n)||Y - [Z, 1]W||^2 + lambda ||W||^2",
        "features": "gap: mean of spatial tokens (prefix/CLS excluded) or global average pool; tokens: one probe per "
                    "spatial position (prefix excluded), accuracy averaged over positions; few-shot std with ddof=1",
        "test_images": "the seeded random n_test of the test split (the same images every analysis of a study reads)",
        "batch_size": batch_size,
        "seed": seed,
    }
    return FittedProbes(model, readouts if full else [], few_shot_readouts, full, few_shot, arrays, metadata, started)


def probe_layers(
    model: Model,
    train_set: ImageDataset,
    test_set: ImageDataset,
    n_train: int | None = None,
    n_test: int | None = None,
    batch_size: int = 256,
    readouts: str | Sequence[str] = ("gap",),
    shots: int | None = None,
    samples: int = 5,
    lambdas: Sequence[float] = LAMBDAS,
    validation_fraction: float = 0.2,
    seed: int = 0,
    progress: bool | None = None,
    widenings: int = MAX_WIDENINGS,
) -> ProbeResult:
    """Linear probes on every block of ``model`` (Fig 11, 13; §7), full-data and/or few-shot.

    Full-data: ``n_train`` seeded random images of ``train_set`` (default all; 0 skips), a
    ``validation_fraction`` of them held out to choose λ by accuracy, then the probe refitted on all
    ``n_train``. Few-shot (``shots`` per class, ``samples`` draws): pooled readouts only. Both are
    scored in one pass over ``n_test`` seeded random images of ``test_set`` (the images every other
    analysis reads with this ``seed``); memory does not grow with ``n_train``.
    A λ chosen at an edge of ``lambdas`` widens the grid by a decade on that side, up to ``widenings`` times
    (0: the grid as given).
    """
    check_disjoint(train_set, test_set)  # never test on images the probe was fit on
    n_test = check_test_set(train_set, test_set, n_test)
    fitted = fit_probes(model, train_set, n_train, batch_size, readouts, shots, samples, lambdas, validation_fraction, seed,
                        progress, widenings)
    scores = fitted.scorer()
    # the seeded images every analysis reads (a study's shared pass among them), in any number: probes need no 4-image batch
    order = iterate_batches(test_set, batch_size, n=n_test, shuffle=True, seed=seed, min_batch=1).order
    run([scores], test_set, batch_size=batch_size_for_ranks(len(order), batch_size), indices=order, progress=progress)
    return fitted.result(scores, test_set)


def check_test_set(train_set: ImageDataset, test_set: ImageDataset, n_test: int | None) -> int:
    """``n_test`` (default: every test image) after checking that the test set can score probes fit on ``train_set``."""
    n_test = len(test_set) if n_test is None else int(n_test)
    if test_set.num_classes != train_set.num_classes:
        raise InvalidInputError(f"train and test sets have {train_set.num_classes} and {test_set.num_classes} classes; use one data set")
    if not 0 <= n_test <= len(test_set):
        raise InvalidInputError(f"n_test={n_test} must lie in 0..{len(test_set)} (the images of its split)")
    if n_test < 1:
        raise InvalidInputError("n_test must be at least 1: probes are scored on test images")
    return n_test
