"""The HTML page of a suite: TARr@N and TARa@N first, then how many distinct outputs the
prompts had, a row per prompt (most varying first) linking to its own tree and top
outputs. Built from the single-report page's parts (``html``), so both look alike."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from .._analysis.report import ConfidenceInterval, VarianceReport
from .._analysis.suitereport import PromptStats, SuiteReport
from .._runs.runfile import RunContents
from .._version import __version__
from . import html as h

__all__ = ["DETAILED_PROMPTS", "LISTED_PROMPTS", "suite_page"]

LISTED_PROMPTS = 500
"""Rows in the table of prompts: a 100,000-prompt suite's page stays small."""
DETAILED_PROMPTS = 25
"""The most varying prompts that get a section of their own (tree and top outputs)."""


def _ci(ci: ConfidenceInterval | None) -> str:
    return "" if ci is None else f"95% CI [{ci.low:.3f}, {ci.high:.3f}]"


def _anchor(position: int) -> str:
    return f"prompt-{position}"


def _cards(s: SuiteReport) -> str:
    agree = sum(p.all_agree for p in s.prompts if p.evaluable)
    cards = [h._card(f"TARr@{s.n}", h._num(s.tar_raw), _ci(s.tar_raw_ci)),
             h._card("prompts whose outputs all agree", f"{agree} of {s.n_evaluable}",
                     f"{s.n_prompts} prompts, {len(s.incomplete)} with failures")]
    if s.answer is not None:
        agreed = sum(p.answers.all_agree for p in s.prompts
                     if p.evaluable and p.answers is not None)
        cards.insert(1, h._card(f"TARa@{s.n}", h._num(s.tar_answer), _ci(s.tar_answer_ci)))
        cards.append(h._card("prompts whose answers all agree", f"{agreed} of "
                             f"{s.n_evaluable}", f"answer = {s.answer}; {s.unparseable} "
                             "outputs without one"))
    intro = (f"<p><b>TARr@{s.n}</b> is the fraction of prompts whose {s.n} outputs are all "
             f"identical{' (whitespace normalised)' if s.normalized else ''}; "
             f"<b>TARa@{s.n}</b> the fraction whose {s.n} extracted answers agree. Only "
             f"prompts with all {s.n} samples ok count.</p>")
    return h._section("summary", "Suite summary",
                      f'<div class="cards">{"".join(cards)}</div>{intro}')


def _distribution(s: SuiteReport) -> str:
    if not s.distinct_counts:
        return ""
    most = max(c.prompts for c in s.distinct_counts)
    rows = "".join(
        f"<tr><td>{c.distinct}</td><td>{c.prompts}</td><td><span class=\"bar\" "
        f"style=\"display:inline-block;height:0.8em;background:#4c72b0;"
        f"width:{max(2, round(240 * c.prompts / most))}px\"></span></td></tr>"
        for c in s.distinct_counts)
    return h._section("distinct", "Distinct outputs per prompt",
                      "<table><thead><tr><th>distinct outputs</th><th>prompts</th><th></th>"
                      f"</tr></thead><tbody>{rows}</tbody></table>")


def _row(position: int, p: PromptStats, n: int, detailed: bool) -> str:
    name = h._s(p.id)
    link = f'<a href="#{_anchor(position)}">{name}</a>' if detailed else name
    agreement = h._num(p.agreement_rate)
    first = "-" if p.first_divergence_tokens is None else str(p.first_divergence_tokens)
    answers = ""
    if p.answers is not None:
        top = p.answers.top[0] if p.answers.top else None
        shown = "" if top is None else (
            "(no answer)" if top.answer is None else h._s(top.answer[:40]))
        answers = (f"<td>{p.answers.distinct}</td><td>{shown}"
                   f"{'' if top is None else f' x{top.count}'}</td>")
    return (f"<tr><td>{link}</td><td>{p.n_ok}/{n}</td><td>{p.distinct}</td>"
            f"<td>{agreement}</td><td>{first}</td>{answers}</tr>")


def _table(s: SuiteReport, detailed: set[str]) -> str:
    head = ("<th>prompt</th><th>ok</th><th>distinct</th><th>agreement</th>"
            "<th>first divergence</th>" + ("<th>answers</th><th>top answer</th>"
                                           if s.answer is not None else ""))
    rows = "".join(_row(i, p, s.n, p.id in detailed)
                   for i, p in enumerate(s.prompts[:LISTED_PROMPTS]))
    more = (f"<p class=\"note\">{len(s.prompts) - LISTED_PROMPTS} more prompts are in "
            "report.json.</p>" if len(s.prompts) > LISTED_PROMPTS else "")
    return h._section("prompts", "Prompts, most varying first",
                      f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"
                      + more)


def _prompt_section(position: int, p: PromptStats, report: VarianceReport) -> str:
    tree = h._tree(report.tree, "").replace('<section id="tree">', "<div>", 1)
    tree = tree.removesuffix("</section>") + "</div>"
    outputs = h._outputs(report).replace('<section id="outputs">', "<div>", 1)
    outputs = outputs.removesuffix("</section>") + "</div>" if outputs else ""
    return h._section(_anchor(position), f"Prompt {p.id}: {p.distinct} distinct of "
                      f"{p.n_ok}", tree + outputs + '<p><a href="#prompts">back to the '
                      "prompts</a></p>")


def _accuracy(suite: SuiteReport) -> str:
    if suite.accuracy is None:
        return ""
    from .compare_html import accuracy_section

    return accuracy_section(suite.accuracy)


def suite_page(suite: SuiteReport, prompts: Mapping[str, VarianceReport],
               runs: Sequence[RunContents], title: str | None = None) -> str:
    """The page's body: ``prompts`` are the reports of the prompts given sections (the
    most varying ones; see ``DETAILED_PROMPTS``)."""
    detailed = set(prompts)
    sections = [_prompt_section(i, p, prompts[p.id])
                for i, p in enumerate(suite.prompts) if p.id in detailed]
    models = sorted({str(r.get("model")) for c in runs for r in h._request_fields(c)})
    shown = f": {', '.join(h._s(m) for m in models)}" if models else ""
    heading = h._e(title) if title else f"llmvariance suite report{shown}"
    title = title or ("llmvariance suite report" + (f": {', '.join(models)}" if models else ""))
    body = "".join([
        f"<header><h1>{heading}</h1><p class=\"sub\">{suite.n_prompts} prompts, {suite.n} "
        "samples each: how many prompts give the same output every time.</p></header>",
        _cards(suite), _distribution(suite), _accuracy(suite), _table(suite, detailed),
        *sections,
        h._runs(list(runs)),
        f"<footer>Written by llmvariance {h._e(__version__)}. This file loads nothing from "
        "the network.</footer>"])
    return h._page(title, body)
