"""Figures of a report and of an experiment's conditions (matplotlib, the ``plot`` extra).

Every ``plot_*`` returns a ``matplotlib.figure.Figure`` and, given ``path``, saves it as
PNG or SVG (by the suffix); ``plot_tree`` lives in ``tree_plot``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .._analysis.report import VarianceReport
from .._analysis.tree import DivergenceTree
from .._errors import ConfigError
from .figure import (
    BLUE,
    GREEN,
    GREY,
    INK,
    RED,
    axes_for,
    figure_of,
    finish,
    new_figure,
    note,
    style,
    unit,
)
from .tree_plot import plot_tree, tree_height

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from .._experiment import BatchEffectResult
    from .._matrix import MatrixResult

__all__ = ["plot_conditions", "plot_divergence", "plot_entropy", "plot_price", "plot_report",
           "plot_tree"]


# -- per-position entropy ----------------------------------------------------------------

def plot_entropy(report: VarianceReport, path: str | os.PathLike[str] | None = None, *,
                 ax: Axes | None = None) -> Figure:
    """Entropy of the token at each position (bits), with the first divergence marked."""
    ax = axes_for(ax, 8, 2.8)
    style(ax, "Entropy of the token at each position")
    values = report.per_position_entropy
    if not values:
        note(ax, "no successful samples")
        return finish(figure_of(ax), path)
    ax.bar(range(len(values)), values, width=1.0, color=BLUE, linewidth=0)
    first = report.common_prefix_tokens
    if first is not None:
        ax.axvline(first - 0.5, color=RED, linestyle="--", linewidth=1)
        ax.annotate(f"first divergence: token {first}", (first - 0.5, 1), xytext=(4, -4),
                    xycoords=("data", "axes fraction"), textcoords="offset points",
                    va="top", fontsize=8, color=RED)
    ax.set_xlim(-0.5, len(values) - 0.5)
    ax.set_ylim(0, max(1.0, max(values) * 1.15))
    ax.set_xlabel(f"position (0-based {unit(report)})", fontsize=9)
    ax.set_ylabel("bits", fontsize=9)
    return finish(figure_of(ax), path)


# -- divergence from the mode ------------------------------------------------------------

def plot_divergence(report: VarianceReport, path: str | os.PathLike[str] | None = None, *,
                    ax: Axes | None = None) -> Figure:
    """Histogram: for each sample that differs from the most common output, how many
    tokens it shares with it before leaving it."""
    ax = axes_for(ax, 8, 2.8)
    style(ax, "Where differing samples leave the most common output")
    stats = report.divergence_from_mode_tokens
    if stats is None:
        note(ax, "every sample agrees" if report.n_ok else "no successful samples")
        return finish(figure_of(ax), path)
    for b in stats.histogram:
        ax.bar((b.lo + b.hi) / 2, b.count, width=(b.hi - b.lo + 1) * 0.9, color=GREEN,
               linewidth=0)
    ax.set_xlabel(f"{unit(report)} shared with the most common output", fontsize=9)
    ax.set_ylabel("samples", fontsize=9)
    ax.yaxis.get_major_locator().set_params(integer=True)  # type: ignore[call-arg]
    ax.xaxis.get_major_locator().set_params(integer=True)  # type: ignore[call-arg]
    ax.text(1, 1, f"{stats.samples} differing samples, median {stats.median:g}",
            transform=ax.transAxes, ha="right", va="top", fontsize=8, color=INK)
    return finish(figure_of(ax), path)


# -- D by condition, with its interval -----------------------------------------------------

Bar = tuple[int, int, float | None, float | None, float | None]
"""(distinct, n, D, D's interval low, high) of one condition."""


def _condition_series(source: Any) -> tuple[list[str], dict[str, list[Bar]],
                                            dict[str, dict[str, float]]]:
    """Condition names; per series (a configuration, or one unnamed) a bar per condition;
    and per series the Holm-adjusted p-values by condition (when there are tests)."""
    from .._experiment import BatchEffectResult
    from .._matrix import MatrixResult

    if isinstance(source, MatrixResult):
        names = list(source.conditions)
        return (names, {row.config: [_bar(row.conditions.get(c)) for c in names]
                        for row in source.rows},
                {row.config: row.adjusted_pvalues for row in source.rows})
    pvalues: dict[str, float] = {}
    if isinstance(source, BatchEffectResult):
        reports: Mapping[str, VarianceReport] = source.conditions
        pvalues = source.adjusted_pvalues
    elif isinstance(source, VarianceReport):
        reports = source.by_condition
    elif isinstance(source, Mapping):
        reports = source
    else:
        raise ConfigError("source", "must be a BatchEffectResult, MatrixResult, a mapping of "
                          f"condition to VarianceReport, or a VarianceReport; got "
                          f"{type(source).__name__}")
    names = list(reports)
    return names, {"": [_bar(reports[c]) for c in names]}, {"": pvalues}


def _bar(report: VarianceReport | None) -> Bar:
    if report is None:
        return 0, 0, None, None, None
    ci = report.disagreement_rate_ci
    return (report.unique_count, report.n_ok, report.disagreement_rate,
            None if ci is None else ci.low, None if ci is None else ci.high)


def _p_label(p: float | None) -> str:
    return "" if p is None else "\np<0.001" if p < 0.001 else f"\np={p:.2g}"


def plot_conditions(source: BatchEffectResult | MatrixResult | Mapping[str, VarianceReport]
                    | VarianceReport, path: str | os.PathLike[str] | None = None, *,
                    ax: Axes | None = None) -> Figure:
    """The disagreement rate D (the probability that two requests disagree) under each
    condition, with its 95 % interval as an error bar; one bar per condition, or per
    configuration and condition for a server matrix. Each bar is labelled with its
    distinct outputs of n and, for an experiment's result, the Holm-adjusted p-value of
    that condition against the control."""
    names, series, pvalues = _condition_series(source)
    ax = axes_for(ax, 8, 3.2)
    style(ax, "Disagreement rate D by condition (95 % interval)")
    if not names:
        note(ax, "no conditions")
        return finish(figure_of(ax), path)
    width = 0.8 / len(series)
    palette = [BLUE, RED, GREEN, "#e9c46a", "#7b2cbf", GREY]
    for k, (label, bars) in enumerate(series.items()):
        xs = [i - 0.4 + width * (k + 0.5) for i in range(len(names))]
        heights = [0.0 if d is None else d for _, _, d, _, _ in bars]
        drawn = ax.bar(xs, heights, width=width * 0.92, color=palette[k % len(palette)],
                       label=label or None)
        for x, (_, _, d, low, high) in zip(xs, bars, strict=True):
            if d is not None and low is not None and high is not None:
                ax.errorbar([x], [d], yerr=[[d - low], [high - d]], color=INK, capsize=3,
                            linewidth=1)
        for bar, name, (distinct, n, _, _, high) in zip(drawn, names, bars, strict=True):
            top = max(bar.get_height(), high or 0.0)
            ax.annotate(f"{distinct}/{n}{_p_label(pvalues[label].get(name))}",
                        (bar.get_x() + bar.get_width() / 2, top), xytext=(0, 2),
                        textcoords="offset points", ha="center", va="bottom", fontsize=7,
                        color=INK, parse_math=False)
    ax.set_xticks(range(len(names)), names, fontsize=8, parse_math=False)
    ax.set_ylabel("D = P(two requests differ)", fontsize=9)
    ax.set_ylim(0, 1.25)
    ax.set_yticks([0, 0.25, 0.5, 0.75, 1.0])
    if len(series) > 1:
        ax.legend(fontsize=8, frameon=False, loc="upper left")
    return finish(figure_of(ax), path)


# -- the price of determinism ------------------------------------------------------------

def plot_price(matrix: MatrixResult, path: str | os.PathLike[str] | None = None, *,
               concurrency: int | None = None, ax: Axes | None = None) -> Figure:
    """Variance against throughput, one point per server configuration: the largest D of
    its conditions (with that condition's 95 % interval) over its completion tokens per
    second at ``concurrency`` (default: the highest measured). Red: some condition
    varied; blue: no variation observed; grey: inconclusive. The configurations that never
    vary, and what they cost against the fastest, read off the left of the figure."""
    from .._matrix import MatrixResult

    if not isinstance(matrix, MatrixResult):
        raise ConfigError("matrix", f"must be a MatrixResult, got {type(matrix).__name__}")
    levels = sorted({s.concurrency for row in matrix.rows for s in row.speed})
    level = concurrency if concurrency is not None else (levels[-1] if levels else None)
    ax = axes_for(ax, 8, 4.0)
    style(ax, f"Variance against throughput (concurrency {level})" if level else
          "Variance against throughput")
    points = []
    for row in matrix.rows:
        speed = row.speed_at(level) if level is not None else None
        d = row.max_disagreement
        if speed is None or d is None:
            continue
        worst = max((r for r in row.conditions.values() if r.disagreement_rate is not None),
                    key=lambda r: r.disagreement_rate or 0.0)
        ci = worst.disagreement_rate_ci
        points.append((row, speed.tokens_per_s, d, ci))
    if not points:
        note(ax, "no configuration has both a D and a throughput at this concurrency")
        return finish(figure_of(ax), path)
    colours = {"batch_dependent": RED, "varies_alone": RED, "no_variation_observed": BLUE}
    for row, x, d, ci in points:
        colour = colours.get(row.verdict_kind, GREY)
        if ci is not None:
            ax.errorbar([x], [d], yerr=[[d - ci.low], [ci.high - d]], color=colour,
                        capsize=3, linewidth=1)
        ax.scatter([x], [d], color=colour, zorder=3, s=28)
        ax.annotate(row.config, (x, d), xytext=(4, 4), textcoords="offset points",
                    fontsize=7, color=INK, parse_math=False)
    ax.set_xlabel("completion tokens per second (this run)", fontsize=9)
    ax.set_ylabel("largest D over the conditions", fontsize=9)
    ax.set_ylim(-0.05, 1.1)
    ax.set_xlim(0, max(x for _, x, _, _ in points) * 1.25)
    return finish(figure_of(ax), path)


# -- everything at once ------------------------------------------------------------------

def plot_report(report: VarianceReport, path: str | os.PathLike[str] | None = None, *,
                tree: DivergenceTree | None = None) -> Figure:
    """One figure with every panel that has something to show: the tree (when given),
    per-position entropy, divergence from the mode, and distinct outputs by condition."""
    panels: list[tuple[float, Any]] = []
    if tree is not None and tree.root is not None:
        panels.append((tree_height(tree), lambda ax: plot_tree(tree, ax=ax)))
    panels.append((2.8, lambda ax: plot_entropy(report, ax=ax)))
    panels.append((2.8, lambda ax: plot_divergence(report, ax=ax)))
    if len(report.by_condition) > 1:
        panels.append((3.0, lambda ax: plot_conditions(report, ax=ax)))
    figure = new_figure(10, sum(height for height, _ in panels))
    grid = figure.subplots(len(panels), 1, squeeze=False,
                           gridspec_kw={"height_ratios": [h for h, _ in panels]})
    axes: list[Axes] = list(grid[:, 0])
    for ax, (_, draw) in zip(axes, panels, strict=True):
        draw(ax)
    return finish(figure, path)
