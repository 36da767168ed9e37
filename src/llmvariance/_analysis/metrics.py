"""Variance metrics as pure functions of output counts and sequences.

``counts`` is the number of times each distinct output occurred among the n ok samples
(so ``sum(counts) == n``). Nothing here touches a network, a clock or an event loop.
Entropies are in bits.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import TypeVar

import numpy as np
import numpy.typing as npt

__all__ = [
    "agreement_rate",
    "bootstrap_interval",
    "common_prefix_length",
    "entropy_bits",
    "entropy_mm_bits",
    "histogram",
    "id_rows",
    "normalized_entropy",
    "pair_prefix_length",
    "per_position_entropy",
    "row_prefix_length",
    "rows_prefix_length",
    "weighted_summary",
    "word_tokens",
]

T = TypeVar("T")
RowStatistic = Callable[[npt.NDArray[np.int64]], npt.NDArray[np.float64]]

# A word or a run of punctuation, with the whitespace before it, so that
# "".join(word_tokens(s)) == s except for trailing whitespace kept as its own token.
_WORD = re.compile(r"\s*(?:\w+|[^\w\s]+)|\s+")


def word_tokens(text: str) -> list[str]:
    """The fallback tokenizer when a provider returned no tokens: words and punctuation."""
    return _WORD.findall(text)


def entropy_bits(counts: Sequence[int]) -> float:
    """Shannon entropy ``H = -sum(p_k * log2(p_k))`` with ``p_k = c_k / n``."""
    n = sum(counts)
    if n == 0:
        return 0.0
    # fsum is correctly rounded, so the result does not depend on the order of counts.
    return max(0.0, -math.fsum(c / n * math.log2(c / n) for c in counts if c))


def entropy_mm_bits(counts: Sequence[int]) -> float:
    """Miller-Madow corrected entropy ``H + (K - 1) / (2 n ln 2)``, K = distinct outputs.

    The plug-in H underestimates the entropy of a distribution from a finite sample;
    the correction removes the first-order bias.
    """
    n = sum(counts)
    if n == 0:
        return 0.0
    k = sum(1 for c in counts if c)
    return entropy_bits(counts) + (k - 1) / (2 * n * math.log(2))


def normalized_entropy(counts: Sequence[int]) -> float:
    """``H / log2(n)``: 0 when all agree, 1 when all n differ; 0 when n < 2."""
    n = sum(counts)
    return entropy_bits(counts) / math.log2(n) if n >= 2 else 0.0


def agreement_rate(counts: Sequence[int]) -> float | None:
    """Probability that two different samples agree: ``sum(c_k(c_k-1)) / (n(n-1))``.

    None when there are fewer than two samples.
    """
    n = sum(counts)
    if n < 2:
        return None
    return sum(c * (c - 1) for c in counts) / (n * (n - 1))


def pair_prefix_length(a: Sequence[T], b: Sequence[T]) -> int:
    """Length of the common prefix of two sequences."""
    if isinstance(a, str) and isinstance(b, str):
        # C-speed slice comparisons: gallop while the prefixes agree (most pairs of outputs
        # part early), then bisect between the last agreeing and the first differing length
        limit = min(len(a), len(b))
        k = 32
        while k < limit and a[:k] == b[:k]:
            k *= 2
        lo, hi = k // 2 if k > 32 else 0, min(k, limit)
        if a[:hi] == b[:hi]:
            return hi
        hi -= 1
        while lo < hi:  # a[:lo] agrees; the answer is at most hi
            mid = (lo + hi + 1) // 2
            if a[:mid] == b[:mid]:
                lo = mid
            else:
                hi = mid - 1
        return lo
    limit = min(len(a), len(b))
    i = 0
    while i < limit and a[i] == b[i]:
        i += 1
    return i


def common_prefix_length(sequences: Iterable[Sequence[T]]) -> int:
    """Length of the prefix shared by every sequence (0 for no sequences).

    The common prefix of a set equals that of its lexicographic minimum and maximum,
    so this is one pass plus one comparison, not a pairwise scan.
    """
    lo: Sequence[T] | None = None
    hi: Sequence[T] | None = None
    for seq in sequences:
        if lo is None or hi is None:
            lo = hi = seq
        elif seq < lo:  # type: ignore[operator]
            lo = seq
        elif seq > hi:  # type: ignore[operator]
            hi = seq
    if lo is None or hi is None:
        return 0
    return pair_prefix_length(lo, hi)


def weighted_summary(values: Sequence[int], weights: Sequence[int]
                     ) -> tuple[int, float, float, int]:
    """(min, median, mean, max) of ``values`` each repeated ``weights`` times.

    The median of an even count is the mean of the two middle values.
    """
    pairs = sorted(zip(values, weights, strict=True))
    total = sum(weights)
    if total == 0:
        raise ValueError("weighted_summary of nothing")

    def at(rank: int) -> int:  # the value at 0-based position ``rank`` of the sorted list
        seen = 0
        for value, weight in pairs:
            seen += weight
            if rank < seen:
                return value
        return pairs[-1][0]

    median = (at((total - 1) // 2) + at(total // 2)) / 2
    mean = math.fsum(v * w for v, w in pairs) / total
    return pairs[0][0], median, mean, pairs[-1][0]


def histogram(values: Sequence[int], weights: Sequence[int], max_bins: int = 10
              ) -> list[tuple[int, int, int]]:
    """Bins ``(lo, hi, count)`` with inclusive integer bounds over the weighted values.

    One bin per value when there are at most ``2 * max_bins`` values in range, else
    ``max_bins`` bins of equal integer width.
    """
    lo, hi = min(values), max(values)
    span = hi - lo + 1
    width = 1 if span <= 2 * max_bins else math.ceil(span / max_bins)
    bins = [0] * math.ceil(span / width)
    for value, weight in zip(values, weights, strict=True):
        bins[(value - lo) // width] += weight
    return [(lo + i * width, min(hi, lo + (i + 1) * width - 1), c) for i, c in enumerate(bins)]


IdRow = npt.NDArray[np.int32]


def id_rows(sequences: Iterable[Iterable[Hashable]]) -> list[IdRow]:
    """Each token sequence as an int32 array, with ids shared across sequences.

    Sequences of small integers are what the token metrics below compare, in C, and
    they take a fraction of the memory of lists of token strings.
    """
    ids: dict[Hashable, int] = {}
    return [np.fromiter((ids.setdefault(tok, len(ids)) for tok in seq), dtype=np.int32)
            for seq in sequences]


def row_prefix_length(a: IdRow, b: IdRow) -> int:
    """Length of the common prefix of two id rows."""
    k = min(a.size, b.size)
    mismatch = np.flatnonzero(a[:k] != b[:k])
    return int(mismatch[0]) if mismatch.size else k


def rows_prefix_length(rows: Sequence[IdRow]) -> int:
    """Length of the prefix shared by every row (the first row against each other)."""
    if not rows:
        return 0
    first = rows[0]
    return min(row_prefix_length(first, row) for row in rows)


def per_position_entropy(rows: Sequence[IdRow], weights: Sequence[int]) -> list[float]:
    """``H_t`` for every position t: entropy of the token at t over the rows longer than t,
    each row counted ``weights`` times.

    Rows are padded into one matrix; each column's counts come from one ``np.unique``,
    so the Python work is per position, not per token.
    """
    if not rows:
        return []
    width = max(row.size for row in rows)
    matrix = np.full((len(rows), width), -1, dtype=np.int32)
    for i, row in enumerate(rows):
        matrix[i, : row.size] = row
    w = np.asarray(weights, dtype=np.float64)
    out: list[float] = []
    for t in range(width):
        column = matrix[:, t]
        valid = column >= 0
        _, inverse = np.unique(column[valid], return_inverse=True)
        counts = np.bincount(inverse, weights=w[valid])
        p = counts / counts.sum()
        out.append(max(0.0, float(-(p * np.log2(p)).sum())))
    return out


def bootstrap_interval(
    counts: Sequence[int],
    statistic: RowStatistic,
    *,
    resamples: int,
    seed: int,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap interval: resample n outputs with replacement ``resamples``
    times (a multinomial draw over the observed counts) and take the ``(1-level)/2`` and
    ``(1+level)/2`` quantiles of ``statistic`` (applied to a resamples x K count matrix).
    """
    n = int(sum(counts))
    rng = np.random.default_rng(seed)
    draws = rng.multinomial(n, np.asarray(counts, dtype=np.float64) / n, size=resamples)
    values = statistic(draws)
    low, high = np.quantile(values, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


def entropy_rows(draws: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
    """``entropy_bits`` of every row of a count matrix."""
    n = draws.sum(axis=1, keepdims=True)
    p = draws / n
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, -p * np.log2(np.where(p > 0, p, 1.0)), 0.0)
    return np.asarray(terms.sum(axis=1), dtype=np.float64)


def agreement_rows(draws: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
    """``agreement_rate`` of every row of a count matrix (rows with n >= 2)."""
    n = draws.sum(axis=1).astype(np.float64)
    pairs = (draws * (draws - 1)).sum(axis=1).astype(np.float64)
    return np.asarray(pairs / (n * (n - 1)), dtype=np.float64)
