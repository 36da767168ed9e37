"""Client-side rate limiting per endpoint, and the pause every worker honours.

Requests and tokens are each scheduled with GCRA (the "virtual scheduling" form of a
leaky bucket). With emission interval ``T = 60 / per_minute`` (for tokens, per token,
times the request's cost ``c``) and burst tolerance ``tau = (burst - 1) * T * c``, a send
at time ``t`` is allowed when ``t >= TAT - tau``, after which ``TAT = max(TAT, t) + T * c``.
``burst=1`` (the default) spaces sends evenly, as providers enforce limits over windows
much shorter than a minute. Token costs are estimates (prompt size + ``max_tokens``)
corrected with ``usage`` after each response.

A server's "slow down" (429, ``retry-after``, an exhausted ``x-ratelimit-remaining``)
calls ``pause``: every worker waits until the pause ends. So that they do not then leave
in a herd, a pause also sets a minimum gap between sends of ``min(pause, 1 s) /
concurrency``; each later 429 doubles the gap and each success shrinks it by 3%, so
against a server that states no limits the client settles just under the server's rate
(multiplicative decrease, gentle increase, as in TCP congestion control).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .._request import ChatRequest, CompletionRequest, MessagesRequest, Request, TextBlock

__all__ = ["LIMITER_FACTORY", "LimiterFactory", "RateLimit", "RateLimiter", "estimate_tokens"]

DEFAULT_COMPLETION_ALLOWANCE = 256
"""Tokens assumed for the completion when a request sets no ``max_tokens``."""

_MAX_SPREAD_S = 1.0
_MAX_GAP_S = 60.0
_GAP_DECAY = 0.97
_MIN_GAP_S = 1e-3


class RateLimit(BaseModel):
    """Per-endpoint limits the client keeps to; None means no client-side limit."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    requests_per_minute: Annotated[float, Field(gt=0)] | None = None
    tokens_per_minute: Annotated[float, Field(gt=0)] | None = None
    burst: Annotated[float, Field(ge=1.0)] = 1.0
    """How many requests' worth may leave back to back; 1 spreads them evenly."""

    @model_validator(mode="after")
    def _something_is_limited(self) -> RateLimit:
        if self.requests_per_minute is None and self.tokens_per_minute is None:
            raise ValueError("rate_limit: set requests_per_minute, tokens_per_minute or both")
        return self


def estimate_tokens(request: Request) -> int:
    """What a request may cost against a token limit: ~4 characters a prompt token,
    plus the completion's token limit (or 256 when unset)."""
    if isinstance(request, ChatRequest):
        chars = sum(len(m.content) + len(m.role) + 4 for m in request.messages)
        limit = request.max_tokens
    elif isinstance(request, CompletionRequest):
        chars, limit = len(request.prompt), request.max_tokens
    elif isinstance(request, MessagesRequest):
        chars = _chars(request.system) + sum(_chars(m.content) + 8 for m in request.messages)
        limit = request.max_tokens
    else:
        chars = len(request.instructions or "") + (
            len(request.input) if isinstance(request.input, str)
            else sum(len(m.content) + 8 for m in request.input))
        limit = request.max_output_tokens
    return math.ceil(chars / 4) + (limit or DEFAULT_COMPLETION_ALLOWANCE)


def _chars(content: str | list[TextBlock] | None) -> int:
    if content is None:
        return 0
    return len(content) if isinstance(content, str) else sum(len(b.text) for b in content)


Sleep = Callable[[float], Awaitable[object]]


class RateLimiter:
    """GCRA scheduling for requests and tokens plus a shared pause; FIFO among waiters."""

    __slots__ = ("_clock", "_concurrency", "_gap", "_last_send", "_limit", "_lock",
                 "_paused_until", "_sleep", "_slowed_at", "_tat_requests", "_tat_tokens",
                 "paused_s", "pauses")

    def __init__(
        self,
        limit: RateLimit | None = None,
        *,
        concurrency: int = 1,
        clock: Callable[[], float] = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._limit = limit
        self._concurrency = concurrency
        self._clock = clock
        self._sleep = sleep
        self._lock = asyncio.Lock()
        now = clock()
        self._tat_requests = now
        self._tat_tokens = now
        self._paused_until = now
        self._last_send = -math.inf
        self._gap = 0.0
        self._slowed_at = -math.inf
        self.pauses = 0
        """How many times a server told every worker to wait."""
        self.paused_s = 0.0
        """Total time covered by those pauses, in seconds."""

    @property
    def limit(self) -> RateLimit | None:
        return self._limit

    def check_cost(self, tokens: int) -> None:
        """Raise ``ValueError`` for a request that could never fit in the token limit."""
        tpm = self._limit.tokens_per_minute if self._limit else None
        if tpm is not None and tokens > tpm:
            raise ValueError(
                f"an estimated {tokens} tokens per request exceeds tokens_per_minute={tpm:g}; "
                "lower max_tokens or raise the limit")

    def _ready_at(self, tokens: int) -> float:
        ready = max(self._paused_until, self._last_send + self._gap)
        limit = self._limit
        if limit is None:
            return ready
        burst = limit.burst - 1.0
        if limit.requests_per_minute is not None:
            interval = 60.0 / limit.requests_per_minute
            ready = max(ready, self._tat_requests - burst * interval)
        if limit.tokens_per_minute is not None:
            interval = 60.0 * tokens / limit.tokens_per_minute
            ready = max(ready, self._tat_tokens - burst * interval)
        return ready

    async def acquire(self, tokens: int = 0) -> None:
        """Wait until a request costing ``tokens`` may be sent, then account for it."""
        if self._limit is None and not self._gap and not self._lock.locked():
            now = self._clock()
            if now >= self._paused_until:  # nothing to wait for: skip the lock
                self._last_send = now
                return
        async with self._lock:
            while True:
                now = self._clock()
                ready = self._ready_at(tokens)
                if now >= ready:
                    break
                await self._sleep(ready - now)
            self._last_send = now
            limit = self._limit
            if limit is None:
                return
            if limit.requests_per_minute is not None:
                interval = 60.0 / limit.requests_per_minute
                self._tat_requests = max(self._tat_requests, now) + interval
            if limit.tokens_per_minute is not None:
                interval = 60.0 * tokens / limit.tokens_per_minute
                self._tat_tokens = max(self._tat_tokens, now) + interval

    def adjust_tokens(self, delta: int) -> None:
        """Correct the token schedule by ``actual - estimated`` once ``usage`` is known."""
        if self._limit is not None and self._limit.tokens_per_minute is not None and delta:
            self._tat_tokens += 60.0 * delta / self._limit.tokens_per_minute

    def pause(self, seconds: float) -> None:
        """Hold every sender for ``seconds`` from now (a pause never shortens another)."""
        seconds = max(0.0, seconds)
        self._gap = max(self._gap, min(seconds, _MAX_SPREAD_S) / self._concurrency)
        now = self._clock()
        until = now + seconds
        if until <= self._paused_until:
            return
        self.paused_s += until - max(now, self._paused_until)
        self.pauses += 1
        self._paused_until = until

    def rate_limited(self, retry_after_s: float, sent_at: float) -> None:
        """A 429 for a request sent at ``sent_at``: pause for ``retry_after_s`` and, unless
        the request left before the last slow-down (one burst counts once), double the gap.
        """
        if sent_at > self._slowed_at:
            self._gap = min(_MAX_GAP_S, self._gap * 2.0)
            self._slowed_at = self._clock()
        self.pause(retry_after_s)

    def succeeded(self) -> None:
        """A success: let the gap between sends shrink a little."""
        if self._gap:
            self._gap = self._gap * _GAP_DECAY if self._gap > _MIN_GAP_S else 0.0

    @property
    def gap_s(self) -> float:
        """The current minimum time between sends, learned from the server's pushback."""
        return self._gap

    @property
    def paused_until(self) -> float:
        return self._paused_until

    def __repr__(self) -> str:
        now = self._clock()
        paused = max(0.0, self._paused_until - now)
        return (f"<RateLimiter limit={self._limit!r} paused_for={paused:.3f}s "
                f"gap={self._gap:.3f}s pauses={self.pauses}>")


LimiterFactory = Callable[[RateLimit | None, int], RateLimiter]
"""Makes a pool's limiter from its ``RateLimit`` and concurrency."""

LIMITER_FACTORY: ContextVar[LimiterFactory | None] = ContextVar("llmvariance_limiter_factory",
                                                                default=None)
"""What makes the limiter of a pool opened in this context (None: ``RateLimiter``). An
executor that runs a study's shards sets it (``llmvariance.distributed``), so that every
pool the shards open — ``sample_suite``'s, ``batch_effect``'s — also keeps a limit shared
across processes and hears the others' pauses; the pool itself never learns how."""
