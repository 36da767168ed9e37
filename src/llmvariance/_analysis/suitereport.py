"""The suite report: how reproducible a model is across many prompts, N samples each.

Definitions (N = the samples asked for per prompt):

- A prompt is *evaluable* when all N of its samples succeeded. The suite-level figures
  are over the evaluable prompts only, so a prompt is never called reproducible on fewer
  samples than the others; prompts with failures are listed in ``incomplete`` and still
  get their own row.
- A prompt's outputs are compared as ``Comparison.key`` gives them: as returned, or
  whitespace-normalised when ``normalized``. ``distinct`` counts distinct compared texts;
  ``agreement_rate`` is sum c_k(c_k-1) / (n(n-1)) over their counts.
- ``tar_raw`` (TARr@N): the fraction of evaluable prompts whose N outputs all agree.
- ``tar_raw_ci`` / ``tar_answer_ci``: their Wilson intervals over the evaluable prompts
  (exact one-sided when none or all agree; a percentile bootstrap over prompts would
  collapse to [1, 1] when every prompt agrees).
- ``tar_answer`` (TARa@N): the fraction of evaluable prompts whose N answers all agree,
  *no answer* (unparseable) counting as one answer value of its own: N unparseable
  outputs agree, a mix of unparseable and parsed outputs does not. Since each answer is a
  function of the compared text, a prompt whose outputs all agree has answers that all
  agree, so ``tar_answer >= tar_raw`` always. ``unparseable`` counts outputs without an
  answer, so that a TARa@N propped up by outputs with no answer is visible;
  ``answer_failures`` says why for those the extractor failed on (a regex that timed
  out, a function that raised: see ``answers``).
- ``distinct_mean`` / ``distinct_median`` / ``agreement_mean`` / ``distinct_counts``:
  over evaluable prompts (``agreement_mean`` is None when N < 2).
- ``prompts``: every prompt, most varying first: more distinct outputs first, then lower
  agreement, then id.
- ``accuracy`` (with expected answers): how much rerunning the eval moves its score — the
  accuracy of each rerun, best- and worst-possible accuracy, the prompts whose correctness
  flips (``accuracy`` module); ``PromptStats.correct`` counts each prompt's right answers.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Iterable, Mapping

from pydantic import BaseModel, ConfigDict, Field

from .._errors import ConfigError
from .._sample import Sample
from . import estimates as est
from . import metrics as m
from .accuracy import Expected, ExpectedValue, RerunAccuracy, RerunGrid, rerun_accuracy
from .answers import AnswerSpec, Comparison, OutputTally
from .collect import VarianceCollector
from .display import Displayed, fmt
from .printable import printable
from .report import ConfidenceInterval, Row, VarianceReport

__all__ = ["AnswerCount", "DistinctCount", "PromptAnswers", "PromptStats", "SuiteReport",
           "analyze_suite", "checked_expected", "suite_report", "tar_interval"]

_FROZEN = ConfigDict(frozen=True, extra="forbid")
_TOP_ANSWERS = 5
_TEXT_ROWS = 20
_MAX_REASONS = 10
_OTHER_REASONS = "(other reasons)"


class AnswerCount(Row):
    """One answer and how many outputs gave it; ``answer`` None is *no answer*."""

    model_config = _FROZEN

    answer: str | None
    count: int


class PromptAnswers(Row):
    """One prompt's answers over its ok outputs, *no answer* counting as one value."""

    model_config = _FROZEN

    distinct: int
    agreement_rate: float | None
    """sum c_k(c_k-1) / (n(n-1)) over answer values; None when n < 2."""
    all_agree: bool
    """Exactly one answer value."""
    unparseable: int
    """Outputs with no answer."""
    failures: dict[str, int] = Field(default_factory=dict)
    """Outputs the extractor failed on, by reason (a part of ``unparseable``)."""
    top: list[AnswerCount]
    """The most common answer values, most frequent first (at most five)."""


class PromptStats(Row):
    """One prompt of a suite, over its ok samples."""

    model_config = _FROZEN

    id: str
    n_samples: int
    n_ok: int
    n_failed: int
    evaluable: bool
    """All N samples succeeded: the prompt counts towards the suite's figures."""
    distinct: int
    """Distinct outputs as compared (whitespace-normalised when the suite says so)."""
    agreement_rate: float | None
    all_agree: bool
    """Exactly one distinct output (False with no ok output)."""
    first_divergence_tokens: int | None
    """From the prompt's ``VarianceReport``: over the texts as returned, never normalised."""
    answers: PromptAnswers | None
    """None when the suite has no answer extractor."""
    correct: int | None = None
    """Ok samples whose answer matches the prompt's expected answer; None without one."""


class DistinctCount(Row):
    """``prompts`` evaluable prompts had ``distinct`` distinct outputs."""

    model_config = _FROZEN

    distinct: int
    prompts: int


class SuiteReport(Displayed, BaseModel):
    """How N answers to each of many prompts differ; definitions in the module docstring."""

    model_config = _FROZEN

    n: int
    """Samples asked for per prompt (the N of TARr@N)."""
    n_prompts: int
    n_evaluable: int
    incomplete: list[str]
    """Ids of the prompts with fewer than N ok samples, in suite order."""
    normalized: bool
    """Outputs were compared whitespace-normalised."""
    answer: str | None
    """The answer extractor, e.g. ``regex '(\\d+)'``; None when there is none."""
    tar_raw: float | None
    """TARr@N; None when no prompt is evaluable."""
    tar_answer: float | None
    """TARa@N; None without an extractor or when no prompt is evaluable."""
    tar_raw_ci: ConfidenceInterval | None = None
    """TARr@N's 95 % interval over the evaluable prompts (Wilson)."""
    tar_answer_ci: ConfidenceInterval | None = None
    """TARa@N's 95 % interval over the evaluable prompts (Wilson)."""
    distinct_mean: float | None
    distinct_median: float | None
    agreement_mean: float | None
    distinct_counts: list[DistinctCount]
    """How many evaluable prompts had each distinct count, fewest distinct first."""
    answer_distinct_mean: float | None
    answer_agreement_mean: float | None
    unparseable: int
    """Ok outputs without an answer, over every prompt (0 without an extractor)."""
    answer_failures: dict[str, int] = {}
    """Ok outputs the extractor failed on, by reason, over every prompt: the
    ``_MAX_REASONS`` most common reasons, the others summed under ``"(other reasons)"``."""
    prompts: list[PromptStats]
    """Every prompt, most varying first."""
    accuracy: RerunAccuracy | None = None
    """Accuracy under reruns, with expected answers (None without them)."""

    @property
    def varying(self) -> list[str]:
        """Ids of the prompts whose outputs do not all agree, most varying first."""
        return [p.id for p in self.prompts if p.distinct > 1]

    def to_text(self) -> str:
        """A human-readable summary for a terminal, naming the varying prompts."""
        return "\n".join(_lines(self))

    def __str__(self) -> str:
        return self.to_text()

    def _summary(self) -> str:
        answers = "" if self.answer is None else f" TARa@{self.n}={fmt(self.tar_answer)}"
        return (f"prompts={self.n_prompts} n={self.n} TARr@{self.n}={fmt(self.tar_raw)}"
                f"{answers} varying={len(self.varying)}")


def _prompt(request_id: str, report: VarianceReport, tally: OutputTally, n: int,
            grades: RerunGrid | None) -> PromptStats:
    if tally.n != report.n_ok:
        raise ValueError(f"{request_id}: the tally counted {tally.n} outputs but the report "
                         f"{report.n_ok} ok samples")
    counts = tally.counts
    answers = None
    if tally.comparison.has_answers:
        values = tally.answer_value_counts
        ranked: list[tuple[str | None, int]] = sorted(tally.answers.items(),
                                                      key=lambda kv: (-kv[1], kv[0]))
        if tally.unparseable:
            ranked.append((None, tally.unparseable))
            ranked.sort(key=lambda kv: -kv[1])  # stable: None after answers as common
        answers = PromptAnswers(
            distinct=len(values), agreement_rate=m.agreement_rate(values),
            all_agree=len(values) == 1, unparseable=tally.unparseable,
            failures=_bounded(tally.failures),
            top=[AnswerCount(answer=a, count=c) for a, c in ranked[:_TOP_ANSWERS]])
    return PromptStats(
        id=request_id, n_samples=report.n_samples, n_ok=report.n_ok, n_failed=report.n_failed,
        evaluable=report.n_ok == n and report.n_failed == 0, distinct=len(counts),
        agreement_rate=m.agreement_rate(counts), all_agree=len(counts) == 1,
        first_divergence_tokens=report.common_prefix_tokens, answers=answers,
        correct=None if grades is None else grades.correct(request_id))


def _bounded(reasons: Counter[str]) -> dict[str, int]:
    """The most common reasons, the rest summed under one key: a function whose message
    names each output cannot grow the report with the outputs."""
    if len(reasons) <= _MAX_REASONS:
        return dict(reasons.most_common())
    kept = reasons.most_common(_MAX_REASONS - 1)
    return {**dict(kept), _OTHER_REASONS: sum(reasons.values()) - sum(c for _, c in kept)}


def _reasons(prompts: list[PromptStats]) -> Counter[str]:
    total: Counter[str] = Counter()
    for p in prompts:
        if p.answers is not None:
            total.update(p.answers.failures)
    return total


def tar_interval(agreeing: int, prompts: int, level: float = 0.95) -> ConfidenceInterval | None:
    """TARr@N's (or TARa@N's) interval over prompts: the Wilson interval of ``agreeing`` of
    ``prompts`` (exact one-sided at none or all). A percentile bootstrap over prompts would
    collapse to [1, 1] when every prompt agrees; this does not."""
    if prompts == 0:
        return None
    low, high, method = est.rate_interval(agreeing, prompts, level)
    return ConfidenceInterval(low=low, high=high, level=level, method=method)


def _mean(values: list[float]) -> float | None:
    return statistics.fmean(values) if values else None


def suite_report(entries: Iterable[tuple[str, VarianceReport, OutputTally]], *, n: int,
                 grades: RerunGrid | None = None, seed: int = 0) -> SuiteReport:
    """The suite report of each prompt's id, ``VarianceReport`` and ``OutputTally`` of
    its ok outputs, all tallied with the same comparison; ``n`` is N. ``grades`` (each
    sample right or wrong) adds the accuracy under reruns, its bootstrap seeded by
    ``seed``."""
    ConfigError.check_int("n", n)
    prompts: list[PromptStats] = []
    settings: set[tuple[bool, str | None]] = set()
    for request_id, report, tally in entries:
        prompts.append(_prompt(request_id, report, tally, n, grades))
        settings.add((tally.comparison.normalize, tally.comparison.description))
    ids = Counter(p.id for p in prompts)
    if len(ids) != len(prompts):
        raise ValueError(f"repeated prompt ids: {sorted(k for k, c in ids.items() if c > 1)}")
    if len(settings) > 1:
        raise ValueError("the tallies were made with different comparisons")
    normalized, answer = settings.pop() if settings else (False, None)
    done = [p for p in prompts if p.evaluable]
    distinct = [p.distinct for p in done]
    agreements = [p.agreement_rate for p in done if p.agreement_rate is not None]
    graded = [p.answers for p in done if p.answers is not None]
    answer_agreements = [a.agreement_rate for a in graded if a.agreement_rate is not None]
    return SuiteReport(
        n=n, n_prompts=len(prompts), n_evaluable=len(done),
        incomplete=[p.id for p in prompts if not p.evaluable],
        normalized=normalized, answer=answer,
        tar_raw=sum(p.all_agree for p in done) / len(done) if done else None,
        tar_answer=(sum(a.all_agree for a in graded) / len(done)
                    if done and answer is not None else None),
        tar_raw_ci=tar_interval(sum(p.all_agree for p in done), len(done)),
        tar_answer_ci=(tar_interval(sum(a.all_agree for a in graded), len(done))
                       if answer is not None else None),
        distinct_mean=_mean([float(d) for d in distinct]),
        distinct_median=float(statistics.median(distinct)) if distinct else None,
        agreement_mean=_mean(agreements),
        distinct_counts=[DistinctCount(distinct=d, prompts=c)
                         for d, c in sorted(Counter(distinct).items())],
        answer_distinct_mean=_mean([float(a.distinct) for a in graded]),
        answer_agreement_mean=_mean(answer_agreements),
        unparseable=sum(p.answers.unparseable for p in prompts if p.answers is not None),
        answer_failures=_bounded(_reasons(prompts)),
        prompts=sorted(prompts, key=lambda p: (-p.distinct, _or_one(p.agreement_rate), p.id)),
        accuracy=None if grades is None else rerun_accuracy(grades, seed=seed),
    )


def _or_one(value: float | None) -> float:
    return 1.0 if value is None else value


def analyze_suite(outputs: Mapping[str, Iterable[str | Sample]], *, n: int | None = None,
                  answer: AnswerSpec | None = None, normalize: bool = False,
                  expected: Mapping[str, ExpectedValue] | Expected | None = None
                  ) -> SuiteReport:
    """The suite report of outputs a user already has: prompt id → strings or ``Sample``s.

    ``n`` (N) defaults to the largest number of items given for one prompt. With
    ``expected`` (prompt id → its expected answer) and ``answer``, each output is right or
    wrong and the report adds the accuracy under reruns: rerun k is a prompt's k-th item
    (a ``Sample``'s ``index``).
    """
    comparison = Comparison(answer, normalize=normalize)
    grading = checked_expected(expected, comparison, list(outputs))
    entries = []
    answers: list[tuple[str, int, bool | None]] = []
    for request_id, given in outputs.items():
        items = list(given)
        collector, tally = VarianceCollector(grouped=False), comparison.tally()
        collector.update(items)
        for position, item in enumerate(items):
            if isinstance(item, str):
                found, index = tally.add(item), position
            elif item.error is None:
                found, index = tally.add(item.text or ""), item.index
            else:
                continue
            if grading is not None:
                answers.append((request_id, index, grading.grade(request_id, found)))
        entries.append((request_id, collector.report(tree=False), tally))  # numbers only
    if n is None:
        n = max((e[1].n_samples for e in entries), default=1)
    grades = None
    if grading is not None:
        grades = RerunGrid(list(outputs), n, grading)
        for request_id, index, right in answers:
            grades.record(request_id, index, right)
    return suite_report(entries, n=n, grades=grades)


def checked_expected(expected: Mapping[str, ExpectedValue] | Expected | None,
                     comparison: Comparison, ids: Iterable[str]) -> Expected | None:
    """``expected`` as ``Expected``, checked against the suite: it needs an answer
    extractor, and at least one of the suite's ids."""
    if expected is None:
        return None
    found = Expected.of(expected)
    if not comparison.has_answers:
        raise ConfigError("expected", "needs answer= (a regex, a JsonPointer or a function) "
                          "to tell each output's answer")
    if not any(rid in found for rid in ids):
        shown = ", ".join(repr(rid) for rid in found.ids()[:3])
        raise ConfigError("expected", "none of the suite's prompt ids has an expected answer"
                          + (f" (its ids are like {shown})" if shown else ""))
    return found


# -- text ---------------------------------------------------------------------------------

def _fmt(value: float | None, spec: str = ".3f") -> str:
    return "n/a" if value is None else format(value, spec)


def _lines(r: SuiteReport) -> list[str]:
    failed = ""
    if r.incomplete:
        named = ", ".join(printable(i) for i in r.incomplete[:5])
        named += ", ..." if len(r.incomplete) > 5 else ""
        failed = f"; {len(r.incomplete)} with failures: {named}"
    compared = " (whitespace normalised)" if r.normalized else ""
    agreeing = sum(p.all_agree for p in r.prompts if p.evaluable)
    lines = [
        f"prompts           {r.n_prompts} ({r.n_evaluable} with all {r.n} samples ok{failed})",
        f"TARr@{r.n:<12} {_fmt(r.tar_raw)}{_interval(r.tar_raw_ci)}  ({agreeing} of "
        f"{r.n_evaluable} prompts: all outputs agree{compared})",
    ]
    if r.answer is not None:
        agreed = sum(p.answers.all_agree for p in r.prompts
                     if p.evaluable and p.answers is not None)
        lines.append(f"TARa@{r.n:<12} {_fmt(r.tar_answer)}{_interval(r.tar_answer_ci)}  "
                     f"({agreed} of {r.n_evaluable} prompts: all answers agree; answer = "
                     f"{printable(r.answer)})")
        lines.append(f"unparseable       {r.unparseable} outputs without an answer")
        lines += [f"  x{count:<5} {printable(reason)}"
                  for reason, count in r.answer_failures.items()]
    if r.accuracy is not None:
        lines += r.accuracy.lines()
    spread = ", ".join(f"{c.distinct}: {c.prompts}" for c in r.distinct_counts)
    lines += [
        f"distinct outputs  mean {_fmt(r.distinct_mean, '.2f')}, median "
        f"{_fmt(r.distinct_median, 'g')}  (distinct: prompts  {spread or 'none'})",
        f"agreement rate    mean {_fmt(r.agreement_mean)}",
    ]
    if r.answer is not None:
        lines.append(f"answers           mean distinct {_fmt(r.answer_distinct_mean, '.2f')}, "
                     f"mean agreement {_fmt(r.answer_agreement_mean)}")
    shown = [p for p in r.prompts if p.distinct > 1 or not p.evaluable]
    if not shown:
        return [*lines, "every prompt: all outputs agree"]
    lines.append("varying or incomplete prompts, most varying first:")
    header = f"  {'id':<20} {'ok':>5} {'distinct':>8} {'agreement':>9} {'first div':>9}"
    if r.answer is not None:
        header += f" {'answers':>7} {'ans agree':>9} {'no answer':>9}  top answer"
    lines.append(header)
    lines += [_row(p, r.n) for p in shown[:_TEXT_ROWS]]
    if len(shown) > _TEXT_ROWS:
        lines.append(f"  ... and {len(shown) - _TEXT_ROWS} more")
    return lines


def _interval(ci: ConfidenceInterval | None) -> str:
    return "" if ci is None else f" {ci}"


def _row(p: PromptStats, n: int) -> str:
    first = "none" if p.first_divergence_tokens is None else str(p.first_divergence_tokens)
    ok = f"{p.n_ok}/{n}"
    row = (f"  {printable(p.id)[:20]:<20} {ok:>5} {p.distinct:>8} {_fmt(p.agreement_rate):>9} "
           f"{first:>9}")
    a = p.answers
    if a is not None:
        top = "n/a" if not a.top else (
            "(no answer)" if a.top[0].answer is None else repr(a.top[0].answer[:30]))
        row += (f" {a.distinct:>7} {_fmt(a.agreement_rate):>9} {a.unparseable:>9}  {top}"
                + (f" x{a.top[0].count}" if a.top else ""))
    return row
