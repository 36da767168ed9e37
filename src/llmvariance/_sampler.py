"""The sampler: fan one request out N times through a pool, keep every sample in order."""

from __future__ import annotations

import asyncio
import functools
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import anyio
from pydantic import BaseModel, ConfigDict

from ._collect import VarianceCollector
from ._endpoint import Endpoint, endpoint_or_default
from ._errors import ConfigError
from ._pool import ClientPool, PreparedCall
from ._progress import Progress
from ._ratelimit import RateLimit
from ._report import VarianceReport
from ._request import ChatRequest, CompletionRequest, Request
from ._retry import RetryPolicy
from ._runfile import RunFile
from ._sample import Sample
from ._transport import Timeouts, Transport
from ._version import __version__

__all__ = ["SampleSet", "sample_many", "sample_many_sync"]


class SampleSet(BaseModel):
    """The result of a run: exactly ``n`` samples ordered by index, and their report."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    request: ChatRequest | CompletionRequest
    endpoint: str
    samples: list[Sample]
    report: VarianceReport

    @property
    def texts(self) -> list[str]:
        """The outputs of the ok samples, in index order."""
        return [s.text for s in self.samples if s.text is not None and s.error is None]

    @property
    def failures(self) -> list[Sample]:
        return [s for s in self.samples if s.error is not None]


def _check_request(request: object) -> Request:
    if not isinstance(request, ChatRequest | CompletionRequest):
        raise ConfigError(
            "request", f"must be a ChatRequest or CompletionRequest, got {type(request).__name__}"
        )
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
    output: str | os.PathLike[str] | None = None,
    progress: Callable[[Progress], Any] | None = None,
    on_sample: Callable[[Sample], Any] | None = None,
    condition: str | None = None,
) -> SampleSet:
    """Send ``request`` ``n`` times and return every sample with the variance report.

    With ``endpoint`` (default: from ``$OPENAI_BASE_URL``/``$OPENAI_API_KEY``) a pool with
    ``concurrency`` slots (default 8), ``rate_limit``, ``retry`` policy and ``timeouts``
    is opened for this call and closed after it. With ``pool`` the caller's pool (and
    its limits) is used, and ``concurrency`` caps this run's share of its slots.

    ``output`` names a JSONL run file: each sample is appended as it completes, and
    calling again with the same request and path resumes, sending only the indices that
    are missing or failed (``n`` may grow). ``progress`` is called with a ``Progress``
    after every sample; ``on_sample`` with each sample, in completion order.
    ``condition`` labels every sample (``Sample.condition``) for grouped reports.
    Arguments are checked, and a run file is validated, before anything is sent.
    """
    request = _check_request(request)
    n = ConfigError.check_int("n", n)
    if concurrency is not None:
        ConfigError.check_int("concurrency", concurrency)
    ConfigError.check_type("pool", pool, ClientPool)
    ConfigError.check_type("output", output, str, os.PathLike)
    ConfigError.check_type("condition", condition, str)
    for name, hook in (("progress", progress), ("on_sample", on_sample)):
        if hook is not None and not callable(hook):
            raise ConfigError(name, f"must be callable, got {type(hook).__name__}")
    hooks = _Hooks(on_sample, progress)
    if pool is not None:
        own_settings = (endpoint, rate_limit, retry, timeouts, transport)
        if any(setting is not None for setting in own_settings):
            raise ConfigError("pool", "a pool carries its own endpoint, limits and transport; "
                              "pass either pool or those, not both")
        call = pool.prepare(request, condition)
        workers = min(concurrency or pool.concurrency, pool.concurrency)
        return await _run(pool, call, request, n, workers, output, hooks)
    # ClientPool checks the types of the rest before anything is sent
    async with ClientPool(endpoint_or_default(endpoint), concurrency=concurrency or 8,
                          rate_limit=rate_limit, retry=retry, timeouts=timeouts,
                          transport=transport) as own:
        call = own.prepare(request, condition)
        return await _run(own, call, request, n, own.concurrency, output, hooks)


@dataclass(frozen=True, slots=True)
class _Hooks:
    on_sample: Callable[[Sample], Any] | None
    progress: Callable[[Progress], Any] | None


async def _run(
    pool: ClientPool,
    call: PreparedCall,
    request: Request,
    n: int,
    workers: int,
    output: str | os.PathLike[str] | None,
    hooks: _Hooks,
) -> SampleSet:
    slots: list[Sample | None] = [None] * n
    collector = VarianceCollector()
    run_file: RunFile | None = None
    if output is not None:
        run_file, existing = RunFile.open(output, request, n, pool.endpoint, __version__)
        for index, sample in existing.items():
            if index < n and sample.error is None:  # failures are sent again
                slots[index] = sample
                collector.add(sample)
    resumed = sum(1 for s in slots if s is not None)
    todo: Iterator[int] = (i for i in range(n) if slots[i] is None)
    done, failed = resumed, 0
    start = time.monotonic()

    async def worker() -> None:
        nonlocal done, failed
        # Workers share one iterator: next() never awaits, so each index goes to one worker.
        for index in todo:
            sample = await pool.send(call, index)
            slots[index] = sample
            if run_file is not None:
                run_file.write(sample)
            collector.add(sample)
            done += 1
            failed += sample.error is not None
            if hooks.on_sample is not None:
                hooks.on_sample(sample)
            if hooks.progress is not None:
                stats = pool.stats
                hooks.progress(Progress(
                    total=n, done=done, failed=failed, resumed=resumed,
                    elapsed_s=time.monotonic() - start, rate_limited=stats.rate_limited,
                    paused_s=stats.paused_s))

    try:
        async with anyio.create_task_group() as tg:
            for _ in range(min(n - resumed, workers)):
                tg.start_soon(worker)
    finally:
        if run_file is not None:
            run_file.close()
    samples = [s for s in slots if s is not None]
    assert len(samples) == n, "every index ends as a sample"
    return SampleSet(request=request, endpoint=pool.endpoint.label, samples=samples,
                     report=collector.report())


@functools.wraps(sample_many)
def sample_many_sync(*args: Any, **kwargs: Any) -> SampleSet:
    """``sample_many`` for code without a running event loop (scripts, plain notebooks)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        raise RuntimeError("sample_many_sync cannot run inside an event loop; "
                           "use `await sample_many(...)` instead")
    result: SampleSet = anyio.run(functools.partial(sample_many, *args, **kwargs),
                                  backend="asyncio")
    return result
