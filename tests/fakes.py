"""A virtual clock for schedule tests: sleeping advances time instead of waiting."""

from __future__ import annotations

import anyio


class FakeClock:
    """``clock()`` reads virtual seconds; ``await sleep(d)`` advances them by ``d``.

    Exact when at most one task sleeps at a time, which holds for the rate limiter (its
    FIFO lock lets one waiter sleep) and for pools with concurrency 1.
    """

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += max(0.0, seconds)
        await anyio.lowlevel.checkpoint()
