"""sample_suite: many requests through one pool, one run file, TARr@N / TARa@N."""

from __future__ import annotations

import signal
import sys
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import anyio
import orjson
import pytest

import llmvariance as lv
from llmvariance.testing import SimServer

pytestmark = pytest.mark.anyio

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "suite.jsonl"
EP = lv.Endpoint(base_url="http://127.0.0.1:9/v1", api_key=None)
ANSWER = r"-?\d+(?:\.\d+)?|\w+"


def chat(prompt: str, model: str = "m") -> lv.ChatRequest:
    return lv.ChatRequest(model=model, messages=[{"role": "user", "content": prompt}],
                          max_tokens=16)


def echo(request: lv.HTTPRequest) -> lv.HTTPResponse:
    """Answers with the prompt (chat or completions), so outputs never vary."""
    body = orjson.loads(request.body or b"{}")
    text = body["messages"][-1]["content"] if "messages" in body else body["prompt"]
    return lv.HTTPResponse(200, orjson.dumps({
        "model": body["model"], "choices": [{"message": {"content": text}, "text": text,
                                             "finish_reason": "stop"}]}))


async def test_dense_is_reproducible_and_moe_under_load_is_not(tmp_path: Path) -> None:
    suite = lv.read_suite(EXAMPLES)[:12]
    reports = {}
    async with SimServer(step_time_s=0.0005) as url:
        for model in ("dense", "moe"):
            requests = [(rid, r.model_copy(update={"model": model})) for rid, r in suite]
            async with (lv.ClientPool(lv.Endpoint(base_url=url), concurrency=24) as pool,
                        lv.background_load(pool, requests[0][1], 8)):
                result = await lv.sample_suite(requests, 8, pool=pool, concurrency=16,
                                               answer=ANSWER)
            reports[model] = result.report
            assert [e.id for e in result.entries] == [rid for rid, _ in suite]
            assert all(len(e.samples) == 8 and e.report.n_ok == 8 for e in result.entries)
            assert all(s.request_id == e.id for e in result.entries for s in e.samples)
    dense, moe = reports["dense"], reports["moe"]
    assert dense.tar_raw == 1.0 and dense.tar_answer == 1.0 and dense.varying == []
    assert moe.tar_raw is not None and moe.tar_raw < 1.0
    assert moe.varying and set(moe.varying) <= {rid for rid, _ in suite}
    assert moe.tar_answer is not None and moe.tar_answer >= moe.tar_raw
    text = moe.to_text()
    assert "TARr@8" in text and moe.varying[0] in text


async def test_work_is_interleaved_across_requests_and_apis_may_mix() -> None:
    order: list[tuple[str, str]] = []

    def handler(request: lv.HTTPRequest) -> lv.HTTPResponse:
        order.append((request.url.removeprefix(EP.base_url),
                      orjson.loads(request.body or b"")["model"]))
        return echo(request)

    requests = {"a": chat("one", "m1"),
                "b": lv.CompletionRequest(model="m2", prompt="two", max_tokens=4),
                "c": chat("three", "m3")}
    result = await lv.sample_suite(requests, 3, endpoint=EP, concurrency=1,
                                   transport=lv.MockTransport(handler))
    assert order == [("/chat/completions", "m1"), ("/completions", "m2"),
                     ("/chat/completions", "m3")] * 3
    assert [e.samples[0].text for e in result.entries] == ["one", "two", "three"]
    assert result.report.tar_raw == 1.0 and result.report.n_prompts == 3
    assert result["b"].request.model == "m2" and result["b"].report.n_ok == 3


async def test_resume_sends_only_missing_or_failed_pairs_and_refuses_another_suite(
        tmp_path: Path) -> None:
    path = tmp_path / "suite.jsonl"
    sent: list[str] = []
    calls = 0

    def flaky(request: lv.HTTPRequest) -> lv.HTTPResponse:
        nonlocal calls
        calls += 1
        prompt = orjson.loads(request.body or b"")["messages"][-1]["content"]
        sent.append(prompt)
        if prompt == "b" and calls == 5:  # (b, 1) fails for good: 400 is not retried
            return lv.HTTPResponse(400, b'{"error": {"message": "no"}}')
        return echo(request)

    requests = {rid: chat(rid) for rid in "abc"}
    stop_after = 7

    def stop(sample: lv.Sample) -> None:
        if len(sent) >= stop_after:
            raise RuntimeError("stopped")  # a run stopped part-way, its file flushed

    with pytest.raises(RuntimeError, match="stopped"):
        await lv.sample_suite(requests, 5, endpoint=EP, transport=lv.MockTransport(flaky),
                              output=path, concurrency=1, on_sample=stop)
    before = lv.read_run(path)
    assert before.suite_ids == ["a", "b", "c"]
    have = before.ok_pairs()
    assert len(before) == 7 and len(have) == 6 and ("b", 1) not in have
    sent.clear()
    result = await lv.sample_suite(requests, 6, endpoint=EP,
                                   transport=lv.MockTransport(echo_and_count(sent)),
                                   output=path, concurrency=2)
    assert len(sent) == 3 * 6 - len(have)  # the missing, the failed and the new index 5
    assert all(e.report.n_ok == 6 and [s.index for s in e.samples] == list(range(6))
               for e in result.entries)
    after = lv.read_run(path)
    assert after.ok_pairs() == {(rid, i) for rid in "abc" for i in range(6)}
    assert [rid for rid, _ in after.requests] == ["a", "b", "c"]

    with pytest.raises(lv.ConfigError, match="different suite"):
        await lv.sample_suite({"a": chat("a"), "b": chat("changed")}, 6, endpoint=EP,
                              transport=lv.MockTransport(echo), output=path)
    with pytest.raises(lv.ConfigError, match="not written for one request"):
        await lv.sample_many(chat("a"), 6, endpoint=EP, transport=lv.MockTransport(echo),
                             output=path)


def echo_and_count(sent: list[str]) -> Callable[[lv.HTTPRequest], lv.HTTPResponse]:
    def handler(request: lv.HTTPRequest) -> lv.HTTPResponse:
        sent.append(orjson.loads(request.body or b"")["messages"][-1]["content"])
        return echo(request)
    return handler


CHILD = """
import sys, llmvariance as lv
suite = {f"p{i}": lv.ChatRequest(model="moe", messages=[{"role": "user", "content": f"q{i}"}],
                                 max_tokens=8) for i in range(6)}
lv.sample_suite_sync(suite, 40, endpoint=lv.Endpoint(base_url=sys.argv[1]), concurrency=8,
                     output=sys.argv[2])
"""


async def test_a_suite_killed_part_way_resumes_to_exactly_n_per_request(
        tmp_path: Path) -> None:
    path = tmp_path / "suite.jsonl"
    server = SimServer(step_time_s=0.003)
    async with server as url:
        proc = await anyio.open_process([sys.executable, "-c", CHILD, url, str(path)])
        async with proc:
            with anyio.fail_after(60):
                await server.wait_for(lambda stats: stats.completed >= 60)
            proc.send_signal(signal.SIGKILL)
            assert await proc.wait() == -signal.SIGKILL
        recorded = lv.read_run(path).ok_pairs()
        assert 0 < len(recorded) < 240
        sent_before = server.stats.requests
        suite = {f"p{i}": lv.ChatRequest(model="moe", max_tokens=8,
                                         messages=[{"role": "user", "content": f"q{i}"}])
                 for i in range(6)}
        result = await lv.sample_suite(suite, 40, endpoint=lv.Endpoint(base_url=url),
                                       concurrency=8, output=path)
        resent = server.stats.requests - sent_before
    assert resent == 240 - len(recorded)
    assert all([s.index for s in e.samples] == list(range(40)) for e in result.entries)
    assert result.report.n_evaluable == 6
    records = [orjson.loads(line) for line in path.read_bytes().splitlines()[1:]]
    pairs = [(r["request_id"], r["index"]) for r in records if r["record"] == "sample"]
    assert sorted(pairs) == sorted((f"p{i}", k) for i in range(6) for k in range(40))


async def test_keep_samples_false_holds_no_sample_across_a_ten_thousand_request_suite(
        ) -> None:
    requests = [chat(f"prompt {i}") for i in range(200)]
    transport = lv.MockTransport(echo)
    tracemalloc.start()
    try:
        result = await lv.sample_suite(requests, 50, endpoint=EP, transport=transport,
                                       concurrency=32, keep_samples=False)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert not result.kept_samples and all(e.samples == [] for e in result.entries)
    assert result.report.n_evaluable == 200 and result.report.tar_raw == 1.0
    assert [e.report.n_ok for e in result.entries] == [50] * 200
    # 10,000 kept samples are ~15 MB; the reports and tallies of 200 prompts are not
    assert peak < 8 * 2**20


async def test_bad_suites_are_refused_before_anything_is_sent() -> None:
    def never(request: lv.HTTPRequest) -> lv.HTTPResponse:
        raise AssertionError("sent")

    transport = lv.MockTransport(never)
    cases: list[tuple[object, str]] = [
        ([], "empty"), ("prompt", "must be requests"),
        ([("a", chat("x")), ("a", chat("y"))], "repeated: a"),
        ([chat("x"), "y"], r"item 1 \(1\)"), ([("", chat("x"))], "non-empty"),
    ]
    for requests, message in cases:
        with pytest.raises(lv.ConfigError, match=message):
            await lv.sample_suite(requests, 2, endpoint=EP,  # type: ignore[arg-type]
                                  transport=transport)
    with pytest.raises(lv.ConfigError, match="answer"):
        await lv.sample_suite([chat("x")], 2, endpoint=EP, transport=transport,
                              answer="(unclosed")
    with pytest.raises(lv.ConfigError, match=r"^n:"):
        await lv.sample_suite([chat("x")], 0, endpoint=EP, transport=transport)


async def run_cli(*args: str) -> tuple[int, str, str]:
    out = await anyio.run_process([sys.executable, "-m", "llmvariance", *args], check=False)
    return out.returncode, out.stdout.decode(), out.stderr.decode()


async def test_the_suite_command_reports_tar_and_resumes_its_run_file(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    lines = EXAMPLES.read_text().splitlines()[:6]
    suite_file = tmp_path / "suite.jsonl"
    suite_file.write_text("\n".join(lines) + "\n")
    ids = [orjson.loads(line)["custom_id"] for line in lines]
    server = SimServer(step_time_s=0.0005)
    async with server as url:
        code, out, err = await run_cli("suite", str(suite_file), "-n", "4", "--base-url", url,
                                       "--model", "dense", "--out", str(path),
                                       f"--answer={ANSWER}")  # = : the regex starts with -
        assert code == 0, err
        assert "TARr@4            1.000" in out and "TARa@4" in out and "6 requests" in out
        sent = server.stats.requests
        code, out, err = await run_cli("suite", str(suite_file), "-n", "5", "--base-url", url,
                                       "--model", "dense", "--out", str(path), "--json",
                                       "--no-preflight")
        assert code == 0, err
        assert server.stats.requests - sent == 6  # index 4 of each request, nothing else
        assert "resuming: 24 of 30 done, sending 6" in err
    report = orjson.loads(out)
    assert report["tar_raw"] == 1.0 and report["n_evaluable"] == 6
    assert [p["id"] for p in report["prompts"]] == sorted(ids)
    assert lv.read_run(path).suite_ids == ids


async def test_sample_takes_one_request_body_and_refuses_a_bad_one(tmp_path: Path) -> None:
    body = tmp_path / "body.json"
    body.write_bytes(orjson.dumps({
        "model": "dense", "max_tokens": 6, "seed": 7, "logit_bias": {"11": -100},
        "messages": [{"role": "system", "content": "Be brief."},
                     {"role": "user", "content": "Tell me a story"}]}))
    async with SimServer(step_time_s=0.0005) as url:
        code, out, err = await run_cli("sample", "--request", str(body), "-n", "3",
                                       "--base-url", url, "--json")
        assert code == 0, err
        report = orjson.loads(out)
        assert report["n_ok"] == 3 and report["unique_count"] == 1
        body.write_bytes(orjson.dumps({"model": "dense", "messages": [], "temperature": 9}))
        code, out, err = await run_cli("sample", "--request", str(body), "--base-url", url)
        assert code == 2 and "temperature" in err and "body.json" in err
        code, out, err = await run_cli("sample", "--base-url", url, "--prompt", "hi")
        assert code == 2 and "--model: required" in err


async def test_report_groups_a_suite_file_by_request_and_gives_its_tar(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    requests = {"same": chat("steady"), "other": chat("also steady")}
    await lv.sample_suite(requests, 4, endpoint=EP, transport=lv.MockTransport(echo),
                          output=path)
    code, out, err = await run_cli("report", str(path), "--answer", r"(\w+)")
    assert code == 0, err
    assert "by request:" in out and "TARr@4            1.000" in out and "TARa@4" in out
    assert out.index("other") < out.index("same")  # group rows in id order
    code, out, err = await run_cli("report", str(path), "--json")
    assert code == 0, err
    parts = orjson.loads(out)
    assert set(parts["report"]["by_request"]) == {"same", "other"}
    assert parts["report"]["by_request"]["same"]["n_ok"] == 4
    assert parts["suite"]["tar_raw"] == 1.0 and parts["suite"]["n_prompts"] == 2
    single = tmp_path / "single.jsonl"
    await lv.sample_many(chat("x"), 2, endpoint=EP, transport=lv.MockTransport(echo),
                         output=single)
    code, out, err = await run_cli("report", str(path), str(single))
    assert code == 2 and "cannot be merged" in err
    code, out, err = await run_cli("report", str(single), "--answer", "x")
    assert code == 2 and "suite" in err


async def test_the_html_report_of_a_suite_shows_each_request_and_its_group(
        tmp_path: Path) -> None:
    path, page = tmp_path / "run.jsonl", tmp_path / "report.html"
    requests = {"first": chat("alpha prompt", "m1"), "second": chat("beta prompt", "m2")}
    await lv.sample_suite(requests, 3, endpoint=lv.Endpoint(base_url=EP.base_url,
                                                             api_key="sk-secret-123456"),
                          transport=lv.MockTransport(echo), output=path)
    code, out, err = await run_cli("report", str(path), "--html", str(page))
    assert code == 0, err
    assert out.index("TARr@3") < out.index("pooled over every request of the suite")
    assert f"wrote {page}" in err
    html = page.read_text()
    # a suite's page: TARr first, a row per prompt, each request's text in the run's section
    assert html.index("TARr@3") < html.index("Prompts, most varying first")
    assert "<td><bdi>first</bdi></td>" in html and "<td><bdi>second</bdi></td>" in html
    assert "alpha prompt" in html and "beta prompt" in html
    assert "llmvariance suite report: <bdi>m1</bdi>, <bdi>m2</bdi>" in html
    assert "<title>llmvariance suite report: m1, m2</title>" in html
    assert "sk-secret" not in html
