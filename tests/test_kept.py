"""Kept samples in columns: every Sample comes back equal, and costs a fraction of one."""

from __future__ import annotations

import pickle
import tracemalloc

import orjson
import pytest

import llmvariance as lv

S = lv.Sample
ERROR = lv.SampleError(kind="http_status", message="HTTP 503: busy", status=503)


def assorted() -> list[lv.Sample]:
    """Every field, and the shapes they come in: logprobs with a None, ragged alternatives,
    tokens that do not spell the text, a failure, timings, usage with cache counts."""
    return [
        S(index=0, text="ab", tokens=["a", "b"], token_ids=[7, 11], token_logprobs=[None, -0.25],
          top_logprobs=[{"a": -0.1, "z": -2.0}, {"b": -0.25}], finish_reason="stop",
          system_fingerprint="fp", model="m", endpoint="e", condition="burst",
          usage=lv.Usage(prompt_tokens=3, completion_tokens=2, total_tokens=5,
                         cache_read_tokens=1), latency_s=0.5, ttft_s=0.1, itl_mean_s=0.01,
          itl_max_s=0.02, response_id="r0", block=2),
        S(index=1, error=ERROR, attempts=3, latency_s=1.5, endpoint="e"),
        S(index=2, text="ab", tokens=["ab"], token_logprobs=[-float("inf")],
          system_fingerprint="fp", request_id="q1"),
        S(index=3, text="x y", tokens=[" x", " y"], finish_reason="length"),  # not the text
        S(index=4, text="", tokens=[], token_logprobs=[], top_logprobs=[]),
        S(index=5, text="ab", token_logprobs=[float("nan")]),  # a NaN is kept as itself
    ]


def test_kept_samples_read_back_equal_field_for_field() -> None:
    samples = assorted()
    kept = lv.KeptSamples.of(samples)
    assert len(kept) == 6 and kept.complete
    assert [s.model_dump() for s in kept[:5]] == [s.model_dump() for s in samples[:5]]
    assert kept[5].token_logprobs is not None and kept[5].token_logprobs[0] != 0.0
    assert kept[:5] == samples[:5] and kept[-2] == samples[-2] and kept[1:3] == samples[1:3]
    assert list(reversed(kept))[1:] == samples[::-1][1:]
    assert samples[:5] == lv.KeptSamples.of(samples[:5]) == samples[:5]
    assert kept != samples[:5] and kept != "abc"
    assert samples[1] in kept and kept.index(samples[3]) == 3
    assert kept + samples[:1] == [*samples, samples[0]] == samples + kept[:1]
    assert lv.KeptSamples.of(samples[:2]) + lv.KeptSamples.of(samples[2:]) == samples
    with pytest.raises(IndexError):
        kept[6]


def test_every_field_of_a_sample_is_kept() -> None:
    # a field added to Sample and forgotten here would be dropped from kept samples
    samples = assorted()
    defaults = lv.Sample(index=0)
    unexercised = [name for name in lv.Sample.model_fields if name != "index"
                   and all(getattr(s, name) == getattr(defaults, name) for s in samples)]
    assert unexercised == []
    kept = lv.KeptSamples.of(samples)
    assert [s.model_dump() for s in kept[:5]] == [s.model_dump() for s in samples[:5]]


def test_a_sample_set_pickles_dumps_and_validates_with_its_kept_samples() -> None:
    samples = [s for s in assorted()[:5] if s.index != 2]  # JSON writes -inf as null
    result = lv.SampleSet(request=lv.ChatRequest(model="m", messages=[
        {"role": "user", "content": "x"}]), endpoint="e", samples=samples,
        report=lv.analyze(samples))
    assert isinstance(result.samples, lv.KeptSamples) and result.samples == samples
    assert pickle.loads(pickle.dumps(result)) == result  # noqa: S301 - our own bytes
    dumped = orjson.loads(result.model_dump_json())
    assert dumped["samples"] == [orjson.loads(s.model_dump_json()) for s in samples]
    assert lv.SampleSet.model_validate_json(result.model_dump_json()) == result
    assert len(result.failures) == 1 and result.texts == ["ab", "x y", ""]


def test_a_kept_sample_costs_a_small_fraction_of_a_sample_object() -> None:
    """2,000 identical 128-token answers, as a run would get them: new objects each time."""
    text = " word" * 128

    def answer(i: int) -> lv.Sample:
        return lv.Sample.model_validate_json(orjson.dumps({
            "index": i, "text": text, "finish_reason": "length", "model": "m",
            "system_fingerprint": "fp_bench", "latency_s": 0.01 + i * 1e-6,
            "usage": {"prompt_tokens": 10, "completion_tokens": 128, "total_tokens": 138},
            "response_id": f"chatcmpl-{i:024d}"}))

    n = 2000
    tracemalloc.start()
    as_list = [answer(i) for i in range(n)]
    list_bytes = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    del as_list
    tracemalloc.start()
    kept = lv.KeptSamples(n)
    for i in range(n):
        kept.put(i, answer(i))
    kept_bytes = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert kept[7] == answer(7)
    assert kept_bytes / n < 200 < 2000 < list_bytes / n


async def test_sample_many_keeps_columns_and_the_same_samples() -> None:
    def body(request: lv.HTTPRequest) -> lv.HTTPResponse:
        text = "same" if b"hi" in request.body else "other"
        return lv.HTTPResponse(200, orjson.dumps({
            "id": "chatcmpl-7", "model": "m", "system_fingerprint": "fp",
            "choices": [{"message": {"content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}))

    seen: list[lv.Sample] = []
    request = lv.ChatRequest(model="m", messages=[{"role": "user", "content": "hi"}])
    result = await lv.sample_many(request, 40, endpoint=lv.Endpoint(
        base_url="http://127.0.0.1:9/v1"), transport=lv.MockTransport(body),
        on_sample=seen.append, concurrency=8)
    assert isinstance(result.samples, lv.KeptSamples)
    assert result.samples == sorted(seen, key=lambda s: s.index)
    assert [s.index for s in result.samples] == list(range(40))

pytestmark = pytest.mark.anyio
