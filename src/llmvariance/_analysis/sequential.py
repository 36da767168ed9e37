# ruff: noqa: RUF001, RUF002, RUF003 - the formulas read as the literature writes them
"""Group-sequential stopping: test after each block, stop once the verdict is decided, and
keep the false-positive rate over all the looks at ``alpha``.

Looking after every block and stopping at the first p < alpha would reject a true null far
more often than alpha (at 5 looks, about 2.5 times as often for a normal statistic). So at
look k (information fraction ``t_k``: samples per arm so far over the planned n) a p-value
is compared with a *nominal* level ``a_k`` from an alpha-spending boundary (Lan & DeMets
1983) instead:

- **Spending.** ``α(t)`` is the false-positive rate spent by fraction t, ``α(1) = α``.
  O'Brien–Fleming-type (the default): ``α(t) = 2 − 2Φ(z_{1−α/2} / √t) = erfc(z_{1−α/2} /
  √(2t))``; Pocock-type: ``α(t) = α ln(1 + (e − 1) t)``.
- **Boundary.** Under the null the tests' z-statistics are taken to be canonical:
  ``Z_k = S_k / √t_k`` with S a Brownian motion in t (independent increments, so
  ``corr(Z_j, Z_k) = √(t_j / t_k)``). ``c_k`` solves ``P(Z_1 < c_1, …, Z_{k−1} < c_{k−1},
  Z_k ≥ c_k) = α(t_k) − α(t_{k−1})``, by recursive numerical integration of the sub-density
  of ``S_{k−1}`` over the region where the run continued (Armitage, McPherson & Rowe 1969;
  Jennison & Turnbull 2000, ch. 19), with Simpson's rule. ``a_k = 1 − Φ(c_k)``.
- **Many hypotheses** (conditions against one control): Holm's step-down with a boundary
  per step (Maurer & Bretz 2013): sort the p-values; the j-th smallest is rejected when each
  of the first j is at most ``a_k(α / (m − i + 1))``.
- **Repeated p-value** (Jennison & Turnbull, ch. 9): ``P_k = inf {α' : p_k ≤ a_k(α')}``, the
  smallest level whose boundary this look crosses. ``P(some P_k ≤ α) ≤ α`` under the null,
  so Holm over the repeated p-values rejects exactly what the boundaries reject, and gives a
  p-value that can be reported and combined again (``server_matrix``'s Holm across
  configurations).

The exact tests on counts give discrete p-values, and ``Φ⁻¹(1 − p)`` is canonical only
approximately; the seeded simulations (``tests/test_sequential.py``,
``benchmarks/verdict_cost.py``) check that the false-positive rate stays at alpha.

There is no futility bound: a run stops early only to say that a hypothesis is rejected.
"Nothing varies" always takes every planned sample.

``SequentialTest`` is the driver any experiment that sends in blocks can use: build it with
the planned fractions and hypotheses, call ``look(pvalues, requests=...)`` after each block,
stop when ``look.stop``, and keep ``summary(...)`` (an ``EarlyStop``) in the result.
SciPy is imported on first use.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

from .._errors import ConfigError
from . import stats

__all__ = ["EarlyStop", "Look", "SequentialTest", "Spending", "adjusted_pvalues", "boundary",
           "exact_pvalue", "nominal_level", "rejected", "repeated_pvalue", "spent"]

Spending = Literal["obrien-fleming", "pocock"]
SPENDING_NAMES: dict[str, str] = {
    "obrien-fleming": "O'Brien–Fleming-type alpha spending (Lan–DeMets)",
    "pocock": "Pocock-type alpha spending (Lan–DeMets)",
}
_SMALLEST_LEVEL = 1e-12
"""Repeated p-values are not resolved below this (reported as this)."""


def spent(t: float, alpha: float, spending: Spending = "obrien-fleming") -> float:
    """``α(t)``: the false-positive rate spent by information fraction ``t`` (0 ≤ t ≤ 1).

    O'Brien–Fleming-type ``erfc(z_{1−α/2} / √(2t))`` (= 2 − 2Φ(z_{1−α/2}/√t)); Pocock-type
    ``α ln(1 + (e − 1) t)``. Both give ``α`` at ``t = 1`` and 0 at ``t = 0``.
    """
    if t <= 0.0:
        return 0.0
    t = min(t, 1.0)
    if spending == "pocock":
        return alpha * math.log(1.0 + (math.e - 1.0) * t)
    from scipy import special

    z = -float(special.ndtri(alpha / 2))  # z_{1-α/2}, exact even for tiny α
    return math.erfc(z / math.sqrt(2.0 * t))


def _simpson(lo: float, hi: float, points: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and Simpson weights on [lo, hi] (``points`` odd)."""
    nodes = np.linspace(lo, hi, points)
    h = (hi - lo) / (points - 1)
    weights = np.full(points, 2.0)
    weights[1::2] = 4.0
    weights[0] = weights[-1] = 1.0
    return nodes, weights * h / 3.0


@functools.lru_cache(maxsize=2048)
def _boundary(fractions: tuple[float, ...], alpha: float, spending: Spending
              ) -> tuple[float, ...]:
    """The z-boundaries ``c_1..c_K`` (``inf``: nothing spent at that look)."""
    from scipy import special

    bounds: list[float] = []
    nodes = log_mass = np.empty(0)
    previous_t = previous_spent = 0.0
    for k, t in enumerate(fractions):
        target = spent(t, alpha, spending) - previous_spent
        if k == 0:
            c = -float(special.ndtri(target)) if target > 0 else math.inf
            b = c * math.sqrt(t)
            sd = math.sqrt(t)
            upper = min(b, 8.5 * sd)
            nodes, weights = _simpson(-8.5 * sd, upper, _points(upper + 8.5 * sd, sd))
            density = np.exp(-0.5 * (nodes / sd) ** 2) / (sd * math.sqrt(2 * math.pi))
        else:
            step = math.sqrt(t - previous_t)

            def log_crossing(b: float, step: float = step, log_mass: np.ndarray = log_mass,
                             nodes: np.ndarray = nodes) -> float:
                return float(special.logsumexp(log_mass + special.log_ndtr((nodes - b) / step)))

            if target <= 0:
                b = math.inf
            elif target >= math.exp(log_crossing(-50.0 * math.sqrt(t))):
                b = -math.inf  # cannot happen with a spending function; be safe
            else:
                from scipy import optimize

                log_target = math.log(target)
                b = float(optimize.brentq(lambda x, lt=log_target: log_crossing(x) - lt,
                                          -50.0 * math.sqrt(t), 60.0 * math.sqrt(t),
                                          xtol=1e-12, rtol=1e-13))
            c = b / math.sqrt(t)
            # the sub-density of S_k where the run continues (below b), from S_{k-1}'s
            sd = math.sqrt(t)
            upper = min(b, 8.5 * sd)
            lower = min(-8.5 * sd, upper - 1.0 * sd)
            new_nodes, weights = _simpson(lower, upper, _points(upper - lower, step))
            kernel = np.exp(-0.5 * ((new_nodes[:, None] - nodes[None, :]) / step) ** 2) / (
                step * math.sqrt(2 * math.pi))
            density = kernel @ np.exp(log_mass)
            nodes = new_nodes
        bounds.append(c)
        with np.errstate(divide="ignore"):
            log_mass = np.log(np.maximum(density * weights, 0.0))
        previous_t = t
        previous_spent += max(target, 0.0)
    return tuple(bounds)


def _points(width: float, scale: float) -> int:
    """Simpson nodes for ``width``: a spacing of at most scale/10 (odd, 101..4001)."""
    n = max(101, min(4001, math.ceil(10.0 * width / scale) + 1))
    return n if n % 2 else n + 1


def _check(fractions: Sequence[float], alpha: float) -> tuple[float, ...]:
    values = tuple(float(f) for f in fractions)
    if not values or any(not 0.0 < f <= 1.0 for f in values) or any(
            b <= a for a, b in itertools.pairwise(values)):
        raise ConfigError("fractions", "must increase strictly within (0, 1], got "
                          f"{list(fractions)!r}")
    if not 0.0 < alpha < 1.0:
        raise ConfigError("alpha", f"must be between 0 and 1, got {alpha!r}")
    return values


def boundary(fractions: Sequence[float], alpha: float = 0.05,
             spending: Spending = "obrien-fleming") -> list[float]:
    """The one-sided z-boundaries ``c_k`` at information fractions ``t_1 < … < t_K``: look k
    rejects when ``Z_k ≥ c_k``; the chance of that at some look under the null is
    ``α(t_K)`` (``alpha`` when ``t_K = 1``)."""
    return list(_boundary(_check(fractions, alpha), alpha, spending))


def nominal_level(fractions: Sequence[float], alpha: float = 0.05,
                  spending: Spending = "obrien-fleming") -> float:
    """``a_K = 1 − Φ(c_K)``: the level a one-sided p-value at the *last* of ``fractions``
    is compared with (earlier looks' boundaries are implied)."""
    from scipy import special

    c = _boundary(_check(fractions, alpha), alpha, spending)[-1]
    return 0.0 if c == math.inf else float(special.ndtr(-c))


def repeated_pvalue(pvalue: float, fractions: Sequence[float],
                    spending: Spending = "obrien-fleming") -> float:
    """``inf {α' : p ≤ a_K(α')}`` for a p-value at the last of ``fractions``: the smallest
    level at which this look's boundary is crossed (at least 1e-12; 1 if none)."""
    values = _check(fractions, 0.5)
    if pvalue >= 1.0 or math.isnan(pvalue):
        return 1.0

    def gap(log_level: float) -> float:
        level = nominal_level(values, math.exp(log_level), spending)
        return (math.log(level) if level > 0 else -1e300) - math.log(max(pvalue, 1e-300))

    lo, hi = math.log(_SMALLEST_LEVEL), math.log1p(-1e-9)
    if gap(lo) >= 0:
        return _SMALLEST_LEVEL
    if gap(hi) < 0:
        return 1.0
    from scipy import optimize

    return math.exp(float(optimize.brentq(gap, lo, hi, xtol=1e-13, rtol=1e-13)))


def rejected(pvalues: Mapping[str, float], fractions: Sequence[float], *,
             alpha: float = 0.05, spending: Spending = "obrien-fleming",
             hypotheses: int | None = None) -> list[str]:
    """The hypotheses rejected at the last of ``fractions``: Holm's step-down with group-
    sequential boundaries; the i-th smallest p (0-based) must be at most
    ``a_K(α / (m − i))``. ``m`` is ``hypotheses`` when given (planned hypotheses missing
    from ``pvalues`` count as never rejected), else ``len(pvalues)``."""
    m = max(len(pvalues), hypotheses or 0)
    out: list[str] = []
    for i, name in enumerate(sorted(pvalues, key=lambda key: pvalues[key])):
        if pvalues[name] > nominal_level(fractions, alpha / (m - i), spending):
            break
        out.append(name)
    return out


def adjusted_pvalues(pvalues: Mapping[str, float], fractions: Sequence[float], *,
                     spending: Spending = "obrien-fleming", hypotheses: int | None = None
                     ) -> dict[str, float]:
    """Holm-adjusted repeated p-values at the last of ``fractions``: ``≤ alpha`` exactly for
    the hypotheses ``rejected`` rejects at ``alpha``."""
    repeated = [repeated_pvalue(p, fractions, spending) for p in pvalues.values()]
    padding = max(0, (hypotheses or 0) - len(repeated))
    adjusted = stats.holm(repeated + [1.0] * padding)
    return dict(zip(pvalues, adjusted[: len(repeated)], strict=True))


@functools.lru_cache(maxsize=65536)
def exact_pvalue(deviating_a: int, n_a: int, deviating_b: int, n_b: int) -> float:
    """``stats.exact_test(...).pvalue``, remembered: interim looks and simulations ask for
    the same small tables again and again."""
    return stats.exact_test(deviating_a, n_a, deviating_b, n_b).pvalue


# -- the record and the driver --------------------------------------------------------------

class Look(BaseModel):
    """One interim analysis: what was tested, against which boundary, and what it decided."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    look: int
    """0-based (the block it followed)."""
    fraction: float
    """Information fraction: planned samples per arm so far over the planned n."""
    requests: int
    """Requests sent by then (every one is a sample or a recorded failure)."""
    boundary: float
    """``c_k`` at ``alpha / m``: the z the smallest p-value had to reach."""
    nominal: float
    """``a_k = 1 − Φ(c_k)`` at ``alpha / m``: the smallest p-value stops the run at or below
    this."""
    spent: float
    """``α(t_k)`` at ``alpha``: the false-positive rate spent so far."""
    pvalues: dict[str, float]
    """Each hypothesis's (nominal) p-value at this look."""
    rejected: list[str]

    @property
    def stop(self) -> bool:
        """A hypothesis was rejected: the verdict is decided."""
        return bool(self.rejected)


class EarlyStop(BaseModel):
    """How a group-sequential run went: each look, and the requests it saved."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    spending: Spending
    method: str
    alpha: float
    hypotheses: int
    fractions: list[float]
    """The planned looks' information fractions."""
    looks: list[Look]
    """The looks made, in order (the last one decided, or was the last planned)."""
    planned_requests: int
    sent_requests: int
    saved_requests: int
    """``planned_requests - sent_requests``."""
    stopped: bool
    """Decided before the last planned look."""
    attempts: int | None = None
    """HTTP attempts made in all (retries and background load included), when known."""

    @property
    def decided_at(self) -> int | None:
        """The look that rejected a hypothesis (None: no look did)."""
        return next((look.look for look in self.looks if look.stop), None)

    def describe(self) -> str:
        """``decided after look 2 of 5 (…): 61 of 151 requests sent, 90 saved (60%)``."""
        where = (f"decided after look {len(self.looks)} of {len(self.fractions)}"
                 if self.decided_at is not None else
                 f"not decided early: all {len(self.fractions)} looks ran")
        share = self.saved_requests / self.planned_requests if self.planned_requests else 0.0
        last = self.looks[-1] if self.looks else None
        boundary = ("" if last is None else
                    f"; the last look's boundary was p ≤ {last.nominal:.3g}")
        return (f"early stop: {where} ({self.method}, alpha = {self.alpha:g} over all looks"
                f"{', Holm across ' + str(self.hypotheses) if self.hypotheses > 1 else ''}"
                f"{boundary}): {self.sent_requests} of {self.planned_requests} requests sent, "
                f"{self.saved_requests} saved ({share:.0%}); p-values are repeated p-values")


class SequentialTest:
    """Monitor ``hypotheses`` one-sided tests at planned information ``fractions``.

    >>> test = SequentialTest([0.2, 0.4, 0.6, 0.8, 1.0], hypotheses=["burst"])
    >>> test.look({"burst": 0.3}, requests=13).stop
    False
    """

    __slots__ = ("alpha", "fractions", "hypotheses", "looks", "spending")

    def __init__(self, fractions: Sequence[float], *, hypotheses: Sequence[str],
                 alpha: float = 0.05, spending: Spending = "obrien-fleming") -> None:
        self.fractions = _check(fractions, alpha)
        if spending not in SPENDING_NAMES:
            raise ConfigError("spending", f"must be one of {list(SPENDING_NAMES)}, got "
                              f"{spending!r}")
        self.hypotheses = list(hypotheses)
        self.alpha = alpha
        self.spending: Spending = spending
        self.looks: list[Look] = []

    def __repr__(self) -> str:
        return (f"SequentialTest({self.spending}, alpha={self.alpha:g}, "
                f"looks {len(self.looks)}/{len(self.fractions)}, decided={self.decided})")

    @property
    def decided(self) -> bool:
        return any(look.stop for look in self.looks)

    def look(self, pvalues: Mapping[str, float], *, requests: int = 0) -> Look:
        """Record the next look's p-values (hypotheses without one cannot be rejected) and
        decide. Once a look has rejected, or every planned look is made, there is no next."""
        k = len(self.looks)
        if k >= len(self.fractions) or self.decided:
            raise ValueError("the sequential test is over: no look is left")
        from scipy import special

        upto = self.fractions[: k + 1]
        m = max(1, len(self.hypotheses))
        c = _boundary(upto, self.alpha / m, self.spending)[-1]
        record = Look(look=k, fraction=upto[-1], requests=requests, boundary=c,
                      nominal=0.0 if c == math.inf else float(special.ndtr(-c)),
                      spent=spent(upto[-1], self.alpha, self.spending),
                      pvalues=dict(pvalues),
                      rejected=rejected(pvalues, upto, alpha=self.alpha,
                                        spending=self.spending, hypotheses=m))
        self.looks.append(record)
        return record

    def adjusted(self, pvalues: Mapping[str, float]) -> dict[str, float]:
        """Holm-adjusted repeated p-values at the last look made."""
        upto = self.fractions[: max(1, len(self.looks))]
        return adjusted_pvalues(pvalues, upto, spending=self.spending,
                                hypotheses=len(self.hypotheses))

    def summary(self, *, planned_requests: int, sent_requests: int,
                attempts: int | None = None) -> EarlyStop:
        """The record for a result."""
        method = SPENDING_NAMES[self.spending]
        return EarlyStop(
            spending=self.spending, method=method, alpha=self.alpha,
            hypotheses=len(self.hypotheses), fractions=list(self.fractions),
            looks=list(self.looks), planned_requests=planned_requests,
            sent_requests=sent_requests, saved_requests=planned_requests - sent_requests,
            stopped=self.decided and len(self.looks) < len(self.fractions),
            attempts=attempts)
