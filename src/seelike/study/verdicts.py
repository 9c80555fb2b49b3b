"""How a finding is judged: one statistic, its uncertainty, its baseline under the same rule, one of four verdicts.

Every rule reduces a claim of the paper to a statistic that is positive when the claim holds (e.g.
"ViT uniformity minus ResNet uniformity"). The statistic is computed from the trained models and,
by the same function, from the baseline models. Its uncertainty comes from draws (:class:`Quantity`):
bootstrap draws over images that the analyses store, or normal draws from a standard error the
analyses estimate (a CKA cell's delta-method SE, a probe accuracy's binomial SE); the standard error
of the statistic is the spread of the statistic over the draws. Quantities of different models are
drawn independently, so a difference between two models has the SE √(se₁² + se₂²).

Verdicts (:data:`VERDICTS`):

* **held**: the trained statistic exceeds 2 SE, and the baseline's does not (random-init or
  patch-only baselines), or it also exceeds the seed-to-seed difference (seed baselines);
* **also at baseline**: the trained statistic exceeds 2 SE, but the baseline meets the claim too
  (random init: its statistic exceeds its own 2 SE) or two seeds differ by as much: the
  architecture or chance, not training or data, produces it;
* **not held**: the trained statistic is within 2 SE of zero, or below it;
* **not measured**: the statistic is undefined here (NaN, no uncertainty, a degenerate setting
  the rule names: too few heads to rank, no local heads in any model).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from seelike.statistics import BOOTSTRAP_DRAWS, binomial_standard_error, normal_draws

Verdict = Literal["held", "also at baseline", "not held", "not measured"]
VERDICTS: tuple[Verdict, ...] = ("held", "also at baseline", "not held", "not measured")
BaselineKind = Literal["random init", "patch embedding", "second seed"]
SIGNIFICANCE = 2.0  # a statistic counts only beyond this many standard errors


def draw_seed(*names: str) -> int:
    """A fixed seed per named quantity, so that draws of different models are independent but reproducible."""
    return zlib.crc32("/".join(names).encode())


@dataclass(frozen=True)
class Quantity:
    """A value with draws [D] of it (bootstrap or normal); arithmetic applies to both, draw by draw."""

    value: float
    draws: np.ndarray

    @property
    def se(self) -> float:
        finite = self.draws[np.isfinite(self.draws)]
        if not math.isfinite(self.value):
            return math.nan
        return float(np.std(finite, ddof=1)) if len(finite) >= 2 and len(finite) == len(self.draws) else math.nan

    @classmethod
    def exact(cls, value: float, draws: int = BOOTSTRAP_DRAWS) -> Quantity:
        """A value without error (e.g. a threshold)."""
        return cls(float(value), np.full(draws, float(value)))

    @classmethod
    def of(cls, statistic: Callable[[np.ndarray], float], value: np.ndarray, draws: np.ndarray) -> Quantity:
        """``statistic`` applied to ``value`` and to each of ``draws`` [D, ...]."""
        return cls(float(statistic(np.asarray(value))), np.array([float(statistic(d)) for d in draws]))

    @classmethod
    def normal(cls, statistic: Callable[[np.ndarray], float], value: np.ndarray, standard_error: np.ndarray, *seed: str) -> Quantity:
        """``statistic`` of ``value`` with independent normal errors of ``standard_error`` per element."""
        return cls.of(statistic, value, normal_draws(value, standard_error, seed=draw_seed(*seed)))

    @classmethod
    def accuracy(cls, value: float, n: int, *seed: str) -> Quantity:
        """A test accuracy on ``n`` images, with its binomial standard error."""
        return cls.normal(float, np.asarray(value, dtype=float), binomial_standard_error(value, n), *seed)

    def _combine(self, other: Any, operation: Callable[[Any, Any], Any]) -> Quantity:
        if isinstance(other, Quantity):
            return Quantity(float(operation(self.value, other.value)), operation(self.draws, other.draws))
        return Quantity(float(operation(self.value, other)), operation(self.draws, other))

    def __add__(self, other: Any) -> Quantity:
        return self._combine(other, lambda a, b: a + b)

    def __sub__(self, other: Any) -> Quantity:
        return self._combine(other, lambda a, b: a - b)

    def __rsub__(self, other: Any) -> Quantity:
        return self._combine(other, lambda a, b: b - a)

    def __neg__(self) -> Quantity:
        return Quantity(-self.value, -self.draws)

    def __mul__(self, other: Any) -> Quantity:
        return self._combine(other, lambda a, b: a * b)

    def __truediv__(self, other: Any) -> Quantity:
        return self._combine(other, lambda a, b: a / b)

    @staticmethod
    def minimum(*quantities: Quantity) -> Quantity:
        """Element-wise minimum (a claim made of several conditions holds by its weakest one)."""
        return Quantity(float(min(q.value for q in quantities)), np.min(np.stack([q.draws for q in quantities]), axis=0))

    @staticmethod
    def mean(quantities: list[Quantity]) -> Quantity:
        return Quantity(float(np.mean([q.value for q in quantities])), np.mean(np.stack([q.draws for q in quantities]), axis=0))

    def __str__(self) -> str:
        return format_value(self.value, self.se)


def format_value(value: float | None, se: float | None, percent: bool = False) -> str:
    """``0.123 ± 0.004`` (2 SE shown as ± SE); percentages as points."""
    if value is None:
        return "—"
    scale, unit = (100.0, " pts") if percent else (1.0, "")
    if not math.isfinite(value):
        return str(value)
    text = f"{value * scale:.3f}" if not percent else f"{value * scale:.2f}"
    if se is not None and math.isfinite(se):
        text += f" ± {se * scale:.3f}" if not percent else f" ± {se * scale:.2f}"
    return text + unit


@dataclass(frozen=True)
class Finding:
    """One row of the findings table: the claim, the rule, the numbers on both sides and the verdict.

    ``trained`` is the rule's statistic on the trained models (positive: the claim holds), ``baseline``
    the same statistic, by the same code, on the baseline models (None: no baseline measured);
    ``threshold`` what ``trained`` had to exceed (2 SE, or the seed-to-seed difference); ``margin`` =
    ``trained`` − ``threshold``. ``why`` says, in one line, why a row is "also at baseline" or "not measured".
    """

    claim: str
    rule: str
    measured: str
    verdict: Verdict
    trained: float | None = None
    trained_se: float | None = None
    baseline: float | None = None
    baseline_se: float | None = None
    baseline_kind: str = ""
    baseline_measured: str = ""
    threshold: float | None = None
    margin: float | None = None
    why: str = ""

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, got {self.verdict!r}")


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def baseline_meets(value: float | None, se: float | None) -> bool:
    """Whether a random-init or patch-only baseline meets the claim: beyond 2 of its SEs, or +inf."""
    if value is None or math.isnan(value):
        return False
    return value == math.inf or (_finite(se) and value > SIGNIFICANCE * se)


def judge(
    claim: str,
    rule: str,
    measured: str,
    trained: Quantity | None,
    baseline: Quantity | None = None,
    baseline_kind: BaselineKind | str = "random init",
    baseline_measured: str = "",
    degenerate: str = "",
) -> Finding:
    """The verdict of one rule (see the module docstring); ``degenerate`` names why it cannot be measured here."""
    common = dict(claim=claim, rule=rule, measured=measured, baseline_kind=baseline_kind, baseline_measured=baseline_measured)
    b_value, b_se = (baseline.value, baseline.se) if baseline is not None else (None, None)
    if degenerate or trained is None:
        return Finding(**common, verdict="not measured", baseline=b_value, baseline_se=b_se, why=degenerate or "a model this rule needs is missing")
    value, se = trained.value, trained.se
    numbers = dict(trained=value, trained_se=se, baseline=b_value, baseline_se=b_se)
    if value is None or math.isnan(value) or (math.isfinite(value) and not _finite(se)):
        return Finding(**common, **numbers, verdict="not measured",
                       why="the statistic is undefined (NaN)" if value is None or math.isnan(value) else "no uncertainty could be estimated (one batch?)")
    if math.isinf(value):  # e.g. a skip ratio over a branch that is exactly zero: beyond any noise, one way or the other
        se = 0.0
        numbers["trained_se"] = se
    threshold = SIGNIFICANCE * se
    seed_noise = abs(b_value) if baseline_kind == "second seed" and _finite(b_value) else None
    if seed_noise is not None:
        threshold = max(threshold, seed_noise)
    margin = value - threshold
    numbers.update(threshold=threshold, margin=margin)
    if value <= SIGNIFICANCE * se:
        return Finding(**common, **numbers, verdict="not held")
    if seed_noise is not None and value <= seed_noise:
        return Finding(**common, **numbers, verdict="also at baseline",
                       why=f"two seeds of the same model differ by {seed_noise:.4g}, at least as much as the {value:.4g} measured")
    if baseline is not None and baseline_kind != "second seed" and baseline_meets(b_value, b_se):
        return Finding(**common, **numbers, verdict="also at baseline",
                       why=f"the {baseline_kind} baseline meets the claim too ({b_value:.4g} ± {b_se:.2g}): the architecture, not training, gives it")
    return Finding(**common, **numbers, verdict="held")


def consistent(finding: Finding) -> bool:
    """Whether a row's verdict follows from its own numbers (the invariant the tests check for every row)."""
    if finding.verdict == "not measured":
        return bool(finding.why)
    value, se = finding.trained, finding.trained_se
    if value is None or math.isnan(value) or se is None or not math.isfinite(se):
        return False
    met = value > SIGNIFICANCE * se
    if finding.verdict == "not held":
        return not met
    if not met:
        return False
    if finding.baseline_kind == "second seed":
        beyond_seed = finding.baseline is None or not _finite(finding.baseline) or value > abs(finding.baseline)
        return beyond_seed == (finding.verdict == "held")
    return baseline_meets(finding.baseline, finding.baseline_se) == (finding.verdict == "also at baseline")
