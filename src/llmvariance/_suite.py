"""Suites: many requests, N samples each, through one pool, and how reproducible they are.

``sample_suite`` sends every request ``n`` times, interleaved (index 0 of every request,
then index 1 of every request, ...), so each prompt meets comparable server load; one
run file holds the whole suite and resumes exactly the (request, index) pairs missing or
failed. The result has one entry per request and a ``SuiteReport`` (TARr@N, TARa@N).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    ModelWrapValidatorHandler,
    PrivateAttr,
    computed_field,
    model_validator,
)

from ._analysis.accuracy import Expected, ExpectedValue, RerunGrid
from ._analysis.answers import AnswerSpec, Comparison, OutputTally, comparison_record
from ._analysis.collect import VarianceCollector
from ._analysis.display import Displayed
from ._analysis.report import VarianceReport
from ._analysis.suitereport import SuiteReport, checked_expected, suite_report
from ._client.endpoint import Endpoint
from ._client.pool import ClientPool, PreparedCall
from ._client.ratelimit import RateLimit
from ._client.retry import RetryPolicy
from ._client.transport import DEFAULT_MAX_RESPONSE_BYTES, Timeouts, Transport
from ._entries import SuiteEntries
from ._errors import ConfigError
from ._kept import KeptSamples
from ._progress import Progress
from ._request import Request
from ._runs.expected import read_expected
from ._runs.runfile import RunContents, RunFile
from ._runs.shard import Shard, ShardSpec
from ._sample import Sample
from ._sampler import _check_request, _Options, checked_options, drive, pool_for, run_sync
from ._version import __version__

__all__ = ["SuiteEntry", "SuiteResult", "sample_suite", "sample_suite_sync"]

Requests = Mapping[str, Request] | Iterable[tuple[str, Request]] | Iterable[Request]
ExpectedAnswers = Mapping[str, ExpectedValue] | Expected | str | os.PathLike[str]
"""Expected answers: a mapping of prompt id to answer(s), or a file (``read_expected``)."""


def expected_answers(expected: ExpectedAnswers | None, requests: object = None
                     ) -> Expected | None:
    """``expected`` read (a path) and checked; None given, the ``expected`` answers that
    ``read_suite`` found in the suite's own records, if any."""
    if expected is None:
        found = getattr(requests, "expected", None)
        return Expected(found) if found else None
    if isinstance(expected, str | os.PathLike):
        return Expected(read_expected(expected))
    return Expected.of(expected)


class SuiteEntry(BaseModel):
    """One request of a suite: its id, its samples (ordered by index) and its report.

    ``report`` is made from the prompt's collector when it is first read (and kept from
    then on): a 100,000-prompt suite holds 100,000 small collectors, not 100,000 reports
    of ~7 KB each. It is part of the JSON like a field, and ``SuiteEntry(...,
    report=...)`` takes one as given. ``SuiteResult.entries`` holds its entries in
    columns (``SuiteEntries``) and makes each when read.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    request: Request
    samples: KeptSamples
    """Reads as a list of ``Sample`` (held in columns); empty with ``keep_samples=False``."""
    _report: VarianceReport | VarianceCollector | None = PrivateAttr(default=None)

    @model_validator(mode="wrap")
    @classmethod
    def _given_report(cls, data: Any, handler: ModelWrapValidatorHandler[SuiteEntry]
                      ) -> SuiteEntry:
        report: VarianceReport | None = None
        if isinstance(data, Mapping) and "report" in data:
            given = data["report"]
            report = (given if isinstance(given, VarianceReport)
                      else VarianceReport.model_validate(given))
            data = {k: v for k, v in data.items() if k != "report"}
        entry = handler(data)
        if report is not None:
            entry._report = report
        return entry

    @computed_field(repr=False)  # type: ignore[prop-decorator]
    @property
    def report(self) -> VarianceReport:
        """How this request's outputs varied (``VarianceReport``)."""
        made = self._report
        if isinstance(made, VarianceCollector):
            made = self._report = made.report()  # the collector is dropped with it
        if made is None:
            raise ValueError(f"suite entry {self.id!r} has no report")
        return made

    def __eq__(self, other: object) -> bool:
        # by value, the report included: the entries of a result are made when read, so
        # each read is a new object with a collector of its own
        if not isinstance(other, SuiteEntry):
            return NotImplemented
        return ((self.id, self.request, self.samples) == (other.id, other.request,
                                                          other.samples)
                and self.report == other.report)

    __hash__ = BaseModel.__hash__

    @classmethod
    def _of(cls, rid: str, request: Request, samples: KeptSamples,
            report: VarianceCollector | VarianceReport | None) -> SuiteEntry:
        entry = cls(id=rid, request=request, samples=samples)
        entry._report = report
        return entry


class SuiteResult(Displayed, BaseModel):
    """What ``sample_suite`` returns: an entry per request, in suite order, and the
    suite's report."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    endpoint: str
    n: int
    entries: SuiteEntries
    """Reads as a list of ``SuiteEntry`` (held in columns, each made when read)."""
    report: SuiteReport
    kept_samples: bool = True
    shard: Shard | None = None
    """The shard this run sent (``sample_suite(..., shard=(k, K))``): each entry then holds
    that shard's pairs only; ``lv.merge_runs`` joins the shards' files."""
    _grades: RerunGrid | None = PrivateAttr(default=None)
    stopped_early: str | None = None
    """As ``SampleSet.stopped_early``: the first requests all failed with one error waiting
    cannot fix, so the rest were not sent (the run file resumes them)."""

    def __getitem__(self, request_id: str) -> SuiteEntry:
        return self.entries.find(request_id)

    def to_text(self) -> str:
        return self.report.to_text()

    def _summary(self) -> str:
        # one line: asyncio and debuggers repr a result, and 100,000 entries would make
        # every one of their reports
        return (f"{self.endpoint} n={self.n} requests={len(self.entries)} "
                f"tar_raw={self.report.tar_raw} tar_answer={self.report.tar_answer}"
                + (" stopped early" if self.stopped_early else ""))


def _suite(requests: Requests) -> list[tuple[str, Request]]:
    """(id, request) pairs: a mapping's keys, given pairs, or positions "0", "1", ..."""
    if isinstance(requests, str | bytes) or not isinstance(requests, Iterable):
        raise ConfigError("requests", "must be requests, (id, request) pairs or a mapping "
                          f"of id to request; got {type(requests).__name__}")
    items: Iterable[Any] = requests.items() if isinstance(requests, Mapping) else requests
    suite: list[tuple[str, Request]] = []
    for position, item in enumerate(items):
        rid, request = item if isinstance(item, tuple) else (str(position), item)
        if not isinstance(rid, str) or not rid:
            raise ConfigError("requests", f"item {position}: the id must be a non-empty "
                              f"string, got {rid!r}")
        try:
            suite.append((rid, _check_request(request)))
        except ConfigError as exc:
            raise ConfigError("requests", f"item {position} ({rid}): {exc}") from None
    if not suite:
        raise ConfigError("requests", "the suite is empty")
    seen = Counter(rid for rid, _ in suite)
    if len(seen) != len(suite):
        twice = sorted(rid for rid, count in seen.items() if count > 1)
        shown = ", ".join(twice[:10]) + (f" and {len(twice) - 10} more" if len(twice) > 10
                                         else "")
        raise ConfigError("requests", f"ids must be unique; repeated: {shown}")
    return suite


async def sample_suite(
    requests: Requests,
    n: int,
    *,
    endpoint: Endpoint | None = None,
    pool: ClientPool | None = None,
    concurrency: int | None = None,
    rate_limit: RateLimit | None = None,
    retry: RetryPolicy | None = None,
    timeouts: Timeouts | None = None,
    transport: Transport | None = None,
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    output: str | os.PathLike[str] | None = None,
    allow_endpoint_change: bool = False,
    progress: Callable[[Progress], Any] | None = None,
    on_sample: Callable[[Sample], Any] | None = None,
    keep_samples: bool = True,
    answer: AnswerSpec | None = None,
    normalize: bool = False,
    expected: ExpectedAnswers | None = None,
    shard: ShardSpec | None = None,
) -> SuiteResult:
    """Send each of ``requests`` ``n`` times through one pool; report per request and overall.

    ``requests``: a mapping of id to request, ``(id, request)`` pairs (``read_suite``
    gives them), or plain requests (ids "0", "1", ...). They may mix APIs and models; one
    endpoint serves them all. Work is interleaved across requests, so every prompt sees
    comparable load. ``answer`` (a regex, a ``JsonPointer`` or a callable) adds
    answer-level agreement and TARa@N; ``normalize`` compares outputs with surrounding
    whitespace stripped and runs of whitespace collapsed (the report says so).
    ``expected`` (prompt id → expected answer, or a file of them; default: the answers
    the suite's own records carry, ``read_suite(...).expected``, when ``answer`` is
    given) grades each sample right
    or wrong by its answer, and the report adds the accuracy under reruns
    (``SuiteReport.accuracy``: rerun k is the k-th sample of every prompt).

    The pool arguments, ``output`` (one run file for the suite: resuming sends only
    missing or failed (request, index) pairs and refuses a different suite), the hooks
    and ``keep_samples`` work as in ``sample_many``; every sample carries its
    ``request_id``. Everything is checked before anything is sent.

    ``shard=(k, K)`` sends only shard k's pairs of K: pair (request position r, index i)
    is shard (r + i) mod K's, so every request's samples spread over every shard. A
    ``rate_limit`` is divided among the K shards unless ``lv.Shard(..., limits=
    "per_shard")``; the run file names the shard and ``lv.merge_runs`` joins the K files
    into exactly the run one process would have written.
    """
    suite = _suite(requests)
    n = ConfigError.check_int("n", n)
    comparison = Comparison(answer, normalize=normalize)
    # the suite's own answers are used when there is an extractor to compare them with
    grading = checked_expected(
        expected_answers(expected, requests if answer is not None else None), comparison,
        (rid for rid, _ in suite))
    options = checked_options(output, allow_endpoint_change, on_sample, progress,
                              keep_samples, None, shard)
    if options.shard is not None:
        rate_limit = options.shard.rate_limit(rate_limit)
    async with pool_for(pool, concurrency, endpoint, rate_limit, retry, timeouts, transport,
                        max_response_bytes) as (used, workers):
        return await _run_suite(used, suite, n, workers, options, comparison, grading,
                                comparison_record(answer, normalize))


class _Tracks:
    """Per request: the collector, the output tally and (maybe) the samples by index."""

    __slots__ = ("collector", "samples", "tally")

    def __init__(self, comparison: Comparison, keep: int = 0) -> None:
        self.collector = VarianceCollector()
        self.tally: OutputTally = comparison.tally()
        self.samples = KeptSamples(keep) if keep else None  # 0.7 KB even when empty

    def add(self, sample: Sample, keep: bool, grades: _Grading | None = None) -> None:
        if keep and self.samples is not None:
            self.samples.put(sample.index, sample)
        self.collector.add(sample)
        answer = None if sample.error is not None else self.tally.add(sample.text or "")
        if grades is not None:
            grades.record(sample, answer)


class _Grading:
    """Each sample right or wrong against its prompt's expected answer, in a grid of one
    byte per (prompt, rerun)."""

    __slots__ = ("expected", "grid")

    def __init__(self, expected: Expected, ids: Sequence[str], n: int) -> None:
        self.expected = expected
        self.grid = RerunGrid(ids, n, expected)

    def record(self, sample: Sample, answer: str | None) -> None:
        rid = sample.request_id or ""
        right = (None if sample.error is not None
                 else self.expected.grade(rid, answer))
        self.grid.record(rid, sample.index, right)


async def _run_suite(pool: ClientPool, suite: Sequence[tuple[str, Request]], n: int,
                     workers: int, options: _Options, comparison: Comparison,
                     expected: Expected | None = None,
                     record: dict[str, Any] | None = None) -> SuiteResult:
    calls = [pool.prepare(request, request_id=rid) for rid, request in suite]
    keep = n if options.keep_samples else 0
    tracks = {rid: _Tracks(comparison, keep) for rid, _ in suite}
    grading = None if expected is None else _Grading(expected, [rid for rid, _ in suite], n)
    skip: set[tuple[str, int]] = set()
    run_file: RunFile | None = None
    if options.output is not None:
        run_file, existing = RunFile.open(options.output, suite, n, pool.endpoint,
                                          __version__,
                                          allow_endpoint_change=options.allow_endpoint_change,
                                          header={"comparison": record} if record else None,
                                          shard=options.shard)
        try:
            if existing is not None:
                skip = _resume(existing, n, tracks, options.keep_samples, grading)
        except BaseException:
            run_file.close()
            raise

    def consume(sample: Sample) -> None:
        tracks[sample.request_id or ""].add(sample, options.keep_samples, grading)

    shard = options.shard

    def todo() -> Iterator[tuple[PreparedCall, int]]:
        for index in range(n):
            for position, call in enumerate(calls):
                if ((shard is None or shard.owns(position, index))
                        and (call.request_id or "", index) not in skip):
                    yield call, index

    total = n * len(calls) if shard is None else shard.pairs(len(calls), n)
    stopped = await drive(pool, todo(), total, len(skip), workers, options, run_file, consume)
    calls.clear()
    skip.clear()
    entries = SuiteEntries()
    grades = None if grading is None else grading.grid

    def prompts() -> Iterator[tuple[str, VarianceReport, OutputTally]]:
        # each prompt's report is made for its row (without a tree) and dropped; the entry
        # makes it again, tree included, when read, from its collector, kept frozen (see
        # SuiteEntries); the prompt's track goes as soon as its row is made
        for rid, request in suite:
            track = tracks.pop(rid)
            yield rid, track.collector.report(tree=False), track.tally
            samples = track.samples
            if samples is not None and not samples.complete:
                # an early stop leaves pairs unsent: the samples are those that were (a
                # shard's: its pairs only)
                assert stopped is not None or shard is not None, "every pair ends as a sample"
                samples = samples.filled()
            entries.add(rid, request, samples, track.collector)

    report = suite_report(prompts(), n=n, grades=grades)
    result = SuiteResult(endpoint=pool.endpoint.label, n=n, entries=entries, report=report,
                         kept_samples=options.keep_samples, stopped_early=stopped, shard=shard)
    result._grades = grades
    return result


def suite_report_from_runs(runs: Sequence[RunContents], *, answer: AnswerSpec | None = None,
                           normalize: bool = False,
                           expected: ExpectedAnswers | None = None) -> SuiteReport:
    """The ``SuiteReport`` of suite run files (merged by request id), read a record at a
    time; ``n`` is the largest any of them asked for. ``expected`` adds the accuracy under
    reruns (as in ``sample_suite``)."""
    comparison = Comparison(answer, normalize=normalize)
    tracks: dict[str, _Tracks] = {}
    for contents in runs:
        if contents.suite_ids is None:
            raise ConfigError("files", f"{contents.path} is not a suite's run file")
        for rid in contents.suite_ids:
            tracks.setdefault(rid, _Tracks(comparison))
    n = max(contents.max_n for contents in runs)
    found = checked_expected(expected_answers(expected), comparison, tracks)
    grading = None if found is None else _Grading(found, list(tracks), n)
    for contents in runs:
        for sample in contents.iter_samples():
            tracks[sample.request_id or ""].add(sample, False, grading)
    return suite_report(((rid, t.collector.report(tree=False), t.tally)
                         for rid, t in tracks.items()),
                        n=n, grades=None if grading is None else grading.grid)


def _resume(existing: RunContents, n: int, tracks: dict[str, _Tracks], keep: bool,
            grading: _Grading | None) -> set[tuple[str, int]]:
    """The (id, index) pairs below ``n`` the file holds ok, each fed to its track."""
    done = {(rid, i) for rid, i in existing.ok_pairs() if i < n}
    if done:
        for sample in existing.iter_samples():
            if (sample.request_id or "", sample.index) in done:
                tracks[sample.request_id or ""].add(sample, keep, grading)
    return done


def sample_suite_sync(
    requests: Requests,
    n: int,
    *,
    endpoint: Endpoint | None = None,
    pool: ClientPool | None = None,
    concurrency: int | None = None,
    rate_limit: RateLimit | None = None,
    retry: RetryPolicy | None = None,
    timeouts: Timeouts | None = None,
    transport: Transport | None = None,
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    output: str | os.PathLike[str] | None = None,
    allow_endpoint_change: bool = False,
    progress: Callable[[Progress], Any] | None = None,
    on_sample: Callable[[Sample], Any] | None = None,
    keep_samples: bool = True,
    answer: AnswerSpec | None = None,
    normalize: bool = False,
    expected: ExpectedAnswers | None = None,
    shard: ShardSpec | None = None,
) -> SuiteResult:
    """``sample_suite`` without ``await``, the same arguments: in scripts, and inside a
    running event loop (a notebook) in a thread of its own (see ``sample_many_sync``)."""
    result: SuiteResult = run_sync(
        sample_suite, requests, n, endpoint=endpoint, pool=pool, concurrency=concurrency,
        rate_limit=rate_limit, retry=retry, timeouts=timeouts, transport=transport,
        max_response_bytes=max_response_bytes, output=output,
        allow_endpoint_change=allow_endpoint_change, progress=progress,
        on_sample=on_sample, keep_samples=keep_samples, answer=answer, normalize=normalize,
        expected=expected, shard=shard)
    return result
