"""Fault injection for the simulated server: rate limits, errors, drops, bad bodies.

Limits are enforced like a provider does: over a sliding window of ``window_s`` seconds
a server with ``requests_per_minute=600`` takes at most ``600 * window_s / 60`` requests,
and answers the rest with 429, ``retry-after-ms``, ``retry-after`` and OpenAI's
``x-ratelimit-*`` headers (plus Anthropic's ``anthropic-ratelimit-*``, whose resets are
RFC 3339 times, when asked for). A request's token cost is its prompt tokens plus
``max_tokens``, as OpenAI counts it.

One roll of the dice per request picks at most one fault. The stream faults only apply to
streamed requests: a plain request whose roll lands on one is served normally and not
counted as injected.
"""

from __future__ import annotations

import math
import random
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["Fault", "FaultInjector", "Faults", "format_duration", "format_rfc3339"]

Probability = Annotated[float, Field(ge=0.0, le=1.0)]
Fault = Literal["429", "500", "502", "503", "drop", "malformed", "cut", "stream_cut",
                "stream_error"]


class Faults(BaseModel):
    """What can go wrong, each independently; probabilities are per request."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    requests_per_minute: Annotated[float, Field(gt=0)] | None = None
    tokens_per_minute: Annotated[float, Field(gt=0)] | None = None
    window_s: Annotated[float, Field(gt=0)] = 1.0
    rate_limit_headers: bool = True
    """Send ``x-ratelimit-*`` headers; off, a 429 carries only ``retry-after(-ms)``."""
    p_500: Probability = 0.0
    p_502: Probability = 0.0
    p_503: Probability = 0.0
    p_drop: Probability = 0.0
    """Close the connection without answering."""
    p_malformed: Probability = 0.0
    """Answer 200 with a body that is not the promised JSON."""
    p_cut: Probability = 0.0
    """Answer 200 but stop sending halfway through the body (a stream: after about half
    of its tokens, as ``p_stream_cut`` does)."""
    p_stream_cut: Probability = 0.0
    """Streams only: after about half of the tokens, close the connection in the middle of
    the chunked body, before the stream's terminal event."""
    p_stream_error: Probability = 0.0
    """Streams only: after about half of the tokens, send the API's error event and end
    the stream there."""
    latency_s: Annotated[float, Field(ge=0)] = 0.0
    seed: int | None = None

    @model_validator(mode="after")
    def _probabilities_sum_to_at_most_one(self) -> Faults:
        total = (self.p_500 + self.p_502 + self.p_503 + self.p_drop + self.p_malformed
                 + self.p_cut + self.p_stream_cut + self.p_stream_error)
        if total > 1.0:
            raise ValueError(f"p_*: fault probabilities add up to {total:g}, more than 1")
        return self


def format_rfc3339(epoch: float) -> str:
    """Anthropic's reset format: a UTC time such as ``2025-01-02T03:04:05.678Z``."""
    when = datetime.fromtimestamp(epoch, tz=UTC)
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def format_duration(seconds: float) -> str:
    """OpenAI's reset format: ``20ms`` below a second, else ``1m2.5s``-style."""
    if seconds < 1.0:
        return f"{math.ceil(seconds * 1000)}ms"
    minutes, rest = divmod(seconds, 60.0)
    return f"{int(minutes)}m{rest:.3g}s" if minutes else f"{rest:.3g}s"


class _Window:
    """A sliding log of (time, cost) over the last ``window_s`` seconds."""

    def __init__(self, capacity: float, window_s: float) -> None:
        self.capacity = capacity
        self.window_s = window_s
        self.log: deque[tuple[float, float]] = deque()
        self.used = 0.0

    def _expire(self, now: float) -> None:
        while self.log and self.log[0][0] <= now - self.window_s:
            self.used -= self.log.popleft()[1]

    def fits(self, now: float, cost: float) -> bool:
        self._expire(now)
        return self.used + cost <= self.capacity

    def take(self, now: float, cost: float) -> None:
        self.log.append((now, cost))
        self.used += cost

    def wait_s(self, now: float, cost: float) -> float:
        """Time until ``cost`` fits (assuming nothing else is taken meanwhile)."""
        self._expire(now)
        needed = self.used + cost - self.capacity
        for at, c in self.log:
            needed -= c
            if needed <= 0:
                return max(0.0, at + self.window_s - now)
        return self.window_s

    def remaining(self) -> int:
        return max(0, int(self.capacity - self.used))


class FaultInjector:
    """Decides each request's fate and the rate-limit headers that go with it.

    ``clock`` measures the windows; ``wall_clock`` (epoch seconds) dates Anthropic's resets.
    """

    def __init__(self, faults: Faults, clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time) -> None:
        self.faults = faults
        self._clock = clock
        self._wall_clock = wall_clock
        self._rng = random.Random(faults.seed)
        f = faults
        self._requests = (None if f.requests_per_minute is None else
                          _Window(f.requests_per_minute * f.window_s / 60.0, f.window_s))
        self._tokens = (None if f.tokens_per_minute is None else
                        _Window(f.tokens_per_minute * f.window_s / 60.0, f.window_s))
        self.injected: dict[str, int] = {}
        """How many of each fault were injected so far."""

    def decide(self, cost: int, *, stream: bool = False, anthropic: bool = False
               ) -> tuple[Fault | None, dict[str, str]]:
        """The fault for a request costing ``cost`` tokens (None: serve it) and headers.

        ``stream``: the request is streamed, so stream faults apply. ``anthropic``: add
        Anthropic's rate-limit headers to OpenAI's.
        """
        now = self._clock()
        windows = [(w, c) for w, c in ((self._requests, 1.0), (self._tokens, float(cost)))
                   if w is not None]
        blocked = [(w, c) for w, c in windows if not w.fits(now, c)]
        if blocked:
            wait = max(w.wait_s(now, c) for w, c in blocked)
            headers = self._headers(now, anthropic)
            headers["retry-after-ms"] = str(math.ceil(wait * 1000))
            headers["retry-after"] = str(math.ceil(wait))
            return self._count("429"), headers
        for window, c in windows:
            window.take(now, c)
        headers = self._headers(now, anthropic)
        f, roll = self.faults, self._rng.random()
        for fault, p in (("500", f.p_500), ("502", f.p_502), ("503", f.p_503),
                         ("drop", f.p_drop), ("malformed", f.p_malformed), ("cut", f.p_cut),
                         ("stream_cut", f.p_stream_cut), ("stream_error", f.p_stream_error)):
            if roll < p:
                if fault.startswith("stream_") and not stream:
                    return None, headers
                return self._count(fault), headers  # type: ignore[arg-type]
            roll -= p
        return None, headers

    def _count(self, fault: Fault) -> Fault:
        self.injected[fault] = self.injected.get(fault, 0) + 1
        return fault

    def _headers(self, now: float, anthropic: bool) -> dict[str, str]:
        headers: dict[str, str] = {}
        if not self.faults.rate_limit_headers:
            return headers
        for kind, window, per_minute in (
            ("requests", self._requests, self.faults.requests_per_minute),
            ("tokens", self._tokens, self.faults.tokens_per_minute),
        ):
            if window is None or per_minute is None:
                continue
            limit, remaining, reset_s = str(int(per_minute)), str(window.remaining()), \
                window.wait_s(now, 1.0)
            headers[f"x-ratelimit-limit-{kind}"] = limit
            headers[f"x-ratelimit-remaining-{kind}"] = remaining
            headers[f"x-ratelimit-reset-{kind}"] = format_duration(reset_s)
            if anthropic:
                headers[f"anthropic-ratelimit-{kind}-limit"] = limit
                headers[f"anthropic-ratelimit-{kind}-remaining"] = remaining
                headers[f"anthropic-ratelimit-{kind}-reset"] = format_rfc3339(
                    self._wall_clock() + reset_s)
        return headers
