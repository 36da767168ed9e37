"""Variance metrics as pure functions of output counts and sequences.

``counts`` is the number of times each distinct output occurred among the n ok samples
(so ``sum(counts) == n``). Nothing here touches a network, a clock or an event loop.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from typing import TypeVar

__all__ = ["agreement_rate", "common_prefix_length", "entropy_bits", "word_tokens"]

T = TypeVar("T")

# A word or a run of punctuation, with the whitespace before it, so that
# "".join(word_tokens(s)) == s except for trailing whitespace kept as its own token.
_WORD = re.compile(r"\s*(?:\w+|[^\w\s]+)|\s+")


def word_tokens(text: str) -> list[str]:
    """The fallback tokenizer when a provider returned no tokens: words and punctuation."""
    return _WORD.findall(text)


def entropy_bits(counts: Sequence[int]) -> float:
    """Shannon entropy ``-sum(p_k * log2(p_k))`` with ``p_k = c_k / n``, in bits."""
    n = sum(counts)
    if n == 0:
        return 0.0
    # fsum is correctly rounded, so the result does not depend on the order of counts.
    return max(0.0, -math.fsum(c / n * math.log2(c / n) for c in counts if c))


def agreement_rate(counts: Sequence[int]) -> float | None:
    """Probability that two different samples agree: ``sum(c_k(c_k-1)) / (n(n-1))``.

    None when there are fewer than two samples.
    """
    n = sum(counts)
    if n < 2:
        return None
    return sum(c * (c - 1) for c in counts) / (n * (n - 1))


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
    limit = min(len(lo), len(hi))
    i = 0
    while i < limit and lo[i] == hi[i]:
        i += 1
    return i
