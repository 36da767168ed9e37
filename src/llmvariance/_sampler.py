"""The sampler: fan one request out N times through a pool, keep every sample in order."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Iterator
from typing import Any

import anyio
from pydantic import BaseModel, ConfigDict, ValidationError

from ._collect import VarianceCollector
from ._endpoint import Endpoint
from ._errors import ConfigError
from ._pool import ClientPool, PreparedCall
from ._ratelimit import RateLimit
from ._report import VarianceReport
from ._request import ChatRequest, CompletionRequest, Request
from ._retry import RetryPolicy
from ._sample import Sample
from ._transport import Timeouts, Transport

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


def _check_n(n: object) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError("n", f"must be an integer >= 1, got {n!r}")
    return n


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
    on_sample: Callable[[Sample], Any] | None = None,
    condition: str | None = None,
) -> SampleSet:
    """Send ``request`` ``n`` times and return every sample with the variance report.

    With ``endpoint`` (default: from ``$OPENAI_BASE_URL``/``$OPENAI_API_KEY``) a pool with
    ``concurrency`` slots (default 8), ``rate_limit``, ``retry`` policy and ``timeouts``
    is opened for this call and closed after it. With ``pool`` the caller's pool (and
    its limits) is used, and ``concurrency`` caps this run's share of its slots.
    ``on_sample`` is called with each sample as it completes, in completion order;
    ``condition`` labels every sample (``Sample.condition``) for grouped reports.
    Arguments are checked before anything is sent.
    """
    request = _check_request(request)
    n = _check_n(n)
    if concurrency is not None and (isinstance(concurrency, bool) or
                                    not isinstance(concurrency, int) or concurrency < 1):
        raise ConfigError("concurrency", f"must be an integer >= 1, got {concurrency!r}")
    if pool is not None:
        own_settings = (endpoint, rate_limit, retry, timeouts, transport)
        if any(setting is not None for setting in own_settings):
            raise ConfigError("pool", "a pool carries its own endpoint, limits and transport; "
                              "pass either pool or those, not both")
        call = pool.prepare(request, condition)
        workers = min(concurrency or pool.concurrency, pool.concurrency)
        return await _run(pool, call, request, n, workers, on_sample)
    if endpoint is None:
        try:
            endpoint = Endpoint()
        except ValidationError as exc:
            raise ConfigError("endpoint", f"from the environment: {exc}") from None
    async with ClientPool(endpoint, concurrency=concurrency or 8, rate_limit=rate_limit,
                          retry=retry, timeouts=timeouts, transport=transport) as own:
        call = own.prepare(request, condition)
        return await _run(own, call, request, n, own.concurrency, on_sample)


async def _run(
    pool: ClientPool,
    call: PreparedCall,
    request: Request,
    n: int,
    workers: int,
    on_sample: Callable[[Sample], Any] | None,
) -> SampleSet:
    slots: list[Sample | None] = [None] * n
    collector = VarianceCollector()
    indices: Iterator[int] = iter(range(n))

    async def worker() -> None:
        # Workers share one iterator: next() never awaits, so each index goes to one worker.
        for index in indices:
            sample = await pool.send(call, index)
            slots[index] = sample
            collector.add(sample)
            if on_sample is not None:
                on_sample(sample)

    async with anyio.create_task_group() as tg:
        for _ in range(min(n, workers)):
            tg.start_soon(worker)
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
