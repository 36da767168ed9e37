"""Exact limiter schedules on a virtual clock: no real time passes."""

from __future__ import annotations

import anyio
import pytest
from pydantic import ValidationError

import llmvariance as lv

from fakes import FakeClock

pytestmark = pytest.mark.anyio


async def send_times(limiter: lv.RateLimiter, clock: FakeClock, costs: list[int]) -> list[float]:
    times = []
    for cost in costs:
        await limiter.acquire(cost)
        times.append(round(clock.now - 1000.0, 9))
    return times


async def test_requests_per_minute_are_spaced_evenly() -> None:
    clock = FakeClock()
    limiter = lv.RateLimiter(lv.RateLimit(requests_per_minute=120), clock=clock,
                             sleep=clock.sleep)
    assert await send_times(limiter, clock, [1] * 5) == [0.0, 0.5, 1.0, 1.5, 2.0]


async def test_burst_lets_that_many_go_back_to_back_then_spaces_the_rest() -> None:
    clock = FakeClock()
    limiter = lv.RateLimiter(lv.RateLimit(requests_per_minute=60, burst=3), clock=clock,
                             sleep=clock.sleep)
    assert await send_times(limiter, clock, [1] * 6) == [0.0, 0.0, 0.0, 1.0, 2.0, 3.0]


async def test_idle_time_does_not_bank_a_burst() -> None:
    clock = FakeClock()
    limiter = lv.RateLimiter(lv.RateLimit(requests_per_minute=60), clock=clock,
                             sleep=clock.sleep)
    await limiter.acquire()
    clock.now += 100.0  # a long quiet spell
    assert await send_times(limiter, clock, [1, 1, 1]) == [100.0, 101.0, 102.0]


async def test_tokens_per_minute_spaces_by_cost_and_usage_corrects_it() -> None:
    clock = FakeClock()
    limiter = lv.RateLimiter(lv.RateLimit(tokens_per_minute=600), clock=clock,
                             sleep=clock.sleep)
    assert await send_times(limiter, clock, [100, 100]) == [0.0, 10.0]
    limiter.adjust_tokens(-50)  # the second request really cost 50 tokens
    assert await send_times(limiter, clock, [100]) == [15.0]


async def test_the_tighter_of_both_limits_wins() -> None:
    clock = FakeClock()
    limiter = lv.RateLimiter(lv.RateLimit(requests_per_minute=60, tokens_per_minute=1200),
                             clock=clock, sleep=clock.sleep)
    # 10-token requests: tokens allow 2/s, requests 1/s; 40-token ones: tokens allow 0.5/s
    assert await send_times(limiter, clock, [10, 10, 40, 40]) == [0.0, 1.0, 2.0, 4.0]


async def test_a_pause_holds_everyone_then_ramps_instead_of_a_herd() -> None:
    clock = FakeClock()
    limiter = lv.RateLimiter(None, concurrency=4, clock=clock, sleep=clock.sleep)
    await limiter.acquire()
    limiter.pause(2.0)
    times: list[float] = []

    async def one() -> None:
        await limiter.acquire()
        times.append(round(clock.now - 1000.0, 9))

    async with anyio.create_task_group() as tg:
        for _ in range(6):
            tg.start_soon(one)
    # sends after the pause are spaced min(pause, 1 s) / concurrency apart
    assert times == [2.0, 2.25, 2.5, 2.75, 3.0, 3.25]
    assert (limiter.pauses, limiter.paused_s) == (1, 2.0)
    assert limiter.gap_s == 0.25


async def test_429s_double_the_gap_once_per_burst_and_successes_shrink_it() -> None:
    clock = FakeClock()
    limiter = lv.RateLimiter(None, concurrency=4, clock=clock, sleep=clock.sleep)
    sent = clock()
    for _ in range(3):  # three 429s for requests of one burst
        limiter.rate_limited(0.4, sent_at=sent)
    assert limiter.gap_s == pytest.approx(0.1)  # 0.4 s / 4, doubled from 0 only
    await limiter.acquire()
    limiter.rate_limited(0.4, sent_at=clock())  # a request sent after the slow-down
    assert limiter.gap_s == pytest.approx(0.2)
    for _ in range(10):
        limiter.succeeded()
    assert limiter.gap_s == pytest.approx(0.2 * 0.97**10)
    for _ in range(300):
        limiter.succeeded()
    assert limiter.gap_s == 0.0


async def test_a_shorter_pause_never_cuts_a_longer_one() -> None:
    clock = FakeClock()
    limiter = lv.RateLimiter(None, clock=clock, sleep=clock.sleep)
    limiter.pause(5.0)
    limiter.pause(1.0)
    await limiter.acquire()
    assert clock.now - 1000.0 == 5.0
    assert limiter.pauses == 1


def test_a_request_that_can_never_fit_is_refused() -> None:
    limiter = lv.RateLimiter(lv.RateLimit(tokens_per_minute=1000))
    with pytest.raises(ValueError, match="estimated 1001 tokens per request exceeds"):
        limiter.check_cost(1001)
    limiter.check_cost(1000)


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"requests_per_minute": 0}, "requests_per_minute"),
    ({"tokens_per_minute": -1}, "tokens_per_minute"),
    ({"requests_per_minute": 10, "burst": 0.5}, "burst"),
    ({}, "rate_limit"),
])
def test_rate_limit_validation_names_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(ValidationError, match=field):
        lv.RateLimit(**kwargs)
