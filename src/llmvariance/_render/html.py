"""The HTML report: one self-contained file a person can open, keep and send.

Everything is inline — CSS, the figures as SVG — and nothing is fetched: no script, no
font, no image from anywhere. Every string that came from a server (outputs, messages,
fingerprints, finish reasons, model names) or from a run file is HTML-escaped and
isolated in a ``<bdi>``, so a bidi override in it (an unterminated U+202E) cannot reverse
the report's own words after it; its control and format characters (bidi controls,
zero-width characters, C0/C1 controls) are shown as visible ``U+202E`` badges naming
them, so two outputs that differ only invisibly look different. The endpoint is shown
without its key (run files never hold it), without a password in its URL and without
query values.
Without matplotlib (the ``plot`` extra) the page has everything but the figures.
"""

from __future__ import annotations

import json
import os
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from .._analysis.printable import INVISIBLE_BUT_LINES, printable
from .._analysis.report import VarianceReport, split_points
from .._analysis.suitereport import SuiteReport
from .._analysis.tree import DivergenceTree, TreeNode
from .._errors import ConfigError
from .._runs.runfile import RunContents
from .._version import __version__
from ._style import CSS

if TYPE_CHECKING:
    from .._analysis.suitereport import SuiteReport
    from .._experiment import BatchEffectResult

__all__ = ["html_report"]

_SECRET_KEYS = frozenset({"api_key", "apikey", "authorization", "x-api-key", "password",
                          "secret", "token", "access_token"})


def _e(value: object) -> str:
    return escape(str(value), quote=True)


def _s(value: object) -> str:
    """A string from a server or a file: escaped, its invisible characters shown, and
    isolated so that its direction never leaks into the text around it."""
    text = str(value)
    parts, last = [], 0
    for match in INVISIBLE_BUT_LINES.finditer(text):
        parts.append(escape(text[last:match.start()], quote=True))
        parts.append(_badge(match.group()))
        last = match.end()
    parts.append(escape(text[last:], quote=True))
    return f"<bdi>{''.join(parts)}</bdi>"


def _badge(char: str) -> str:
    code = f"U+{ord(char):04X}"
    name = unicodedata.name(char, "") or "a control character"
    return f'<span class="invisible" title="{code} {_e(name)}">{code}</span>'


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def _num(value: float | None, spec: str = ".3f") -> str:
    return "n/a" if value is None else format(value, spec)


def _unit(tokenization: str) -> str:
    return "provider tokens" if tokenization == "provider" else "words"


# -- sections ----------------------------------------------------------------------------

def _headline(r: VarianceReport) -> str:
    if r.n_samples and not r.n_ok:
        return (f"Every sample failed ({r.n_failed} of {r.n_samples}): there are no outputs "
                "to compare. The reasons are below.")
    if not r.n_ok:
        return "No samples."
    if r.all_agree:
        return f"All {r.n_ok} outputs are identical."
    return (f"{r.unique_count} distinct outputs among {r.n_ok} identical requests; the most "
            f"common one came {r.mode_count} times ({_pct(r.mode_fraction)}). They first "
            f"differ at token {r.common_prefix_tokens} ({_unit(r.tokenization)}).")


def _card(label: str, value: str, note: str = "") -> str:
    note_html = f'<span class="note">{_e(note)}</span>' if note else ""
    return (f'<div class="card"><span class="label">{_e(label)}</span>'
            f'<span class="value">{_e(value)}</span>{note_html}</div>')


def _summary(r: VarianceReport) -> str:
    cards = [_card("samples", f"{r.n_samples}", f"{r.n_ok} ok, {r.n_failed} failed")]
    if r.n_ok:
        cards += _metric_cards(r)
    alert = "alert" if r.n_samples and not r.n_ok else ""
    rows = [f'<p class="headline {alert}">{_e(_headline(r))}</p>',
            f'<div class="cards">{"".join(cards)}</div>']
    extra = [(name, counts) for name, counts in (("finish reasons", r.finish_reasons),
                                                 ("fingerprints", r.system_fingerprints),
                                                 ("failures", r.failures)) if counts]
    if extra:
        rows.append('<dl class="counts">' + "".join(
            f"<dt>{_e(name)}</dt><dd>"
            + ", ".join(f"{_s(k)} <b>{v}</b>" for k, v in sorted(counts.items())) + "</dd>"
            for name, counts in extra) + "</dl>")
    if r.n_ok:
        rows.append(_HOW_TO_READ)
    return _section("summary", "Summary", "".join(rows)) + _failures(r)


_HOW_TO_READ = (
    '<details class="how"><summary>How to read this</summary><p><b>D</b>, the disagreement '
    "rate, is the probability that two of these requests give different outputs (0: always "
    "the same; its interval is where the true rate lies with 95 % confidence). "
    "<b>Coverage</b> is the probability that one more request gives an output already seen; "
    "<b>Chao1</b> estimates how many distinct outputs exist, seen or not. <b>Differ from the "
    "mode</b> counts outputs other than the most common one; when none differs, the number "
    "shown is the most that could still differ (0 of 30: at most 9.5 %), never zero. "
    "<b>Logprobs of equal texts</b>: whether samples with the same text also have the same "
    "numbers, bit for bit; when they differ, the computation depended on something else "
    "(such as the batch) before it changed a token.</p></details>")


def _metric_cards(r: VarianceReport) -> list[str]:
    first = "none" if r.common_prefix_tokens is None else f"token {r.common_prefix_tokens}"
    cards = [
        _card("distinct outputs", f"{r.unique_count}", "all agree" if r.all_agree else ""),
        _card("most common", _pct(r.mode_fraction), f"{r.mode_count} of {r.n_ok}"),
        _card("agreement rate", _num(r.agreement_rate), "P(two samples agree)"),
        _card("entropy", f"{r.entropy_bits:.3f} bits",
              f"normalized {r.normalized_entropy:.3f}"),
        _card("first divergence", first,
              "" if r.common_prefix_chars is None
              else f"char {r.common_prefix_chars}, {_unit(r.tokenization)}"),
    ]
    if r.disagreement_rate is not None:
        ci = r.disagreement_rate_ci
        cards.append(_card("disagreement D", f"{r.disagreement_rate:.3f}",
                           "P(two requests differ)" + ("" if ci is None else
                                                       f"; {ci.level:.0%} CI {ci}")))
    if r.coverage is not None and r.chao1 is not None:
        cards.append(_card("coverage", f"{r.coverage:.3f}", "P(next output already seen)"))
        cards.append(_card("Chao1", f"{r.chao1:.1f}", "distinct outputs estimated to exist"))
    if r.deviation is not None:
        dev = r.deviation
        value = (f"≤ {dev.interval.high:.1%}" if dev.count == 0 else f"{dev.rate:.1%}")
        cards.append(_card("differ from the mode", value,
                           f"{dev.count} of {dev.n}" + ("" if dev.count == 0 else
                                                        f"; CI {dev.interval}")))
    if r.logprobs is not None and r.logprobs.identical_within_outputs is not None:
        same = r.logprobs.identical_within_outputs
        cards.append(_card("logprobs of equal texts", "bitwise equal" if same else "differ",
                           "" if same else f"from token {r.logprobs.first_diff_within_outputs}"
                           f", max |Δ| {r.logprobs.max_abs_diff_within_outputs:.1e}"))
    if r.divergence_margin is not None:
        cards.append(_card("divergence margin", f"{r.divergence_margin:.4f}",
                           "the mode's top-1 minus top-2 logprob there"))
    if r.logprob_noise_mean is not None:
        cards.append(_card("logprob noise", f"{r.logprob_noise_mean:.3g}",
                           f"max {_num(r.logprob_noise_max, '.3g')}"))
    if r.latency is not None:
        cards.append(_card("latency", f"{r.latency.median_s:.3f} s",
                           f"median; p90 {r.latency.p90_s:.3f} s"))
    return cards


def _failures(r: VarianceReport) -> str:
    if not r.failure_messages:
        return ""
    rows = "".join(
        f"<tr><td class=\"num\">{f.count}</td><td>{_s(f.kind)}</td>"
        f"<td class=\"num\">{_e(f.status if f.status is not None else '')}</td>"
        f"<td><code>{_s(f.message)}</code></td></tr>" for f in r.failure_messages)
    table = ("<table><thead><tr><th>samples</th><th>kind</th><th>status</th>"
             f"<th>message</th></tr></thead><tbody>{rows}</tbody></table>")
    return _section("failures", "Why samples failed",
                    "<p>The most common messages, in the server's words.</p>" + table)


def _tree_item(tree: DivergenceTree, node: TreeNode) -> str:
    if node.text:
        text = f"<code>{_s(node.text)}</code>"
    elif node.is_branch_point:  # the root of outputs that differ from their first token
        text = '<span class="ends">(no text in common: they differ from the start)</span>'
    else:
        text = '<span class="ends">(the output ends here)</span>'

    if node.is_branch_point:
        margin = "" if node.margin is None else f", margin {node.margin:.3g}"
        where = f"splits at token {node.end_token} (char {tree.split_char(node)}){margin}"
    else:
        where = f"ends at token {node.end_token}"
    share = node.count / tree.n if tree.n else 0.0
    head = (f'<span class="count" title="{share:.1%} of the samples">{node.count}</span> '
            f'{text} <span class="where">{_e(where)}</span>')
    items = [_tree_item(tree, child) for child in tree.children(node)]
    if node.pruned_branches:
        plural = "s" if node.pruned_branches > 1 else ""
        items.append(f'<li class="pruned"><span class="count">{node.pruned_samples}</span> '
                     f"{node.pruned_branches} rarer alternative{plural}, each under "
                     f"{tree.min_count} samples, not shown</li>")
    below = f"<ul>{''.join(items)}</ul>" if items else ""
    return f'<li class="node" data-count="{node.count}">{head}{below}</li>'


def _tree(tree: DivergenceTree | None, figure: str) -> str:
    if tree is None or tree.root is None:
        return _section("tree", "Divergence tree", "<p>No successful samples.</p>")
    pruned = ""
    if tree.pruned_branches:
        pruned = (f"<p class=\"note\">{tree.pruned_branches} alternatives with fewer than "
                  f"{tree.min_count} samples each ({tree.pruned_samples} samples in all) are "
                  "counted at their branch point but not drawn.</p>")
    intro = (f"<p>{tree.n} samples, {tree.unique_count} distinct outputs. Each line is text "
             "its samples share; where they split, the alternatives follow with their "
             f"counts, which add up to the line above. Positions are 0-based "
             f"{_unit(tree.tokenization)}; the margin is the top-1 minus top-2 logprob "
             "where they split (small: a near-tie that noise could flip).</p>")
    listing = f'<ul class="tree">{_tree_item(tree, tree.root)}</ul>'
    return _section("tree", "Divergence tree", intro + figure + listing + pruned)


def _outputs(r: VarianceReport) -> str:
    if not r.top_outputs:
        return ""
    texts = [o.text for o in r.top_outputs]
    points = [(0, 0, len(texts[0])), *split_points(texts)]
    items = []
    for rank, (output, (at_mode, nearest, at)) in enumerate(zip(r.top_outputs, points,
                                                                strict=True), 1):
        if rank == 1:
            where = "the most common output"
            body = _s(output.text)
        else:
            where = f"leaves the most common output at char {at_mode}"
            shared = ""
            if nearest:
                where += f", and #{nearest + 1} at char {at}"
                shared = (f"<mark class=\"shared\" title=\"as in #{nearest + 1}\">"
                          f"{_s(output.text[at_mode:at])}</mark>")
            else:
                at = at_mode
            body = (f"<span class=\"same\">{_s(output.text[:at_mode])}</span>{shared}"
                    f"<mark>{_s(output.text[at:])}</mark>")
        share = output.count / r.n_ok if r.n_ok else 0.0
        items.append(
            f'<li><div class="output-head"><b>#{rank}</b> <span class="count">'
            f"{output.count}</span> samples ({share:.1%}) · {_e(where)}</div>"
            f'<p class="output">{body}</p></li>')
    intro = ("<p>Each output in full: <span class=\"same\">grey</span> as in the most "
             "common output, <mark class=\"shared\">pale</mark> as in an output above it, "
             "<mark>highlighted</mark> where it goes its own way.</p>")
    return _section("outputs", "Top outputs", intro + f'<ol class="outputs">{"".join(items)}'
                    "</ol>")


def _groups(r: VarianceReport) -> str:
    parts = []
    for title, groups in (("By fingerprint", r.by_fingerprint),
                          ("By endpoint", r.by_endpoint), ("By condition", r.by_condition),
                          ("By request", r.by_request)):
        if not groups:
            continue
        rows = "".join(
            f"<tr><td>{_s(name)}</td><td class=\"num\">{g.n_ok}</td>"
            f"<td class=\"num\">{g.n_failed}</td><td class=\"num\">{g.unique_count}</td>"
            f"<td class=\"num\">{_d(g)}</td><td class=\"num\">{_num(g.coverage)}</td>"
            f"<td class=\"num\">{_num(g.chao1, '.1f')}</td>"
            f"<td class=\"num\">{g.entropy_bits:.3f}</td><td class=\"num\">"
            f"{'none' if g.common_prefix_tokens is None else g.common_prefix_tokens}</td></tr>"
            for name, g in groups.items())
        parts.append(f"<h3>{_e(title)}</h3><table><thead><tr><th>group</th><th>ok</th>"
                     "<th>failed</th><th>distinct</th><th>D [95% CI]</th><th>coverage</th>"
                     "<th>Chao1</th><th>entropy (bits)</th><th>first divergence</th></tr>"
                     f"</thead><tbody>{rows}</tbody></table>")
    if not parts:
        return ""
    return _section("groups", "Groups", "".join(parts))


def _d(r: VarianceReport) -> str:
    if r.disagreement_rate is None:
        return "n/a"
    ci = r.disagreement_rate_ci
    return f"{r.disagreement_rate:.3f}" + ("" if ci is None else f" {ci}")


def safe_url(url: str) -> str:
    """``url`` without a password and without query values (Gemini-style ``?key=``)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "(unreadable URL)"
    netloc = parts.hostname or ""
    if parts.port is not None:
        netloc += f":{parts.port}"
    if parts.username:
        netloc = f"{parts.username}:***@{netloc}" if parts.password else (
            f"{parts.username}@{netloc}")
    query = "&".join(f"{p.split('=', 1)[0]}=***" if "=" in p else p
                     for p in parts.query.split("&") if p)
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def _scrub(value: Any) -> Any:
    """A copy of a JSON value with anything named like a credential masked."""
    if isinstance(value, Mapping):
        return {k: "***" if str(k).lower() in _SECRET_KEYS else _scrub(v)
                for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub(v) for v in value]
    return value


def _run(contents: RunContents) -> str:
    header = contents.header
    found = header.get("endpoint")
    endpoint: dict[str, Any] = found if isinstance(found, dict) else {}
    base_url = endpoint.get("base_url")
    names = endpoint.get("header_names") or []
    rows = [("file", contents.path.name), ("started", header.get("started_at")),
            ("llmvariance", header.get("library_version")), ("n", contents.max_n),
            ("endpoint", safe_url(base_url) if isinstance(base_url, str) else None),
            ("endpoint name", endpoint.get("name")),
            ("extra headers (names only)", ", ".join(map(str, names)) or None)]
    rows += _server_rows(contents.server)
    table = "".join(f"<tr><th>{_e(k)}</th><td>{_s(v)}</td></tr>" for k, v in rows
                    if v is not None)
    entries = (list(contents.request_records()) if contents.suite_ids is not None
               else [("request", header.get("request"))])
    details = "".join(
        f"<details{' open' if len(entries) == 1 else ''}><summary>{_s(name)}</summary>"
        f"<pre>{_s(_request_json(fields))}</pre></details>" for name, fields in entries)
    return (f'<div class="run"><table class="kv">{table}</table>{details}'
            f"{_server_details(contents.server)}</div>")


def _server_rows(server: Mapping[str, Any] | None) -> list[tuple[str, Any]]:
    """The server's configuration as rows of the run's table (nothing when unknown)."""
    if not server:
        return []
    command = server.get("command")
    return [("server", " ".join(str(v) for v in (server.get("engine"), server.get("build"))
                                if v)),
            ("slots", server.get("total_slots")),
            ("command line", " ".join(map(str, command)) if isinstance(command, list)
             else None),
            ("asked at", server.get("fetched_at"))]


def _server_details(server: Mapping[str, Any] | None) -> str:
    """What the server answered about itself, in full, folded."""
    if not server or not (server.get("props") or server.get("slots")):
        return ""
    shown = {"props": server.get("props"), "slots": server.get("slots")}
    return (f"<details><summary>server configuration ({_s(server.get('engine'))})</summary>"
            f"<pre>{_s(json.dumps(_scrub(shown), indent=2, ensure_ascii=False))}</pre>"
            "</details>")


def _request_fields(contents: RunContents) -> list[dict[str, Any]]:
    """The request fields in a run file's header: its request, or each of its suite's."""
    found = ([fields for _, fields in contents.request_records()]
             if contents.suite_ids is not None else [contents.header.get("request")])
    return [r for r in found if isinstance(r, dict)]


def _request_json(fields: object) -> str:
    shown = {k: v for k, v in fields.items() if v not in (None, {}, [])} if isinstance(
        fields, dict) else {}
    return json.dumps(_scrub(shown), indent=2, ensure_ascii=False)


def _runs(runs: Sequence[RunContents]) -> str:
    if not runs:
        return ""
    note = ("<p class=\"note\">The API key is never stored in a run file and never shown "
            "here.</p>")
    return _section("run", "The run", note + "".join(_run(c) for c in runs))


def _section(anchor: str, title: str, body: str) -> str:
    return f'<section id="{anchor}"><h2>{_e(title)}</h2>{body}</section>'


# -- figures -----------------------------------------------------------------------------

def _figures(report: VarianceReport, tree: DivergenceTree | None
             ) -> tuple[str, str] | None:
    """(the tree's figure, the other figures) as inline SVG; None without matplotlib."""
    try:
        from . import plot
        from .figure import svg
    except ImportError:  # pragma: no cover - plot itself imports matplotlib lazily
        return None
    try:
        parts = [("entropy", plot.plot_entropy(report)),
                 ("divergence", plot.plot_divergence(report))]
        if len(report.by_condition) > 1:
            parts.append(("conditions", plot.plot_conditions(report)))
        tree_figure = (plot.plot_tree(tree) if tree is not None and tree.root is not None
                       else None)
    except ImportError:
        return None
    tree_svg = "" if tree_figure is None else _figure(svg(tree_figure, "tree"), "tree")
    others = "".join(_figure(svg(drawn, name), name) for name, drawn in parts)
    return tree_svg, others


_METADATA = re.compile(r"<metadata>.*?</metadata>\s*", re.DOTALL)


def _figure(svg: str, name: str) -> str:
    return f'<figure class="plot" id="plot-{name}">{_METADATA.sub("", svg, count=1)}</figure>'


# -- the page ----------------------------------------------------------------------------

def html_report(report: VarianceReport | BatchEffectResult | SuiteReport,
                path: str | os.PathLike[str] | None = None, *,
                tree: DivergenceTree | None = None, runs: Iterable[RunContents] = (),
                title: str | None = None, plots: bool = True) -> str:
    """The report as one self-contained HTML page (returned, and written to ``path``).

    ``tree`` is the divergence tree to show (default: the report's own, ``report.tree``),
    ``runs`` (``lv.read_run(...)``) the request and endpoint each run file was written
    for. Figures need matplotlib (``plots=False``, or its absence, leaves them out).
    Given a ``BatchEffectResult`` the page is the experiment's: the verdict and its
    evidence, each condition's estimates and test, the findings, D by condition as a
    figure, and how to read it. Given a suite's ``SuiteReport`` the page is the suite's:
    TARr@N, TARa@N, the prompts, the most varying ones in detail and, with expected
    answers, the accuracy under reruns.
    """
    from .._experiment import BatchEffectResult

    if isinstance(report, BatchEffectResult):
        return _write(_experiment_page(report, title, plots), path)
    runs = list(runs)
    if isinstance(report, SuiteReport):
        from .suite_html import suite_page

        return _write(suite_page(report, _prompt_reports(report, runs), runs, title), path)
    tree = tree if tree is not None else report.tree
    figures = _figures(report, tree) if plots and report.n_ok else None
    tree_svg, other_svgs = figures if figures is not None else ("", "")
    plots_body = other_svgs or (
        "<p class=\"note\">No successful samples to draw.</p>" if not report.n_ok else
        "<p class=\"note\">Figures need matplotlib: "
        "<code>pip install matplotlib</code>.</p>")
    models = sorted({str(r.get("model")) for c in runs for r in _request_fields(c)})
    shown = f": {', '.join(_s(m) for m in models)}" if models else ""
    heading = _e(title) if title else f"llmvariance report{shown}"
    tab = title or ("llmvariance report" + (f": {', '.join(models)}" if models else ""))
    body = "".join([
        f"<header><h1>{heading}</h1><p class=\"sub\">How much the output varied across "
        f"{report.n_samples} identical requests.</p></header>",
        _nav(report, tree is not None, runs),
        _summary(report), _tree(tree, tree_svg),
        _section("plots", "Figures", plots_body), _outputs(report), _groups(report),
        _runs(runs),
        f"<footer>Written by llmvariance {_e(__version__)}. This file loads nothing from "
        "the network.</footer>",
    ])
    return _write(_page(tab, body), path)


def _prompt_reports(suite: SuiteReport, runs: Sequence[RunContents]
                    ) -> dict[str, VarianceReport]:
    """The reports of the suite's most varying prompts, from its run files (one pass)."""
    from .._analysis.collect import VarianceCollector
    from .suite_html import DETAILED_PROMPTS

    wanted = [p.id for p in suite.prompts if p.distinct > 1][:DETAILED_PROMPTS]
    collectors = {rid: VarianceCollector(grouped=False) for rid in wanted}
    for contents in runs:
        for sample in contents.iter_samples():
            collector = collectors.get(sample.request_id or "")
            if collector is not None:
                collector.add(sample)
    return {rid: c.report() for rid, c in collectors.items()}


def _page(tab: str, body: str) -> str:
    """The whole document; ``tab`` is the plain-text title (escaped here)."""
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{_e(printable(tab))}</title><style>{CSS}</style></head>"
            f"<body><main>{body}</main></body></html>\n")


def _write(page: str, path: str | os.PathLike[str] | None) -> str:
    if path is not None:
        target = Path(path)
        try:
            target.write_text(page, encoding="utf-8")
        except OSError as exc:
            raise ConfigError("path", f"cannot write {target}: {exc.strerror}") from None
    return page


_EXPERIMENT_HOW_TO_READ = (
    "<p>Each condition sent the same request the same number of times. <b>D</b> is the "
    "probability that two of its requests give different outputs, with its 95 % interval. "
    "<b>Differ</b> counts the outputs other than the reference (the calibration request's "
    "output, unless it never came back). <b>p</b> tests whether a condition differs from the "
    "reference more often than the one-at-a-time control (an exact one-sided test, "
    "Holm-adjusted across conditions): below alpha, the difference is unlikely to be chance. "
    "A condition with no difference observed shows how much could still hide at this n. The "
    "conditions ran interleaved in blocks, so a server that changed during the run changed "
    "every condition alike.</p>")


def experiment_facts(result: BatchEffectResult) -> list[str]:
    """The verdict, the table of conditions, the reference and the design (the notebook
    view shows these too)."""
    rows = []
    for name, r in result.conditions.items():
        comparison = result.comparisons.get(name)
        if comparison is not None:
            deviation = comparison.b.deviation
        elif result.comparisons:
            deviation = next(iter(result.comparisons.values())).a.deviation
        else:
            deviation = None
        differ = "-" if deviation is None else f"{deviation.count}/{deviation.n}"
        p = ("control" if name == result.control else
             _p(result.adjusted_pvalues[name]) if name in result.adjusted_pvalues else "-")
        rows.append(f"<tr><td>{_s(name)}</td><td class=\"num\">{r.n_ok}</td>"
                    f"<td class=\"num\">{r.n_failed}</td>"
                    f"<td class=\"num\">{r.unique_count}</td><td class=\"num\">{_d(r)}</td>"
                    f"<td class=\"num\">{_num(r.coverage)}</td>"
                    f"<td class=\"num\">{_num(r.chao1, '.1f')}</td>"
                    f"<td class=\"num\">{_e(differ)}</td><td class=\"num\">{_e(p)}</td></tr>")
    table = ("<table><thead><tr><th>condition</th><th>ok</th><th>failed</th><th>distinct</th>"
             "<th>D [95% CI]</th><th>coverage</th><th>Chao1</th><th>differ</th>"
             f"<th>p (Holm)</th></tr></thead><tbody>{''.join(rows)}</tbody></table>")
    alert = " alert" if result.verdict_kind == "could_not_measure" else ""
    facts = [f"<p class=\"headline{alert}\"><b>{_e(result.verdict_kind)}</b>: "
             f"{_e(result.verdict)}</p>", table]
    if result.reference is not None:
        facts.append(f"<p class=\"note\">Reference: {_e(result.reference_source)}: "
                     f"<code>{_s(result.reference[:200])}</code></p>")
    if result.design:
        facts.append(f"<p class=\"note\">Design: {_e(result.design)}; alpha = "
                     f"{result.alpha:g}.</p>")
    if result.server is not None:
        info = result.server.model_dump(mode="json")
        cells = "".join(f"<tr><th>{_e(k)}</th><td>{_s(v)}</td></tr>"
                        for k, v in _server_rows(info) if v not in (None, ""))
        facts.append(f"<table class=\"kv\">{cells}</table>{_server_details(info)}")
    return facts


def _experiment_page(result: BatchEffectResult, title: str | None, plots: bool) -> str:
    facts = experiment_facts(result)
    findings = "".join(f"<li>{_s(f)}</li>" for f in result.findings)
    if result.logprobs is not None:
        findings += f"<li>logprobs: {_e(result.logprobs.describe())}</li>"
    sections = [_section("verdict", "Verdict", "".join(facts) + _EXPERIMENT_HOW_TO_READ)]
    if findings:
        sections.append(_section("findings", "Findings", f"<ul>{findings}</ul>"))
    figure = ""
    if plots:
        try:
            from . import plot
            from .figure import svg

            figure = _figure(svg(plot.plot_conditions(result), "conditions"), "conditions")
        except ImportError:
            figure = ("<p class=\"note\">Figures need matplotlib: "
                      "<code>pip install matplotlib</code>.</p>")
    if figure:
        sections.append(_section("plots", "D by condition", figure))
    details = "".join(f"<details><summary>{_s(name)} against {_s(result.control)}</summary>"
                      f"<pre>{_s(c.to_text())}</pre></details>"
                      for name, c in result.comparisons.items())
    if details:
        sections.append(_section("tests", "The tests", details))
    heading = title or f"llmvariance batch effect: {result.endpoint}"
    body = "".join([
        f"<header><h1>{_s(heading)}</h1><p class=\"sub\">The same request, {result.n} times "
        f"under each of {len(result.conditions)} conditions.</p></header>", *sections,
        f"<footer>Written by llmvariance {_e(__version__)}. This file loads nothing from "
        "the network.</footer>"])
    return _page(heading, body)


def _p(p: float) -> str:
    return "< 0.001" if p < 0.001 else f"{p:.3g}"


def _nav(report: VarianceReport, has_tree: bool, runs: Sequence[RunContents]) -> str:
    links = [("summary", "Summary")]
    if report.failure_messages:
        links.append(("failures", "Failures"))
    if has_tree:
        links.append(("tree", "Tree"))
    links += [("plots", "Figures")]
    if report.top_outputs:
        links.append(("outputs", "Top outputs"))
    if report.by_fingerprint or report.by_endpoint or report.by_condition or report.by_request:
        links.append(("groups", "Groups"))
    if runs:
        links.append(("run", "Run"))
    return "<nav>" + "".join(f'<a href="#{a}">{_e(t)}</a>' for a, t in links) + "</nav>"
