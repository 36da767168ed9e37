"""End to end over 127.0.0.1: sample_many against the built-in SimServer."""

from __future__ import annotations

import aiohttp
import pytest

import llmvariance as lv
from llmvariance.testing import SimServer

pytestmark = pytest.mark.anyio

PROMPT = "Write a unique, surprising, extremely randomized story."


async def test_thirty_chat_requests_at_concurrency_7(sim: SimServer) -> None:
    ep = lv.Endpoint(base_url=sim.base_url)
    req = lv.ChatRequest(model="dense", messages=[{"role": "user", "content": PROMPT}],
                         max_tokens=24, logprobs=True, top_logprobs=3,
                         logit_bias={"100257": -100})
    result = await lv.sample_many(req, 30, endpoint=ep, concurrency=7)

    assert [s.index for s in result.samples] == list(range(30))
    assert all(s.ok for s in result.samples)
    assert sim.stats.requests == 30
    assert 1 <= sim.stats.max_in_flight <= 7
    first = result.samples[0]
    assert first.tokens is not None and len(first.tokens) == 24
    assert "".join(first.tokens) == first.text
    assert first.token_logprobs is not None and all(lp is not None and lp < 0
                                                    for lp in first.token_logprobs)
    assert first.top_logprobs is not None and len(first.top_logprobs[0]) == 3
    assert first.system_fingerprint == "fp_sim_dense"
    assert first.usage is not None and first.usage.completion_tokens == 24
    assert first.usage.total_tokens == (first.usage.prompt_tokens or 0) + 24 > 24
    assert first.finish_reason == "length"
    # dense is batch-invariant: every sample is the same text
    assert result.report.unique_count == 1 and result.report.all_agree
    assert result.report.tokenization == "provider"


async def test_completions_return_parallel_logprob_lists(sim: SimServer) -> None:
    ep = lv.Endpoint(base_url=sim.base_url)
    req = lv.CompletionRequest(model="dense", prompt=PROMPT, max_tokens=10, logprobs=2,
                               logit_bias={"50256": -100})
    result = await lv.sample_many(req, 12, endpoint=ep, concurrency=5)
    assert sim.stats.max_in_flight <= 5
    texts = {s.text for s in result.samples}
    assert len(texts) == 1
    sample = result.samples[3]
    assert sample.tokens is not None and len(sample.tokens) == 10
    assert sample.top_logprobs is not None
    assert all(len(alts) == 2 for alts in sample.top_logprobs)
    # the chosen token is the most likely one at temperature 0
    for token, alts in zip(sample.tokens, sample.top_logprobs, strict=True):
        assert max(alts, key=alts.__getitem__) == token


async def test_same_request_same_text_across_servers() -> None:
    req = lv.ChatRequest(model="dense", messages=[{"role": "user", "content": PROMPT}],
                         max_tokens=16)
    texts = []
    for _ in range(2):
        async with SimServer() as url:
            result = await lv.sample_many(req, 1, endpoint=lv.Endpoint(base_url=url))
            texts.append(result.samples[0].text)
    assert texts[0] == texts[1] and texts[0]


async def test_unknown_model_is_a_recorded_404_with_the_servers_message(sim: SimServer) -> None:
    req = lv.ChatRequest(model="nope", messages=[{"role": "user", "content": "hi"}])
    result = await lv.sample_many(req, 2, endpoint=lv.Endpoint(base_url=sim.base_url))
    assert [s.error for s in result.samples] == [lv.SampleError(
        kind="http_status", status=404, message="HTTP 404: The model `nope` does not exist.",
        final=True)] * 2


async def test_a_server_requiring_a_key_accepts_ours_and_rejects_a_wrong_one() -> None:
    key = "sk-sim-0123456789"
    async with SimServer(api_key=key) as url:
        req = lv.ChatRequest(model="dense", messages=[{"role": "user", "content": "hi"}],
                             max_tokens=4)
        good = await lv.sample_many(req, 2, endpoint=lv.Endpoint(base_url=url, api_key=key))
        bad = await lv.sample_many(req, 2, endpoint=lv.Endpoint(base_url=url, api_key="sk-x"))
    assert all(s.ok for s in good.samples)
    assert {s.error.status for s in bad.samples if s.error} == {401}


async def test_eos_logit_bias_blocks_early_stop(sim: SimServer) -> None:
    ep = lv.Endpoint(base_url=sim.base_url)
    stops = {}
    for bias in (None, {"50256": -100.0}):
        reasons = []
        for i in range(30):
            req = lv.CompletionRequest(model="dense", prompt=f"prompt {i}", max_tokens=60,
                                       logit_bias=bias)
            result = await lv.sample_many(req, 1, endpoint=ep)
            reasons.append(result.samples[0].finish_reason)
        stops[bias is not None] = reasons.count("stop")
    assert stops[False] > 0  # without the bias some outputs end early
    assert stops[True] == 0


async def test_models_endpoint_lists_the_served_models(sim: SimServer) -> None:
    async with aiohttp.ClientSession() as session, session.get(sim.base_url + "/models") as r:
        body = await r.json()
    assert [m["id"] for m in body["data"]] == ["dense", "moe", "dense-nbi"]


async def test_moe_answers_with_logprobs_and_alternatives(sim: SimServer) -> None:
    ep = lv.Endpoint(base_url=sim.base_url)
    req = lv.ChatRequest(model="moe", messages=[{"role": "user", "content": PROMPT}],
                         max_tokens=12, logprobs=True, top_logprobs=2)
    result = await lv.sample_many(req, 4, endpoint=ep, concurrency=4)
    sample = result.samples[0]
    assert sample.error is None
    assert sample.tokens is not None and len(sample.tokens) == 12
    assert sample.top_logprobs is not None and all(len(a) == 2 for a in sample.top_logprobs)
