"""``stream_samples``: the samples of a run as they complete, holding none of them.

    async with lv.stream_samples(request, 1_000_000, endpoint=ep, output="run.jsonl") as run:
        async for sample in run:
            ...
    print(run.result.report)

The run is ``sample_many(..., keep_samples=False)`` in a task of its own — the same pool,
limits, retries, run file and resume — handing each sample over a channel as small as the
run's concurrency, so a reader slower than the server slows the run instead of piling
samples up. Leaving the block early cancels the run (the run file keeps what finished).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from types import TracebackType
from typing import Any, Self

import anyio
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream

from ._client.endpoint import Endpoint
from ._client.pool import ClientPool
from ._client.ratelimit import RateLimit
from ._client.retry import RetryPolicy
from ._client.transport import DEFAULT_MAX_RESPONSE_BYTES, Timeouts, Transport
from ._errors import ConfigError
from ._progress import Progress
from ._request import Request
from ._runs.shard import ShardSpec
from ._sample import Sample
from ._sampler import _SINK, SampleSet, sample_many

__all__ = ["SampleStream", "stream_samples"]


class SampleStream:
    """An ``async with`` block whose body iterates the samples in completion order."""

    __slots__ = ("_error", "_group", "_kwargs", "_n", "_receive", "_request", "_result")

    def __init__(self, request: Request, n: int, kwargs: dict[str, Any]) -> None:
        if "keep_samples" in kwargs or "on_sample" in kwargs:
            name = "keep_samples" if "keep_samples" in kwargs else "on_sample"
            raise ConfigError(name, "stream_samples hands every sample to its reader and "
                              "keeps none; iterate it instead")
        self._request, self._n, self._kwargs = request, n, kwargs
        self._group: TaskGroup | None = None
        self._receive: MemoryObjectReceiveStream[Sample] | None = None
        self._result: SampleSet | None = None
        self._error: BaseException | None = None

    @property
    def result(self) -> SampleSet:
        """The run's report (no samples), once every sample has been read."""
        if self._result is None:
            raise RuntimeError("the run has not finished: read every sample first")
        return self._result

    async def __aenter__(self) -> Self:
        buffer = self._kwargs.get("concurrency") or 8
        send, self._receive = anyio.create_memory_object_stream[Sample](buffer)

        async def produce() -> None:
            _SINK.set(send.send)
            async with send:
                try:
                    self._result = await sample_many(self._request, self._n,
                                                     keep_samples=False, **self._kwargs)
                except Exception as exc:  # handed to the reader as itself
                    self._error = exc

        self._group = anyio.create_task_group()
        await self._group.__aenter__()
        self._group.start_soon(produce)
        return self

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Sample:
        if self._receive is None:
            raise RuntimeError("use `async with lv.stream_samples(...) as run:` first")
        try:
            return await self._receive.receive()
        except anyio.EndOfStream:
            if self._error is not None:
                raise self._error from None
            raise StopAsyncIteration from None

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> bool | None:
        assert self._group is not None
        assert self._receive is not None
        if self._result is None:
            self._group.cancel_scope.cancel()  # left early: stop sending
        self._receive.close()
        try:
            return await self._group.__aexit__(exc_type, exc, tb)
        except BaseExceptionGroup as group:
            # the block's own exception, wrapped by the task group: let it out as itself
            if exc is not None and group.exceptions == (exc,):
                return False
            raise


def stream_samples(
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
    condition: str | None = None,
    server_info: bool = False,
    shard: ShardSpec | None = None,
) -> SampleStream:
    """The samples of ``sample_many(request, n, ...)`` as they complete; see the module
    docstring. Takes every argument of ``sample_many`` but ``keep_samples`` and
    ``on_sample`` (it keeps none, and hands each to its reader)."""
    return SampleStream(request, n, {
        "endpoint": endpoint, "pool": pool, "concurrency": concurrency,
        "rate_limit": rate_limit, "retry": retry, "timeouts": timeouts,
        "transport": transport, "max_response_bytes": max_response_bytes, "output": output,
        "allow_endpoint_change": allow_endpoint_change, "progress": progress,
        "condition": condition, "server_info": server_info, "shard": shard})
