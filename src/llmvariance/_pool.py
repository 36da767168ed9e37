"""The client pool: one endpoint's connections, concurrency limit, rate limit and retries.

Every request that goes through a pool, from however many concurrent runs, counts
against the same limits, so the server never sees more than ``concurrency`` requests in
flight from it, nor more than its ``RateLimit``. Each request ends as a ``Sample``:
errors are retried per the ``RetryPolicy`` and, when they persist, recorded in
``Sample.error``, never raised.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Self

import anyio
from pydantic import ValidationError

from ._endpoint import Endpoint
from ._errors import ConfigError, MalformedResponseError, RequestTimeout, TransportError
from ._hints import ServerHints, has_limit_state, parse_hints
from ._ratelimit import RateLimit, RateLimiter, estimate_tokens
from ._request import Request
from ._retry import RetryPolicy, is_retryable_status
from ._sample import ErrorKind, Sample, SampleError
from ._transport import AiohttpTransport, HTTPRequest, HTTPResponse, Timeouts, Transport
from .providers import ProviderAdapter, adapter_for

__all__ = ["ClientPool", "PoolStats", "PreparedCall"]

_MAX_MESSAGE_CHARS = 500


@dataclass(frozen=True, slots=True)
class PreparedCall:
    """A request encoded once, ready to be sent any number of times."""

    adapter: ProviderAdapter
    http: HTTPRequest
    tokens: int
    """Estimated cost against a token limit."""
    condition: str | None = None
    """Recorded on every sample of the run (``Sample.condition``)."""


@dataclass(slots=True)
class PoolStats:
    """What the pool has done so far, across every run that used it."""

    attempts: int = 0
    retries: int = 0
    rate_limited: int = 0
    """Responses with status 429."""
    pauses: int = 0
    paused_s: float = 0.0


@dataclass(frozen=True, slots=True)
class _Failure:
    kind: ErrorKind
    message: str
    status: int | None
    retryable: bool
    hints: ServerHints | None = None


class ClientPool:
    """Connections to one endpoint with at most ``concurrency`` requests in flight.

    Use as ``async with ClientPool(endpoint, concurrency=8) as pool:``; pass the pool to
    several ``sample_many`` calls to share its limits and connections between them.
    ``clock``, ``sleep``, ``wall_clock`` and ``rng`` exist so tests can run schedules in
    zero real time.
    """

    __slots__ = ("_clock", "_concurrency", "_endpoint", "_headers", "_in_flight", "_limiter",
                 "_owns_transport", "_retry", "_rng", "_secrets", "_sleep", "_slots", "_stats",
                 "_transport", "_wall_clock")

    def __init__(
        self,
        endpoint: Endpoint,
        *,
        concurrency: int = 8,
        rate_limit: RateLimit | None = None,
        retry: RetryPolicy | None = None,
        timeouts: Timeouts | None = None,
        transport: Transport | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        wall_clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        ConfigError.check_type("endpoint", endpoint, Endpoint)
        ConfigError.check_int("concurrency", concurrency)
        ConfigError.check_type("rate_limit", rate_limit, RateLimit)
        ConfigError.check_type("retry", retry, RetryPolicy)
        ConfigError.check_type("timeouts", timeouts, Timeouts)
        ConfigError.check_type("transport", transport, Transport)
        self._endpoint = endpoint
        self._concurrency = concurrency
        # asyncio's semaphore: anyio's adds two scheduler round-trips per request.
        self._slots = asyncio.Semaphore(concurrency)
        self._in_flight = 0
        self._limiter = RateLimiter(rate_limit, concurrency=concurrency, clock=clock,
                                    sleep=sleep)
        self._retry = retry or RetryPolicy()
        self._owns_transport = transport is None
        self._headers = endpoint.request_headers()
        self._transport = transport or AiohttpTransport(
            max_connections=concurrency, timeouts=timeouts, headers=self._headers)
        self._clock = clock
        self._sleep = sleep
        self._wall_clock = wall_clock
        self._rng = rng or random.Random()  # jitter, not cryptography
        self._stats = PoolStats()
        self._secrets = _secrets(endpoint)

    @property
    def endpoint(self) -> Endpoint:
        return self._endpoint

    @property
    def concurrency(self) -> int:
        return self._concurrency

    @property
    def in_flight(self) -> int:
        """Requests sent and not yet answered, right now."""
        return self._in_flight

    @property
    def stats(self) -> PoolStats:
        self._stats.pauses = self._limiter.pauses
        self._stats.paused_s = self._limiter.paused_s
        return self._stats

    def prepare(self, request: Request, condition: str | None = None) -> PreparedCall:
        """Encode ``request`` once; raises ``ConfigError`` if it can never be sent."""
        tokens = estimate_tokens(request)
        try:
            self._limiter.check_cost(tokens)
        except ValueError as exc:
            raise ConfigError("max_tokens", str(exc)) from None
        adapter = adapter_for(request, self._endpoint)
        http = HTTPRequest("POST", self._endpoint.base_url + adapter.path, self._headers,
                           adapter.encode(request))
        return PreparedCall(adapter, http, tokens, condition)

    async def send(self, call: PreparedCall, index: int) -> Sample:
        """Send ``call`` as request ``index``, retrying per policy; always returns a Sample."""
        policy = self._retry
        attempt = 0
        while True:
            attempt += 1
            async with self._slots:
                await self._limiter.acquire(call.tokens)
                self._stats.attempts += 1
                self._in_flight += 1
                start = self._clock()
                try:
                    response = await self._transport.send(call.http)
                except RequestTimeout as exc:
                    outcome: Sample | _Failure = _Failure("timeout", str(exc), None, True)
                except TransportError as exc:
                    outcome = _Failure("connection", str(exc), None, True)
                except Exception as exc:  # a transport's bug must not sink the whole run
                    outcome = _Failure("client_error", f"{type(exc).__name__}: {exc}", None,
                                       False)
                else:
                    outcome = self._read(call, index, response, self._clock() - start, attempt)
                finally:
                    self._in_flight -= 1
            if isinstance(outcome, Sample):
                return outcome
            if not outcome.retryable or attempt >= policy.max_attempts:
                message = self._redact(outcome.message)[:_MAX_MESSAGE_CHARS]
                error = SampleError(kind=outcome.kind, message=message, status=outcome.status)
                return Sample(index=index, endpoint=self._endpoint.label, attempts=attempt,
                              condition=call.condition, latency_s=self._clock() - start,
                              error=error)
            self._stats.retries += 1
            await self._wait_before_retry(outcome, attempt, start)

    def _read(self, call: PreparedCall, index: int, response: HTTPResponse, latency: float,
              attempt: int) -> Sample | _Failure:
        status = response.status
        headers = response.headers
        hints = None
        if headers and (status >= 300 or has_limit_state(headers)):
            hints = parse_hints(headers, self._wall_clock())
        if not 200 <= status < 300:
            if status == 429:
                self._stats.rate_limited += 1
            message = call.adapter.error_message(status, response.body)
            return _Failure("http_status", message, status, is_retryable_status(status), hints)
        try:
            completion = call.adapter.decode(response.body)
        except MalformedResponseError as exc:
            return _Failure("malformed_response", str(exc), status, True, hints)
        text = completion.get("text")
        if self._secrets and text and any(secret in text for secret in self._secrets):
            completion["text"] = self._redact(text)  # a server echoing the key
        try:
            sample = Sample(index=index, endpoint=self._endpoint.label, latency_s=latency,
                            attempts=attempt, condition=call.condition, **completion)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            return _Failure("malformed_response", f"{where}: {first['msg']}", status, True,
                            hints)
        self._limiter.succeeded()
        usage = sample.usage
        if usage is not None and usage.total_tokens is not None:
            self._limiter.adjust_tokens(usage.total_tokens - call.tokens)
        if hints is not None:
            wait = hints.exhausted_for_s(call.tokens)
            if wait is not None:  # the server's budget is spent: hold off before a 429
                self._limiter.pause(min(wait, self._retry.max_server_wait_s))
        return sample

    async def _wait_before_retry(self, failure: _Failure, attempt: int, sent_at: float
                                 ) -> None:
        hints = failure.hints
        server_wait = None
        if hints is not None:
            server_wait = hints.retry_after_s
            if server_wait is None and failure.status == 429:
                server_wait = hints.exhausted_for_s()
        if server_wait is not None:
            server_wait = min(server_wait, self._retry.max_server_wait_s)
        if failure.status == 429:
            # The endpoint as a whole is over its limit: every worker waits, not just this one.
            if server_wait is None:
                server_wait = self._retry.backoff_s(attempt, self._rng)
            self._limiter.rate_limited(server_wait, sent_at)
            return
        if server_wait is not None and failure.status == 503:
            self._limiter.pause(server_wait)  # overloaded, and it says for how long
            return
        wait = server_wait if server_wait is not None else self._retry.backoff_s(
            attempt, self._rng)
        await self._sleep(wait)

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

    def _redact(self, message: str) -> str:
        """``message`` (from a server or a library) with every secret replaced by ***."""
        for secret in self._secrets:
            message = message.replace(secret, "***")
        return message

    def __repr__(self) -> str:
        return (f"<ClientPool endpoint={self._endpoint.label!r} "
                f"concurrency={self._concurrency} in_flight={self._in_flight}>")


def _secrets(endpoint: Endpoint) -> tuple[str, ...]:
    """The endpoint's key and header values, longest first (4+ characters)."""
    values = [s.get_secret_value() for s in endpoint.headers.values()]
    if endpoint.api_key is not None:
        values.append(endpoint.api_key.get_secret_value())
    return tuple(sorted((v for v in values if len(v) >= 4), key=len, reverse=True))

