"""Figures: what each plot draws, files it writes, and the missing-extra message."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import llmvariance as lv

pytest.importorskip("matplotlib", reason="the plot extra (matplotlib) is not installed")

S = lv.Sample
FIVE_THREE_TWO = ["The cat sat on the mat"] * 5 + ["The cat sat on a hat"] * 3 + ["The cat ran"] * 2


def heights(figure: object, index: int = 0) -> list[float]:
    ax = figure.axes[index]  # type: ignore[attr-defined]
    return [bar.get_height() for bar in ax.patches]


def test_entropy_bars_are_the_per_position_entropy_with_the_split_marked() -> None:
    report = lv.analyze(FIVE_THREE_TWO)
    figure = lv.plot_entropy(report)
    assert heights(figure) == pytest.approx(report.per_position_entropy)
    ax = figure.axes[0]
    marker = [line for line in ax.get_lines() if line.get_linestyle() == "--"]
    assert [line.get_xdata()[0] for line in marker] == [report.common_prefix_tokens - 0.5]
    assert any(t.get_text() == "first divergence: token 2" for t in ax.texts)
    assert ax.get_xlabel() == "position (0-based words)"


def test_divergence_histogram_counts_the_differing_samples() -> None:
    report = lv.analyze(FIVE_THREE_TWO)
    stats = report.divergence_from_mode_tokens
    assert stats is not None
    assert heights(lv.plot_divergence(report)) == [b.count for b in stats.histogram]
    agree = lv.plot_divergence(lv.analyze(["same"] * 3))
    assert [t.get_text() for t in agree.axes[0].texts] == ["every sample agrees"]


def test_conditions_show_d_with_interval_bars_for_a_result_and_a_matrix() -> None:
    reports = {"sequential": lv.analyze(["a"] * 4), "burst": lv.analyze(["a", "b", "c", "a"]),
               "loaded": lv.analyze(["a", "b", "c", "d"])}
    d = [r.disagreement_rate for r in reports.values()]
    assert d == pytest.approx([0.0, 5 / 6, 1.0])
    figure = lv.plot_conditions(reports)
    assert heights(figure) == pytest.approx(d)
    ax = figure.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["sequential", "burst", "loaded"]
    assert [t.get_text() for t in ax.texts] == ["1/4", "3/4", "4/4"]
    # each bar's error bar spans its report's interval
    caps = [line for line in ax.get_lines() if line.get_marker() == "_"]
    spans = sorted(round(float(line.get_ydata()[0]), 6) for line in caps)
    expected = sorted(round(v, 6) for r in reports.values() if r.disagreement_rate_ci
                      for v in (r.disagreement_rate_ci.low, r.disagreement_rate_ci.high))
    assert spans == expected
    req = lv.ChatRequest(model="m", messages=[{"role": "user", "content": "hi"}])
    result = lv.BatchEffectResult(request=req, endpoint="e", conditions=reports, samples={},
                                  verdict="v", verdict_kind="batch_dependent",
                                  adjusted_pvalues={"burst": 0.2, "loaded": 0.0004})
    labelled = lv.plot_conditions(result)
    assert heights(labelled) == pytest.approx(d)
    assert [t.get_text() for t in labelled.axes[0].texts] == ["1/4", "3/4\np=0.2",
                                                              "4/4\np<0.001"]
    rows = [lv.MatrixRow(config=name, settings={}, conditions=reports, verdict="v",
                         verdict_kind="batch_dependent") for name in ("parallel=1", "parallel=8")]
    matrix = lv.MatrixResult(request=req, n=4, conditions=list(reports), rows=rows)
    grouped = lv.plot_conditions(matrix)
    assert heights(grouped) == pytest.approx(d + d)  # one series per configuration
    legend = grouped.axes[0].get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["parallel=1", "parallel=8"]
    with pytest.raises(lv.ConfigError, match="source"):
        lv.plot_conditions([1, 2])  # type: ignore[arg-type]


def test_the_tree_figure_draws_every_stretch_with_its_count() -> None:
    tree = lv.divergence_tree(FIVE_THREE_TWO)
    figure = lv.plot_tree(tree)
    texts = [t.get_text() for t in figure.axes[0].texts]
    for node in tree.nodes[1:]:
        assert any(t.startswith(f"{node.count}  {node.text[:10]}") for t in texts), node
    assert "every sample begins “The cat” (tokens 0 to 1)" in texts
    # a line per stretch, a connector per branch point, a dot per branch point
    assert len(figure.axes[0].get_lines()) == len(tree.nodes) + 2 * len(tree.branch_points())


def test_pruned_branches_are_drawn_as_one_dashed_stub() -> None:
    tree = lv.divergence_tree(["a b"] * 6 + ["a c"] * 3 + ["a d", "a e"], min_count=3)
    texts = [t.get_text() for t in lv.plot_tree(tree).axes[0].texts]
    assert "2 in 2 rarer (<3 each)" in texts


def test_report_plot_writes_png_and_svg(tmp_path: Path) -> None:
    report = lv.analyze([S(index=i, text=t, condition="burst" if i % 2 else "sequential")
                         for i, t in enumerate(FIVE_THREE_TWO)])
    tree = lv.divergence_tree(FIVE_THREE_TWO)
    figure = report.plot(tmp_path / "r.png", tree=tree)
    assert len(figure.axes) == 4  # tree, entropy, divergence, conditions
    assert (tmp_path / "r.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    lv.plot_tree(tree, tmp_path / "t.svg")
    svg = (tmp_path / "t.svg").read_text()
    assert "<svg" in svg and "The cat" not in svg.split("<svg")[0]
    with pytest.raises(lv.ConfigError, match=r"path: r\.pdf: the suffix must be \.png or \.svg"):
        report.plot(tmp_path / "r.pdf")


def test_text_the_font_lacks_draws_without_warnings(tmp_path: Path) -> None:
    # pytest turns warnings into errors: a missing glyph must not warn
    tree = lv.divergence_tree(["故事 开始", "故事 结束", "$x^2$ <b>"])
    lv.plot_tree(tree, tmp_path / "t.png")
    assert (tmp_path / "t.png").stat().st_size > 1000


def test_plots_never_touch_pyplot_or_the_backend() -> None:
    # figures are drawn on their own Agg canvas: pyplot (and with it the session's backend
    # and global figure list) is never imported
    code = ("import io, sys, llmvariance as lv\n"
            "lv.plot_tree(lv.divergence_tree(['a b', 'a c'])).savefig(io.BytesIO())\n"
            "print('matplotlib.pyplot' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True)
    assert out.stdout.split() == ["False"]


def test_without_matplotlib_the_error_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(sys.modules):
        if name == "matplotlib" or name.startswith("matplotlib."):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match=r"plots need matplotlib: pip install matplotlib"):
        lv.plot_entropy(lv.analyze(["a", "b"]))
