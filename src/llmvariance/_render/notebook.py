"""Notebook views: each result's ``_repr_html_``, made of the HTML report's parts.

Short and bounded (at most ``MAX_CHARS``): the summary cards, a table, the first outputs;
the whole story is ``lv.html_report``. Styles are the report's, scoped under one class,
so showing a result never restyles the rest of the notebook; nothing is scripted or
loaded.
"""

from __future__ import annotations

import functools
import re
from typing import Any

from . import html as h
from ._style import CSS

__all__ = ["MAX_CHARS", "html_view"]

MAX_CHARS = 60_000
"""The most a view may take; past it the view is cut and says so."""

_SCOPE = "lv-nb"
_ROWS = 12


@functools.cache
def scoped_css() -> str:
    """The report's stylesheet with every rule under ``.lv-nb`` (page-wide rules dropped)."""
    rules = []
    for selectors, body in re.findall(r"([^{}]+)\{([^{}]*)\}", CSS.split("@media")[0]):
        names = [s.strip() for s in selectors.split(",")]
        if names == [":root"]:
            rules.append(f".{_SCOPE} {{{body}}}")
            continue
        kept = [f".{_SCOPE} {n}" for n in names if n not in ("body", "main", "*", "nav")
                and not n.startswith(("nav ", "header", "footer"))]
        if kept:
            rules.append(f"{', '.join(kept)} {{{body}}}")
    return "\n".join(rules)


def _wrap(title: str, body: str) -> str:
    html = (f'<div class="{_SCOPE}"><style>{scoped_css()}</style>'
            f"<p><b>{h._e(title)}</b></p>{body}</div>")
    if len(html) > MAX_CHARS:
        cut = body[: MAX_CHARS - 2_000]
        cut = cut[: cut.rfind(">") + 1]  # never inside a tag
        html = (f'<div class="{_SCOPE}"><style>{scoped_css()}</style><p><b>{h._e(title)}'
                f"</b></p>{cut}<p class=\"note\">(cut short: lv.html_report(...) writes the "
                "whole page)</p></div>")
    return html


def _unsection(section: str) -> str:
    """A report section's content without its box, for a compact view."""
    return re.sub(r'^<section id="[^"]*">', "<div>", section).removesuffix("</section>") + (
        "</div>" if section.endswith("</section>") else "")


def html_view(result: Any) -> str:
    """The view of any ``Displayed`` result (by its class)."""
    from .._analysis.compare import Comparison
    from .._analysis.report import VarianceReport
    from .._analysis.suitecompare import SuiteComparison
    from .._analysis.suitereport import SuiteReport
    from .._analysis.tree.model import DivergenceTree
    from .._experiment import BatchEffectResult
    from .._matrix import MatrixResult
    from .._sampler import SampleSet
    from .._suite import SuiteResult

    title = repr(result).strip("<>")
    if isinstance(result, SampleSet):
        return _wrap(title, _report(result.report))
    if isinstance(result, VarianceReport):
        return _wrap(title, _report(result))
    if isinstance(result, DivergenceTree):
        return _wrap(title, _unsection(h._tree(result, "")))
    if isinstance(result, BatchEffectResult):
        return _wrap(title, "".join(h.experiment_facts(result)))
    if isinstance(result, MatrixResult):
        return _wrap(title, _matrix(result))
    if isinstance(result, SuiteResult | SuiteReport):
        return _wrap(title, _suite(result.report if isinstance(result, SuiteResult)
                                   else result))
    if isinstance(result, Comparison | SuiteComparison):
        return _wrap(title, f"<p class=\"headline\">{h._e(result.verdict)}</p>"
                            f"<pre>{h._s(result.to_text())}</pre>")
    return _wrap(title, f"<pre>{h._s(repr(result))}</pre>")


def _report(report: Any) -> str:
    parts = [_unsection(h._summary(report))]
    if report.n_ok:
        parts.append(_unsection(h._outputs(report)))
        tree = report.tree
        if tree is not None and tree.root is not None:
            parts.append(f"<details><summary>divergence tree ({tree.unique_count} distinct, "
                         f"{len(tree.leaves())} leaves)</summary>"
                         f"{_unsection(h._tree(tree, ''))}</details>")
    return "".join(parts)


def _matrix(result: Any) -> str:
    rows = []
    for row in result.rows:
        for name, r in row.conditions.items():
            p = ("control" if name not in row.adjusted_pvalues
                 else h._p(row.adjusted_pvalues[name]))
            rows.append(f"<tr><td>{h._s(row.config)}</td><td>{h._s(name)}</td>"
                        f"<td class=\"num\">{r.unique_count}/{r.n_ok}</td>"
                        f"<td class=\"num\">{h._d(r)}</td><td class=\"num\">{h._e(p)}</td>"
                        f"<td>{h._e(row.verdict_kind)}</td></tr>")
    return ("<table><thead><tr><th>configuration</th><th>condition</th><th>distinct</th>"
            "<th>D [95% CI]</th><th>p (Holm)</th><th>verdict</th></tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table>")


def _suite(report: Any) -> str:
    from . import suite_html as s

    shown = report.model_copy(update={"prompts": report.prompts[:_ROWS]})
    more = (f"<p class=\"note\">{len(report.prompts) - _ROWS} more prompts: "
            "lv.html_report(result.report, path, runs=[...]) lists them all.</p>"
            if len(report.prompts) > _ROWS else "")
    return (_unsection(s._cards(report)) + _unsection(s._distribution(report))
            + _unsection(s._table(shown, set())) + more)
