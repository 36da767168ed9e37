"""The client pool: one endpoint's connections and its hard concurrency limit.

Every request that goes through a pool, from however many concurrent runs, counts
against the same limit, so the server never sees more than ``concurrency`` requests in
flight from it. Each request ends as a ``Sample``: transport and response errors are
recorded in ``Sample.error``, never raised.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Self

import anyio

from ._endpoint import Endpoint
from ._errors import ConfigError, ConnectError, MalformedResponseError, RequestTimeout
from ._request import Request
from ._sample import ErrorKind, Sample, SampleError
from ._transport import AiohttpTransport, HTTPRequest, Transport
from .providers import ProviderAdapter, adapter_for

__all__ = ["ClientPool", "PreparedCall"]


@dataclass(frozen=True, slots=True)
class PreparedCall:
    """A request encoded once, ready to be sent any number of times."""

    adapter: ProviderAdapter
    http: HTTPRequest


class ClientPool:
    """Connections to one endpoint with at most ``concurrency`` requests in flight.

    Use as ``async with ClientPool(endpoint, concurrency=8) as pool:``; pass the pool to
    several ``sample_many`` calls to share the limit and the connections between them.
    """

    __slots__ = ("_clock", "_concurrency", "_endpoint", "_in_flight", "_limit",
                 "_owns_transport", "_redact", "_transport")

    def __init__(
        self,
        endpoint: Endpoint,
        *,
        concurrency: int = 8,
        transport: Transport | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise ConfigError("concurrency", f"must be an integer >= 1, got {concurrency!r}")
        self._endpoint = endpoint
        self._concurrency = concurrency
        # asyncio's semaphore: anyio's adds two scheduler round-trips per request.
        self._limit = asyncio.Semaphore(concurrency)
        self._in_flight = 0
        self._owns_transport = transport is None
        self._transport = transport or AiohttpTransport(max_connections=concurrency)
        self._clock = clock
        self._redact = _redactor(endpoint)

    @property
    def endpoint(self) -> Endpoint:
        return self._endpoint

    @property
    def concurrency(self) -> int:
        return self._concurrency

    def prepare(self, request: Request) -> PreparedCall:
        adapter = adapter_for(request, self._endpoint)
        http = HTTPRequest(
            "POST",
            self._endpoint.base_url + adapter.path,
            self._endpoint.request_headers(),
            adapter.encode(request),
        )
        return PreparedCall(adapter, http)

    async def send(self, call: PreparedCall, index: int) -> Sample:
        """Send ``call`` once as request ``index``; always returns a ``Sample``."""
        async with self._limit:
            self._in_flight += 1
            start = self._clock()
            try:
                response = await self._transport.send(call.http)
            except ConnectError as exc:
                return self._failed(index, "connection", str(exc), None, start)
            except RequestTimeout as exc:
                return self._failed(index, "timeout", str(exc), None, start)
            finally:
                self._in_flight -= 1
            latency = self._clock() - start
        if not 200 <= response.status < 300:
            message = call.adapter.error_message(response.status, response.body)
            return self._failed(index, "http_status", message, response.status, start, latency)
        try:
            completion = call.adapter.decode(response.body)
        except MalformedResponseError as exc:
            return self._failed(index, "malformed_response", str(exc), response.status, start,
                                latency)
        return Sample(index=index, endpoint=self._endpoint.label, latency_s=latency,
                      **completion)

    def _failed(
        self,
        index: int,
        kind: ErrorKind,
        message: str,
        status: int | None,
        start: float,
        latency: float | None = None,
    ) -> Sample:
        error = SampleError(kind=kind, message=self._redact(message), status=status)
        if latency is None:
            latency = self._clock() - start
        return Sample(index=index, endpoint=self._endpoint.label, latency_s=latency, error=error)

    async def aclose(self) -> None:
        if self._owns_transport:
            await self._transport.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with anyio.CancelScope(shield=True):
            await self.aclose()

    def __repr__(self) -> str:
        return (f"<ClientPool endpoint={self._endpoint.label!r} "
                f"concurrency={self._concurrency} in_flight={self._in_flight}>")


def _redactor(endpoint: Endpoint) -> Callable[[str], str]:
    """Removes every secret of ``endpoint`` from a message a server or library produced."""
    secrets = [s.get_secret_value() for s in endpoint.headers.values()]
    if endpoint.api_key is not None:
        secrets.append(endpoint.api_key.get_secret_value())
    secrets = sorted((s for s in secrets if len(s) >= 4), key=len, reverse=True)

    def redact(message: str) -> str:
        for secret in secrets:
            message = message.replace(secret, "***")
        return message

    return redact
