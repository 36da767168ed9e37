"""A fixed-size, mergeable sketch of durations whose quantiles have a bounded relative error.

Bucket ``i`` (0 <= i < ``BUCKETS``) holds the values in ``(LOW_S * g**(i-1), LOW_S * g**i]``
with ``g = (1 + RELATIVE_ERROR) / (1 - RELATIVE_ERROR)`` (about 4.1% wide): 379 buckets span
1 ms .. 1 h. A bucket stands for ``2 * LOW_S * g**i / (g + 1)``, which is within
``RELATIVE_ERROR`` (2%) of every value in it (the DDSketch construction). Values below 1 ms
fall in the first bucket, values above 1 h in the last.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["BUCKETS", "HIGH_S", "LOW_S", "RELATIVE_ERROR", "LatencySketch"]

LOW_S = 1e-3
HIGH_S = 3600.0
RELATIVE_ERROR = 0.02
_GAMMA = (1 + RELATIVE_ERROR) / (1 - RELATIVE_ERROR)
_LOG_GAMMA = math.log(_GAMMA)
BUCKETS = math.ceil(math.log(HIGH_S / LOW_S) / _LOG_GAMMA) + 1
# what each bucket stands for; clamped to the exact min/max when a quantile is read
_VALUES = 2 * LOW_S * _GAMMA ** np.arange(BUCKETS, dtype=np.float64) / (_GAMMA + 1)


class LatencySketch:
    """Counts of durations (seconds) in log-spaced buckets, plus the exact count, min and max.

    Memory is a dict of the buckets in use, ``BUCKETS`` at most (about 10 KB then) however
    many values are added, and a few hundred bytes for the handful of buckets one output's
    latencies fill — a suite keeps one sketch per distinct output of each of its prompts,
    so a dense list (3 KB each) cost 300 MB at 100,000 prompts. A dict, not an array,
    because adding is on every response's path and incrementing a dict item is ~20x
    cheaper than a numpy one. ``quantile(q)`` interpolates linearly
    between order statistics like ``numpy.quantile(values, q)``, each order statistic read
    from its bucket and clamped to [min, max]; for values in 1 ms .. 1 h the result is
    within ``RELATIVE_ERROR`` (2%) of the exact quantile, and the 0 and 1 quantiles are
    exact. Merging adds the counts, so the sketch of a union equals the merge of the
    sketches, bucket for bucket.
    """

    __slots__ = ("count", "counts", "max", "min")

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}
        """Bucket index → how many values fell in it (only buckets that hold any)."""
        self.count = 0
        self.min = math.inf
        self.max = -math.inf

    def add(self, seconds: float) -> None:
        """Count one duration; ``ValueError`` for a negative or non-finite one."""
        if not 0.0 <= seconds < math.inf:
            raise ValueError(f"seconds: must be finite and >= 0, got {seconds!r}")
        if seconds <= LOW_S:
            index = 0
        else:
            index = min(math.ceil(math.log(seconds / LOW_S) / _LOG_GAMMA), BUCKETS - 1)
        counts = self.counts
        counts[index] = counts.get(index, 0) + 1
        self.count += 1
        if seconds < self.min:
            self.min = seconds
        if seconds > self.max:
            self.max = seconds

    def merge(self, other: LatencySketch) -> None:
        """Add ``other``'s values to this sketch."""
        counts = self.counts
        for i, c in other.counts.items():
            counts[i] = counts.get(i, 0) + c
        self.count += other.count
        self.min = min(self.min, other.min)
        self.max = max(self.max, other.max)

    def copy(self) -> LatencySketch:
        clone = LatencySketch()
        clone.merge(self)
        return clone

    def quantile(self, q: float) -> float:
        """The ``q`` quantile (0 <= q <= 1) of the values, within ``RELATIVE_ERROR``."""
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"q: must be between 0 and 1, got {q!r}")
        if self.count == 0:
            raise ValueError("quantile of an empty sketch")
        rank = q * (self.count - 1)
        low = math.floor(rank)
        fraction = rank - low
        value = self._order_statistic(low)
        if fraction:
            value += fraction * (self._order_statistic(low + 1) - value)
        return value

    def _order_statistic(self, rank: int) -> float:
        """The value of 0-based ``rank`` in sorted order, as its bucket stands for it."""
        if rank <= 0:
            return self.min
        if rank >= self.count - 1:
            return self.max
        seen = 0
        buckets = sorted(self.counts.items())
        for bucket, count in buckets:  # the first bucket whose running count passes rank
            seen += count
            if rank < seen:
                return min(max(float(_VALUES[bucket]), self.min), self.max)
        return self.max

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, LatencySketch):
            return NotImplemented
        return ((self.count, self.min, self.max, self.counts)
                == (other.count, other.min, other.max, other.counts))

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        if not self.count:
            return "LatencySketch(count=0)"
        return (f"LatencySketch(count={self.count}, min={self.min:.4g}s, "
                f"median~{self.quantile(0.5):.4g}s, max={self.max:.4g}s)")
