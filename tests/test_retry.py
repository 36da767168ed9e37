"""Retries through the pool, on a virtual clock, with exact waits."""

from __future__ import annotations

import itertools
import random

import anyio
import orjson
import pytest

import llmvariance as lv

from fakes import FakeClock

pytestmark = pytest.mark.anyio

EP = lv.Endpoint(base_url="http://127.0.0.1:9/v1", api_key=None)
REQ = lv.ChatRequest(model="m", messages=[{"role": "user", "content": "hi"}], max_tokens=8)
OK = orjson.dumps({"choices": [{"message": {"content": "fine"}, "finish_reason": "stop"}]})
NO_JITTER = lv.RetryPolicy(max_attempts=5, initial_backoff_s=0.5, multiplier=2.0,
                           max_backoff_s=1.5, jitter=0.0)


def test_backoff_formula_is_capped_exponential() -> None:
    rng = random.Random(0)
    assert [NO_JITTER.backoff_s(k, rng) for k in range(1, 6)] == [0.5, 1.0, 1.5, 1.5, 1.5]


def test_jitter_stays_within_its_fraction() -> None:
    policy = lv.RetryPolicy(initial_backoff_s=2.0, jitter=0.5)
    rng = random.Random(7)
    waits = [policy.backoff_s(1, rng) for _ in range(200)]
    assert min(waits) >= 1.0 and max(waits) <= 2.0
    assert max(waits) - min(waits) > 0.5  # really randomised


class Script:
    """A transport that answers from a list (then with OK) and records send times."""

    def __init__(self, clock: FakeClock, *answers: lv.HTTPResponse | Exception) -> None:
        self.clock = clock
        self.answers = list(answers)
        self.sent_at: list[float] = []
        self.transport = lv.MockTransport(self.answer)

    def answer(self, request: lv.HTTPRequest) -> lv.HTTPResponse:
        self.sent_at.append(self.clock())
        answer = self.answers.pop(0) if self.answers else lv.HTTPResponse(200, OK)
        if isinstance(answer, Exception):
            raise answer
        return answer


def make(*answers: lv.HTTPResponse | Exception, clock: FakeClock
         ) -> tuple[lv.MockTransport, list[float]]:
    script = Script(clock, *answers)
    return script.transport, script.sent_at


async def run(transport: lv.MockTransport, clock: FakeClock, n: int = 1,
              policy: lv.RetryPolicy = NO_JITTER, concurrency: int = 1,
              rate_limit: lv.RateLimit | None = None) -> tuple[lv.SampleSet, lv.PoolStats]:
    async with lv.ClientPool(EP, concurrency=concurrency, retry=policy, transport=transport,
                             rate_limit=rate_limit, clock=clock, sleep=clock.sleep,
                             wall_clock=lambda: 1_700_000_000.0,
                             rng=random.Random(1)) as pool:
        result = await lv.sample_many(REQ, n, pool=pool)
        return result, pool.stats


async def test_5xx_then_success_retries_with_the_backoff_schedule() -> None:
    clock = FakeClock()
    transport, _ = make(lv.HTTPResponse(500), lv.HTTPResponse(502), lv.HTTPResponse(503),
                        clock=clock)
    result, stats = await run(transport, clock)
    sample = result.samples[0]
    assert sample.ok and sample.text == "fine"
    assert sample.attempts == 4
    assert clock.sleeps == [0.5, 1.0, 1.5]
    assert (stats.attempts, stats.retries) == (4, 3)


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
async def test_client_errors_are_recorded_once_never_retried(status: int) -> None:
    clock = FakeClock()
    body = orjson.dumps({"error": {"message": "you did it wrong"}})
    transport, sent_at = make(lv.HTTPResponse(status, body), clock=clock)
    result, _ = await run(transport, clock)
    assert len(sent_at) == 1
    assert result.samples[0].attempts == 1
    assert result.samples[0].error == lv.SampleError(
        kind="http_status", status=status, message=f"HTTP {status}: you did it wrong",
        final=status in (401, 403, 404))  # the same on every try: waiting cannot fix it


@pytest.mark.parametrize("failure", [
    lv.HTTPResponse(408), lv.HTTPResponse(409), lv.HTTPResponse(200, b'{"choices": [{"mes'),
    lv.ConnectError("Server disconnected"), lv.RequestTimeout("read timed out"),
])
async def test_transient_failures_are_retried(failure: lv.HTTPResponse | Exception) -> None:
    clock = FakeClock()
    transport, sent_at = make(failure, clock=clock)
    result, _ = await run(transport, clock)
    assert result.samples[0].ok and result.samples[0].attempts == 2
    assert len(sent_at) == 2


async def test_persistent_failure_ends_as_the_last_error_after_max_attempts() -> None:
    clock = FakeClock()
    transport, sent_at = make(*[lv.HTTPResponse(503, b"overloaded")] * 10, clock=clock)
    result, _ = await run(transport, clock)
    sample = result.samples[0]
    assert sample.attempts == 5 and len(sent_at) == 5
    assert sample.error == lv.SampleError(kind="http_status", status=503,
                                          message="HTTP 503: 'overloaded'")


async def test_a_server_hint_replaces_the_backoff() -> None:
    clock = FakeClock()
    transport, sent_at = make(lv.HTTPResponse(500, headers={"retry-after": "4"}), clock=clock)
    await run(transport, clock)
    assert clock.sleeps == [4.0]
    assert sent_at[1] - sent_at[0] == 4.0


async def test_429_with_retry_after_ms_pauses_all_workers() -> None:
    clock = FakeClock()
    limited = lv.HTTPResponse(429, b'{"error": {"message": "slow down"}}',
                              headers={"retry-after-ms": "3000"})
    transport, sent_at = make(limited, clock=clock)
    result, stats = await run(transport, clock, n=4, concurrency=4)
    assert all(s.ok for s in result.samples)
    assert stats.rate_limited == 1 and stats.pauses == 1 and stats.paused_s == 3.0
    # the 429 came back before the other three workers sent: all four (the retry
    # included) waited out the pause, then left spaced by 3 s / 4 capped to 1 s / 4,
    # a gap that shrinks 3% with each success -- not as a herd
    assert sent_at[:2] == [1000.0, 1003.0]
    gaps = [b - a for a, b in itertools.pairwise(sent_at[1:])]
    assert gaps == pytest.approx([0.25 * 0.97, 0.25 * 0.97**2, 0.25 * 0.97**3])
    assert sorted(s.attempts for s in result.samples) == [1, 1, 1, 2]


async def test_workers_blocked_by_a_pause_include_those_of_other_runs() -> None:
    clock = FakeClock()
    limited = lv.HTTPResponse(429, headers={"retry-after": "10"})
    transport, sent_at = make(limited, clock=clock)
    async with lv.ClientPool(EP, concurrency=1, retry=NO_JITTER, transport=transport,
                             clock=clock, sleep=clock.sleep) as pool, \
            anyio.create_task_group() as tg:
        tg.start_soon(lambda: lv.sample_many(REQ, 1, pool=pool))
        tg.start_soon(lambda: lv.sample_many(REQ, 1, pool=pool))
    assert sent_at[0] == 1000.0
    assert all(t >= 1010.0 for t in sent_at[1:])


async def test_remaining_zero_pauses_before_the_server_says_429() -> None:
    clock = FakeClock()
    spent = lv.HTTPResponse(200, OK, headers={"x-ratelimit-remaining-requests": "0",
                                              "x-ratelimit-reset-requests": "2s"})
    transport, sent_at = make(spent, clock=clock)
    result, stats = await run(transport, clock, n=2)
    assert all(s.ok and s.attempts == 1 for s in result.samples)
    assert sent_at == [1000.0, 1002.0]
    assert stats.rate_limited == 0


async def test_usage_corrects_the_token_schedule() -> None:
    clock = FakeClock()
    cheap = orjson.dumps({"choices": [{"message": {"content": "x"}}],
                          "usage": {"prompt_tokens": 1, "completion_tokens": 1,
                                    "total_tokens": 2}})
    transport, sent_at = make(*[lv.HTTPResponse(200, cheap)] * 3, clock=clock)
    # estimate: ceil((2 + 4 + 4) / 4) + 8 = 11 tokens; 600/min = 10 tokens/s
    await run(transport, clock, n=3, rate_limit=lv.RateLimit(tokens_per_minute=600))
    assert sent_at == [1000.0, pytest.approx(1000.2), pytest.approx(1000.4)]


def test_policy_validation_names_the_field() -> None:
    with pytest.raises(ValueError, match="max_attempts"):
        lv.RetryPolicy(max_attempts=0)
    with pytest.raises(ValueError, match="max_backoff_s: must be >= initial_backoff_s"):
        lv.RetryPolicy(initial_backoff_s=5, max_backoff_s=1)


async def test_a_token_estimate_over_the_limit_sends_nothing() -> None:
    clock = FakeClock()
    transport, sent_at = make(clock=clock)
    with pytest.raises(lv.ConfigError, match=r"^max_tokens: an estimated 11 tokens"):
        await run(transport, clock, rate_limit=lv.RateLimit(tokens_per_minute=10))
    assert sent_at == []



@pytest.mark.parametrize("status", [503, 529])
async def test_an_overloaded_server_that_says_how_long_pauses_the_pool(status: int) -> None:
    clock = FakeClock()
    transport, sent_at = make(lv.HTTPResponse(status, headers={"retry-after": "5"}),
                              clock=clock)
    result, stats = await run(transport, clock)
    assert result.samples[0].ok and result.samples[0].attempts == 2
    assert stats.pauses == 1 and stats.paused_s == 5.0
    assert sent_at[1] - sent_at[0] == 5.0
