"""The divergence tree as indented text with counts, for a terminal."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .model import DivergenceTree, TreeNode

__all__ = ["render"]

_UNIT = {"provider": "provider tokens", "words": "words (no provider tokens)"}


def _quoted(text: str, room: int, *, tail: bool = False) -> str:
    """``repr`` of ``text`` cut to about ``room`` characters, from its start (or its end)."""
    room = max(room, 12)
    if len(repr(text)) <= room:
        return repr(text)
    keep = room - 3
    while keep > 1:
        cut = text[-keep:] if tail else text[:keep]
        shown = "…" + repr(cut) if tail else repr(cut) + "…"
        if len(shown) <= room:
            return shown
        keep -= 1
    return "…"


def _where(tree: DivergenceTree, node: TreeNode) -> str:
    if node.is_branch_point:
        margin = "" if node.margin is None else f", margin {node.margin:.3g}"
        return f"splits at token {node.end_token} (char {tree.split_char(node)}){margin}"
    return f"ends at token {node.end_token}"


def _line(tree: DivergenceTree, node: TreeNode, indent: str, width: int,
          count_width: int) -> str:
    head = f"{indent}{node.count:>{count_width}}  "
    if not node.text and node.parent is not None:
        return head + "(the output ends here)"
    where = _where(tree, node)
    if not node.text:  # the root of outputs that differ from their first token
        return f"{head}(no text in common)  {where}"
    room = width - len(head) - len(where) - 2
    return f"{head}{_quoted(node.text, room, tail=node.parent is None)}  {where}"


def render(tree: DivergenceTree, width: int = 100) -> str:
    """One line per node: its count, its text (the root's end, the others' start), and
    where it splits or ends; each branch point's pruned alternatives on a line of their own.
    """
    root = tree.root
    if root is None:
        return "divergence tree: no successful samples"
    lines = [f"divergence tree: {tree.n} samples, {tree.unique_count} distinct outputs; "
             f"positions are 0-based {_UNIT[tree.tokenization]}"]
    count_width = len(str(tree.n))
    lines.append(_line(tree, root, "", width, count_width))
    lines.extend(_subtree(tree, root, "", width, count_width))
    if tree.pruned_branches:
        lines.append(f"pruned: {tree.pruned_branches} alternatives with fewer than "
                     f"{tree.min_count} samples each ({tree.pruned_samples} samples in all) "
                     "are counted at their branch point but not drawn; min_count=1 draws "
                     "every branch")
    return "\n".join(lines)


def _subtree(tree: DivergenceTree, node: TreeNode, indent: str, width: int,
             count_width: int) -> list[str]:
    """The lines below ``node`` (its own line is already out), depth first, iteratively."""
    lines: list[str] = []
    # each frame: the alternatives still to print under one node, and their indent
    frames: list[tuple[list[TreeNode | None], TreeNode, str]] = [
        (_alternatives(tree, node), node, indent)]
    while frames:
        rows, parent, prefix = frames[-1]
        if not rows:
            frames.pop()
            continue
        child = rows.pop(0)
        last = not rows
        branch, below = ("└─ ", "   ") if last else ("├─ ", "│  ")
        if child is None:
            plural = "s" if parent.pruned_branches > 1 else ""
            lines.append(f"{prefix}{branch}{parent.pruned_samples:>{count_width}}  "
                         f"({parent.pruned_branches} rarer alternative{plural}, each under "
                         f"{tree.min_count} samples, not shown)")
            continue
        lines.append(_line(tree, child, prefix + branch, width, count_width))
        frames.append((_alternatives(tree, child), child, prefix + below))
    return lines


def _alternatives(tree: DivergenceTree, node: TreeNode) -> list[TreeNode | None]:
    """``node``'s children, then None for its pruned alternatives when there are any."""
    rows: list[TreeNode | None] = list(tree.children(node))
    if node.pruned_branches:
        rows.append(None)
    return rows
