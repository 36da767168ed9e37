"""What the distinct outputs say, computed once per report: prefixes, divergence from the
mode, per-position entropy, lengths, and the divergence tree.

The collectors hand over their distinct outputs (texts sorted, counts, tokens, summed
margins); everything here is array work over their token rows (``rows``), so a report
on 100,000 distinct outputs costs about as much as tokenizing them once.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from . import metrics as m
from .latency import LatencySketch
from .report import DivergenceStats, HistogramBin
from .rows import TokenRows
from .tree.build import Margins, SortedRows, build_tree
from .tree.margins import MARGIN_SCALE
from .tree.model import DivergenceTree

__all__ = ["DistinctOutputs", "OutputMetrics"]

IntArray = npt.NDArray[np.int64]
MarginSums = tuple[IntArray, IntArray]
"""Per token position: summed fixed-point margins, and how many samples had one."""


@dataclass(frozen=True, slots=True)
class OutputMetrics:
    common_prefix_chars: int | None
    common_prefix_tokens: int | None
    divergence_from_mode_chars: DivergenceStats | None
    divergence_from_mode_tokens: DivergenceStats | None
    divergence_margin: float | None
    per_position_entropy: list[float]
    length_mean_tokens: float | None
    length_std_tokens: float | None


class DistinctOutputs:
    """The distinct outputs in canonical order (``texts`` sorted) with their counts, as
    token rows: the provider's tokens when ``provider``, else words."""

    __slots__ = ("counts", "latencies", "margins", "provider", "rows", "sorted", "texts",
                 "tokens", "ttfts")

    def __init__(self, texts: Sequence[str], counts: Sequence[int], provider: bool,
                 tokens: Sequence[list[str] | None], margins: Sequence[MarginSums | None],
                 keys: Sequence[list[str] | None] | None = None) -> None:
        """``keys``: what each output's tokens are compared by (their ids, where the
        server sent them), when not the tokens themselves; ``tokens`` are what is shown."""
        self.texts, self.counts, self.provider = texts, counts, provider
        self.tokens, self.margins = tokens, margins
        self.latencies: list[LatencySketch] = []
        """The outputs' latency sketches (those that have one), for the caller to combine."""
        self.ttfts: list[LatencySketch] = []
        compared = keys if keys is not None else tokens
        self.rows = (TokenRows.from_tokens([t or [] for t in compared], counts) if provider
                     else TokenRows.from_words(texts, counts))
        self.sorted = SortedRows(self.rows, texts)

    def _tokens_of(self, row: int) -> Sequence[str]:
        if self.provider:
            return self.tokens[row] or []
        return m.word_tokens(self.texts[row])

    def _flat_margins(self) -> Margins | None:
        """The margins of every row, one after another (provider tokens only)."""
        if not self.provider or all(sums is None for sums in self.margins):
            return None
        starts = np.concatenate(([0], np.cumsum(self.rows.lengths))).astype(np.int64)
        total = np.zeros(int(starts[-1]), dtype=np.int64)
        samples = np.zeros(int(starts[-1]), dtype=np.int64)
        for row, sums in enumerate(self.margins):
            if sums is not None:
                start = int(starts[row])
                total[start: start + sums[0].size] = sums[0]
                samples[start: start + sums[1].size] = sums[1]
        return Margins(total, samples, starts)

    def tree(self, min_count: int | None, max_leaves: int) -> DivergenceTree:
        return build_tree(self.sorted, self.counts, self.provider, self._tokens_of,
                          self._flat_margins(), min_count, max_leaves)

    def metrics(self, mode_index: int | None) -> OutputMetrics:
        texts, counts, rows = self.texts, self.counts, self.rows
        unique = len(texts)
        prefix_chars = prefix_tokens = None
        div_chars = div_tokens = None
        margin = None
        if unique > 1 and mode_index is not None:
            # texts are sorted: neighbours suffice (word rows found them with the tokens)
            chars = (rows.adjacent_chars if rows.adjacent_chars is not None
                     else _adjacent_char_prefixes(texts))
            prefix_chars = int(chars.min())
            prefix_tokens = self.sorted.common_prefix()
            others = np.flatnonzero(np.arange(unique) != mode_index)
            weights = np.asarray(counts, dtype=np.int64)[others]
            div_chars = _divergence(_range_min_from(chars, mode_index,
                                                    len(texts[mode_index]))[others], weights)
            div_tokens = _divergence(self.sorted.prefix_with(mode_index)[others], weights)
            sums = self.margins[mode_index]
            if self.provider and sums is not None and prefix_tokens < sums[0].size:
                had = int(sums[1][prefix_tokens])
                margin = int(sums[0][prefix_tokens]) / MARGIN_SCALE / had if had else None
        lengths = rows.lengths
        n_ok = sum(counts)
        length_mean = length_std = None
        if n_ok:
            c = np.asarray(counts, dtype=np.int64)
            # exact integer sums, so the result does not depend on the order of outputs
            if int(lengths.max(initial=0)) ** 2 * n_ok < 2**62:
                s1, s2 = int(lengths @ c), int((lengths * lengths) @ c)
            else:
                ls = lengths.tolist()
                s1 = sum(x * k for x, k in zip(ls, counts, strict=True))
                s2 = sum(x * x * k for x, k in zip(ls, counts, strict=True))
            length_mean = s1 / n_ok
            length_std = math.sqrt(max(0, n_ok * s2 - s1 * s1) / (n_ok * n_ok))
        return OutputMetrics(
            common_prefix_chars=prefix_chars, common_prefix_tokens=prefix_tokens,
            divergence_from_mode_chars=div_chars, divergence_from_mode_tokens=div_tokens,
            divergence_margin=margin,
            per_position_entropy=rows.per_position_entropy(),
            length_mean_tokens=length_mean, length_std_tokens=length_std)


_HEAD = 64
"""Characters of each text compared at once, in numpy, before any slicing in Python."""


def _adjacent_char_prefixes(texts: Sequence[str]) -> IntArray:
    """The common prefix (characters) of each pair of neighbours: their first ``_HEAD``
    characters compared as arrays, and only pairs agreeing on all of them in Python."""
    heads = "".join(t[:_HEAD].ljust(_HEAD, "\0") for t in texts)
    codes = np.frombuffer(heads.encode("utf-32-le"), dtype=np.uint32).reshape(-1, _HEAD)
    lengths = np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))
    limit = np.minimum(lengths[:-1], lengths[1:])
    differ = codes[:-1] != codes[1:]
    first = np.where(differ.any(axis=1), differ.argmax(axis=1), _HEAD)
    out = np.minimum(first, limit)
    for p in np.flatnonzero((first == _HEAD) & (limit > _HEAD)).tolist():
        out[p] = m.pair_prefix_length(texts[p], texts[p + 1])
    return out


def _range_min_from(adjacent: IntArray, p: int, own: int) -> IntArray:
    """Per position q of a sorted list, the common prefix of items q and p: the minimum of
    the neighbours' prefixes between them (``own`` at p itself)."""
    out = np.empty(adjacent.size + 1, dtype=np.int64)
    out[p] = own
    if p:
        out[:p] = np.minimum.accumulate(adjacent[:p][::-1])[::-1]
    if p < adjacent.size:
        out[p + 1:] = np.minimum.accumulate(adjacent[p:])
    return out


def _divergence(values: IntArray, weights: IntArray) -> DivergenceStats:
    """``metrics.weighted_summary`` and ``metrics.histogram``, on arrays."""
    by_value = np.argsort(values, kind="stable")
    v, w = values[by_value], weights[by_value]
    cumulative = np.cumsum(w)
    total = int(cumulative[-1])

    def at(rank: int) -> int:  # the value at 0-based position ``rank`` of the sorted list
        return int(v[np.searchsorted(cumulative, rank, side="right")])

    median = (at((total - 1) // 2) + at(total // 2)) / 2
    mean = math.fsum((v * w).tolist()) / total
    low, high = int(v[0]), int(v[-1])
    span = high - low + 1
    width = 1 if span <= 20 else math.ceil(span / 10)
    bins = np.bincount((v - low) // width, weights=w, minlength=math.ceil(span / width))
    histogram = [HistogramBin(lo=low + i * width, hi=min(high, low + (i + 1) * width - 1),
                              count=int(c)) for i, c in enumerate(bins.tolist())]
    return DivergenceStats(samples=total, min=low, median=median, mean=mean, max=high,
                           histogram=histogram)
