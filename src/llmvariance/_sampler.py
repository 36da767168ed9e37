"""The sampler: fan one request out N times through a pool, keep every sample in order."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import os
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio
from pydantic import BaseModel, ConfigDict

from ._analysis.collect import VarianceCollector
from ._analysis.display import Displayed, fmt
from ._analysis.report import VarianceReport
from ._client.endpoint import Endpoint, endpoint_or_default
from ._client.pool import ClientPool, PreparedCall
from ._client.ratelimit import RateLimit
from ._client.retry import RetryPolicy
from ._client.transport import DEFAULT_MAX_RESPONSE_BYTES, Timeouts, Transport
from ._errors import ConfigError
from ._kept import KeptSamples
from ._loop import run as run_loop
from ._progress import Progress
from ._request import REQUEST_TYPES, Request
from ._runs.runfile import RunContents, RunFile
from ._runs.shard import Shard, ShardSpec, shard_of
from ._sample import Sample, SampleError
from ._version import __version__
from .engines.info import ServerInfo

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["SampleSet", "sample_many", "sample_many_sync"]


class SampleSet(Displayed, BaseModel):
    """The result of a run: exactly ``n`` samples ordered by index, and their report.

    ``samples`` reads as a list of ``Sample`` but is held in columns (``KeptSamples``:
    about 0.1 KB a sample plus its distinct texts), each ``Sample`` built when read. With
    ``sample_many(..., keep_samples=False)`` it is empty: the report (and the run file,
    when there is one) is all that is kept.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    request: Request
    endpoint: str
    samples: KeptSamples
    report: VarianceReport
    kept_samples: bool = True
    shard: Shard | None = None
    """The shard this run sent (``sample_many(..., shard=(k, K))``): ``samples`` and
    ``report`` are then of its indices only; ``lv.merge_runs`` joins the shards' files."""
    stopped_early: str | None = None
    """Why the run stopped before sending every index, or None: its first samples all
    failed with one error waiting cannot fix (``SampleError.final``: a bad key, a model that
    does not exist, an unknown host, an untrusted certificate). ``samples`` then holds only
    the indices sent; calling again with the same run file sends the rest."""
    server: ServerInfo | None = None
    """The server's configuration, asked before the run (``sample_many(server_info=True)``)."""

    def _summary(self) -> str:
        r = self.report
        early = " stopped early" if self.stopped_early else ""
        return (f"{self.request.model}@{self.endpoint} n={r.n_samples} ok={r.n_ok} "
                f"distinct={r.unique_count} D={fmt(r.disagreement_rate)}{early}")

    @property
    def texts(self) -> list[str]:
        """The outputs of the ok samples, in index order."""
        return [s.text for s in self.samples if s.text is not None and s.error is None]

    @property
    def failures(self) -> list[Sample]:
        return [s for s in self.samples if s.error is not None]

    def to_pandas(self, *, tokens: bool = False) -> pd.DataFrame:
        """One row per sample, in index order, with typed columns (see ``_runs.frames``);
        ``tokens=True`` adds tokens and logprobs as list columns. Needs pandas."""
        from ._runs.frames import samples_frame

        return samples_frame(self.samples, tokens=tokens)


def _check_request(request: object) -> Request:
    if not isinstance(request, REQUEST_TYPES):
        names = ", ".join(t.__name__ for t in REQUEST_TYPES)
        raise ConfigError("request", f"must be one of {names}; got {type(request).__name__}")
    return request


async def sample_many(
    request: Request,
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
    condition: str | None = None,
    keep_samples: bool = True,
    server_info: bool = False,
    shard: ShardSpec | None = None,
) -> SampleSet:
    """Send ``request`` ``n`` times and return every sample with the variance report.

    With ``endpoint`` (default: from ``$OPENAI_BASE_URL``/``$OPENAI_API_KEY``) a pool with
    ``concurrency`` slots (default 8), ``rate_limit``, ``retry`` policy, ``timeouts`` and
    ``max_response_bytes`` is opened for this call and closed after it. With ``pool`` the
    caller's pool (and its limits) is used, and ``concurrency`` caps this run's share of
    its slots.

    ``output`` names a JSONL run file: each sample is appended as it completes, and
    calling again with the same request and path resumes, sending only the indices that
    are missing or failed (``n`` may grow). A run file written against another base URL
    is refused unless ``allow_endpoint_change``. ``progress`` is called with a
    ``Progress`` after every sample and at least once a second while requests wait;
    ``on_sample`` with each sample, in completion order. ``condition`` labels every
    sample (``Sample.condition``) for grouped reports. ``keep_samples=False`` keeps no
    sample in memory — only the report, built as they arrive (and the run file): memory
    then stays flat however large ``n`` is. ``server_info=True`` first asks the server what
    it is and how it is configured (``engines.server_info``: llama.cpp's ``/props`` and
    ``/slots``; SGLang's and vLLM's equivalents): kept in ``SampleSet.server`` and in the
    run file's header (key ``server``).

    ``shard=(k, K)`` (or ``"k/K"``, or ``lv.Shard``) sends only shard k's indices of K
    (index i is shard i mod K's), with 1/K of ``rate_limit`` unless the ``Shard`` says its
    limits are per shard; the run file names the shard, and ``lv.merge_runs`` joins the K
    files into exactly the run one process would have written.

    Arguments are checked, and a run file is validated, before anything is sent
    (``ConfigError`` names the field). Failed requests are samples, never exceptions.
    An exception raised by ``progress`` or ``on_sample`` stops the run and propagates as
    itself, after the run file is flushed and closed; ``OSError`` means the run file
    could not be written.
    """
    request = _check_request(request)
    n = ConfigError.check_int("n", n)
    ConfigError.check_type("condition", condition, str)
    options = checked_options(output, allow_endpoint_change, on_sample, progress,
                              keep_samples, _SINK.get(), shard)
    if options.shard is not None:
        rate_limit = options.shard.rate_limit(rate_limit)
    async with pool_for(pool, concurrency, endpoint, rate_limit, retry, timeouts, transport,
                        max_response_bytes) as (used, workers):
        call = used.prepare(request, condition)
        server = None
        if server_info:
            from .engines.info import server_info as probe

            server = await probe(used)
        result = await _run(used, call, request, n, workers, options, server)
        return result if server is None else result.model_copy(update={"server": server})


def checked_options(output: str | os.PathLike[str] | None, allow_endpoint_change: bool,
                    on_sample: Callable[[Sample], Any] | None,
                    progress: Callable[[Progress], Any] | None, keep_samples: bool,
                    sink: Callable[[Sample], Awaitable[None]] | None,
                    shard: ShardSpec | None = None) -> _Options:
    """The run options ``sample_many`` and ``sample_suite`` share, type-checked."""
    ConfigError.check_type("output", output, str, os.PathLike)
    ConfigError.check_type("allow_endpoint_change", allow_endpoint_change, bool)
    ConfigError.check_type("keep_samples", keep_samples, bool)
    for name, hook in (("progress", progress), ("on_sample", on_sample)):
        if hook is not None and not callable(hook):
            raise ConfigError(name, f"must be callable, got {type(hook).__name__}")
    return _Options(output, allow_endpoint_change, on_sample, progress, keep_samples, sink,
                    shard_of(shard))


@asynccontextmanager
async def pool_for(pool: ClientPool | None, concurrency: int | None,
                   endpoint: Endpoint | None, rate_limit: RateLimit | None,
                   retry: RetryPolicy | None, timeouts: Timeouts | None,
                   transport: Transport | None, max_response_bytes: int
                   ) -> AsyncIterator[tuple[ClientPool, int]]:
    """The caller's pool (and this run's share of its slots), or one opened for the run
    from the other settings and closed after it; each with the number of workers."""
    if concurrency is not None:
        ConfigError.check_int("concurrency", concurrency)
    ConfigError.check_type("pool", pool, ClientPool)
    if pool is not None:
        if any(s is not None for s in (endpoint, rate_limit, retry, timeouts, transport)):
            raise ConfigError("pool", "a pool carries its own endpoint, limits and transport; "
                              "pass either pool or those, not both")
        yield pool, min(concurrency or pool.concurrency, pool.concurrency)
        return
    # ClientPool checks the types of the rest before anything is sent
    async with ClientPool(endpoint_or_default(endpoint), concurrency=concurrency or 8,
                          rate_limit=rate_limit, retry=retry, timeouts=timeouts,
                          transport=transport, max_response_bytes=max_response_bytes) as own:
        yield own, own.concurrency


@dataclass(frozen=True, slots=True)
class _Options:
    output: str | os.PathLike[str] | None
    allow_endpoint_change: bool
    on_sample: Callable[[Sample], Any] | None
    progress: Callable[[Progress], Any] | None
    keep_samples: bool
    sink: Callable[[Sample], Awaitable[None]] | None
    """``stream_samples``' channel: awaited with each sample, so a slow reader slows the run."""
    shard: Shard | None = None


_SINK: ContextVar[Callable[[Sample], Awaitable[None]] | None] = ContextVar(
    "llmvariance_sample_sink", default=None)
"""Set by ``stream_samples`` in the task that runs ``sample_many`` for it."""


_TICK_S = 1.0
"""How often ``progress`` hears from a run that is waiting, in seconds."""

_YOUNG_THRESHOLD = 100_000
"""CPython's young-generation threshold while a run keeps samples (the default is 700)."""
_holding = 0
_saved_thresholds: tuple[int, ...] = ()


@contextmanager
def _fewer_young_collections(active: bool) -> Iterator[None]:
    """Raise the cyclic GC's young threshold while samples pile up, then restore it.

    Each kept sample leaves a few objects alive, so CPython's collector runs a young
    collection every ~120 responses, and each one rescans the objects of every request
    in flight: a quarter of the client's CPU at 64 concurrent requests. Kept samples form
    no cycles, so collecting less often frees nothing later. Concurrent runs share one
    raise; the last one out restores the thresholds it found.
    """
    global _holding, _saved_thresholds
    if not active:
        yield
        return
    if _holding == 0:
        _saved_thresholds = gc.get_threshold()
        if _saved_thresholds[0] and _saved_thresholds[0] < _YOUNG_THRESHOLD:
            gc.set_threshold(_YOUNG_THRESHOLD, *_saved_thresholds[1:])
    _holding += 1
    try:
        yield
    finally:
        _holding -= 1
        if _holding == 0 and gc.get_threshold()[0] == _YOUNG_THRESHOLD:
            gc.set_threshold(*_saved_thresholds)


async def _run(
    pool: ClientPool,
    call: PreparedCall,
    request: Request,
    n: int,
    workers: int,
    options: _Options,
    server: ServerInfo | None = None,
) -> SampleSet:
    # Memory grows with the samples kept (none without keep_samples), never with n:
    # pending work is a range, and only indices a run file already holds are skipped.
    kept = KeptSamples(n if options.keep_samples else 0)
    skip: set[int] = set()
    collector = VarianceCollector()
    run_file: RunFile | None = None
    if options.output is not None:
        run_file, existing = RunFile.open(
            options.output, request, n, pool.endpoint, __version__,
            allow_endpoint_change=options.allow_endpoint_change,
            server=None if server is None else server.model_dump(mode="json"),
            shard=options.shard)
        try:
            if existing is not None:
                skip = _resume(existing, n, kept if options.keep_samples else None,
                               collector)
        except BaseException:
            run_file.close()
            raise

    def consume(sample: Sample) -> None:
        if options.keep_samples:
            kept.put(sample.index, sample)
        collector.add(sample)

    shard = options.shard
    todo = ((call, i) for i in range(n)
            if i not in skip and (shard is None or shard.owns(0, i)))
    total = n if shard is None else shard.pairs(1, n)
    stopped = await drive(pool, todo, total, len(skip), workers, options, run_file, consume)
    # an early stop leaves indices unsent: the samples are those that were (a shard's:
    # its indices only)
    assert kept.complete or stopped is not None or shard is not None, \
        "every index ends as a sample"
    return SampleSet(request=request, endpoint=pool.endpoint.label,
                     samples=kept if kept.complete else kept.filled(),
                     report=collector.report(), kept_samples=options.keep_samples,
                     stopped_early=stopped, shard=shard)


async def drive(
    pool: ClientPool,
    todo: Iterator[tuple[PreparedCall, int]],
    total: int,
    resumed: int,
    workers: int,
    options: _Options,
    run_file: RunFile | None,
    consume: Callable[[Sample], None],
) -> str | None:
    """Send every ``(call, index)`` of ``todo`` through ``pool`` with ``workers`` workers.

    Each sample goes to the run file, then ``consume``, then the hooks; ``total`` and
    ``resumed`` are for progress. The run file is closed at the end, whatever happens; an
    exception of a hook, ``consume`` or the run file stops the run and is raised as itself.
    Returns why the run stopped early (``SampleSet.stopped_early``), or None when every
    index was sent.
    """
    done, failed = resumed, 0
    early = _EarlyStop(total - resumed)
    start = time.monotonic()
    error: BaseException | None = None  # the first one a hook or the run file raised

    def report_progress() -> None:
        if options.progress is not None:
            stats = pool.stats
            options.progress(Progress(
                total=total, done=done, failed=failed, resumed=resumed,
                elapsed_s=time.monotonic() - start, rate_limited=stats.rate_limited,
                paused_s=stats.paused_s, retries=stats.retries, timeouts=stats.timeouts,
                in_flight=pool.in_flight, oldest_in_flight_s=pool.oldest_in_flight_s))

    def stop(exc: BaseException) -> None:
        # Kept and re-raised as itself: a task group would wrap it in an ExceptionGroup.
        nonlocal error
        error = error or exc
        outer.cancel_scope.cancel()

    async def worker() -> None:
        nonlocal done, failed
        # Workers share one iterator: next() never awaits, so each job goes to one worker.
        for call, index in todo:
            if early.reason is not None:
                return  # the indices not yet sent stay unsent (a rerun sends them)
            sample = await pool.send(call, index)
            done += 1
            failed += sample.error is not None
            early.saw(sample)
            try:
                if run_file is not None:
                    run_file.write(sample)
                consume(sample)
                if options.on_sample is not None:
                    options.on_sample(sample)
                report_progress()
                if options.sink is not None:
                    await options.sink(sample)
            except Exception as exc:
                stop(exc)
                return

    async def ticker(finished: anyio.Event) -> None:
        while True:
            with anyio.move_on_after(_TICK_S):
                await finished.wait()
                return
            try:
                report_progress()
            except Exception as exc:
                stop(exc)
                return

    try:
        with _fewer_young_collections(options.keep_samples):
            async with anyio.create_task_group() as outer:
                finished = anyio.Event()
                if options.progress is not None:
                    outer.start_soon(ticker, finished)
                async with anyio.create_task_group() as tg:
                    for _ in range(min(total - resumed, workers)):
                        tg.start_soon(worker)
                finished.set()
    finally:
        if run_file is not None:
            try:
                run_file.close()
            except OSError as close_error:
                if error is None:
                    raise
                error.add_note(f"closing the run file failed too: {close_error}")
    if error is not None:
        raise error
    return early.reason


class _EarlyStop:
    """Watches the first ``EARLY_STOP_AFTER`` samples of a run: when they all failed with
    one error waiting cannot fix (identical kind, status and message, ``final``), sending
    the rest would only record that error again, so the run stops."""

    __slots__ = ("errors", "reason", "remaining")

    def __init__(self, remaining: int) -> None:
        self.remaining = remaining
        self.errors: list[SampleError | None] = []
        self.reason: str | None = None

    def saw(self, sample: Sample) -> None:
        if len(self.errors) >= EARLY_STOP_AFTER or self.remaining <= EARLY_STOP_AFTER:
            return
        self.errors.append(sample.error)
        if len(self.errors) < EARLY_STOP_AFTER:
            return
        first = self.errors[0]
        if first is not None and first.final and all(
                e is not None and (e.kind, e.status, e.message) == (
                    first.kind, first.status, first.message) for e in self.errors):
            self.reason = (f"stopped early: the first {EARLY_STOP_AFTER} requests all failed "
                           f"with an error waiting cannot fix: {first.message}")


EARLY_STOP_AFTER = 5
"""How many identical final failures at the start of a run stop it."""


def _resume(existing: RunContents, n: int, kept: KeptSamples | None,
            collector: VarianceCollector) -> set[int]:
    """The indices below ``n`` whose samples a run file holds ok (failures are resent),
    each fed to ``collector`` and, unless ``kept`` is None, kept there."""
    keep = {i for i in existing.ok_indices() if i < n}
    if keep:
        for sample in existing.iter_samples():
            if sample.index in keep:
                if kept is not None:
                    kept.put(sample.index, sample)
                collector.add(sample)
    return keep


def sample_many_sync(
    request: Request,
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
    condition: str | None = None,
    keep_samples: bool = True,
    server_info: bool = False,
    shard: ShardSpec | None = None,
) -> SampleSet:
    """``sample_many`` without ``await``, the same arguments (spelled out, so a type
    checker catches ``concurency=8`` or ``n="30"``): for scripts, and for notebooks and
    other code inside a running event loop, where it runs in a thread of its own (on
    uvloop when installed: ``pip install uvloop``; ``LLMVARIANCE_UVLOOP=0``
    opts out). In async code, ``await lv.sample_many(...)`` is the better call."""
    result: SampleSet = run_sync(
        sample_many, request, n, endpoint=endpoint, pool=pool, concurrency=concurrency,
        rate_limit=rate_limit, retry=retry, timeouts=timeouts, transport=transport,
        max_response_bytes=max_response_bytes, output=output,
        allow_endpoint_change=allow_endpoint_change, progress=progress,
        on_sample=on_sample, condition=condition, keep_samples=keep_samples,
        server_info=server_info, shard=shard)
    return result


def run_sync(function: Callable[..., Awaitable[Any]], *args: Any, **kwargs: Any) -> Any:
    """``await function(...)`` from synchronous code.

    Without a running event loop, on a new one. Inside one (a notebook cell, a web
    framework's handler) the caller's loop cannot be re-entered, so the call runs on a
    new loop in a worker thread while the caller waits; a ``pool=`` belongs to its own
    loop and cannot cross, so that case is refused with the ``await`` line to use.
    Ctrl-C (a notebook's interrupt) cancels the run in the thread, which closes its
    connections and run file, and is raised here.
    """
    call = functools.partial(function, *args, **kwargs)
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        inside = False
    else:
        inside = True
    if not inside:  # outside the except clause: the run must not inherit its exception
        return run_loop(call)
    name = function.__name__
    if kwargs.get("pool") is not None:
        raise RuntimeError(f"{name}_sync(pool=...) cannot run inside a running event loop "
                           f"(the pool belongs to it); use `await lv.{name}(...)` instead")
    return _in_thread(call, name)


def _in_thread(call: Callable[[], Awaitable[Any]], name: str) -> Any:
    done: dict[str, Any] = {}
    started = threading.Event()

    async def main() -> Any:
        done["loop"] = asyncio.get_running_loop()
        done["task"] = asyncio.current_task()
        started.set()
        return await call()

    def target() -> None:
        try:
            done["value"] = run_loop(main)
        except BaseException as exc:  # handed to the caller as itself
            done["error"] = exc
        finally:
            started.set()

    thread = threading.Thread(target=target, name=f"llmvariance {name}_sync", daemon=True)
    thread.start()
    try:
        thread.join()
    except BaseException:  # KeyboardInterrupt: stop the run, then let it out
        started.wait()
        task, loop = done.get("task"), done.get("loop")
        if task is not None and loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(task.cancel)
        thread.join()
        raise
    if "error" in done:
        raise done["error"]
    return done["value"]
