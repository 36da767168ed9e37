"""Building the divergence tree: a mergeable collector of distinct outputs, then the tree.

``DivergenceTreeCollector`` keeps one entry per distinct output (its tokens, its count, and
per position the summed top-1 minus top-2 logprob margin of its samples), so its memory
grows with the distinct outputs, not with N, and two collectors merge exactly: margins are
summed in fixed point, so sums do not depend on the order samples arrived in.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt

from ..._errors import ConfigError
from ..._sample import Sample
from .. import metrics as m
from .model import DivergenceTree, TreeNode

__all__ = ["DEFAULT_MAX_LEAVES", "DivergenceTreeCollector", "divergence_tree"]

DEFAULT_MAX_LEAVES = 32
"""Without ``min_count``, rarer branches are pruned until at most this many leaves remain."""

_SCALE = 2.0**32
"""Margins are summed as integers in units of 2**-32 nat: exact, so merging is exact."""
_MARGIN_CAP = 1000.0
"""Nats. A larger margin is no contest anyway; the cap keeps 10**6 sums inside int64."""

IntArray = npt.NDArray[np.int64]


class _Entry:
    """One distinct (text, tokens): its count and per-position summed margins."""

    __slots__ = ("count", "margin_n", "margin_sum", "tokens")

    def __init__(self, tokens: list[str] | None) -> None:
        self.tokens = tokens
        self.count = 0
        self.margin_sum: IntArray | None = None
        self.margin_n: IntArray | None = None

    def add_margins(self, fixed: IntArray) -> None:
        valid = fixed >= 0
        if self.margin_sum is None or self.margin_n is None:
            self.margin_sum = np.zeros(fixed.size, dtype=np.int64)
            self.margin_n = np.zeros(fixed.size, dtype=np.int64)
        self.margin_sum += np.where(valid, fixed, 0)
        self.margin_n += valid

    def absorb(self, other: _Entry) -> None:
        self.count += other.count
        if other.margin_sum is not None and other.margin_n is not None:
            if self.margin_sum is None or self.margin_n is None:
                self.margin_sum, self.margin_n = other.margin_sum.copy(), other.margin_n.copy()
            else:
                self.margin_sum = self.margin_sum + other.margin_sum
                self.margin_n = self.margin_n + other.margin_n


def _fixed_margins(top: Sequence[dict[str, float]]) -> IntArray:
    """Top-1 minus top-2 logprob per position in units of 2**-32 nat; -1 where missing."""
    try:  # the usual case, as many alternatives at every position: one numpy pass
        values = np.array([list(alternatives.values()) for alternatives in top],
                          dtype=np.float64)
    except ValueError:
        values = np.empty((0, 0))
    if values.ndim != 2 or values.shape[0] != len(top) or values.shape[1] < 2:
        return _fixed_margins_ragged(top)
    best = np.partition(values, -2, axis=1)[:, -2:]
    with np.errstate(invalid="ignore"):  # -inf minus -inf: no margin
        margins = np.rint(np.minimum(best[:, 1] - best[:, 0], _MARGIN_CAP) * _SCALE)
    return np.where(np.isnan(margins), -1, margins).astype(np.int64)


def _fixed_margins_ragged(top: Sequence[dict[str, float]]) -> IntArray:
    out = []
    for alternatives in top:
        value = -1
        if len(alternatives) >= 2:
            first, second = heapq.nlargest(2, alternatives.values())
            margin = first - second
            if margin == margin:  # not NaN (both -inf)
                value = round(min(margin, _MARGIN_CAP) * _SCALE)
        out.append(value)
    return np.asarray(out, dtype=np.int64)


class DivergenceTreeCollector:
    """Consumes samples (or plain strings) one at a time; ``tree()`` draws their tree.

    Keeps one entry per distinct output, so memory grows with the distinct outputs and
    their length, not with N; ``a.merge(b)`` equals a collector that saw both, exactly.
    Failed samples are not part of the tree.
    """

    __slots__ = ("_outputs", "_provider_tokens")

    def __init__(self) -> None:
        self._outputs: dict[str, list[_Entry]] = {}
        self._provider_tokens = True

    def __repr__(self) -> str:
        n = sum(e.count for entries in self._outputs.values() for e in entries)
        return f"<DivergenceTreeCollector samples={n} distinct={len(self._outputs)}>"

    def _entry(self, text: str, tokens: list[str] | None) -> _Entry:
        entries = self._outputs.get(text)
        if entries is None:
            entries = self._outputs[text] = []
        for entry in entries:  # nearly always one: a text tokenized one way
            if entry.tokens == tokens:
                return entry
        entry = _Entry(tokens)
        entries.append(entry)
        return entry

    def add(self, sample: Sample) -> None:
        if sample.error is not None:
            return
        tokens = sample.tokens
        if tokens is None:
            self._provider_tokens = False
        entry = self._entry(sample.text or "", tokens)
        entry.count += 1
        if tokens is not None and sample.top_logprobs is not None:
            entry.add_margins(_fixed_margins(sample.top_logprobs))

    def add_text(self, text: str) -> None:
        """Count a plain string output (no provider tokens)."""
        self._provider_tokens = False
        self._entry(text, None).count += 1

    def update(self, items: Iterable[str | Sample]) -> None:
        for item in items:
            if isinstance(item, str):
                self.add_text(item)
            else:
                self.add(item)

    def merge(self, other: DivergenceTreeCollector) -> DivergenceTreeCollector:
        """A new collector equal to one that saw both collectors' samples."""
        merged = DivergenceTreeCollector()
        merged._provider_tokens = self._provider_tokens and other._provider_tokens
        for source in (self, other):
            for text, entries in source._outputs.items():
                for entry in entries:
                    merged._entry(text, entry.tokens).absorb(entry)
        return merged

    def tree(self, *, min_count: int | None = None,
             max_leaves: int = DEFAULT_MAX_LEAVES) -> DivergenceTree:
        """The tree of everything added so far.

        Alternatives with fewer than ``min_count`` samples are pruned; without it, the
        smallest ``min_count`` that leaves at most ``max_leaves`` leaves is used (every
        leaf then holds at least ``min_count`` samples, so the tree has at most
        ``n / min_count`` leaves however many samples and distinct outputs there are).
        """
        if min_count is not None:
            ConfigError.check_int("min_count", min_count)
        ConfigError.check_int("max_leaves", max_leaves)
        return _Builder(self._distinct()).build(min_count, max_leaves)

    def _distinct(self) -> tuple[bool, list[_Output]]:
        provider = self._provider_tokens and all(
            e.tokens is not None for entries in self._outputs.values() for e in entries)
        outputs = []
        for text, entries in self._outputs.items():
            count = sum(e.count for e in entries)
            if provider:
                # The same text tokenized two ways: the smallest tokenization, whatever
                # the order they came in, and only its samples' margins.
                chosen = min(entries, key=lambda e: e.tokens or [])
                outputs.append(_Output(text, chosen.tokens or [], count, chosen))
            else:
                outputs.append(_Output(text, m.word_tokens(text), count, None))
        outputs.sort(key=lambda o: (o.seq, o.text))
        return provider, outputs


@dataclass(slots=True)
class _Output:
    text: str
    seq: list[str]
    count: int
    margins: _Entry | None


@dataclass(slots=True)
class _Span:
    """Outputs ``lo..hi`` (in sorted order) that share tokens ``0..end``."""

    lo: int
    hi: int
    start: int
    end: int
    count: int
    children: list[int] = field(default_factory=list)


class _Builder:
    """Sorted distinct outputs → spans (every branch, unpruned) → pruned ``TreeNode``s."""

    def __init__(self, distinct: tuple[bool, list[_Output]]) -> None:
        self.provider, self.outputs = distinct
        counts = [o.count for o in self.outputs]
        self.cumulative = [0, *np.cumsum(counts, dtype=np.int64).tolist()]
        self.spans: list[_Span] = []
        if self.outputs:
            self._split_all()

    def _span(self, lo: int, hi: int, start: int) -> int:
        seqs = [self.outputs[lo].seq, self.outputs[hi - 1].seq]
        if hi - lo == 1:
            end = len(seqs[0])
        else:  # sorted, so the first and the last share only what all share
            end = start + m.pair_prefix_length(seqs[0][start:], seqs[1][start:])
        self.spans.append(_Span(lo, hi, start, end,
                                self.cumulative[hi] - self.cumulative[lo]))
        return len(self.spans) - 1

    def _split_all(self) -> None:
        # An explicit stack: a chain of thousands of branch points must not hit the
        # recursion limit.
        stack = [self._span(0, len(self.outputs), 0)]
        while stack:
            span = self.spans[stack.pop()]
            if span.hi - span.lo == 1:
                continue
            end, i = span.end, span.lo
            while i < span.hi:
                key = self._token_at(i, end)
                j = i + 1
                while j < span.hi and self._token_at(j, end) == key:
                    j += 1
                if (i, j) == (span.lo, span.hi):  # identical token sequences: a leaf
                    break
                child = self._span(i, j, end)
                span.children.append(child)
                stack.append(child)
                i = j

    def _token_at(self, i: int, position: int) -> str | None:
        seq = self.outputs[i].seq
        return seq[position] if position < len(seq) else None

    def _leaves(self, min_count: int) -> int:
        leaves, stack = 0, [0]
        while stack:
            kept = [c for c in self.spans[stack.pop()].children
                    if self.spans[c].count >= min_count]
            leaves += not kept
            stack.extend(kept)
        return leaves

    def _auto_min_count(self, max_leaves: int) -> int:
        lo, hi = 1, self.cumulative[-1]  # leaves(n) == 1; leaves never grow with min_count
        while lo < hi:
            mid = (lo + hi) // 2
            if self._leaves(mid) <= max_leaves:
                hi = mid
            else:
                lo = mid + 1
        return lo

    def build(self, min_count: int | None, max_leaves: int) -> DivergenceTree:
        n = self.cumulative[-1]
        tokenization: Literal["provider", "words"] = "provider" if self.provider else "words"
        if not self.spans:
            return DivergenceTree(n=0, unique_count=0, tokenization=tokenization,
                                  min_count=min_count or 1, pruned_branches=0,
                                  pruned_samples=0, nodes=[])
        if min_count is None:
            min_count = self._auto_min_count(max_leaves)
        nodes: list[TreeNode] = []
        # (span, parent id, depth); children pushed in reverse so the most common comes first
        stack: list[tuple[int, int | None, int]] = [(0, None, 0)]
        child_ids: dict[int, list[int]] = {}
        while stack:
            index, parent, depth = stack.pop()
            span = self.spans[index]
            ordered = sorted(span.children, key=lambda c: (-self.spans[c].count,
                                                           self.spans[c].lo))
            kept = [c for c in ordered if self.spans[c].count >= min_count]
            pruned = [c for c in ordered if self.spans[c].count < min_count]
            node_id = len(nodes)
            nodes.append(self._node(span, node_id, parent, depth, bool(span.children),
                                    len(pruned), sum(self.spans[c].count for c in pruned)))
            child_ids[node_id] = []
            if parent is not None:
                child_ids[parent].append(node_id)
            stack.extend((c, node_id, depth + 1) for c in reversed(kept))
        nodes = [node.model_copy(update={"children": child_ids[node.id]}) for node in nodes]
        return DivergenceTree(
            n=n, unique_count=len(self.outputs), tokenization=tokenization,
            min_count=min_count, pruned_branches=sum(node.pruned_branches for node in nodes),
            pruned_samples=sum(node.pruned_samples for node in nodes), nodes=nodes)

    def _node(self, span: _Span, node_id: int, parent: int | None, depth: int,
              splits: bool, pruned_branches: int, pruned_samples: int) -> TreeNode:
        seq = self.outputs[span.lo].seq
        start_char = sum(len(token) for token in seq[: span.start])
        text = "".join(seq[span.start: span.end])
        return TreeNode(
            id=node_id, parent=parent, depth=depth, text=text, start_token=span.start,
            start_char=start_char, end_token=span.end, end_char=start_char + len(text),
            count=span.count, outputs=span.hi - span.lo,
            margin=self._margin(span) if splits else None, children=[],
            pruned_branches=pruned_branches, pruned_samples=pruned_samples)

    def _margin(self, span: _Span) -> float | None:
        """The mean margin at ``span.end`` over the samples that have a token there."""
        total = samples = 0
        for output in self.outputs[span.lo: span.hi]:
            entry = output.margins
            if (entry is not None and entry.margin_sum is not None
                    and entry.margin_n is not None and span.end < entry.margin_sum.size):
                total += int(entry.margin_sum[span.end])
                samples += int(entry.margin_n[span.end])
        return total / _SCALE / samples if samples else None


def divergence_tree(items: Iterable[str | Sample], *, min_count: int | None = None,
                    max_leaves: int = DEFAULT_MAX_LEAVES) -> DivergenceTree:
    """The divergence tree of outputs a user has: ``Sample``s or plain strings.

    Tokens are the provider's when every ok sample has them, else words. See
    ``DivergenceTreeCollector.tree`` for ``min_count`` and ``max_leaves``.
    """
    collector = DivergenceTreeCollector()
    collector.update(items)
    return collector.tree(min_count=min_count, max_leaves=max_leaves)
