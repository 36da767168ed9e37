"""Against an OpenAI-compatible server this project did not write (mock-ai-api).

A counting reverse proxy in front of it measures how many requests were in flight.
mock-ai-api returns no logprobs and no system_fingerprint; those wire fields are covered
by test_openai_adapter.py's API-reference bodies and by the SimServer tests.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

import llmvariance as lv

pytestmark = pytest.mark.anyio


class CountingProxy:
    """Forwards everything to ``upstream``, recording requests in flight."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.in_flight = self.max_in_flight = self.requests = 0
        self.arrived = asyncio.Event()
        self.hold_until = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            # Hold the first wave until it is `hold_until` requests wide, so a pool that
            # under-fills shows up as a timeout rather than passing unnoticed.
            if self.in_flight >= self.hold_until:
                self.arrived.set()
            await self.arrived.wait()
            async with aiohttp.ClientSession() as session, session.post(
                self.upstream + request.path.removeprefix("/v1"), data=await request.read(),
                headers={"Content-Type": "application/json"},
            ) as upstream:
                body = await upstream.read()
                return web.Response(status=upstream.status, body=body,
                                    content_type="application/json")
        finally:
            self.in_flight -= 1


@pytest.fixture
async def proxy(third_party_url: str) -> AsyncIterator[tuple[CountingProxy, str]]:
    counting = CountingProxy(third_party_url)
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", counting.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield counting, f"http://{host}:{port}/v1"
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("kind", ["chat", "completions"])
async def test_thirty_requests_at_concurrency_7_against_a_foreign_server(
        proxy: tuple[CountingProxy, str], kind: str) -> None:
    counting, url = proxy
    counting.hold_until = 7
    prompt = "Write a unique, surprising story."
    request: lv.ChatRequest | lv.CompletionRequest
    if kind == "chat":
        request = lv.ChatRequest(model="gpt-4.1:mock-echo",
                                 messages=[{"role": "user", "content": prompt}], max_tokens=32)
        expected = f"Mock response for: {prompt}"
    else:
        request = lv.CompletionRequest(model="gpt-4.1:mock-echo", prompt=prompt, max_tokens=32)
        expected = f"Mock completion for: {prompt}"
    async with asyncio.timeout(30):
        result = await lv.sample_many(request, 30, endpoint=lv.Endpoint(base_url=url),
                                      concurrency=7)
    assert counting.requests == 30
    assert counting.max_in_flight == 7
    assert [s.index for s in result.samples] == list(range(30))
    assert [s.text for s in result.samples] == [expected] * 30
    assert all(s.finish_reason == "stop" and s.model == "gpt-4.1" for s in result.samples)
    assert result.samples[0].usage is not None and result.samples[0].usage.total_tokens
    assert result.report.all_agree and result.report.unique_count == 1


async def test_foreign_server_errors_are_recorded_with_its_message(
        third_party_url: str) -> None:
    request = lv.ChatRequest(model="gpt-4.1:mock-503",
                             messages=[{"role": "user", "content": "hi"}])
    result = await lv.sample_many(request, 3, endpoint=lv.Endpoint(base_url=third_party_url),
                                  retry=lv.RetryPolicy(max_attempts=2, initial_backoff_s=0.01))
    assert {s.error.status for s in result.samples if s.error} == {503}
    assert all(s.error and s.error.message.startswith("HTTP 503: ") for s in result.samples)
    assert [s.attempts for s in result.samples] == [2, 2, 2]  # 503 is retried


async def test_batch_effect_runs_against_a_foreign_server(third_party_url: str) -> None:
    request = lv.ChatRequest(model="gpt-4.1:mock-echo",
                             messages=[{"role": "user", "content": "same every time"}])
    result = await lv.batch_effect(request, 6, endpoint=lv.Endpoint(base_url=third_party_url),
                                   sweep=(2,), background_concurrency=2)
    assert list(result.conditions) == ["sequential", "burst", "loaded", "concurrency=2"]
    assert all(r.n_ok == 6 and r.all_agree for r in result.conditions.values())
    assert result.verdict_kind == "no_variation_observed"
    assert result.calibration is not None and result.reference == result.calibration.text
