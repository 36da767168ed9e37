"""HTML pages beside the report: two runs compared, runs over time, a suite's accuracy.

Each is one self-contained page built like the report's (``html``): inline CSS, no
script, nothing fetched; every string from a server or a file escaped and isolated
(``_s``), so an output cannot reverse the page's words or hide a character.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .._analysis.accuracy import AccuracyComparison, RerunAccuracy
from .._analysis.compare import p_text
from .._analysis.runcompare import RunComparison, RunSide, SuiteRunComparison
from .._analysis.stats import HypothesisTestResult
from .._version import __version__
from .html import _e, _page, _s, _section, _write, safe_url

if TYPE_CHECKING:
    from .._analysis.history import RunHistory

__all__ = ["accuracy_section", "comparison_page", "history_page"]

_FOOTER = (f"<footer>Written by llmvariance {_e(__version__)}. This file loads nothing from "
           "the network.</footer>")
_ROWS = 50


def _sides(a: RunSide, b: RunSide, extra: Sequence[tuple[str, str, str]] = ()) -> str:
    def counts(found: Mapping[str, int]) -> str:
        return ", ".join(f"{_s(k)} <b>{v}</b>" for k, v in sorted(
            found.items(), key=lambda kv: (-kv[1], kv[0]))[:5]) or "-"

    def server(found: Mapping[str, Any] | None) -> str:
        if not found:
            return "<span class=\"note\">not recorded</span>"
        keys = ("engine", "build", "total_slots")
        shown = ", ".join(f"{_e(k)} {_s(found[k])}" for k in keys if found.get(k) is not None)
        command = found.get("command")
        if isinstance(command, list):
            shown += f"<br><code>{_s(' '.join(map(str, command)))}</code>"
        return shown or "recorded"

    rows: list[tuple[str, str, str]] = [
        ("file", _s(a.path or "-"), _s(b.path or "-")),
        ("started", _s(a.started_at or "-"), _s(b.started_at or "-")),
        ("llmvariance", _s(a.library_version or "-"), _s(b.library_version or "-")),
        ("endpoint", _s(safe_url(a.endpoint) if a.endpoint else "-"),
         _s(safe_url(b.endpoint) if b.endpoint else "-")),
        ("samples", f"{a.n_samples} ({a.n_ok} ok, {a.n_failed} failed)",
         f"{b.n_samples} ({b.n_ok} ok, {b.n_failed} failed)"),
        *extra,
        ("models", counts(a.models), counts(b.models)),
        ("fingerprints", counts(a.fingerprints), counts(b.fingerprints)),
        ("server", server(a.server), server(b.server)),
    ]
    body = "".join(f"<tr><th>{_e(label)}</th><td>{left}</td><td>{right}</td></tr>"
                   for label, left, right in rows)
    return ("<table class=\"kv\"><thead><tr><th></th><th>a</th><th>b</th></tr></thead>"
            f"<tbody>{body}</tbody></table>")


def _differences(title: str, items: Sequence[str]) -> str:
    if not items:
        return ""
    return (f"<p class=\"note\">{_e(title)}:</p><ul>"
            + "".join(f"<li>{_s(item)}</li>" for item in items[:20]) + "</ul>")


def _p(p: float | HypothesisTestResult) -> str:
    """A p-value for a table's p column: ``< 0.001`` or ``0.0354``."""
    return p_text(p).removeprefix("p = ").removeprefix("p ")


def _ids(title: str, ids: Sequence[str]) -> str:
    if not ids:
        return ""
    shown = ", ".join(_s(i) for i in ids[:_ROWS]) + (
        f" and {len(ids) - _ROWS} more" if len(ids) > _ROWS else "")
    return f"<p>{_e(title)} ({len(ids)}): {shown}</p>"


def _tests(rows: Sequence[tuple[str, str, str]]) -> str:
    body = "".join(f"<tr><td>{_e(name)}</td><td class=\"num\">{_e(p)}</td>"
                   f"<td>{_e(method)}</td></tr>" for name, p, method in rows)
    return ("<table><thead><tr><th>test</th><th>p</th><th>how</th></tr></thead>"
            f"<tbody>{body}</tbody></table>")


def _modes(c: RunComparison) -> str:
    m = c.mode
    if not m.changed:
        return (f"<p>The most common output is the same ({m.count_a} of {c.a.n_ok} in a, "
                f"{m.count_b} of {c.b.n_ok} in b):</p><p class=\"output\">{_s(m.mode_a)}</p>")
    at = m.first_char or 0
    unit = "token" if m.tokenization == "provider" else "word"
    return (f"<p>The most common output changed at {unit} {m.first_token} (char {at}); b "
            f"gave a's {m.a_in_b} times. <span class=\"same\">Grey</span>: what both share; "
            "<mark>highlighted</mark>: where each goes its own way.</p>"
            f"<div class=\"output-head\"><b>a</b> <span class=\"count\">{m.count_a}</span> "
            f"of {c.a.n_ok}</div><p class=\"output\"><span class=\"same\">"
            f"{_s(m.mode_a[:at])}</span><mark>{_s(m.mode_a[at:])}</mark></p>"
            f"<div class=\"output-head\"><b>b</b> <span class=\"count\">{m.count_b}</span> "
            f"of {c.b.n_ok}</div><p class=\"output\"><span class=\"same\">"
            f"{_s(m.mode_b[:at])}</span><mark>{_s(m.mode_b[at:])}</mark></p>")


def _run_page(c: RunComparison) -> list[str]:
    arms = c.comparison

    def d(arm: Any) -> str:
        ci = arm.disagreement_rate_ci
        return ("n/a" if arm.disagreement_rate is None else
                f"{arm.disagreement_rate:.3f}" + ("" if ci is None else f" {ci}"))

    extra = [("distinct outputs", str(arms.a.distinct), str(arms.b.distinct)),
             ("D [95% CI]", _e(d(arms.a)), _e(d(arms.b))),
             ("coverage", f"{arms.a.coverage or 0:.3f}", f"{arms.b.coverage or 0:.3f}")]
    tests = _tests([
        ("b more variable (ΔD > 0)", _p(c.more_variable),
         f"{c.more_variable.method}, {c.more_variable.resamples} resamples; ΔD = "
         f"{c.more_variable.statistic:+.3f} {arms.delta_d_ci}"),
        ("b less variable (ΔD < 0)", _p(c.less_variable), c.less_variable.method),
        ("the distributions differ", _p(c.distributions_differ),
         "permutation test of homogeneity"),
        ("b deviates from a's most common output more often", _p(arms.exact),
         f"{arms.exact.method}, one-sided"),
    ])
    logprobs = "" if c.logprobs is None else (
        f"<p>Logprobs where texts agree: {_e(c.logprobs.describe())}</p>")
    return [
        _section("sides", "The two runs", _sides(c.a, c.b, extra)
                 + _differences("request fields that differ (allowed)", c.request_differences)
                 + _differences("server configuration that differs", c.server_differences)),
        _section("mode", "The most common output", _modes(c)),
        _section("tests", "The tests", tests + logprobs
                 + f"<details><summary>compare(a, b)</summary><pre>{_s(arms.to_text())}"
                   "</pre></details>"),
    ]


def _suite_page(c: SuiteRunComparison) -> list[str]:
    rows = []
    changed = set(c.modes_changed)
    for p in c.suite.prompts[:_ROWS]:
        rows.append(f"<tr><td>{_s(p.id)}</td><td class=\"num\">{_f(p.d_a)}</td>"
                    f"<td class=\"num\">{_f(p.d_b)}</td>"
                    f"<td class=\"num\">{p.deviating_a}/{p.n_a}</td>"
                    f"<td class=\"num\">{p.deviating_b}/{p.n_b}</td>"
                    f"<td class=\"num\">{_e(_p(p.adjusted_pvalue))}</td>"
                    f"<td>{'yes' if p.id in changed else ''}</td></tr>")
    more = (f"<p class=\"note\">{len(c.suite.prompts) - _ROWS} more prompts in the JSON "
            "(<code>llmvariance compare --json</code>).</p>"
            if len(c.suite.prompts) > _ROWS else "")
    table = ("<table><thead><tr><th>prompt</th><th>D a</th><th>D b</th><th>differ a</th>"
             "<th>differ b</th><th>p (BH)</th><th>mode changed</th></tr></thead>"
             f"<tbody>{''.join(rows)}</tbody></table>{more}")
    summary = (f"<p>Cochran-Mantel-Haenszel (stratified by prompt): {_e(p_text(c.suite.cmh))}; "
               f"sign test on ΔD: {_e(p_text(c.suite.sign_test))}. TARr@N: a "
               f"{_f(c.suite.tar_raw_a)}, b {_f(c.suite.tar_raw_b)}.</p>"
               + _ids("Vary in b only", c.varies_only_in_b)
               + _ids("Vary in a only", c.varies_only_in_a)
               + _ids("Most common output changed", c.modes_changed))
    sections = [
        _section("sides", "The two runs",
                 _sides(c.a, c.b, [("prompts", str(c.a.prompts), str(c.b.prompts))])
                 + _differences("requests that differ (allowed)", c.request_differences)
                 + _differences("server configuration that differs", c.server_differences)),
        _section("prompts", "Prompt by prompt", summary + table),
    ]
    if c.accuracy is not None:
        sections.append(_section("accuracy", "Accuracy, paired by prompt",
                                 _accuracy_comparison(c.accuracy)))
    return sections


def _f(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _accuracy_comparison(a: AccuracyComparison) -> str:
    rows = "".join(
        f"<tr><td class=\"num\">{r.rerun}</td><td class=\"num\">{r.accuracy_a:.3f}</td>"
        f"<td class=\"num\">{r.accuracy_b:.3f}</td><td class=\"num\">{r.only_a}</td>"
        f"<td class=\"num\">{r.only_b}</td><td class=\"num\">{_e(_p(r.adjusted_pvalue))}"
        "</td></tr>" for r in a.mcnemar[:_ROWS])
    return (f"<p>{_e(a.verdict)}</p><table><thead><tr><th>rerun</th><th>accuracy a</th>"
            "<th>accuracy b</th><th>right in a only</th><th>right in b only</th>"
            f"<th>McNemar p (Holm)</th></tr></thead><tbody>{rows}</tbody></table>"
            "<p class=\"note\">Each row compares one rerun of a with the same rerun of b, as "
            "an eval run once per side would: when only some rows are significant, which "
            "run one happened to make decided the conclusion.</p>")


def comparison_page(c: RunComparison | SuiteRunComparison,
                    path: str | os.PathLike[str] | None = None) -> str:
    """``compare_runs``'s result as one self-contained HTML page (returned, and written to
    ``path``)."""
    sections = _run_page(c) if isinstance(c, RunComparison) else _suite_page(c)
    alert = " alert" if c.changed else ""
    heading = "llmvariance compare"
    body = "".join([
        f"<header><h1>{_e(heading)}</h1><p class=\"sub\">a: {_s(c.a.path or 'a')} · b: "
        f"{_s(c.b.path or 'b')}</p></header>",
        _section("verdict", "Verdict", f"<p class=\"headline{alert}\">{_s(c.verdict)}</p>"),
        *sections, _FOOTER])
    return _write(_page(heading, body), path)


# -- a suite's accuracy under reruns --------------------------------------------------------

def _bars(values: Sequence[float]) -> str:
    """The per-rerun accuracies as an inline SVG bar chart (no matplotlib needed)."""
    width, height, gap = 640, 120, 2
    n = max(1, len(values))
    bar = max(1.0, (width - gap * n) / n)
    low = min(values, default=0.0)
    rects = []
    for k, value in enumerate(values):
        h = max(1.0, value * (height - 14))
        x = k * (bar + gap)
        fill = "#c8553d" if value == low and len(set(values)) > 1 else "#2a6f97"
        rects.append(f'<rect x="{x:.1f}" y="{height - h:.1f}" width="{bar:.1f}" '
                     f'height="{h:.1f}" fill="{fill}"><title>rerun {k}: {value:.3f}</title>'
                     "</rect>")
        if n <= 20:  # room for the value inside the bar
            rects.append(f'<text x="{x + bar / 2:.1f}" y="{height - h + 12:.1f}" '
                         'text-anchor="middle" font-size="11" fill="#fff">'
                         f"{value:.3f}</text>")
    return (f'<figure class="plot"><svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 '
            f'{width} {height}" role="img" aria-label="accuracy of each rerun">'
            f'{"".join(rects)}</svg></figure>')


def accuracy_section(acc: RerunAccuracy) -> str:
    """The suite report's accuracy under reruns, as a section of the HTML report."""
    share = len(acc.flipping) / acc.prompts
    flips = ", ".join(_s(i) for i in acc.flipping[:_ROWS]) or "none"
    if len(acc.flipping) > _ROWS:
        flips += f" and {len(acc.flipping) - _ROWS} more"
    rows = [("mean accuracy", f"{acc.mean:.3f} {acc.mean_ci}"),
            ("per rerun", f"min {acc.min:.3f}, max {acc.max:.3f}, spread {acc.spread:.3f} "
                          f"{acc.spread_ci}"),
            ("best possible", f"{acc.best_possible:.3f} {acc.best_possible_ci} (right in any "
                              f"of the {acc.reruns} reruns)"),
            ("worst possible", f"{acc.worst_possible:.3f} {acc.worst_possible_ci} (right in "
                               f"all {acc.reruns})"),
            ("flipping prompts", f"{len(acc.flipping)} of {acc.prompts} ({share:.1%}, "
                                 f"[{acc.flipping_ci.low:.1%}, {acc.flipping_ci.high:.1%}])")]
    table = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows)
    left = (f"<p class=\"note\">Left out: {acc.ungraded} prompts without an expected answer, "
            f"{acc.incomplete} with failed samples.</p>"
            if acc.ungraded or acc.incomplete else "")
    return _section("accuracy", "Accuracy under reruns", (
        f"<p>Each bar is the score of one rerun (the k-th sample of every prompt) over "
        f"{acc.prompts} graded prompts: had the eval been run once, it would have reported "
        f"one of these.</p>{_bars(acc.per_rerun)}<table class=\"kv\">{table}</table>"
        f"<p>Flipping (right in some reruns, wrong in others): {flips}</p>{left}"
        "<p class=\"note\">Intervals: percentile bootstrap over prompts (the flip share's: "
        "Wilson, exact at 0).</p>"))


# -- runs over time ------------------------------------------------------------------------

def history_page(history: RunHistory, path: str | os.PathLike[str] | None = None) -> str:
    """``run_history``'s rows as one self-contained HTML page."""
    rows = []
    for row in history.rows:
        step = " class=\"step\"" if row.mode_changed or row.fingerprint_changed else ""
        marks = []
        if row.mode_changed:
            marks.append("new most common output")
        if row.fingerprint_changed:
            marks.append("new fingerprint")
        rows.append(
            f"<tr{step}><td>{_s(row.started_at or '-')}</td><td>{_s(row.path)}</td>"
            f"<td class=\"num\">{row.distinct}/{row.n_ok}</td>"
            f"<td class=\"num\">{_e(row.d_text())}</td><td><code>{_s(row.mode_start)}</code>"
            f"</td><td>{_s(row.fingerprint or '-')}</td><td>{_s(row.model or '-')}</td>"
            f"<td>{_e(', '.join(marks))}</td></tr>")
    table = ("<table><thead><tr><th>started</th><th>file</th><th>distinct</th><th>D [95% CI]"
             "</th><th>most common output begins</th><th>fingerprint</th><th>model</th>"
             f"<th>change</th></tr></thead><tbody>{''.join(rows)}</tbody></table>")
    heading = "llmvariance: runs over time"
    body = "".join([
        f"<header><h1>{_e(heading)}</h1><p class=\"sub\">{len(history.rows)} runs in the "
        "order they were started.</p></header>",
        _section("history", "History", f"<p>{_s(history.summary)}</p>{table}"), _FOOTER])
    return _write(_page(heading, body), path)
