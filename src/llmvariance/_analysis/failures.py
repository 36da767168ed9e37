"""Why samples failed: the most common error messages, counted in bounded memory."""

from __future__ import annotations

from collections import Counter

from .._sample import SampleError
from .report import FailureMessage

__all__ = ["FailureMessages"]

MAX_MESSAGES = 64
"""Distinct messages counted one by one; later new ones count as their kind's "other"."""
MAX_LENGTH = 300
"""Characters of a message that are kept."""
OTHER = "(other messages)"
TOP = 5

_Key = tuple[str, int | None, str]


class FailureMessages:
    """Counts of (kind, status, message) over failed samples.

    Memory is bounded: once ``MAX_MESSAGES`` distinct messages are counted, a new one is
    counted under ``(kind, None, "(other messages)")``, so the counts still add up to the
    failures of each kind.
    """

    __slots__ = ("_counts",)

    def __init__(self) -> None:
        self._counts: Counter[_Key] = Counter()

    def __repr__(self) -> str:
        return f"<FailureMessages distinct={len(self._counts)} total={self._counts.total()}>"

    def _count(self, key: _Key, times: int) -> None:
        if key not in self._counts and len(self._counts) >= MAX_MESSAGES:
            key = (key[0], None, OTHER)
        self._counts[key] += times

    def add(self, error: SampleError) -> None:
        self._count((error.kind, error.status, error.message[:MAX_LENGTH]), 1)

    def copy(self) -> FailureMessages:
        clone = FailureMessages()
        clone._counts = self._counts.copy()
        return clone

    def merged(self, other: FailureMessages) -> FailureMessages:
        """Both counts; equal to counting both sets of failures while under the bound."""
        merged = self.copy()
        for key, times in sorted(other._counts.items(), key=_order):
            merged._count(key, times)
        return merged

    def top(self, limit: int = TOP) -> list[FailureMessage]:
        """The ``limit`` most common messages, most common first."""
        ranked = sorted(self._counts.items(), key=_order)[:limit]
        return [FailureMessage(kind=kind, status=status, message=message, count=count)
                for (kind, status, message), count in ranked]


def _order(item: tuple[_Key, int]) -> tuple[int, str, int, str]:
    (kind, status, message), count = item
    return -count, kind, status or 0, message
