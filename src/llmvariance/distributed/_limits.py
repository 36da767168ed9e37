"""Limits across a cluster: one actor that every shard asks, and the limiter that asks it.

``Coordinator`` (a Ray actor, one per ``run_on_ray``) keeps, on the wall clock every node
shares (to within NTP's milliseconds), the cluster's pause and, when a cluster-wide
``RateLimit`` is given, its GCRA schedule: ``reserve(tokens)`` books the next send at
``max(now, paused_until, TAT - tau)`` and moves ``TAT`` by ``T * cost`` (see
``_client.ratelimit``), so K shards together keep one key's limit.

``SharedLimiter`` is a shard's pool's ``RateLimiter`` (installed through
``LIMITER_FACTORY``; the pool does not know): its own pacing and pauses as before, plus

- a pause the shard's server asks for (429, ``retry-after``, an exhausted budget) is sent
  to the coordinator, and every other shard takes it up within ``poll_s`` (it asks for
  the cluster's pause in the background, never on a request's path: a future it checks);
- with a cluster limit, each send first books its slot with the coordinator and waits for
  it (one actor call per request: meant for limited keys, hundreds to a few thousand
  requests a minute, not for unlimited local servers).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from .._client.ratelimit import RateLimit, RateLimiter, Sleep

__all__ = ["Coordinator", "SharedLimiter"]


class Coordinator:
    """The cluster's pause and rate schedule (run as a Ray actor; plain methods, called one
    at a time). Times are wall-clock seconds (``time.time()``)."""

    def __init__(self, limit: RateLimit | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self._limit = limit
        self._clock = clock
        self._tat_requests = self._tat_tokens = 0.0
        self.paused_until = 0.0
        self.pauses = 0
        self.reserved: list[float] = []
        """Every send time handed out, in order (for a study's record and the tests)."""

    def reserve(self, tokens: int = 0) -> float:
        """When a send costing ``tokens`` may go; books it."""
        now = self._clock()
        ready = max(now, self.paused_until)
        limit = self._limit
        if limit is not None:
            burst = limit.burst - 1.0
            if limit.requests_per_minute is not None:
                interval = 60.0 / limit.requests_per_minute
                ready = max(ready, self._tat_requests - burst * interval)
                self._tat_requests = max(self._tat_requests, ready) + interval
            if limit.tokens_per_minute is not None:
                interval = 60.0 * tokens / limit.tokens_per_minute
                ready = max(ready, self._tat_tokens - burst * interval)
                self._tat_tokens = max(self._tat_tokens, ready) + interval
        self.reserved.append(ready)
        return ready

    def pause(self, until: float) -> None:
        """A shard's server said to wait until ``until``: every shard waits."""
        if until > self.paused_until:
            self.paused_until = until
            self.pauses += 1

    def state(self) -> tuple[float, int]:
        """(paused until, how many pauses so far)."""
        return self.paused_until, self.pauses

    def schedule(self) -> list[float]:
        return list(self.reserved)


class SharedLimiter(RateLimiter):
    """A shard's limiter: its own pacing and pauses, and the cluster's (see the module).

    ``coordinator`` is the actor's handle; ``cluster_limited`` whether to book every send
    with it. ``wall`` and ``sleep`` are injectable for tests.
    """

    __slots__ = ("_cluster_limited", "_coordinator", "_pending", "_poll_s", "_polled_at",
                 "_wall", "remote_pauses")

    def __init__(self, coordinator: Any, limit: RateLimit | None = None, *,
                 concurrency: int = 1, cluster_limited: bool = False, poll_s: float = 0.25,
                 clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time, sleep: Sleep = asyncio.sleep) -> None:
        super().__init__(limit, concurrency=concurrency, clock=clock, sleep=sleep)
        self._coordinator = coordinator
        self._cluster_limited = cluster_limited
        self._poll_s = poll_s
        self._polled_at = -math.inf
        self._pending: Future[tuple[float, int]] | None = None
        self._wall = wall
        self.remote_pauses = 0
        """Pauses taken up from other shards."""

    async def acquire(self, tokens: int = 0) -> None:
        self._poll()
        await super().acquire(tokens)
        if self._cluster_limited:
            at: float = await self._coordinator.reserve.remote(tokens)
            wait = at - self._wall()
            if wait > 0:
                await self._sleep(wait)

    def _poll(self) -> None:
        """Take up the cluster's pause when the last question was answered; ask again
        every ``poll_s``. Never waits."""
        pending = self._pending
        if pending is not None and pending.done():
            self._pending = None
            if pending.exception() is None:
                self._take_up(pending.result()[0])
        if self._pending is None and self._clock() - self._polled_at >= self._poll_s:
            self._polled_at = self._clock()
            self._pending = self._coordinator.state.remote().future()

    async def sync(self) -> None:
        """Take up the cluster's pause now (waits for the actor's answer)."""
        until, _ = await self._coordinator.state.remote()
        self._take_up(until)

    def _take_up(self, until: float) -> None:
        seconds = until - self._wall()
        if seconds > 0 and self._clock() + seconds > self.paused_until + 1e-3:
            self.remote_pauses += 1
            RateLimiter.pause(self, seconds)  # not sent back: it came from there

    def pause(self, seconds: float) -> None:
        super().pause(seconds)
        if seconds > 0:
            self._coordinator.pause.remote(self._wall() + seconds)
