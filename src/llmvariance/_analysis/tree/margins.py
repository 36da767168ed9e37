"""Top-1 minus top-2 logprob margins, per position, in fixed point so sums merge exactly."""

from __future__ import annotations

import heapq
from array import array
from collections.abc import Sequence
from itertools import chain

import numpy as np
import numpy.typing as npt

__all__ = ["MARGIN_CAP", "MARGIN_SCALE", "fixed_margins"]

MARGIN_SCALE = 2.0**32
"""Margins are summed as integers in units of 2**-32 nat: exact, so merging is exact."""
MARGIN_CAP = 1000.0
"""Nats. A larger margin is no contest anyway; the cap keeps 10**6 sums inside int64."""

IntArray = npt.NDArray[np.int64]


def fixed_margins(top: Sequence[dict[str, float]]) -> IntArray:
    """Top-1 minus top-2 logprob per position in units of 2**-32 nat; -1 where missing."""
    widths = set(map(len, top))
    if len(widths) != 1 or min(widths) < 2:
        return fixed_margins_ragged(top)
    # the usual case, as many alternatives at every position: one numpy pass (the values
    # gathered in C: ``np.fromiter`` would call back into Python for each)
    flat = array("d", list(chain.from_iterable(map(dict.values, top))))
    values = np.frombuffer(flat, dtype=np.float64).reshape(len(top), widths.pop())
    best = np.partition(values, -2, axis=1)[:, -2:]
    with np.errstate(invalid="ignore"):  # -inf minus -inf: no margin
        margins = np.rint(np.minimum(best[:, 1] - best[:, 0], MARGIN_CAP) * MARGIN_SCALE)
    return np.where(np.isnan(margins), -1, margins).astype(np.int64)


def fixed_margins_ragged(top: Sequence[dict[str, float]]) -> IntArray:
    """``fixed_margins`` one position at a time (for differing numbers of alternatives)."""
    out = []
    for alternatives in top:
        value = -1
        if len(alternatives) >= 2:
            first, second = heapq.nlargest(2, alternatives.values())
            margin = first - second
            if margin == margin:  # not NaN (both -inf)
                value = round(min(margin, MARGIN_CAP) * MARGIN_SCALE)
        out.append(value)
    return np.asarray(out, dtype=np.int64)
