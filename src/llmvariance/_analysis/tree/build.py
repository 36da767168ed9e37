"""The tree from the distinct outputs' token rows: sort, adjacent prefixes, intervals, prune.

The distinct outputs sorted by their token sequences, with the common prefix of each
neighbouring pair, are a collapsed prefix tree already: each branch point is a run of
neighbours that share at least its depth (an "lcp interval"), found in one pass with a
stack. Work is O(distinct outputs) plus the sort; no per-token Python loop.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Literal

import numpy as np
import numpy.typing as npt

from ..rows import TokenRows
from .margins import MARGIN_SCALE
from .model import DivergenceTree, TreeNode

__all__ = ["DEFAULT_MAX_LEAVES", "Margins", "SortedRows", "build_tree"]

DEFAULT_MAX_LEAVES = 32
"""Without ``min_count``, rarer branches are pruned until at most this many leaves remain."""

IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class Margins:
    """Per token of every row (row i at ``starts[i]``): the summed fixed-point top-1
    minus top-2 margins of its samples, and how many samples had one there."""

    total: IntArray
    samples: IntArray
    starts: IntArray


class SortedRows:
    """Distinct outputs in token-sequence order, and each neighbour pair's common prefix."""

    __slots__ = ("adjacent", "order", "position", "rows")

    def __init__(self, rows: TokenRows, tie: Sequence[str]) -> None:
        self.rows = rows
        self.order = np.asarray(rows.order(tie), dtype=np.int64)
        """Row numbers, sorted."""
        self.position = np.empty_like(self.order)
        self.position[self.order] = np.arange(self.order.size)
        """Where each row is in ``order``."""
        self.adjacent = rows.prefix_lengths(self.order[:-1], self.order[1:])
        """``adjacent[p]``: the common prefix of ``order[p]`` and ``order[p + 1]``, tokens."""

    def common_prefix(self) -> int:
        """Tokens shared by every row (all of them when there is one row)."""
        if self.adjacent.size:
            return int(self.adjacent.min())
        return int(self.rows.lengths[0]) if self.rows.count else 0

    def prefix_with(self, row: int) -> IntArray:
        """Per row, its common prefix with ``row`` (tokens): a range minimum over neighbours."""
        p = int(self.position[row])
        adjacent = self.adjacent
        by_position = np.empty(self.order.size, dtype=np.int64)
        by_position[p] = self.rows.lengths[row]
        if p:
            by_position[:p] = np.minimum.accumulate(adjacent[:p][::-1])[::-1]
        if p + 1 < by_position.size:
            by_position[p + 1:] = np.minimum.accumulate(adjacent[p:])
        return by_position[self.position]


def build_tree(sorted_rows: SortedRows, counts: Sequence[int], provider: bool,
               tokens_of: Callable[[int], Sequence[str]], margins: Margins | None,
               min_count: int | None, max_leaves: int) -> DivergenceTree:
    """The tree of the rows (``counts[i]`` samples of row ``i``), pruned to ``min_count``
    (or the smallest that leaves at most ``max_leaves`` leaves); ``tokens_of(i)`` gives
    row ``i``'s tokens for the nodes drawn."""
    tokenization: Literal["provider", "words"] = "provider" if provider else "words"
    rows = sorted_rows.rows
    if not rows.count:
        return DivergenceTree(n=0, unique_count=0, tokenization=tokenization,
                              min_count=min_count or 1, pruned_branches=0,
                              pruned_samples=0, nodes=[])
    return _Builder(sorted_rows, counts, tokenization, tokens_of, margins).build(
        min_count, max_leaves)


class _Builder:
    """Groups of equal sequences → lcp intervals → pruned ``TreeNode``s."""

    def __init__(self, sorted_rows: SortedRows, counts: Sequence[int],
                 tokenization: Literal["provider", "words"],
                 tokens_of: Callable[[int], Sequence[str]], margins: Margins | None) -> None:
        self.rows = sorted_rows.rows
        self.order = sorted_rows.order
        self.tokenization = tokenization
        self.tokens_of = tokens_of
        self.margins = margins
        lengths = self.rows.lengths[self.order]
        adjacent = sorted_rows.adjacent
        # neighbours with equal sequences are one group (one leaf, several outputs)
        same = (adjacent == lengths[:-1]) & (adjacent == lengths[1:])
        starts = np.flatnonzero(np.concatenate(([True], ~same)))
        self.group_first = starts  # position in order of each group's first row
        self.group_end = np.append(starts[1:], self.order.size)
        self.group_length = lengths[starts]
        sample_counts = np.asarray(counts, dtype=np.int64)[self.order]
        self.cum_samples = np.concatenate(([0], np.cumsum(sample_counts)))
        self.group_cum = self.cum_samples[np.append(starts, self.order.size)]
        self.lcp = adjacent[~same]  # between consecutive groups
        self.n = int(self.cum_samples[-1])
        self._tokens: dict[int, Sequence[str]] = {}
        # internal nodes: (depth in tokens, first group, last group, children); a child
        # is an internal node's number, or ~g for group g's leaf
        self.internal: list[tuple[int, int, int, list[int]]] = []
        self.root = self._intervals()

    def _intervals(self) -> int:
        groups = self.group_first.size
        if groups == 1:
            return ~0
        lcp = self.lcp.tolist()
        stack: list[tuple[int, int, list[int]]] = [(min(lcp), 0, [])]
        for g in range(groups):
            value = lcp[g] if g < groups - 1 else -1
            child, low = ~g, g
            while stack and value < stack[-1][0]:
                depth, low, children = stack.pop()
                children.append(child)
                child = len(self.internal)
                self.internal.append((depth, low, g, children))
            if not stack:
                return child
            if value > stack[-1][0]:
                stack.append((value, low, [child]))
            else:
                stack[-1][2].append(child)
        raise AssertionError("the root interval always closes")

    # -- spans -------------------------------------------------------------------------

    def _groups(self, node: int) -> tuple[int, int]:
        if node < 0:
            return ~node, ~node
        _, low, high, _ = self.internal[node]
        return low, high

    def _count(self, node: int) -> int:
        low, high = self._groups(node)
        return int(self.group_cum[high + 1] - self.group_cum[low])

    def _end(self, node: int) -> int:
        return self.internal[node][0] if node >= 0 else int(self.group_length[~node])

    def _children(self, node: int) -> list[int]:
        return self.internal[node][3] if node >= 0 else []

    # -- pruning -----------------------------------------------------------------------

    def _auto_min_count(self, max_leaves: int) -> int:
        """The smallest min_count leaving at most ``max_leaves`` leaves: a leaf of the pruned
        tree is a kept node (the root, or ``count >= min_count``) with no kept child."""
        internal = self.internal
        lows = np.array([low for _, low, _, _ in internal], dtype=np.int64)
        highs = np.array([high for _, _, high, _ in internal], dtype=np.int64)
        counts = self.group_cum[highs + 1] - self.group_cum[lows]
        sizes = [len(children) for _, _, _, children in internal]
        parents = np.repeat(np.arange(len(internal)), sizes)
        kids = np.fromiter(chain.from_iterable(children for _, _, _, children in internal),
                           dtype=np.int64, count=sum(sizes))
        inner = kids >= 0
        kid_low = np.where(inner, lows[np.where(inner, kids, 0)], ~kids)
        kid_high = np.where(inner, highs[np.where(inner, kids, 0)], ~kids)
        biggest = np.zeros(len(internal), dtype=np.int64)
        np.maximum.at(biggest, parents, self.group_cum[kid_high + 1] - self.group_cum[kid_low])
        is_root = np.arange(len(internal)) == self.root
        groups = np.diff(self.group_cum)

        def leaves(min_count: int) -> int:
            kept_leaves = (is_root | (counts >= min_count)) & (biggest < min_count)
            return int(kept_leaves.sum()) + int((groups >= min_count).sum())

        lo, hi = 1, max(self.n, 1)  # leaves(n) == 1; leaves never grow with min_count
        while lo < hi:
            mid = (lo + hi) // 2
            if leaves(mid) <= max_leaves:
                hi = mid
            else:
                lo = mid + 1
        return lo

    def build(self, min_count: int | None, max_leaves: int) -> DivergenceTree:
        if min_count is None:
            min_count = 1 if self.root < 0 else self._auto_min_count(max_leaves)
        nodes: list[TreeNode] = []
        child_ids: dict[int, list[int]] = {}
        # (node, parent id, depth, start token); kept children pushed in reverse
        stack: list[tuple[int, int | None, int, int]] = [(self.root, None, 0, 0)]
        while stack:
            node, parent, depth, start = stack.pop()
            end = self._end(node)
            children = self._children(node)
            kept = [c for c in children if self._count(c) >= min_count]
            pruned = [self._count(c) for c in children if self._count(c) < min_count]
            kept.sort(key=lambda c: self._sibling_key(c, end))
            node_id = len(nodes)
            child_ids[node_id] = []  # filled as the children are made, depth first
            nodes.append(self._node(node, node_id, parent, depth, start, end, bool(children),
                                    len(pruned), sum(pruned), child_ids[node_id]))
            if parent is not None:
                child_ids[parent].append(node_id)
            stack.extend((c, node_id, depth + 1, end) for c in reversed(kept))
        return DivergenceTree(
            n=self.n, unique_count=self.order.size, tokenization=self.tokenization,
            min_count=min_count, pruned_branches=sum(node.pruned_branches for node in nodes),
            pruned_samples=sum(node.pruned_samples for node in nodes), nodes=nodes)

    def _first_row(self, node: int) -> int:
        return int(self.order[self.group_first[self._groups(node)[0]]])

    def _tokens_of(self, row: int) -> Sequence[str]:
        tokens = self._tokens.get(row)
        if tokens is None:
            tokens = self._tokens[row] = self.tokens_of(row)
        return tokens

    def _sibling_key(self, node: int, at: int) -> tuple[int, int, str]:
        """Most samples first; then as the sequences sort: the one that ends at ``at``
        first, then by the token at ``at``."""
        tokens = self._tokens_of(self._first_row(node))
        token = tokens[at] if at < len(tokens) else None
        return -self._count(node), token is not None, token or ""

    def _node(self, node: int, node_id: int, parent: int | None, depth: int, start: int,
              end: int, splits: bool, pruned_branches: int, pruned_samples: int,
              children: list[int]) -> TreeNode:
        tokens = self._tokens_of(self._first_row(node))
        start_char = sum(len(token) for token in tokens[:start])
        text = "".join(tokens[start:end])
        low, high = self._groups(node)
        outputs = int(self.group_end[high] - self.group_first[low])
        # built from values that are already the right types: no validation to pay for
        return TreeNode.model_construct(
            id=node_id, parent=parent, depth=depth, text=text, start_token=start,
            start_char=start_char, end_token=end, end_char=start_char + len(text),
            count=self._count(node), outputs=outputs,
            margin=self._margin(low, high, end) if splits else None, children=children,
            pruned_branches=pruned_branches, pruned_samples=pruned_samples)

    def _margin(self, low: int, high: int, at: int) -> float | None:
        """The mean margin at token ``at`` over the node's samples that have one there."""
        if self.margins is None:
            return None
        rows = self.order[self.group_first[low]: self.group_end[high]]
        reach = rows[self.rows.lengths[rows] > at]
        where = self.margins.starts[reach] + at
        samples = int(self.margins.samples[where].sum())
        if not samples:
            return None
        return int(self.margins.total[where].sum()) / MARGIN_SCALE / samples
