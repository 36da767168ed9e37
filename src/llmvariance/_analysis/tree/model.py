"""The divergence tree's data: ``TreeNode`` and ``DivergenceTree``, plain and frozen.

Nodes are a flat list linked by ids, not nested models: a chain of thousands of branch
points must survive JSON and validation, which nest only so deep.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict

from ..display import Displayed

if TYPE_CHECKING:
    import os

__all__ = ["DivergenceTree", "TreeNode"]

_FROZEN = ConfigDict(frozen=True, extra="forbid")


class TreeNode(BaseModel):
    """A stretch of text that ``count`` samples share, from where they left their parent's
    stretch to where they split again (a branch point) or end (a leaf).

    Positions are 0-based, in tokens (provider tokens, or words; see the tree's
    ``tokenization``) and in characters of the concatenated tokens. An empty ``text`` is
    the alternative "the output ends here". At a branch point the alternatives are
    ``children`` (most samples first) plus ``pruned_branches`` rarer ones left out, and
    their counts add up: ``sum(child.count) + pruned_samples == count``.
    """

    model_config = _FROZEN

    id: int
    """Its index in ``DivergenceTree.nodes``."""
    parent: int | None
    depth: int
    """Branch points above it: 0 for the root."""
    text: str
    """The stretch its samples share, from ``start_token`` to ``end_token``."""
    start_token: int
    start_char: int
    end_token: int
    """Where its samples split (a branch point), or where its output ends (a leaf)."""
    end_char: int
    count: int
    """Samples that follow this stretch."""
    outputs: int
    """Distinct outputs among them."""
    margin: float | None
    """At the branch point: the mean over its samples of the top-1 minus top-2 logprob at
    token ``end_token`` (nats). Small: a near-tie that noise could flip. None without
    top logprobs, or at a leaf."""
    children: list[int]
    """The alternatives at ``end_token`` (node ids), most samples first."""
    pruned_branches: int = 0
    """Alternatives at ``end_token`` left out because each had fewer than ``min_count``."""
    pruned_samples: int = 0
    """The samples in those alternatives."""

    @property
    def is_branch_point(self) -> bool:
        """True when its samples split at ``end_token`` (shown or pruned)."""
        return bool(self.children) or self.pruned_branches > 0


class DivergenceTree(Displayed, BaseModel):
    """The distinct outputs of a run as a tree of branch points; see ``TreeNode``.

    ``nodes`` is in depth-first order (the most common alternative first), ``nodes[0]``
    the root: the text every sample shares; empty when there were no ok samples.
    Alternatives with fewer than ``min_count`` samples are pruned, and each branch point
    says how many samples it left out, so counts still add up to ``n`` at every level.
    """

    model_config = _FROZEN

    n: int
    """Ok samples in the tree."""
    unique_count: int
    tokenization: Literal["provider", "words"]
    min_count: int
    """Alternatives with fewer samples than this were pruned."""
    pruned_branches: int
    pruned_samples: int
    """Samples in pruned alternatives, each counted once, at the branch point it left."""
    nodes: list[TreeNode]

    @property
    def root(self) -> TreeNode | None:
        return self.nodes[0] if self.nodes else None

    def children(self, node: TreeNode) -> list[TreeNode]:
        return [self.nodes[i] for i in node.children]

    def branch_points(self) -> list[TreeNode]:
        """The nodes whose samples split, in depth-first order."""
        return [node for node in self.nodes if node.is_branch_point]

    def leaves(self) -> list[TreeNode]:
        return [node for node in self.nodes if not node.children]

    def path(self, node: TreeNode) -> list[TreeNode]:
        """The nodes from the root down to ``node``."""
        chain = [node]
        while chain[-1].parent is not None:
            chain.append(self.nodes[chain[-1].parent])
        return chain[::-1]

    def split_char(self, node: TreeNode) -> int:
        """The 0-based character at which ``node``'s alternatives first differ: its
        ``end_char``, plus the characters its drawn alternatives still share at the start
        of the token where they split (``' curious'`` and ``' restless'`` share the
        space). The report's "leaves the most common output at char N" counts the same
        way, so both name one position."""
        texts = [child.text for child in self.children(node)]
        if len(texts) < 2:
            return node.end_char
        shared = 0
        for chars in zip(*texts, strict=False):
            if any(c != chars[0] for c in chars):
                break
            shared += 1
        return node.end_char + shared

    def prefix(self, node: TreeNode) -> str:
        """The whole text from the start of the output up to ``node.end_char``."""
        return "".join(n.text for n in self.path(node))

    def to_text(self, width: int = 100) -> str:
        """The tree as indented text with counts, for a terminal."""
        from .text import render

        return render(self, width)

    def __str__(self) -> str:
        return self.to_text()

    def _summary(self) -> str:
        root = self.root
        where = ("" if root is None else f" root ends at token {root.end_token}"
                 + (" (a branch point)" if root.is_branch_point else ""))
        return (f"n={self.n} distinct={self.unique_count} nodes={len(self.nodes)} "
                f"leaves={len(self.leaves())}{where}")

    def plot(self, path: str | os.PathLike[str] | None = None, **kwargs: Any) -> Any:
        """``lv.plot_tree(self, path, ...)``: the tree as a matplotlib figure.

        Imported only when called (as ``df.plot`` is in pandas): the figures import the
        models, and this is, with ``VarianceReport.plot``, the only way back."""
        from ..._render.plot import plot_tree

        return plot_tree(self, path, **kwargs)
