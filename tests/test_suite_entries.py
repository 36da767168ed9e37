"""A suite's entries held in columns: they read as a list of ``SuiteEntry`` and cost little."""

from __future__ import annotations

import pickle
import tracemalloc
from pathlib import Path

import orjson
import pytest

import llmvariance as lv
from llmvariance._analysis.collect import VarianceCollector
from llmvariance._entries import SuiteEntries, freeze, thaw

pytestmark = pytest.mark.anyio

EP = lv.Endpoint(base_url="http://127.0.0.1:9/v1", api_key=None)


def chat(prompt: str) -> lv.ChatRequest:
    return lv.ChatRequest(model="m", messages=[{"role": "user", "content": prompt}],
                          max_tokens=8)


def varying(request: lv.HTTPRequest) -> lv.HTTPResponse:
    """The prompt back, with a word that changes with the body's hash and a call count."""
    varying.calls += 1  # type: ignore[attr-defined]
    body = orjson.loads(request.body or b"{}")
    text = body["messages"][-1]["content"]
    word = "odd" if varying.calls % 3 == 0 else "even"  # type: ignore[attr-defined]
    return lv.HTTPResponse(200, orjson.dumps({"model": "m", "choices": [
        {"message": {"content": f"{text} is {word}"}, "finish_reason": "stop"}]}))


@pytest.mark.parametrize("keep", [True, False])
async def test_entries_read_as_a_list_and_their_reports_are_those_of_their_samples(
        keep: bool) -> None:
    varying.calls = 0  # type: ignore[attr-defined]
    suite = [(f"q{i}", chat(f"prompt {i}")) for i in range(7)]
    result = await lv.sample_suite(suite, 6, endpoint=EP, transport=lv.MockTransport(varying),
                                   concurrency=4, keep_samples=keep, answer=r"\d+")
    entries = result.entries
    assert isinstance(entries, SuiteEntries)
    assert len(entries) == 7 and [e.id for e in entries] == [f"q{i}" for i in range(7)]
    assert entries[-1].id == "q6" and [e.id for e in entries[1:3]] == ["q1", "q2"]
    assert result["q4"].request == suite[4][1] and result["q4"].id == "q4"
    with pytest.raises(KeyError):
        result["nope"]
    with pytest.raises(IndexError):
        entries[7]
    assert entries == list(entries) and list(entries) == entries
    for entry in entries:
        assert entry.report.n_ok == 6 and entry.report.tree is not None
        assert (len(entry.samples) == 6) is keep
        if keep:  # the report kept frozen is the one the samples make
            assert entry.report == lv.analyze(list(entry.samples))
    # varying outputs: the rows and the entries' reports agree
    assert {p.id: p.distinct for p in result.report.prompts} == {
        e.id: e.report.unique_count for e in entries}
    again = lv.SuiteResult.model_validate_json(result.model_dump_json())
    assert [e.report for e in again.entries] == [e.report for e in entries]
    copied = pickle.loads(pickle.dumps(result))  # noqa: S301 - bytes made just above
    assert [e.report for e in copied.entries] == [e.report for e in entries]
    # a list of entries is taken as given
    made = lv.SuiteResult(endpoint="x", n=6, entries=list(entries), report=result.report)
    assert [e.report for e in made.entries] == [e.report for e in entries]


def test_a_frozen_collector_makes_the_same_report_groups_failures_and_margins_included(
        ) -> None:
    collector = VarianceCollector()
    for i in range(12):
        tokens = ["a", "b", "c" if i % 2 else "d"]
        collector.add(lv.Sample(
            index=i, text="".join(tokens), tokens=tokens, token_logprobs=[-0.1, -0.2, -0.3],
            top_logprobs=[{t: -0.1, "z": -2.0} for t in tokens], finish_reason="stop",
            system_fingerprint=f"fp{i % 3}", latency_s=0.01 * (i + 1), ttft_s=0.001 * i))
    collector.add(lv.Sample(index=12, error=lv.SampleError(kind="http_status",
                                                            message="HTTP 500: boom")))
    frozen = freeze(collector)
    assert len(frozen) < len(pickle.dumps(collector, protocol=pickle.HIGHEST_PROTOCOL))
    assert thaw(frozen).report(group_by=("fingerprint",)) == collector.report(
        group_by=("fingerprint",))


def _suite_file(path: Path, prompts: int) -> None:
    with path.open("wb") as handle:
        for i in range(prompts):
            handle.write(orjson.dumps({
                "custom_id": f"p{i:06d}", "method": "POST", "url": "/v1/chat/completions",
                "body": {"model": "m", "max_tokens": 8,
                         "messages": [{"role": "user", "content": f"prompt {i}"}]}}) + b"\n")


def echo(request: lv.HTTPRequest) -> lv.HTTPResponse:
    body = orjson.loads(request.body or b"{}")
    return lv.HTTPResponse(200, orjson.dumps({"model": "m", "choices": [
        {"message": {"content": body["messages"][-1]["content"]}, "finish_reason": "stop"}]}))


async def test_a_prompt_of_a_suite_costs_a_few_kilobytes_at_most(tmp_path: Path) -> None:
    """What a 100,000-prompt suite is made of, per prompt, on 4,000 (issue 21: under
    500 MB at 100,000). Before: 1.6 KB per request read, 5.2 KB at the peak of the run
    and 4.4 KB kept by the result."""
    prompts = 4000
    _suite_file(tmp_path / "suite.jsonl", prompts)
    tracemalloc.start()
    try:
        suite = lv.read_suite(tmp_path / "suite.jsonl")
        read = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        result = await lv.sample_suite(suite, 2, endpoint=EP, transport=lv.MockTransport(echo),
                                       concurrency=64, keep_samples=False, answer=r"\d+",
                                       output=tmp_path / "run.jsonl")
        kept, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.report.n_evaluable == prompts and result.report.tar_raw == 1.0
    assert read / prompts < 1400  # the requests share their fields sets
    assert (peak - read) / prompts < 4000
    assert (kept - read) / prompts < 2500  # entries in columns, collectors frozen
    assert result.entries[123].report.n_ok == 2


def test_requests_sharing_a_fields_set_still_say_which_fields_were_given() -> None:
    a, b = chat("one"), chat("two")
    c = lv.ChatRequest(model="m", messages=[{"role": "user", "content": "x"}], seed=3)
    assert a.model_fields_set == b.model_fields_set == {"model", "messages", "max_tokens"}
    assert c.model_fields_set == {"model", "messages", "seed"}
    d = a.model_copy(update={"seed": 4})
    assert "seed" in d.model_fields_set and "seed" not in b.model_fields_set
    assert a.model_dump(exclude_unset=True) == {
        "model": "m", "max_tokens": 8, "messages": [{"role": "user", "content": "one"}]}


def test_collectors_share_no_failures_until_they_count_their_own() -> None:
    """Collectors start with one shared, empty failure count (a suite has one per
    prompt): a failure counted by one is never seen by another."""
    failed, clean = VarianceCollector(), VarianceCollector()
    failed.add(lv.Sample(index=0, error=lv.SampleError(kind="timeout", message="slow")))
    clean.add(lv.Sample(index=0, text="ok"))
    assert failed.report().failures == {"timeout": 1} and clean.report().failures == {}
    assert VarianceCollector().report().failure_messages == []
    assert thaw(freeze(clean)).report().failures == {}
