"""The divergence tree as a figure: stretches left to right along the output."""

from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING

from .._analysis.tree import DivergenceTree, TreeNode
from .figure import BLUE, GREY, INK, RED, axes_for, figure_of, finish, note, style, unit

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["plot_tree", "tree_height"]


def _snippet(text: str, room: int, *, tail: bool = False) -> str:
    flat = text.replace("\n", "⏎").replace("\t", " ")
    if len(flat) <= room:
        return flat
    return "…" + flat[-(room - 1):] if tail else flat[: room - 1] + "…"


def _layout(tree: DivergenceTree) -> tuple[dict[int, float], dict[int, float]]:
    """A row for every leaf and every group of pruned alternatives, in depth-first order
    (most samples first); an inner node shares its first alternative's row, so the most
    common continuation of each stretch reads as one straight line. Returns (node row,
    pruned row)."""
    rows: dict[int, float] = {}
    pruned: dict[int, float] = {}
    next_row = 0
    stack: list[tuple[TreeNode, bool]] = [(tree.nodes[0], False)]
    while stack:
        node, done = stack.pop()
        if not node.children:
            rows[node.id] = next_row
            if node.pruned_branches:
                next_row += 1
                pruned[node.id] = next_row
            next_row += 1
        elif done:
            if node.pruned_branches:
                pruned[node.id] = next_row
                next_row += 1
        else:
            stack.append((node, True))
            stack.extend((child, False) for child in reversed(tree.children(node)))
    for node in reversed(tree.nodes):  # children have larger ids than their parent
        if node.children:
            rows[node.id] = rows[node.children[0]]
    return rows, pruned


def tree_height(tree: DivergenceTree) -> float:
    """Inches: a fixed frame plus a row per leaf and per group of pruned alternatives."""
    if tree.root is None:
        return 2.4
    rows, pruned = _layout(tree)
    return max(2.4, 0.42 * (max([*rows.values(), *pruned.values()]) + 1) + 1.4)


def mode_path(tree: DivergenceTree) -> list[TreeNode]:
    """The stretches of the most common output, root first: the path to the leaf with the
    most samples (the first such in depth-first order). Following the heaviest branch
    instead can end at a small leaf while the mode lies elsewhere."""
    leaves = tree.leaves()
    if not leaves:
        return []
    best = max(leaves, key=lambda node: node.count)  # max keeps the first of equals
    return tree.path(best)


_CHAR_IN = 7.5 / 72 * 0.56
"""The width of an average character of the 7.5-point labels, inches."""


def plot_tree(tree: DivergenceTree, path: str | os.PathLike[str] | None = None, *,
              ax: Axes | None = None) -> Figure:
    """The divergence tree, left to right along the output: each stretch a line as thick
    as its share of the samples, labelled with its count and its text from where it
    leaves its siblings; the most common output's path in blue; each branch point a dot,
    with its top-1 minus top-2 logprob margin (Δ) when logprobs were returned."""
    from matplotlib.lines import Line2D

    root = tree.root
    ax = axes_for(ax, 10, tree_height(tree))
    style(ax, f"Divergence tree: {tree.n} samples, {tree.unique_count} distinct outputs")
    if root is None:
        note(ax, "no successful samples")
        return finish(figure_of(ax), path)
    ax.set_title(ax.get_title(loc="left"), loc="left", fontsize=11, color=INK, pad=30)
    shared = (f"every sample begins “{_snippet(root.text, 70, tail=True)}” "
              f"(tokens 0 to {root.end_token - 1})" if root.end_token else
              "the samples differ from the first token")
    ax.text(0, 1.01, shared, transform=ax.transAxes, fontsize=8, color=INK, va="bottom",
            parse_math=False)
    rows, pruned = _layout(tree)
    mode = mode_path(tree)
    on_mode = {node.id for node in mode}
    longest = max(node.end_token for node in tree.nodes)
    span = max(longest, 1)
    stub = span * 0.06
    x_min, x_max = -span * 0.01, span * 1.22
    figure = figure_of(ax)
    width_in = ax.get_position().width * figure.get_figwidth()
    chars_per_x = width_in / _CHAR_IN / (x_max - x_min)
    margins = any(node.margin is not None for node in tree.nodes)
    last_margin: dict[float, float] = {}
    for node in tree.nodes:
        y = rows[node.id]
        color = BLUE if node.id in on_mode else GREY
        thickness = 1.2 + 7 * math.sqrt(node.count / tree.n)
        if node.children or node.id in pruned:
            ys = [y, *(rows[c] for c in node.children)]
            if node.id in pruned:
                ys.append(pruned[node.id])
            ax.plot([node.end_token] * 2, [min(ys), max(ys)], color=GREY,
                    linewidth=0.8, zorder=1)
        if node.end_token > node.start_token:
            ax.plot([node.start_token, node.end_token], [y, y], color=color,
                    linewidth=thickness, solid_capstyle="butt", zorder=2)
        else:
            ax.plot([node.start_token], [y], marker="x", color=color, markersize=6, zorder=2)
        # the label runs from the stretch's start to where the next label on its row
        # begins (its first alternative's, at the branch point) or to the right edge
        until = node.end_token if node.children else x_max
        room = int((until - node.start_token) * chars_per_x) - len(str(node.count)) - 3
        if node.parent is None:
            text = ""  # said above the plot
        elif node.text:
            text = _snippet(node.text, room) if room >= 4 else ""
        else:
            text = "(ends here)" if room >= 11 else ""
        ax.annotate(f"{node.count}  {text}".rstrip(), (node.start_token, y), xytext=(3, 4),
                    textcoords="offset points", fontsize=7.5,
                    color=BLUE if node.id in on_mode else INK, va="bottom",
                    parse_math=False, annotation_clip=False)
        if node.is_branch_point:
            ax.plot([node.end_token], [y], marker="o", color=INK, markersize=4, zorder=3)
            if node.margin is not None:
                # a branch point just after another on its row: its Δ one line lower
                crowded = (node.end_token - last_margin.get(y, -math.inf)) * chars_per_x < 8
                last_margin[y] = node.end_token
                ax.annotate(f"Δ{node.margin:.2g}", (node.end_token, y),
                            xytext=(-3, -19 if crowded else -10), textcoords="offset points",
                            fontsize=6.5, color=RED, ha="right")
        if node.id in pruned:
            y_pruned = pruned[node.id]
            ax.plot([node.end_token, node.end_token + stub], [y_pruned, y_pruned],
                    color=GREY, linestyle=(0, (2, 2)), linewidth=1.2)
            ax.annotate(f"{node.pruned_samples} in {node.pruned_branches} rarer "
                        f"(<{tree.min_count} each)", (node.end_token, y_pruned),
                        xytext=(3, 4), textcoords="offset points", fontsize=7, color=GREY,
                        va="bottom", parse_math=False)
    ax.set_xlim(x_min, x_max)
    total_rows = max([*rows.values(), *pruned.values()]) + 1
    ax.set_ylim(total_rows - 0.4, -0.8)
    ax.set_yticks([])
    ax.spines["left"].set_visible(False)
    handles = [Line2D([], [], color=BLUE, linewidth=3,
                      label=f"the most common output ({mode[-1].count} of {tree.n})"),
               Line2D([], [], color=GREY, linewidth=3, label="other outputs"),
               Line2D([], [], color=INK, marker="o", markersize=4, linestyle="",
                      label="branch point")]
    if margins:
        handles.append(Line2D([], [], color=RED, marker="$Δ$", markersize=7, linestyle="",
                              label="top-1 minus top-2 logprob there"))
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.6 / ax.bbox.height
                                                                   * 72 - 0.02),
              ncol=len(handles), fontsize=7.5, frameon=False, handlelength=1.8,
              borderaxespad=0)
    ax.set_xlabel(f"position (0-based {unit(tree)}); line width ∝ √samples; each label: "
                  "samples, then the text from where they leave the others", fontsize=9)
    return finish(figure, path)
