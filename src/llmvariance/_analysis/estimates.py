"""Per-condition estimates in closed form: cheap enough for every report.

``counts`` is the number of times each distinct output occurred among n samples. No
resampling happens here (that belongs to ``stats``): every function is a formula of the
counts, so a report of a million samples pays microseconds for them.

- Disagreement rate ``D = 1 - sum c_k(c_k-1) / (n(n-1))``: the probability that two
  different requests disagree (the Gini-Simpson index; an unbiased U-statistic).
- Good's coverage ``1 - F1/n`` (F1 = outputs seen once): the probability that the next
  output is one already seen.
- Chao1 (bias-corrected) ``S + F1(F1-1) / (2(F2+1))``: how many distinct outputs exist.
- A rate of ``k`` of ``n``: the Wilson score interval; with ``k == 0`` the exact one-sided
  upper bound ``1 - alpha^(1/n)`` (0 of 30 at 95 %: 9.5 %), with ``k == n`` the lower
  bound ``alpha^(1/n)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist

__all__ = ["MODE_SHARE_FOR_BRACKET", "chao1", "disagreement_interval", "disagreement_rate",
           "good_coverage", "rate_interval", "z_value", "zero_upper_bound"]

MODE_SHARE_FOR_BRACKET = 0.7
"""At or above this share of the most common output, D's interval is the bracket."""


def z_value(level: float) -> float:
    """The two-sided normal quantile for ``level`` (1.96 at 0.95)."""
    return NormalDist().inv_cdf(0.5 + level / 2)


def disagreement_rate(counts: Sequence[int]) -> float | None:
    """``D = 1 - sum c_k(c_k-1) / (n(n-1))``; None when n < 2."""
    n = sum(counts)
    if n < 2:
        return None
    return 1.0 - sum(c * (c - 1) for c in counts) / (n * (n - 1))


def good_coverage(counts: Sequence[int]) -> float | None:
    """Good's coverage ``1 - F1/n``; None when n == 0."""
    n = sum(counts)
    if n == 0:
        return None
    return 1.0 - sum(1 for c in counts if c == 1) / n


def chao1(counts: Sequence[int]) -> float | None:
    """Bias-corrected Chao1 ``S + F1(F1-1) / (2(F2+1))``; None when n == 0."""
    if not any(counts):
        return None
    s = sum(1 for c in counts if c)
    f1 = sum(1 for c in counts if c == 1)
    f2 = sum(1 for c in counts if c == 2)
    return s + f1 * (f1 - 1) / (2 * (f2 + 1))


def zero_upper_bound(n: int, level: float = 0.95) -> float:
    """The exact one-sided upper bound on a rate when 0 of ``n`` showed it: ``1 - alpha^(1/n)``
    with ``alpha = 1 - level`` (the Clopper-Pearson bound; "rule of three" for large n)."""
    return 1.0 - float((1.0 - level) ** (1.0 / n))


def rate_interval(k: int, n: int, level: float = 0.95) -> tuple[float, float, str]:
    """(low, high, method) for a rate of ``k`` in ``n``.

    ``k == 0``: ``[0, 1 - alpha^(1/n)]`` (exact, one-sided); ``k == n``: ``[alpha^(1/n), 1]``;
    otherwise the Wilson score interval ``(p + z^2/2n +- z sqrt(p(1-p)/n + z^2/4n^2)) /
    (1 + z^2/n)``, whose coverage stays near ``level`` at small n and rates near 0 or 1,
    where the Wald interval's does not.
    """
    if n <= 0:
        raise ValueError("rate_interval of no trials")
    if k == 0:
        return 0.0, zero_upper_bound(n, level), "exact one-sided"
    if k == n:
        return 1.0 - zero_upper_bound(n, level), 1.0, "exact one-sided"
    z = z_value(level)
    p = k / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half), "wilson"


def _pairs_factor(q: float) -> float:
    return 2 * q * (1 - q)


def disagreement_interval(counts: Sequence[int], level: float = 0.95
                          ) -> tuple[float, float, str] | None:
    """(low, high, method) for D; None when n < 2. Two regimes, both closed form:

    - ``bracket`` (the most common output has at least 70 % of the samples, which
      includes "all agree"): with q the share of the other outputs,
      ``2q(1-q) <= D <= q(2-q)`` whatever they are, so D's interval is that bracket over
      q's interval (``rate_interval`` of n - mode_count in n; exact when q = 0). Near
      D = 0 the normal approximation fails (it gives [0, 0] when all agree); this does not.
    - ``wald-logit`` (otherwise): the U-statistic's variance
      ``4(n-2)/(n(n-1)) (S3 - S2^2) + 2/(n(n-1)) (S2 - S2^2)`` with ``S2 = sum p^2``,
      ``S3 = sum p^3`` at the observed shares, as a normal interval on the logit scale.

    ``benchmarks/verdict_calibration.py`` measures the coverage.
    """
    n = sum(counts)
    if n < 2:
        return None
    d = disagreement_rate(counts)
    assert d is not None
    mode = max(counts)
    if mode / n >= MODE_SHARE_FOR_BRACKET:
        lo, hi, _ = rate_interval(n - mode, n, level)
        # 2q(1-q) rises up to q = 1/2, so its minimum over [lo, hi] is at an end
        low = min(_pairs_factor(lo), _pairs_factor(hi))
        return min(low, d), max(hi * (2 - hi), d), "bracket"
    p = [c / n for c in counts if c]
    s2 = math.fsum(x * x for x in p)
    s3 = math.fsum(x * x * x for x in p)
    var = (4 * (n - 2) / (n * (n - 1)) * (s3 - s2 * s2)
           + 2 / (n * (n - 1)) * (s2 - s2 * s2))
    sd = math.sqrt(max(var, 0.0))
    z = z_value(level)
    if d <= 0.0 or d >= 1.0 or sd == 0.0:
        return max(0.0, d - z * sd), min(1.0, d + z * sd), "wald-logit"
    centre = math.log(d / (1 - d))
    half = z * sd / (d * (1 - d))
    return (1 / (1 + math.exp(-(centre - half))), 1 / (1 + math.exp(-(centre + half))),
            "wald-logit")
