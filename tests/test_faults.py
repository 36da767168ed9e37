"""End to end against a SimServer that misbehaves: nothing lost, nothing over the limit."""

from __future__ import annotations

import pytest

import llmvariance as lv
from llmvariance.testing import Faults, SimServer

pytestmark = pytest.mark.anyio

REQ = lv.ChatRequest(model="dense", messages=[{"role": "user", "content": "Tell a story"}],
                     max_tokens=12)
FAST_RETRY = lv.RetryPolicy(max_attempts=10, initial_backoff_s=0.005, max_backoff_s=0.05)


async def expected_text() -> str:
    async with SimServer() as url:
        result = await lv.sample_many(REQ, 1, endpoint=lv.Endpoint(base_url=url))
    assert result.samples[0].text
    return result.samples[0].text


async def test_every_request_survives_errors_drops_and_bad_bodies() -> None:
    faults = Faults(p_500=0.05, p_502=0.05, p_503=0.05, p_drop=0.10, p_malformed=0.05,
                    seed=3)
    server = SimServer(faults=faults)
    async with server as url, lv.ClientPool(lv.Endpoint(base_url=url), concurrency=8,
                                            retry=FAST_RETRY) as pool:
        result = await lv.sample_many(REQ, 100, pool=pool)
        stats = pool.stats
    text = await expected_text()
    assert [s.index for s in result.samples] == list(range(100))
    assert [s.text for s in result.samples] == [text] * 100
    injected = sum(server.faults.injected.values())
    assert injected > 15  # ~30% of ~140 attempts misbehaved
    # every injected fault cost exactly one retry, and attempts show where; but a drop on a
    # kept-alive connection before any byte of an answer looks like a connection the server
    # had closed, so it is resent at once for free (counted apart, never in attempts)
    assert sum(s.attempts for s in result.samples) + stats.resends == 100 + injected
    assert 100 + injected == server.stats.requests
    assert stats.retries + stats.resends == injected
    assert max(s.attempts for s in result.samples) >= 2


async def test_cut_bodies_are_retried() -> None:
    server = SimServer(faults=Faults(p_cut=0.5, seed=1))
    async with server as url:
        result = await lv.sample_many(REQ, 20, endpoint=lv.Endpoint(base_url=url),
                                      retry=FAST_RETRY, concurrency=4)
    assert all(s.ok for s in result.samples)
    assert sum(s.attempts for s in result.samples) == 20 + server.faults.injected["cut"]


async def test_a_400_is_recorded_once_with_the_servers_message() -> None:
    bad = lv.ChatRequest(model="dense", messages=[{"role": "user", "content": "x"}],
                         extra={"n": 3})
    server = SimServer()
    async with server as url:
        result = await lv.sample_many(bad, 3, endpoint=lv.Endpoint(base_url=url))
    assert server.stats.requests == 3
    assert [s.attempts for s in result.samples] == [1, 1, 1]
    assert result.samples[0].error == lv.SampleError(
        kind="http_status", status=400, message="HTTP 400: only n=1 is supported")


@pytest.mark.parametrize("headers", [False, True], ids=["retry-after-only", "x-ratelimit"])
async def test_no_client_limit_all_succeed_without_hammering(headers: bool) -> None:
    server = SimServer(faults=Faults(requests_per_minute=600, window_s=1.0,
                                     rate_limit_headers=headers))
    async with server as url, lv.ClientPool(lv.Endpoint(base_url=url), concurrency=16) as pool:
        result = await lv.sample_many(REQ, 40, pool=pool)
        stats = pool.stats
    assert result.report.n_ok == 40
    # 16 arrive at once and the server takes 10: 6 are refused. After that the client
    # paces itself, so at most a handful more 429s, never one per request.
    assert 6 <= server.stats.rate_limited <= 12
    assert stats.rate_limited == server.stats.rate_limited
    assert server.stats.requests == 40 + server.stats.rate_limited


async def test_a_client_limit_under_the_servers_draws_no_429_and_stays_under_it() -> None:
    server = SimServer(faults=Faults(requests_per_minute=600, window_s=1.0))
    async with server as url:
        result = await lv.sample_many(REQ, 30, endpoint=lv.Endpoint(base_url=url),
                                      concurrency=16,
                                      rate_limit=lv.RateLimit(requests_per_minute=540))
    assert result.report.n_ok == 30
    assert server.stats.rate_limited <= 1
    times = server.stats.accepted_at
    achieved_per_s = (len(times) - 1) / (times[-1] - times[0])
    assert achieved_per_s <= 9.0 * 1.02  # never faster than asked (2% for clock jitter)


async def test_a_token_limit_is_kept_with_usage_corrections() -> None:
    # Each request is estimated at ceil(24/4) + 12 = 18 tokens but really costs less.
    server = SimServer(faults=Faults(tokens_per_minute=60 * 200, window_s=1.0))
    async with server as url:
        result = await lv.sample_many(REQ, 30, endpoint=lv.Endpoint(base_url=url),
                                      concurrency=8,
                                      rate_limit=lv.RateLimit(tokens_per_minute=60 * 180))
    assert result.report.n_ok == 30
    assert server.stats.rate_limited == 0
