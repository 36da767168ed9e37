"""``check``: a determinism gate for CI. Does the endpoint answer one request the same way
every time, under every condition, and the way it did before?

The request is sent ``n`` times under each condition (``sequential``, ``burst``, ``loaded``,
``concurrency=K`` or any registered one; the batch-effect experiment's, one block by
default so a burst is n wide) after one preflight request, which must succeed (a server
that is down or refuses the key is reported at once, not after n retried failures). A row
per condition and one over all of them pooled, each held to the expectation:

- ``max_disagreement`` (default 0 when no other bound is given): the *observed* disagreement
  rate D, the probability two of the requests disagree, is at most this. With 0: every
  output identical. Passing is an observation, not a proof: the result always says how
  much could still hide (0 of 30 differ: at most 9.5 % of requests do, at 95 %).
- ``max_rate_bound``: a demand for proof. The exact one-sided upper confidence bound
  (Clopper-Pearson at ``confidence``) on the share of requests whose output differs from
  the reference is at most this. Even when nothing differs that needs
  ``n >= ln(1 - confidence) / ln(1 - bound)`` per condition (5 % at 95 %: 59), and a
  smaller n is refused before anything is sent.
- ``baseline`` (a run file of the same request, e.g. an earlier ``check --out``): the most
  common output of every condition must be the baseline's, and deviations are counted from
  it (without one, from the most common output over all conditions).

Outcome: ``passed`` (exit 0), ``failed`` (1: a bound is exceeded or the most common output
is not the baseline's; ``evidence`` says which, in one line), ``could_not_measure`` (3: the
preflight failed, a condition had fewer than two successful samples, or more than
``max_failure_rate`` of its requests failed). Bad arguments raise ``ConfigError`` before
anything is sent (the CLI's 2). A violation outranks a condition that could not be
measured: it is evidence either way.

``CheckResult.to_junit()`` is the result as JUnit XML, a test case per row (a failure or an
error with the evidence and the outputs that varied), which CI systems read;
``assert_holds()`` raises ``AssertionError`` saying what varied, for tests
(``llmvariance.testing.assert_reproducible``).
"""

from __future__ import annotations

import functools
import os
import time
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ._analysis import estimates as est
from ._analysis.metrics import pair_prefix_length, word_tokens
from ._analysis.printable import printable
from ._analysis.report import ConfidenceInterval, OutputCount, VarianceReport
from ._analysis.runcompare import _field_differences, _Side
from ._analysis.stats import exact_upper_bound, samples_to_bound
from ._client.endpoint import Endpoint, endpoint_or_default
from ._client.pool import ClientPool
from ._client.ratelimit import RateLimit
from ._client.retry import RetryPolicy
from ._client.transport import Timeouts, Transport
from ._errors import ConfigError
from ._experiment import BatchEffectResult, batch_effect, condition_named
from ._request import Request
from ._runs.runfile import RunFile, _request_record
from ._sample import Sample
from ._sampler import _check_request, run_sync
from ._version import __version__

__all__ = ["EXIT_CODES", "CheckOutcome", "CheckResult", "CheckRow", "check", "check_sync"]

CheckOutcome = Literal["passed", "failed", "could_not_measure"]
EXIT_CODES: dict[CheckOutcome, int] = {"passed": 0, "failed": 1, "could_not_measure": 3}
"""The command's exit status per outcome; 2 is bad usage (a ``ConfigError``)."""
ALL = "all conditions"
"""The pooled row's name."""
_SHOWN = 3


class CheckRow(BaseModel):
    """One condition of a check (or all of them pooled) and whether it holds."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    n: int
    """Requests sent."""
    n_ok: int
    n_failed: int
    failures: dict[str, int]
    """Failed requests by error kind."""
    distinct: int
    disagreement_rate: float | None
    disagreement_rate_ci: ConfidenceInterval | None
    deviating: int
    """Ok outputs other than the reference."""
    rate_bound: float | None
    """The exact one-sided upper bound at ``confidence`` on the share of requests that
    differ from the reference; None with no ok output."""
    mode: str
    mode_count: int
    matches_baseline: bool | None
    """The most common output is the baseline's (None without a baseline)."""
    first_divergence_tokens: int | None
    """Where the outputs first differ (0-based; None when all agree)."""
    tokenization: str
    top_outputs: list[OutputCount]
    """The most common outputs (at most three)."""
    status: Literal["holds", "violated", "not_measured"]
    reasons: list[str]
    """Why it is violated or not measured; empty when it holds."""

    def summary(self) -> str:
        """``burst: 3 distinct of 30, D = 0.687 [0.637, 0.734]``."""
        d = ("D n/a" if self.disagreement_rate is None else
             f"D = {self.disagreement_rate:.3g}"
             + ("" if self.disagreement_rate_ci is None else f" {self.disagreement_rate_ci}"))
        failed = f", {self.n_failed} failed" if self.n_failed else ""
        return f"{printable(self.name)}: {self.distinct} distinct of {self.n_ok}{failed}, {d}"

    def details(self) -> str:
        """What varied: where the outputs split and the most common ones."""
        lines = [self.summary() + (f" — {'; '.join(self.reasons)}" if self.reasons else "")]
        if self.first_divergence_tokens is not None:
            unit = "provider tokens" if self.tokenization == "provider" else "words"
            lines.append(f"  the outputs first differ at token {self.first_divergence_tokens} "
                         f"({unit})")
        for output in self.top_outputs:
            text = printable(repr(output.text[:80])) + ("…" if len(output.text) > 80 else "")
            lines.append(f"  {output.count:>4}x {text}")
        if self.failures:
            lines.append("  failed: " + ", ".join(f"{printable(k)} x{v}"
                                                  for k, v in sorted(self.failures.items())))
        return "\n".join(lines)


class CheckResult(BaseModel):
    """What ``check`` found: a row per condition and one pooled, and the outcome."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    outcome: CheckOutcome
    evidence: str
    """The outcome in one line, with its evidence."""
    request: Request
    endpoint: str
    n: int
    """Requests per condition."""
    conditions: list[str]
    rows: list[CheckRow]
    """Each condition's, then the pooled one (``all conditions``) when there are two or
    more conditions."""
    reference: str | None
    reference_source: str
    baseline: str | None
    """The baseline run file, when one was given."""
    max_disagreement: float | None
    max_rate_bound: float | None
    confidence: float
    max_failure_rate: float
    seconds: float
    started_at: str
    experiment: BatchEffectResult | None = Field(default=None, exclude=True, repr=False)
    stopped_early: str | None = None
    """With ``early_stop=True``, when the check stopped because it had already failed and
    how many requests that saved; None when it sent all of them."""
    """The samples and tests behind the rows (left out of the JSON)."""

    @property
    def exit_code(self) -> int:
        """0 passed, 1 failed, 3 could not measure (2, bad usage, is an exception)."""
        return EXIT_CODES[self.outcome]

    @property
    def passed(self) -> bool:
        return self.outcome == "passed"

    def to_text(self) -> str:
        lines = [f"check {self.outcome.replace('_', ' ')}: {self.evidence}", ""]
        lines.append(f"{'condition':<16} {'ok':>7} {'distinct':>8}  {'D [95% CI]':<22} "
                     f"{'differ':>7} {'at most':>8}  status")
        for row in self.rows:
            d = ("n/a" if row.disagreement_rate is None else
                 f"{row.disagreement_rate:.3f} {row.disagreement_rate_ci or ''}")
            bound = "n/a" if row.rate_bound is None else f"{row.rate_bound:.1%}"
            lines.append(f"{printable(row.name)[:16]:<16} {f'{row.n_ok}/{row.n}':>7} "
                         f"{row.distinct:>8}  {d:<22} {row.deviating:>7} {bound:>8}  "
                         f"{row.status}")
        lines.append(f"reference: {self.reference_source}"
                     + ("" if self.reference is None else
                        f": {printable(repr(self.reference[:60]))}"
                        + ("…" if len(self.reference) > 60 else "")))
        lines.append(f"'at most': the exact one-sided {self.confidence:.0%} upper bound on the "
                     "share of requests that differ from the reference")
        if self.stopped_early is not None:
            lines.append(f"early stop: {self.stopped_early}")
        for row in self.rows:
            if row.status != "holds":
                lines += ["", row.details()]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.to_text()

    def assert_holds(self) -> None:
        """Raise ``AssertionError`` unless the check passed, saying what varied."""
        if self.passed:
            return
        details = "\n".join(row.details() for row in self.rows if row.status != "holds")
        raise AssertionError(f"{self.outcome.replace('_', ' ')}: {self.evidence}\n{details}")

    def to_junit(self, path: str | os.PathLike[str] | None = None) -> str:
        """The result as JUnit XML (returned, and written to ``path``): one test suite, a
        test case per row, a ``failure`` for a violated row and an ``error`` for one that
        could not be measured, the evidence in its message and the outputs in its text."""
        return _junit(self, path)


# -- evaluating -------------------------------------------------------------------------

def _first_words_differ(a: str, b: str) -> str:
    ta, tb = word_tokens(a), word_tokens(b)
    k = pair_prefix_length(ta, tb)

    def at(tokens: list[str]) -> str:
        return "the end" if k >= len(tokens) else printable(repr(tokens[k]))

    return f"at word {k} (the baseline's {at(ta)}, here {at(tb)})"


def _same_path(a: str | os.PathLike[str], b: str) -> bool:
    return os.path.abspath(a) == os.path.abspath(b)


def _row(name: str, samples: Sequence[Sample], report: VarianceReport, n: int,
         reference: str | None, baseline_mode: str | None, limits: _Limits) -> CheckRow:
    counts: Counter[str] = Counter(s.text or "" for s in samples if s.error is None)
    failures: Counter[str] = Counter(s.error.kind for s in samples if s.error is not None)
    ok, failed = counts.total(), failures.total()
    mode, mode_count = (min(counts.items(), key=lambda kv: (-kv[1], kv[0])) if counts
                        else ("", 0))
    deviating = ok - counts.get(reference, 0) if reference is not None else 0
    bound = exact_upper_bound(deviating, ok, limits.confidence) if ok else None
    d = est.disagreement_rate(list(counts.values()))
    d_ci = est.disagreement_interval(list(counts.values()))
    reasons: list[str] = []
    status: Literal["holds", "violated", "not_measured"] = "holds"
    if ok < 2 or failed > limits.max_failure_rate * (ok + failed):
        status = "not_measured"
        kinds = ", ".join(f"{printable(k)} x{v}" for k, v in sorted(failures.items()))
        reasons.append(f"{failed} of {ok + failed} requests failed ({kinds})" if failed
                       else "fewer than two successful requests")
        if ok >= 2:
            reasons[-1] += f", more than {limits.max_failure_rate:.0%}"
    else:
        if limits.max_disagreement is not None and d is not None and (
                d > limits.max_disagreement):
            reasons.append(f"D = {d:.3g} > {limits.max_disagreement:g}")
        if limits.max_rate_bound is not None and bound is not None and (
                bound > limits.max_rate_bound):
            reasons.append(f"{deviating} of {ok} differ from the reference: up to "
                           f"{bound:.1%} of requests may, above {limits.max_rate_bound:.1%}")
        if baseline_mode is not None and mode != baseline_mode:
            reasons.append("the most common output is not the baseline's, "
                           + _first_words_differ(baseline_mode, mode))
        if reasons:
            status = "violated"
    return CheckRow(
        name=name, n=n, n_ok=ok, n_failed=failed, failures=dict(failures), distinct=len(counts),
        disagreement_rate=d,
        disagreement_rate_ci=None if d_ci is None else ConfidenceInterval(
            low=d_ci[0], high=d_ci[1], level=0.95, method=d_ci[2]),
        deviating=deviating, rate_bound=bound, mode=mode, mode_count=mode_count,
        matches_baseline=None if baseline_mode is None or not ok else mode == baseline_mode,
        first_divergence_tokens=report.common_prefix_tokens,
        tokenization=report.tokenization, top_outputs=report.top_outputs[:_SHOWN],
        status=status, reasons=reasons)


class _Limits(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    max_disagreement: float | None
    max_rate_bound: float | None
    confidence: float
    max_failure_rate: float


def least_disagreement(counts: Sequence[int], remaining: int) -> float | None:
    """The smallest D a condition with output ``counts`` can end with after ``remaining``
    more requests: D is least when every one of them gives the most common output (or
    fails), so try each number of them that does. None when it cannot reach two outputs."""
    head, *rest = sorted(counts, reverse=True) or [0]
    values = [d for extra in range(remaining + 1)
              if (d := est.disagreement_rate([head + extra, *rest])) is not None]
    return min(values, default=None)


def _certain_violation(samples: Mapping[str, Sequence[Sample]], names: Sequence[str], n: int,
                       limits: _Limits) -> str | None:
    """Why the check has already failed whatever the remaining requests answer (a condition
    whose D can no longer fall to ``max_disagreement``, and whose row is violated now),
    else None."""
    if limits.max_disagreement is None:
        return None
    for name in names:
        arm = samples.get(name, ())
        counts = Counter(s.text or "" for s in arm if s.error is None)
        failed = len(arm) - counts.total()
        if counts.total() < 2 or failed > limits.max_failure_rate * len(arm):
            continue  # its row would not be measured now: no violation to report yet
        least = least_disagreement(list(counts.values()), n - len(arm))
        if least is not None and least > limits.max_disagreement:
            return (f"{printable(name)} varies beyond the bound whatever the rest answer "
                    f"(D = {est.disagreement_rate(list(counts.values())):.3g} now, at least "
                    f"{least:.3g} at n = {n}, above {limits.max_disagreement:g})")
    return None


def _evidence(rows: Sequence[CheckRow], limits: _Limits, baseline: str | None
              ) -> tuple[CheckOutcome, str]:
    violated = [r for r in rows if r.status == "violated"]
    if violated:
        return "failed", "; ".join(f"{r.summary()}: {'; '.join(r.reasons)}" for r in violated)
    missing = [r for r in rows if r.status == "not_measured"]
    if missing:
        return "could_not_measure", "; ".join(f"{printable(r.name)}: {'; '.join(r.reasons)}"
                                              for r in missing)
    total = rows[-1]
    ok = sum(r.n_ok for r in rows if r.name != ALL) if len(rows) > 1 else total.n_ok
    names = ", ".join(printable(r.name) for r in rows if r.name != ALL)
    bound = exact_upper_bound(total.deviating, ok, limits.confidence)
    if total.distinct == 1:
        head = f"all {ok} outputs identical across {names}"
    else:
        head = (f"{total.distinct} distinct outputs of {ok} across {names}, D = "
                f"{total.disagreement_rate:.3g} within the bound")
    if limits.max_disagreement is not None:
        head += f" (max disagreement {limits.max_disagreement:g})"
    tail = (f"; at most {bound:.1%} of requests differ from the reference "
            f"({limits.confidence:.0%} one-sided, {total.deviating} of {ok})")
    if limits.max_rate_bound is not None:
        tail += f", within {limits.max_rate_bound:.1%}"
    if baseline is not None:
        tail += f"; the most common output is the baseline's ({printable(baseline)})"
    return "passed", head + tail


# -- the baseline -------------------------------------------------------------------------

def _baseline(source: Any, request: Request, allow_different: bool
              ) -> tuple[str, str]:
    """(where it came from, its most common output)."""
    side = _Side(source, "baseline")
    if side.suite_ids is not None:
        raise ConfigError("baseline", "is a suite's run file; a check is of one request")
    differences = _field_differences(side.request(), _request_record(request))
    if differences and not allow_different:
        raise ConfigError("baseline", f"was run with another request: {differences[0]} (a is "
                          "the baseline); pass allow_different=True (--allow-different) to "
                          "check against it anyway")
    counts: Counter[str] = Counter(s.text or "" for s in side.samples() if s.error is None)
    if not counts:
        raise ConfigError("baseline", f"{side.path or 'the baseline'} has no successful output")
    mode = min(counts.items(), key=lambda kv: (-kv[1], kv[0]))[0]
    return side.path or "the given baseline", mode


# -- running ------------------------------------------------------------------------------

def _write(path: Path, request: Request, endpoint: Endpoint, names: Sequence[str],
           result: BatchEffectResult, n: int) -> None:
    """Every sample of the check into a fresh run file (a baseline for the next check):
    condition c's index i becomes c * n + i, its condition kept in ``Sample.condition``."""
    scratch = path.with_name(path.name + ".partial")
    scratch.unlink(missing_ok=True)
    run_file, _ = RunFile.open(scratch, request, n * len(names), endpoint, __version__)
    try:
        for position, name in enumerate(names):
            for sample in result.samples[name]:
                run_file.write(sample.model_copy(update={"index": position * n + sample.index}))
    finally:
        run_file.close()
    os.replace(scratch, path)


async def check(
    request: Request,
    n: int = 30,
    *,
    endpoint: Endpoint | None = None,
    conditions: Sequence[str] = ("sequential", "burst"),
    max_disagreement: float | None = None,
    max_rate_bound: float | None = None,
    confidence: float = 0.95,
    baseline: Any = None,
    allow_different: bool = False,
    max_failure_rate: float = 0.1,
    blocks: int | None = None,
    early_stop: bool = False,
    background_concurrency: int = 8,
    output: str | os.PathLike[str] | None = None,
    seed: int = 0,
    rate_limit: RateLimit | None = None,
    retry: RetryPolicy | None = None,
    timeouts: Timeouts | None = None,
    transport: Transport | None = None,
) -> CheckResult:
    """Is ``request`` answered reproducibly? ``n`` requests per condition, each condition
    held to the bounds (module doc); the outcome is ``CheckResult.outcome`` (and its
    ``exit_code``).

    ``max_disagreement`` bounds the observed D of each condition and of all of them
    pooled (default 0 unless ``max_rate_bound`` is given); ``max_rate_bound`` bounds the
    exact upper ``confidence`` bound on the share of requests that differ from the
    reference; ``baseline`` (a run file of the same request, or a ``SampleSet``) must have
    the same most common output. ``output`` writes every sample to a run file (replacing
    it) that a later check can use as its baseline. Everything is checked before anything
    is sent.

    ``blocks`` interleaves the conditions (default 1: a burst is n wide). ``early_stop=True``
    (default blocks: min(5, n)) stops after the first block at which the check has already
    failed whatever the remaining requests answer: a condition whose D cannot fall to
    ``max_disagreement`` any more, even were every remaining request to give its most common
    output. This is curtailment, not a test: the outcome is the one all n would have given
    (the violation it saw), so no error rate changes; a check that passes still sends all n.
    ``CheckResult.stopped_early`` says when it stopped and how many requests it saved.
    """
    request = _check_request(request)
    ConfigError.check_int("n", n, 2, " to compare outputs")
    names = [c.strip() for c in conditions]
    if not names or any(condition_named(name) is None for name in names):
        unknown = [name for name in names if condition_named(name) is None]
        raise ConfigError("conditions", f"unknown {unknown or 'none given'}; e.g. "
                          "sequential, burst, loaded, concurrency=4")
    if len(set(names)) != len(names):
        raise ConfigError("conditions", f"a condition is repeated: {names}")
    for field, value in (("max_disagreement", max_disagreement),
                         ("max_failure_rate", max_failure_rate)):
        if value is not None and not 0.0 <= value <= 1.0:
            raise ConfigError(field, f"must be between 0 and 1, got {value!r}")
    if not 0.5 <= confidence < 1.0:
        raise ConfigError("confidence", f"must be at least 0.5 and below 1, got {confidence!r}")
    if max_rate_bound is not None:
        needed = samples_to_bound(max_rate_bound, confidence)
        if n < needed:
            raise ConfigError("n", f"{n} per condition can never show a rate of at most "
                              f"{max_rate_bound:.1%} (0 of {n} differing still allows "
                              f"{exact_upper_bound(0, n, confidence):.1%} at "
                              f"{confidence:.0%}); use n >= {needed}")
    if max_disagreement is None and max_rate_bound is None:
        max_disagreement = 0.0
    limits = _Limits(max_disagreement=max_disagreement, max_rate_bound=max_rate_bound,
                     confidence=confidence, max_failure_rate=max_failure_rate)
    where, baseline_mode = (None, None) if baseline is None else _baseline(
        baseline, request, allow_different)
    if output is not None and where is not None and _same_path(output, where):
        raise ConfigError("output", "is the baseline: the check would overwrite it")
    endpoint = endpoint_or_default(endpoint)
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    clock = time.perf_counter()
    common = {"request": request, "endpoint": endpoint.label, "n": n, "conditions": names,
              "baseline": where, "max_disagreement": max_disagreement,
              "max_rate_bound": max_rate_bound, "confidence": confidence,
              "max_failure_rate": max_failure_rate, "started_at": started}
    async with ClientPool(endpoint, concurrency=1, rate_limit=rate_limit, retry=retry,
                          timeouts=timeouts, transport=transport) as pool:
        first = await pool.send(pool.prepare(request, "preflight"), 0)
    if first.error is not None:
        why = (f"the first request failed: {first.error.kind}"
               + (f" {first.error.status}" if first.error.status else "")
               + (f": {printable(first.error.message)[:200]}" if first.error.message else ""))
        return CheckResult(outcome="could_not_measure", evidence=why, rows=[],
                           reference=None, reference_source="", seconds=time.perf_counter()
                           - clock, **common)
    if blocks is None:
        blocks = min(5, n) if early_stop else 1
    looks: list[str] = []

    def decided(so_far: Mapping[str, Sequence[Sample]]) -> bool:
        looks.append("")
        why = _certain_violation(so_far, names, n, limits)
        if why is not None:
            looks[-1] = why
        return why is not None

    result = await batch_effect(
        request, n, endpoint=endpoint, conditions=names, blocks=blocks, calibration=False,
        background_concurrency=background_concurrency, seed=seed, rate_limit=rate_limit,
        retry=retry, timeouts=timeouts, transport=transport, server_info=False,
        stop_when=decided if early_stop else None)
    samples = {name: list(result.samples[name]) for name in names}
    pooled = [s for name in names for s in samples[name]]
    counts = Counter(s.text or "" for s in pooled if s.error is None)
    if baseline_mode is not None:
        reference, source = baseline_mode, f"the baseline's most common output ({where})"
    elif counts:
        reference = min(counts.items(), key=lambda kv: (-kv[1], kv[0]))[0]
        source = "the most common output over all conditions"
    else:
        reference, source = None, "none: no successful output"
    rows = [_row(name, samples[name], result.conditions[name], n, reference, baseline_mode,
                 limits) for name in names]
    if len(names) > 1:
        from ._analysis.collect import VarianceCollector

        everything = VarianceCollector(grouped=False)
        everything.update(pooled)
        rows.append(_row(ALL, pooled, everything.report(tree=False), n * len(names),
                         reference, baseline_mode, limits))
    outcome, evidence = _evidence(rows, limits, where)
    stopped = None
    if looks and looks[-1]:
        sent = len(pooled)
        stopped = (f"stopped after block {len(looks)} of {blocks}: {looks[-1]}; {sent} of "
                   f"{n * len(names)} requests sent, {n * len(names) - sent} saved")
    if output is not None:
        _write(Path(output), request, endpoint, names, result, n)
    return CheckResult(outcome=outcome, evidence=evidence, rows=rows, reference=reference,
                       reference_source=source, seconds=time.perf_counter() - clock,
                       experiment=result, stopped_early=stopped, **common)


@functools.wraps(check)
def check_sync(*args: Any, **kwargs: Any) -> CheckResult:
    """``check`` for code without a running event loop (tests, scripts)."""
    result: CheckResult = run_sync(check, *args, **kwargs)
    return result


# -- JUnit XML ------------------------------------------------------------------------------

def _junit(result: CheckResult, path: str | os.PathLike[str] | None) -> str:
    failures = sum(r.status == "violated" for r in result.rows)
    errors = sum(r.status == "not_measured" for r in result.rows)
    cases = result.rows or []
    if not cases:  # the preflight failed: one error case says why
        errors = 1
    tests = max(1, len(cases))
    suite_name = f"llmvariance check: {printable(result.request.model)} at {result.endpoint}"
    root = ET.Element("testsuites", name="llmvariance check", tests=str(tests),
                      failures=str(failures), errors=str(errors),
                      time=f"{result.seconds:.3f}")
    suite = ET.SubElement(root, "testsuite", name=printable(suite_name), tests=str(tests),
                          failures=str(failures), errors=str(errors), skipped="0",
                          time=f"{result.seconds:.3f}", timestamp=result.started_at)
    properties = ET.SubElement(suite, "properties")
    for name, value in (("model", result.request.model), ("endpoint", result.endpoint),
                        ("n", result.n), ("conditions", ",".join(result.conditions)),
                        ("max_disagreement", result.max_disagreement),
                        ("max_rate_bound", result.max_rate_bound),
                        ("confidence", result.confidence), ("baseline", result.baseline),
                        ("outcome", result.outcome), ("llmvariance", __version__)):
        if value is not None:
            ET.SubElement(properties, "property", name=name, value=printable(str(value)))
    if not cases:
        case = ET.SubElement(suite, "testcase", classname="llmvariance.check",
                             name="preflight", time="0")
        error = ET.SubElement(case, "error", message=printable(result.evidence),
                              type="could not measure")
        error.text = printable(result.evidence, lines=True)
    for row in cases:
        case = ET.SubElement(suite, "testcase", classname="llmvariance.check",
                             name=printable(row.name), time="0")
        if row.status == "violated":
            failure = ET.SubElement(case, "failure", message=printable(
                f"{row.summary()}: {'; '.join(row.reasons)}"), type="not reproducible")
            failure.text = printable(row.details(), lines=True)
        elif row.status == "not_measured":
            error = ET.SubElement(case, "error", message=printable(
                f"{row.name}: {'; '.join(row.reasons)}"), type="could not measure")
            error.text = printable(row.details(), lines=True)
        else:
            out = ET.SubElement(case, "system-out")
            bound = "" if row.rate_bound is None else (
                f"; at most {row.rate_bound:.1%} of requests differ from the reference "
                f"({result.confidence:.0%})")
            out.text = printable(row.summary() + bound)
    ET.indent(root)
    text = ET.tostring(root, encoding="unicode", xml_declaration=False)
    document = '<?xml version="1.0" encoding="UTF-8"?>\n' + text + "\n"
    if path is not None:
        try:
            Path(path).write_text(document, encoding="utf-8")
        except OSError as exc:
            raise ConfigError("junit", f"cannot write {path}: {exc.strerror}") from None
    return document

