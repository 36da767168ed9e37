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
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

import anyio
from pydantic import ValidationError

from .._errors import (
    ConfigError,
    ConnectError,
    MalformedResponseError,
    RequestTimeout,
    ResponseTooLargeError,
    StreamError,
    TransportError,
)
from .._request import Request
from .._sample import ErrorKind, Sample, SampleError
from .endpoint import Endpoint
from .hints import ServerHints, has_limit_state, parse_hints
from .http1 import Http1Transport
from .providers import ProviderAdapter, adapter_for, iter_sse, preview, stream_timing
from .ratelimit import LIMITER_FACTORY, RateLimit, RateLimiter, estimate_tokens
from .redact import Redactor
from .retry import RetryPolicy, is_retryable_status
from .transport import (
    DEFAULT_MAX_RESPONSE_BYTES,
    HTTPRequest,
    HTTPResponse,
    Timeouts,
    Transport,
)

__all__ = ["ClientPool", "PoolStats", "PreparedCall"]

_MAX_MESSAGE_CHARS = 500
_FINAL_STATUSES = frozenset({401, 403, 404})
"""A key that is wrong or lacks access, a model or path that does not exist: the same on
every try (``SampleError.final``)."""
_MAX_RESENDS = 2
"""Free resends per attempt: each needs a connection the server had closed, so a third in
a row means something else is wrong, and it is charged as an attempt."""


@dataclass(frozen=True, slots=True)
class PreparedCall:
    """A request encoded once, ready to be sent any number of times."""

    adapter: ProviderAdapter
    http: HTTPRequest
    tokens: int
    """Estimated cost against a token limit."""
    condition: str | None = None
    """Recorded on every sample of the run (``Sample.condition``)."""
    request_id: str | None = None
    """Recorded on every sample (``Sample.request_id``): which request of a suite."""
    block: int | None = None
    """Recorded on every sample (``Sample.block``): the block of a designed experiment."""
    choices: int = 1
    """Completions one response holds (``prepare_choices``: one per prompt)."""


@dataclass(slots=True)
class PoolStats:
    """What the pool has done so far, across every run that used it."""

    attempts: int = 0
    retries: int = 0
    rate_limited: int = 0
    """Responses with status 429."""
    timeouts: int = 0
    """Attempts that got no complete response in time."""
    pauses: int = 0
    paused_s: float = 0.0
    resends: int = 0
    """Requests sent again at once, at no attempt's cost, because they failed on a
    kept-alive connection the server had closed before any byte of an answer (never
    counted in ``attempts`` nor ``Sample.attempts``)."""


@dataclass(frozen=True, slots=True)
class _Failure:
    kind: ErrorKind
    message: str
    status: int | None
    retryable: bool
    hints: ServerHints | None = None
    overloaded: bool = False
    """The provider's "overloaded" status: a retry-after then pauses the whole pool."""
    final: bool = False
    """Waiting cannot fix it (``SampleError.final``)."""


class ClientPool:
    """Connections to one endpoint with at most ``concurrency`` requests in flight.

    Use as ``async with ClientPool(endpoint, concurrency=8) as pool:``; pass the pool to
    several ``sample_many`` calls to share its limits and connections between them.
    ``clock``, ``sleep``, ``wall_clock`` and ``rng`` exist so tests can run schedules in
    zero real time.
    """

    __slots__ = ("_adapters", "_clock", "_concurrency", "_endpoint", "_headers", "_label",
                 "_limiter", "_owns_transport", "_redactor", "_retry", "_rng", "_sent_at",
                 "_sleep", "_slots", "_stats", "_transport", "_wall_clock")

    def __init__(
        self,
        endpoint: Endpoint,
        *,
        concurrency: int = 8,
        rate_limit: RateLimit | None = None,
        retry: RetryPolicy | None = None,
        timeouts: Timeouts | None = None,
        transport: Transport | None = None,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
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
        ConfigError.check_int("max_response_bytes", max_response_bytes)
        self._endpoint = endpoint
        self._label = endpoint.label  # endpoints are frozen
        self._concurrency = concurrency
        # asyncio's semaphore: anyio's adds two scheduler round-trips per request.
        self._slots = asyncio.Semaphore(concurrency)
        self._sent_at: dict[int, float] = {}
        """Start time of each attempt in flight, oldest first (dicts keep order)."""
        factory = LIMITER_FACTORY.get()
        self._limiter = (RateLimiter(rate_limit, concurrency=concurrency, clock=clock,
                                     sleep=sleep) if factory is None
                         else factory(rate_limit, concurrency))
        self._retry = retry or RetryPolicy()
        self._owns_transport = transport is None
        self._headers = endpoint.request_headers()
        self._adapters: dict[type[ProviderAdapter], tuple[ProviderAdapter, str]] = {}
        """Per API, one adapter (they hold no state) and its URL, shared by every prepared
        call: a suite of 100,000 requests would otherwise hold 100,000 of each."""
        self._transport = transport or Http1Transport(
            max_connections=concurrency, timeouts=timeouts, headers=self._headers,
            max_response_bytes=max_response_bytes, trust_env=endpoint.trust_env,
            proxy=None if endpoint.proxy is None else endpoint.proxy.get_secret_value())
        self._clock = clock
        self._sleep = sleep
        self._wall_clock = wall_clock
        self._rng = rng or random.Random()  # jitter, not cryptography
        self._stats = PoolStats()
        self._redactor = Redactor.for_endpoint(endpoint)

    @property
    def endpoint(self) -> Endpoint:
        return self._endpoint

    @property
    def concurrency(self) -> int:
        return self._concurrency

    @property
    def in_flight(self) -> int:
        """Requests sent and not yet answered, right now."""
        return len(self._sent_at)

    @property
    def oldest_in_flight_s(self) -> float:
        """How long the oldest request still in flight has waited (0 when none is)."""
        for sent_at in self._sent_at.values():
            return self._clock() - sent_at
        return 0.0

    @property
    def stats(self) -> PoolStats:
        self._stats.pauses = self._limiter.pauses
        self._stats.paused_s = self._limiter.paused_s
        return self._stats

    def prepare(self, request: Request, condition: str | None = None,
                request_id: str | None = None, block: int | None = None) -> PreparedCall:
        """Encode ``request`` once; raises ``ConfigError`` if it can never be sent."""
        tokens = estimate_tokens(request)
        try:
            self._limiter.check_cost(tokens)
        except ValueError as exc:
            raise ConfigError("max_tokens", str(exc)) from None
        made = adapter_for(request, self._endpoint)
        adapter, url = self._adapters.setdefault(
            type(made), (made, self._endpoint.base_url + made.path))
        headers = adapter.headers(self._endpoint)
        if headers == self._headers:
            headers = self._headers  # the session's own: the transport adds nothing per request
        # a copy of exactly the body's size: orjson's result keeps its ~4 KB output buffer,
        # which a suite of 100,000 prepared requests would hold 400 MB of
        body = bytes(memoryview(adapter.encode(request)))
        http = HTTPRequest("POST", url, headers, body, stream=request.stream)
        return PreparedCall(adapter, http, tokens, condition, request_id, block)

    def prepare_choices(self, request: Request, prompts: Sequence[str],
                        condition: str | None = None, block: int | None = None
                        ) -> PreparedCall:
        """Encode ``request`` with the list ``prompts`` in place of its prompt: one HTTP
        request whose answer holds a completion of each (an exact batch, where the API has
        prompt lists; ``ConfigError`` where it has not). Send it with ``send_choices``."""
        if not prompts:
            raise ConfigError("prompts", "name at least one prompt")
        adapter = adapter_for(request, self._endpoint)
        body = adapter.encode_many(request, prompts)
        tokens = estimate_tokens(request) * len(prompts)
        try:
            self._limiter.check_cost(tokens)
        except ValueError as exc:
            raise ConfigError("max_tokens", str(exc)) from None
        headers = adapter.headers(self._endpoint)
        http = HTTPRequest("POST", self._endpoint.base_url + adapter.path,
                           self._headers if headers == self._headers else headers, body)
        return PreparedCall(adapter, http, tokens, condition, None, block, len(prompts))

    async def send(self, call: PreparedCall, index: int) -> Sample:
        """Send ``call`` as request ``index``, retrying per policy; always returns a Sample."""
        return (await self._send(call, (index,)))[0]

    async def send_choices(self, call: PreparedCall, indices: Sequence[int | None]
                           ) -> list[Sample]:
        """Send a ``prepare_choices`` call once (retrying per policy): its i-th completion
        becomes the sample of index ``indices[i]``, or is dropped where that is None. Every
        index ends as a sample: should the request fail, each carries its error.
        ``Sample.usage`` is None (a server may report one prompt's usage for the list)."""
        if len(indices) != call.choices:
            raise ConfigError("indices", f"name one index (or None) for each of the "
                              f"{call.choices} prompts, got {len(indices)}")
        return await self._send(call, indices)

    async def _send(self, call: PreparedCall, indices: Sequence[int | None]) -> list[Sample]:
        policy = self._retry
        attempt = 0
        while True:
            attempt += 1
            async with self._slots:
                await self._limiter.acquire(call.tokens)
                self._stats.attempts += 1
                outcome, start = await self._attempt(call, indices, attempt)
            if not isinstance(outcome, _Failure):
                return outcome
            if not outcome.retryable or attempt >= policy.max_attempts:
                message = self._redactor.text(outcome.message)[:_MAX_MESSAGE_CHARS]
                error = SampleError(kind=outcome.kind, message=message, status=outcome.status,
                                    final=outcome.final or outcome.status in _FINAL_STATUSES)
                latency = self._clock() - start
                return [Sample(index=index, endpoint=self._label, attempts=attempt,
                               condition=call.condition, request_id=call.request_id,
                               block=call.block, latency_s=latency, error=error)
                        for index in indices if index is not None]
            self._stats.retries += 1
            await self._wait_before_retry(outcome, attempt, start)

    async def _attempt(self, call: PreparedCall, indices: Sequence[int | None], attempt: int
                       ) -> tuple[list[Sample] | _Failure, float]:
        """One attempt, and when it started: the send that was answered, after up to
        ``_MAX_RESENDS`` free resends of a request a stale connection swallowed."""
        key = self._stats.attempts
        resends = 0
        while True:
            self._sent_at[key] = start = self._clock()
            try:
                response = await self._transport.send(call.http)
            except RequestTimeout as exc:
                self._stats.timeouts += 1
                outcome: list[Sample] | _Failure = _Failure("timeout", str(exc), None, True)
            except ResponseTooLargeError as exc:  # retrying would read it all again
                outcome = _Failure("response_too_large", str(exc), exc.status, False)
            except MalformedResponseError as exc:  # a stream cut short
                outcome = _Failure("malformed_response", str(exc), None, True)
            except ConnectError as exc:
                if exc.resendable and resends < _MAX_RESENDS:
                    resends += 1
                    self._stats.resends += 1
                    continue
                outcome = _Failure("connection", str(exc), None, not exc.final,
                                   final=exc.final)
            except TransportError as exc:
                outcome = _Failure("connection", str(exc), None, True)
            except Exception as exc:  # a transport's bug must not sink the whole run
                outcome = _Failure("client_error", f"{type(exc).__name__}: {exc}", None,
                                   False)
            else:
                outcome = self._read(call, indices, response, self._clock() - start, attempt)
            finally:
                del self._sent_at[key]
            return outcome, start

    def _read(self, call: PreparedCall, indices: Sequence[int | None], response: HTTPResponse,
              latency: float, attempt: int) -> list[Sample] | _Failure:
        status = response.status
        headers = response.headers
        hints = None
        if headers and (status >= 300 or has_limit_state(headers)):
            hints = parse_hints(headers, self._wall_clock())
        if not 200 <= status < 300:
            if status == 429:
                self._stats.rate_limited += 1
            message = call.adapter.error_message(status, response.body)
            return _Failure("http_status", message, status, is_retryable_status(status), hints,
                            status in call.adapter.overloaded_statuses)
        timing: dict[str, float | None] = {}
        try:
            if response.chunks is not None:
                completion, content_at = call.adapter.decode_stream(iter_sse(response.chunks))
                timing = stream_timing(content_at)
                completions = [completion]
            elif call.choices == 1:
                completions = [call.adapter.decode(response.body)]
            else:
                completions = call.adapter.decode_choices(response.body)
                if len(completions) != call.choices:
                    return _Failure("malformed_response", f"{call.choices} prompts were "
                                    f"answered with {len(completions)} choices", status, True,
                                    hints)
        except StreamError as exc:
            return _Failure("stream_error", str(exc), status, True, hints)
        except MalformedResponseError as exc:
            message = str(exc)
            kind = headers.get("Content-Type", "") if headers else ""
            if response.chunks is not None and kind and "event-stream" not in kind.lower():
                # a captive portal's or a proxy's login page: say what came instead
                message = (f"a streamed request was answered with {kind}, not an event "
                           f"stream: {preview(response.body)}")
            return _Failure("malformed_response", message, status, True, hints)
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            # a field of an unexpected type deep in the body: the body is malformed, and a
            # per-request problem must never escape the run
            return _Failure("malformed_response", f"unexpected body shape: "
                            f"{type(exc).__name__}: {exc}", status, True, hints)
        may_leak = self._redactor.may_leak(response.body)
        samples: list[Sample] = []
        for index, completion in zip(indices, completions, strict=True):
            if index is None:
                continue
            fields: Mapping[str, Any] = completion
            # the key echoed anywhere, or assembled from pieces (stream deltas, text blocks)
            if may_leak or self._redactor.in_text(completion):
                fields = self._redactor.response(completion)
            if call.choices > 1:
                fields = {**fields, "usage": None}
            try:
                samples.append(Sample(index=index, endpoint=self._label, latency_s=latency,
                                      attempts=attempt, condition=call.condition,
                                      request_id=call.request_id, block=call.block, **fields,
                                      **timing))
            except ValidationError as exc:
                first = exc.errors()[0]
                where = ".".join(str(p) for p in first["loc"])
                return _Failure("malformed_response", f"{where}: {first['msg']}", status, True,
                                hints)
        self._limiter.succeeded()
        usage = samples[0].usage if call.choices == 1 and samples else None
        if usage is not None and usage.total_tokens is not None:
            self._limiter.adjust_tokens(usage.total_tokens - call.tokens)
        if hints is not None:
            wait = hints.exhausted_for_s(call.tokens)
            if wait is not None:  # the server's budget is spent: hold off before a 429
                self._limiter.pause(min(wait, self._retry.max_server_wait_s))
        return samples

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
        if server_wait is not None and failure.overloaded:
            self._limiter.pause(server_wait)  # overloaded, and it says for how long
            return
        wait = server_wait if server_wait is not None else self._retry.backoff_s(
            attempt, self._rng)
        await self._sleep(wait)

    @property
    def server_root(self) -> str:
        """The base URL without its API version (``…/v1``): where an engine's own
        endpoints are (llama.cpp's ``/props``, SGLang's ``/flush_cache``)."""
        return self._endpoint.base_url.removesuffix("/").removesuffix("/v1")

    async def call_server(self, method: str, path: str, body: bytes | None = None
                          ) -> HTTPResponse:
        """One request to ``server_root + path`` with the endpoint's headers (its key
        among them): inside the concurrency limit, outside the rate limit, never retried.
        For an engine's own endpoints (cache flushes, configuration), not for samples;
        transport errors propagate (``TransportError``)."""
        async with self._slots:
            return await self._transport.send(HTTPRequest(method, self.server_root + path,
                                                          self._headers, body))

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
                f"concurrency={self._concurrency} in_flight={self.in_flight}>")

