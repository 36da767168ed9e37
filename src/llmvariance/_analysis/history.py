"""``run_history``: runs of one request over time, a row each, so a provider's change shows
as a step.

Each run file (``sample_many(output=...)``, ``llmvariance sample --out``) becomes a row, in
the order the runs were started (the header's ``started_at``; files without one keep their
place after those with one): its distinct outputs, D with its interval, how its most common
output begins, its most common fingerprint and model. A row is marked where the most
common output differs from the previous row's, where the fingerprint does, and where the
request does (a new model name, another prompt): the steps. Files are read one at a time,
a record at a time.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict

from .._errors import ConfigError
from .collect import VarianceCollector
from .printable import printable
from .report import ConfidenceInterval

__all__ = ["HistoryRow", "RunHistory", "run_history"]

_FROZEN = ConfigDict(frozen=True, extra="forbid")
_WORDS = 8


class HistoryRow(BaseModel):
    """One run of the history."""

    model_config = _FROZEN

    path: str
    started_at: str | None
    n_ok: int
    n_failed: int
    distinct: int
    disagreement_rate: float | None
    disagreement_rate_ci: ConfidenceInterval | None
    mode: str
    """The most common output ("" with no ok sample)."""
    mode_start: str
    """Its first words."""
    mode_count: int
    fingerprint: str | None
    """The most common ``system_fingerprint`` (None when the server sent none)."""
    fingerprints: int
    """Distinct fingerprints in the run."""
    model: str | None
    """The most common ``Sample.model``."""
    mode_changed: bool
    """The most common output differs from the previous row's."""
    fingerprint_changed: bool
    request_changed: list[str]
    """Request fields that differ from the previous row's (``stream`` aside)."""

    def d_text(self) -> str:
        if self.disagreement_rate is None:
            return "n/a"
        ci = self.disagreement_rate_ci
        return f"{self.disagreement_rate:.3f}" + ("" if ci is None else f" {ci}")


class RunHistory(BaseModel):
    """Runs of one request in time order, with the steps between them."""

    model_config = _FROZEN

    rows: list[HistoryRow]
    summary: str
    """The steps in words, e.g. ``the most common output changed at run 3 (c.jsonl)``."""

    def to_text(self) -> str:
        lines = [f"runs over time ({len(self.rows)} runs, by start time): {self.summary}", ""]
        header = (f"{'#':>3}  {'started':<20}  {'file':<24} {'distinct':>9}  "
                  f"{'D [95% CI]':<22} {'most common output begins':<40} {'fingerprint':<18}")
        lines.append(header.rstrip())
        for number, row in enumerate(self.rows, 1):
            marks = []
            if row.mode_changed:
                marks.append("new output")
            if row.fingerprint_changed:
                marks.append("new fingerprint")
            if row.request_changed:
                marks.append("request: " + ", ".join(row.request_changed))
            begins = row.mode_start if len(row.mode_start) <= 34 else (
                row.mode_start[:33] + "…")
            start = printable(repr(begins))
            lines.append((
                f"{number:>3}  {printable(row.started_at or '-'):<20}  "
                f"{printable(os.path.basename(row.path))[:24]:<24} "
                f"{f'{row.distinct}/{row.n_ok}':>9}  {row.d_text():<22} {start:<40} "
                f"{printable(row.fingerprint or '-')[:18]:<18}"
                + (f"  <- {'; '.join(marks)}" if marks else "")).rstrip())
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.to_text()


def _first_words(text: str) -> str:
    words = text.split()
    return " ".join(words[:_WORDS]) + (" …" if len(words) > _WORDS else "")


def _top(counts: Mapping[str, int]) -> str | None:
    if not counts:
        return None
    return min(counts.items(), key=lambda kv: (-kv[1], kv[0]))[0]


def run_history(files: Iterable[str | os.PathLike[str] | Any]) -> RunHistory:
    """A row per run file (paths or ``lv.read_run(...)`` contents), in time order, with the
    steps marked (module doc). Suites' run files are refused: compare two suite runs with
    ``compare_runs``."""
    from .._runs.runfile import read_run  # files are read only when one is given
    from .runcompare import _field_differences

    contents: list[Any] = [f if hasattr(f, "iter_samples") else read_run(f) for f in files]
    if not contents:
        raise ConfigError("files", "no run files")
    for c in contents:
        if c.suite_ids is not None:
            raise ConfigError("files", f"{c.path} is a suite's run file: the history is of "
                              "runs of one request (compare two suite runs with "
                              "`llmvariance compare`)")
    order = sorted(range(len(contents)), key=lambda i: (
        contents[i].header.get("started_at") is None,
        str(contents[i].header.get("started_at") or ""), i))
    rows: list[HistoryRow] = []
    previous: Any = None
    for i in order:
        c = contents[i]
        collector = VarianceCollector(grouped=False)
        models: Counter[str] = Counter()
        for sample in c.iter_samples():
            collector.add(sample)
            if sample.error is None and sample.model:
                models[sample.model] += 1
        report = collector.report(tree=False)
        mode = report.top_outputs[0].text if report.top_outputs else ""
        fingerprints = {k: v for k, v in report.system_fingerprints.items() if k != "(none)"}
        fingerprint = _top(fingerprints)
        request = c.header.get("request") or {}
        before = rows[-1] if rows else None
        rows.append(HistoryRow(
            path=str(c.path), started_at=c.header.get("started_at"), n_ok=report.n_ok,
            n_failed=report.n_failed, distinct=report.unique_count,
            disagreement_rate=report.disagreement_rate,
            disagreement_rate_ci=report.disagreement_rate_ci, mode=mode,
            mode_start=_first_words(mode), mode_count=report.mode_count,
            fingerprint=fingerprint, fingerprints=len(fingerprints), model=_top(models),
            mode_changed=before is not None and bool(report.n_ok) and mode != before.mode,
            fingerprint_changed=before is not None and fingerprint != before.fingerprint,
            request_changed=([] if previous is None else
                             [d.split(":")[0] for d in _field_differences(previous, request)])))
        previous = request
    return RunHistory(rows=rows, summary=_summary(rows))


def _summary(rows: list[HistoryRow]) -> str:
    steps = []
    for number, row in enumerate(rows, 1):
        what = [w for w, changed in (("the most common output", row.mode_changed),
                                     ("the fingerprint", row.fingerprint_changed),
                                     ("the request", bool(row.request_changed))) if changed]
        if what:
            steps.append(f"{' and '.join(what)} changed at run {number} "
                         f"({os.path.basename(row.path)}, {row.started_at or 'no start time'})")
    if not steps:
        return ("no step: every run's most common output and fingerprint are the same as "
                "the run before" if len(rows) > 1 else "one run")
    return "; ".join(steps)
