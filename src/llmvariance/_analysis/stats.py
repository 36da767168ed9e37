"""Hypothesis tests and power for two sets of outputs: pure functions of per-arm counts.

An arm is a list of cells, one per block (``None`` when samples carry no block), each a
``{output: count}`` mapping. Everything here is a function of those counts and a seed;
SciPy is imported on first use, so ``import llmvariance`` stays fast.

- ``permutation_tests``: the one-sided test of ``ΔD = D_b - D_a > 0`` and the test of
  homogeneity (the chi-square statistic of the 2 x K table of arm by output), from the same
  ``resamples`` permutations of the arm labels. Labels are permuted *within* each block,
  never across blocks, so drift between blocks cannot pose as an arm effect. p-values are
  ``(1 + #{T* >= T}) / (1 + resamples)``, as ``scipy.stats.permutation_test`` computes
  them (SciPy's has no strata; the tests check this one against it on one block).
- ``bootstrap_delta_d``: percentile interval of ΔD, resampling outputs within each (arm,
  block) cell.
- ``exact_test``: one-sided Boschloo (``scipy.stats.boschloo_exact``; Fisher's when the
  table is too large for it to be quick) on deviating/same by arm, columns the arms.
- ``fisher_power``, ``minimum_detectable_rate``, ``samples_needed``: exact power of the
  one-sided Fisher test by enumerating the tables (Boschloo's test is uniformly at least
  as powerful, so these are safe for it).
- ``holm``, ``benjamini_hochberg``, ``sign_test``, ``cmh_test``: across conditions and prompts.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict

from .._errors import ConfigError

__all__ = ["BOSCHLOO_MAX_TABLES", "Cells", "HypothesisTestResult", "benjamini_hochberg",
           "bootstrap_delta_d", "cmh_test", "exact_test", "exact_upper_bound", "fisher_power",
           "holm", "minimum_detectable_rate", "permutation_tests", "samples_needed",
           "samples_to_bound", "sign_test"]

Cells = Mapping[int | None, Mapping[Any, int]]
"""One arm: per block (None: no block), how many samples gave each output."""

BOSCHLOO_MAX_TABLES = 160_000
"""Above (n_a + 1)(n_b + 1) tables Boschloo's test takes over 0.1 s; Fisher's is used."""

_CHUNK_CELLS = 2_000_000  # resamples x samples per chunk of the permutation engine
IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


class HypothesisTestResult(BaseModel):
    """One test's outcome, as ``scipy.stats`` reports them: statistic and p-value."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    """What is tested, e.g. ``ΔD > 0``."""
    statistic: float
    pvalue: float
    alternative: Literal["greater", "two-sided"]
    method: str
    """e.g. ``boschloo``, ``fisher``, ``permutation within 5 blocks``."""
    resamples: int | None = None
    seed: int | None = None


# -- the permutation engine ------------------------------------------------------------

class _Pooled:
    """Both arms as flat per-sample arrays: output id, in b, block index."""

    __slots__ = ("groups", "is_b", "k", "labels", "n_a", "n_b", "totals")

    def __init__(self, a: Cells, b: Cells) -> None:
        ids: dict[Hashable, int] = {}
        labels: list[int] = []
        is_b: list[bool] = []
        blocks: list[int | None] = []
        for in_b, arm in ((False, a), (True, b)):
            for block, counts in arm.items():
                for output, count in counts.items():
                    label = ids.setdefault(output, len(ids))
                    labels.extend([label] * count)
                    is_b.extend([in_b] * count)
                    blocks.extend([block] * count)
        self.labels: IntArray = np.asarray(labels, dtype=np.int64)
        self.is_b = np.asarray(is_b, dtype=bool)
        self.k = len(ids)
        self.n_b = int(self.is_b.sum())
        self.n_a = self.labels.size - self.n_b
        self.totals: IntArray = np.bincount(self.labels, minlength=self.k).astype(np.int64)
        # blocks seen in only one arm carry no comparison: they stay put, as a stratum
        keyed: dict[int | None, list[int]] = {}
        for i, block in enumerate(blocks):
            keyed.setdefault(block, []).append(i)
        self.groups = [(np.asarray(idx, dtype=np.int64), int(self.is_b[idx].sum()))
                       for idx in keyed.values()]

    def counts_b(self, in_b: npt.NDArray[np.bool_]) -> IntArray:
        """Per row of ``in_b`` (resamples x samples), arm b's count of each output."""
        rows = in_b.shape[0]
        flat = (np.arange(rows, dtype=np.int64)[:, None] * self.k + self.labels[None, :])[in_b]
        return np.bincount(flat, minlength=rows * self.k).reshape(rows, self.k)

    def statistics(self, counts_b: IntArray) -> tuple[FloatArray, FloatArray]:
        """(ΔD, chi-square) for each row of b's counts; a's are the totals minus b's."""
        counts_a = self.totals[None, :] - counts_b
        n_a, n_b, n = self.n_a, self.n_b, self.n_a + self.n_b
        d_a = 1.0 - (counts_a * (counts_a - 1)).sum(axis=1) / (n_a * (n_a - 1))
        d_b = 1.0 - (counts_b * (counts_b - 1)).sum(axis=1) / (n_b * (n_b - 1))
        expected = n_b * self.totals / n
        chi2 = ((counts_b - expected) ** 2 * (n * n / (self.totals * n_a * n_b))).sum(axis=1)
        return np.asarray(d_b - d_a, dtype=np.float64), np.asarray(chi2, dtype=np.float64)

    def shuffled(self, rows: int, rng: np.random.Generator) -> npt.NDArray[np.bool_]:
        """``rows`` random assignments to arm b, each keeping every block's b count."""
        out = np.zeros((rows, self.labels.size), dtype=bool)
        for idx, k in self.groups:
            m = idx.size
            if k == 0:
                continue
            if k == m:
                out[:, idx] = True
                continue
            keys = rng.random((rows, m))
            chosen = np.argpartition(keys, k - 1, axis=1)[:, :k]
            out[np.repeat(np.arange(rows), k), idx[chosen.ravel()]] = True
        return out


def _pvalue(null: FloatArray, observed: float) -> float:
    # SciPy's convention: count ties up to a relative 1e-14 (floating-point noise) as >=
    gamma = abs(observed) * 1e-14
    return float((1 + np.count_nonzero(null >= observed - gamma)) / (1 + null.size))


def permutation_tests(a: Cells, b: Cells, *, resamples: int = 9999, seed: int = 0
                      ) -> tuple[HypothesisTestResult, HypothesisTestResult]:
    """(the one-sided test of ΔD > 0, the test of homogeneity), from the same permutations.

    Both arms need at least two samples. Vectorised: the resamples x samples assignments
    are built in chunks of about two million cells, so memory stays bounded.
    """
    pooled = _Pooled(a, b)
    if pooled.n_a < 2 or pooled.n_b < 2:
        raise ValueError("each arm needs at least two samples")
    observed_d, observed_chi2 = pooled.statistics(pooled.counts_b(pooled.is_b[None, :]))
    rng = np.random.default_rng(seed)
    chunk = max(1, _CHUNK_CELLS // max(1, pooled.labels.size))
    nulls_d: list[FloatArray] = []
    nulls_chi2: list[FloatArray] = []
    done = 0
    while done < resamples:
        rows = min(chunk, resamples - done)
        d, chi2 = pooled.statistics(pooled.counts_b(pooled.shuffled(rows, rng)))
        nulls_d.append(d)
        nulls_chi2.append(chi2)
        done += rows
    strata = sum(1 for _, k in pooled.groups if k > 0)
    method = ("permutation" if len(pooled.groups) == 1
              else f"permutation within {strata} blocks")
    common = {"method": method, "resamples": resamples, "seed": seed}
    delta = HypothesisTestResult(
        name="ΔD > 0", statistic=float(observed_d[0]),
        pvalue=_pvalue(np.concatenate(nulls_d), float(observed_d[0])), alternative="greater",
        **common)
    homogeneity = HypothesisTestResult(
        name="same distribution of outputs", statistic=float(observed_chi2[0]),
        pvalue=_pvalue(np.concatenate(nulls_chi2), float(observed_chi2[0])),
        alternative="two-sided", **common)
    return delta, homogeneity


def _d_rows(counts: IntArray, n: int) -> FloatArray:
    return np.asarray(1.0 - (counts * (counts - 1)).sum(axis=1) / (n * (n - 1)),
                      dtype=np.float64)


def _resampled_arm(arm: Cells, ids: dict[Hashable, int], resamples: int,
                   rng: np.random.Generator) -> tuple[IntArray, int]:
    total = np.zeros((resamples, len(ids)), dtype=np.int64)
    n = 0
    for counts in arm.values():
        keys = list(counts)
        values = np.asarray([counts[k] for k in keys], dtype=np.float64)
        size = int(values.sum())
        if size == 0:
            continue
        draws = rng.multinomial(size, values / size, size=resamples)
        total[:, [ids[k] for k in keys]] += draws
        n += size
    return total, n


def bootstrap_delta_d(a: Cells, b: Cells, *, resamples: int = 9999, seed: int = 0,
                      level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of ``D_b - D_a``: each (arm, block) cell's outputs
    resampled with replacement (a multinomial draw over its counts), ``resamples`` times."""
    ids: dict[Hashable, int] = {}
    for arm in (a, b):
        for counts in arm.values():
            for output in counts:
                ids.setdefault(output, len(ids))
    rng = np.random.default_rng(seed)
    counts_a, n_a = _resampled_arm(a, ids, resamples, rng)
    counts_b, n_b = _resampled_arm(b, ids, resamples, rng)
    if n_a < 2 or n_b < 2:
        raise ValueError("each arm needs at least two samples")
    values = _d_rows(counts_b, n_b) - _d_rows(counts_a, n_a)
    low, high = np.quantile(values, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


# -- exact tests and power ----------------------------------------------------------------

def exact_test(deviating_a: int, n_a: int, deviating_b: int, n_b: int
               ) -> HypothesisTestResult:
    """One-sided exact test that b deviates more often than a: Boschloo's on the table
    ``[[dev_b, dev_a], [n_b - dev_b, n_a - dev_a]]`` (columns are the arms, whose sizes the
    design fixed); Fisher's when ``(n_a+1)(n_b+1) > BOSCHLOO_MAX_TABLES`` or Boschloo's
    fails. The statistic is Fisher's one-sided p-value (Boschloo's statistic)."""
    from scipy import stats

    if not (0 <= deviating_a <= n_a and 0 <= deviating_b <= n_b and n_a and n_b):
        raise ValueError(f"not a table: {deviating_a}/{n_a} vs {deviating_b}/{n_b}")
    table = [[deviating_b, deviating_a], [n_b - deviating_b, n_a - deviating_a]]
    fisher = float(stats.fisher_exact(np.asarray(table), alternative="greater").pvalue)
    name = "b deviates more often than a"
    if (n_a + 1) * (n_b + 1) <= BOSCHLOO_MAX_TABLES:
        boschloo = float(stats.boschloo_exact(np.asarray(table), alternative="greater").pvalue)
        if math.isfinite(boschloo):
            return HypothesisTestResult(name=name, statistic=fisher,
                                        pvalue=min(1.0, boschloo), alternative="greater",
                                        method="boschloo")
    return HypothesisTestResult(name=name, statistic=fisher, pvalue=min(1.0, fisher),
                                alternative="greater", method="fisher")


def _support(n: int, p: float) -> IntArray:
    """The counts of Binomial(n, p) outside which less than 1e-12 of the mass lies."""
    from scipy import stats

    if p <= 0.0:
        return np.zeros(1, dtype=np.int64)
    if p >= 1.0:
        return np.full(1, n, dtype=np.int64)
    ends = np.asarray(stats.binom.ppf([1e-13, 1 - 1e-13], n, p))
    return np.arange(int(ends[0]), int(ends[1]) + 1, dtype=np.int64)


def fisher_power(n_a: int, n_b: int, p_a: float, p_b: float, alpha: float = 0.05) -> float:
    """Exact power of the one-sided Fisher test at ``alpha`` when a deviates at rate ``p_a``
    and b at ``p_b``: the probability of the tables it rejects, summed."""
    from scipy import stats

    xa, xb = _support(n_a, p_a), _support(n_b, p_b)
    grid_b, grid_a = np.meshgrid(xb, xa, indexing="ij")
    total = grid_a + grid_b
    pvalues = stats.hypergeom.sf(grid_b - 1, n_a + n_b, total, n_b)
    weights = np.outer(stats.binom.pmf(xb, n_b, p_b), stats.binom.pmf(xa, n_a, p_a))
    return float(np.clip(weights[pvalues <= alpha].sum(), 0.0, 1.0))


def minimum_detectable_rate(n_a: int, n_b: int, p_a: float = 0.0, *, alpha: float = 0.05,
                            power: float = 0.8) -> float | None:
    """The smallest deviation rate of b that the one-sided exact test detects with
    probability ``power`` when a deviates at ``p_a``; None if not even 100 % would."""
    if fisher_power(n_a, n_b, p_a, 1.0, alpha) < power:
        return None
    low, high = p_a, 1.0
    for _ in range(40):  # power rises with p_b: bisection to ~1e-12
        mid = (low + high) / 2
        if fisher_power(n_a, n_b, p_a, mid, alpha) >= power:
            high = mid
        else:
            low = mid
    return high


def samples_needed(p_a: float, p_b: float, *, alpha: float = 0.05, power: float = 0.8
                   ) -> int:
    """Samples per arm for the one-sided exact test to detect deviation rates ``p_a`` vs
    ``p_b`` (b deviating more) with probability ``power`` at ``alpha``.

    Exact power of Fisher's test, enumerated (Boschloo's is at least as powerful, so this
    n suffices for it); the search starts at the arcsine approximation
    ``((z_alpha + z_power) / (2 asin sqrt p_b - 2 asin sqrt p_a))^2``.
    """
    for name, value in (("p_a", p_a), ("p_b", p_b)):
        if not 0.0 <= value <= 1.0:
            raise ConfigError(name, f"must be a rate between 0 and 1, got {value!r}")
    if not p_b > p_a:
        raise ConfigError("p_b", f"must be larger than p_a={p_a} (b deviating more)")
    if not 0.0 < alpha < 1.0:
        raise ConfigError("alpha", f"must be between 0 and 1, got {alpha!r}")
    if not 0.0 < power < 1.0:
        raise ConfigError("power", f"must be between 0 and 1, got {power!r}")
    from statistics import NormalDist

    z = NormalDist().inv_cdf
    h = 2 * math.asin(math.sqrt(p_b)) - 2 * math.asin(math.sqrt(p_a))
    guess = max(2, math.ceil(((z(1 - alpha) + z(power)) / h) ** 2))

    def enough(n: int) -> bool:
        return fisher_power(n, n, p_a, p_b, alpha) >= power

    high = guess
    while not enough(high):
        high *= 2
        if high > 10_000_000:
            raise ConfigError("p_b", "the difference is too small to detect with fewer "
                              "than ten million samples per arm")
    low = 1
    while low + 1 < high:  # power rises with n, up to the sawtooth of discreteness
        mid = (low + high) // 2
        if enough(mid):
            high = mid
        else:
            low = mid
    return high


def exact_upper_bound(k: int, n: int, level: float = 0.95) -> float:
    """The exact (Clopper-Pearson) one-sided upper confidence bound at ``level`` on a rate
    seen ``k`` times in ``n``: the rate p at which ``P(X <= k) = 1 - level`` for X ~
    Binomial(n, p), i.e. the ``level`` quantile of Beta(k + 1, n - k); 1 when k == n. At
    k == 0 it is ``1 - (1 - level)^(1/n)`` (0 of 30 at 95 %: 9.5 %)."""
    if not (0 <= k <= n and n > 0):
        raise ValueError(f"not a rate: {k} of {n}")
    if k == n:
        return 1.0
    if k == 0:
        return 1.0 - float((1.0 - level) ** (1.0 / n))
    from scipy import stats

    return float(stats.beta.ppf(level, k + 1, n - k))


def samples_to_bound(bound: float, level: float = 0.95) -> int:
    """The fewest samples with which 0 of n can show a rate at most ``bound`` at ``level``:
    ``ceil(ln(1 - level) / ln(1 - bound))`` (5 % at 95 %: 59)."""
    if not 0.0 < bound < 1.0:
        raise ConfigError("max_rate_bound", f"must be between 0 and 1, got {bound!r}")
    n = math.ceil(math.log(1.0 - level) / math.log(1.0 - bound))
    while n > 1 and 1.0 - (1.0 - level) ** (1.0 / (n - 1)) <= bound:  # rounding
        n -= 1
    return n


# -- many comparisons ---------------------------------------------------------------------

def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (family-wise error at the level they are compared
    to): sorted ascending, ``p_(i) * (m - i + 1)``, made monotone, capped at 1."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


def benjamini_hochberg(pvalues: Sequence[float]) -> list[float]:
    """Benjamini-Hochberg adjusted p-values (false discovery rate), by
    ``scipy.stats.false_discovery_control``."""
    if not pvalues:
        return []
    from scipy import stats

    return [float(p) for p in stats.false_discovery_control(list(pvalues), method="bh")]


def sign_test(differences: Sequence[float]) -> tuple[int, int, float]:
    """(positive, negative, one-sided p) of the sign test that differences tend to be
    positive; zeros are dropped. ``scipy.stats.binomtest`` at 1/2."""
    positive = sum(1 for d in differences if d > 0)
    negative = sum(1 for d in differences if d < 0)
    if positive + negative == 0:
        return 0, 0, 1.0
    from scipy import stats

    p = stats.binomtest(positive, positive + negative, 0.5, alternative="greater").pvalue
    return positive, negative, float(p)


def cmh_test(tables: Sequence[tuple[int, int, int, int]]) -> tuple[float, float]:
    """(z, one-sided p) of the Cochran-Mantel-Haenszel test that b deviates more often than
    a across strata, each ``(deviating_a, n_a, deviating_b, n_b)``:
    ``z = (sum x_b - sum E - 1/2) / sqrt(sum V)`` with ``E = n_b m / N`` and
    ``V = n_a n_b m (N - m) / (N^2 (N - 1))`` (m deviating in the stratum, N its size).
    Strata that carry no information (V = 0) are skipped; with none left, p = 1."""
    observed = expected = variance = 0.0
    for dev_a, n_a, dev_b, n_b in tables:
        total = n_a + n_b
        m = dev_a + dev_b
        if total < 2:
            continue
        v = n_a * n_b * m * (total - m) / (total * total * (total - 1))
        if v == 0:
            continue
        observed += dev_b
        expected += n_b * m / total
        variance += v
    if variance == 0:
        return 0.0, 1.0
    from statistics import NormalDist

    z = (observed - expected - 0.5) / math.sqrt(variance)
    return z, 1.0 - NormalDist().cdf(z)
