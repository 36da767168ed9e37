"""Hostile outputs: one output never stops a study, a terminal or a report.

A suite whose outputs defeat its answer extractor (JSON nested deeper than a serialiser
goes, a regex that backtracks catastrophically, a user function that raises) completes,
with those outputs counted as unparseable and the reason given, and resumes; a server's
strings with terminal escape sequences are printed escaped by every command.
"""

from __future__ import annotations

import sys
import unicodedata
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import orjson
import pytest
from aiohttp import web

import llmvariance as lv
from llmvariance._analysis import answers

pytestmark = pytest.mark.anyio

EP = lv.Endpoint(base_url="http://127.0.0.1:9/v1", api_key=None)
DEEP = "[" * 300 + "]" * 300
"""Valid JSON nested 300 levels: orjson reads it, but writes at most 254."""
CATASTROPHIC = "a" * 40 + "b"
"""For r"(a|aa)+$", some 10^8 ways to fail: minutes with ``re``."""
TERMINAL = ("\x1b[2J\x1b[H\x1b]0;pwned\x07\x1b]8;;http://x.test/\x1b\\link\x1b]8;;\x1b\\"
            "\x1b]52;c;cGF3bmVk\x07\x9b31m\x9d0;t\x9c\u202eevil\x08\r\x00")
"""Clear the screen, retitle the window, an OSC 8 link, an OSC 52 clipboard write, C1 CSI
and OSC, a bidi override, a backspace, a carriage return and a NUL."""


def raw_controls(text: str) -> list[str]:
    """Characters a terminal acts on instead of showing (a newline is fine)."""
    return [c for c in text if c != "\n"
            and unicodedata.category(c) in {"Cc", "Cf", "Cs", "Zl", "Zp"}]


def chat(prompt: str) -> lv.ChatRequest:
    return lv.ChatRequest(model="m", messages=[{"role": "user", "content": prompt}],
                          max_tokens=8)


def outputs(texts: dict[str, str]) -> lv.MockTransport:
    """Answers each prompt with ``texts[prompt]``."""
    def handler(request: lv.HTTPRequest) -> lv.HTTPResponse:
        prompt = orjson.loads(request.body or b"")["messages"][-1]["content"]
        return lv.HTTPResponse(200, orjson.dumps({"choices": [{
            "message": {"content": texts[prompt]}, "finish_reason": "stop"}]}))
    return lv.MockTransport(handler)


async def run_cli(*args: str) -> tuple[int, str, str]:
    out = await anyio.run_process([sys.executable, "-m", "llmvariance", *args], check=False)
    return out.returncode, out.stdout.decode(), out.stderr.decode()


# -- answer extractors --------------------------------------------------------------------

async def test_deep_json_is_unparseable_with_its_reason_and_the_suite_resumes(
        tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    requests = {"deep": chat("deep"), "flat": chat("flat")}
    transport = outputs({"deep": DEEP, "flat": '{"answer": 4}'})
    result = await lv.sample_suite(requests, 3, endpoint=EP, transport=transport,
                                   output=path, answer=lv.JsonPointer(""))
    report = result.report
    assert report.n_evaluable == 2 and report.unparseable == 3
    [(reason, count)] = report.answer_failures.items()
    assert count == 3 and reason.startswith("the JSON value cannot be compared")
    deep = next(p for p in report.prompts if p.id == "deep")
    assert deep.answers is not None and deep.answers.failures == {reason: 3}
    assert report.tar_answer == 1.0  # 3 unparseable agree; 3 x '{"answer":4}' agree

    resumed = await lv.sample_suite(requests, 4, endpoint=EP, transport=transport,
                                    output=path, answer=lv.JsonPointer(""))
    assert resumed.report.unparseable == 4 and resumed.report.n_evaluable == 2

    code, out, err = await run_cli("report", str(path), "--answer-pointer=")
    assert code == 0, err
    assert "Traceback" not in err and "unparseable       4 outputs" in out
    assert f"x4     {reason}" in out


async def test_a_catastrophic_regex_costs_one_output_its_answer_not_the_study(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(answers, "REGEX_TIMEOUT_S", 0.2, raising=False)
    path = tmp_path / "run.jsonl"
    requests = {"hostile": chat("hostile"), "fine": chat("fine")}
    transport = outputs({"hostile": CATASTROPHIC, "fine": "aaaa"})
    with anyio.fail_after(30):  # `re` took minutes on the hostile output
        result = await lv.sample_suite(requests, 3, endpoint=EP, transport=transport,
                                       output=path, answer=r"(a|aa)+$")
        report = result.report
        assert report.unparseable == 3
        assert report.answer_failures == {
            "the regex took over 0.2 s on this output (catastrophic backtracking?)": 3}
        fine = next(p for p in report.prompts if p.id == "fine")
        assert fine.answers is not None and fine.answers.top[0].answer == "a"
        resumed = await lv.sample_suite(requests, 4, endpoint=EP, transport=transport,
                                        output=path, answer=r"(a|aa)+$")
    assert resumed.report.unparseable == 4


async def test_a_raising_answer_function_is_counted_with_its_exception(
        tmp_path: Path) -> None:
    def answer(text: str) -> str:
        if text.startswith("boom"):
            raise ValueError(f"cannot read {text!r}\nsecond line")
        return text

    path = tmp_path / "run.jsonl"
    requests = {"a": chat("a"), "b": chat("b"), "c": chat("c")}
    transport = outputs({"a": "boom 1", "b": "boom 2", "c": "fine"})
    result = await lv.sample_suite(requests, 2, endpoint=EP, transport=transport,
                                   output=path, answer=answer)
    report = result.report
    assert report.n_evaluable == 3 and report.unparseable == 4
    assert report.answer_failures == {
        "the answer function raised ValueError: cannot read 'boom 1' second line": 2,
        "the answer function raised ValueError: cannot read 'boom 2' second line": 2}
    text = report.to_text()
    assert "x2     the answer function raised ValueError: cannot read 'boom 1'" in text
    resumed = await lv.sample_suite(requests, 3, endpoint=EP, transport=transport,
                                    output=path, answer=answer)
    assert resumed.report.unparseable == 6
    returns_int = lv.analyze_suite({"p": ["x", "y"]}, answer=len)  # type: ignore[arg-type]
    assert returns_int.answer_failures == {
        "the answer function returned int; it must return a str, or None for no answer": 2}


def test_failure_reasons_in_a_report_stay_bounded() -> None:
    def answer(text: str) -> str:
        raise KeyError(text)  # a different message for every output

    report = lv.analyze_suite({"p": [str(i) for i in range(500)]}, answer=answer)
    assert report.unparseable == 500 and len(report.answer_failures) == 10
    assert report.answer_failures["(other reasons)"] == 491
    assert sum(report.answer_failures.values()) == 500


# -- terminals ----------------------------------------------------------------------------

async def hostile_api(request: web.Request) -> web.Response:
    """An OpenAI-compatible server whose every string carries escape sequences."""
    body = await request.json()
    prompt = body["messages"][-1]["content"]
    if prompt == "fail":
        return web.json_response({"error": {"message": f"bad request {TERMINAL}"}},
                                 status=400)
    return web.json_response({
        "model": f"model{TERMINAL}", "system_fingerprint": f"fp{TERMINAL}",
        "choices": [{"message": {"content": f"out {prompt}{TERMINAL}"},
                     "finish_reason": f"stop{TERMINAL}"}]})


@pytest.fixture
async def hostile_url() -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_post("/v1/chat/completions", hostile_api)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        await runner.cleanup()


async def test_no_command_prints_a_servers_control_characters(
        tmp_path: Path, hostile_url: str) -> None:
    suite = tmp_path / "suite.jsonl"
    suite.write_bytes(b"".join(orjson.dumps({
        "custom_id": f"id-{p}{TERMINAL}", "body": {"model": "m", "messages": [
            {"role": "user", "content": p}]}, "method": "POST",
        "url": "/v1/chat/completions"}) + b"\n" for p in ("one", "two", "fail")))
    run, suite_run = tmp_path / "run.jsonl", tmp_path / "suite-run.jsonl"
    commands = [
        ("sample", "--base-url", hostile_url, "--model", "m", "--prompt", "x", "-n", "3",
         "--out", str(run)),
        ("sample", "--base-url", hostile_url, "--model", "m", "--prompt", "fail", "-n", "2"),
        ("suite", str(suite), "--base-url", hostile_url, "-n", "2", "--out", str(suite_run),
         "--answer", r"out (\w+)"),
        ("report", str(run), "--tree", "--group-by", "fingerprint"),
        ("report", str(suite_run), "--answer", r"out (\w+)", "--tree"),
    ]
    for command, expected in zip(commands, [0, 3, 0, 0, 0], strict=True):
        code, out, err = await run_cli(*command)
        assert code == expected, err  # 3: every sample of "fail" failed
        assert raw_controls(out) == [] and raw_controls(err) == [], command
    # what the server said is there, escaped as repr escapes it
    assert r"fp\x1b[2J\x1b[H\x1b]0;pwned\x07" in out or r"stop\x1b[2J" in out
    code, out, err = await run_cli("report", str(run))
    assert r"finish reasons    stop\x1b[2J\x1b[H\x1b]0;pwned\x07\x1b]8;;" in out
    assert r"\x9b31m\x9d0;t\x9c\u202eevil\x08\r\x00" in out
    code, out, err = await run_cli("report", str(suite_run), "--group-by", "request")
    assert code == 0 and raw_controls(out) == []
    assert r"id-one\x1b[2J" in out and r"bad request \x1b[2J\x1b[H" in out


def test_the_text_reports_escape_every_server_string() -> None:
    samples = [lv.Sample(index=i, text=f"t{i % 2}{TERMINAL}", finish_reason=TERMINAL,
                         system_fingerprint=f"fp{i % 2}{TERMINAL}", model=TERMINAL,
                         endpoint=TERMINAL, condition=TERMINAL, request_id=f"r{TERMINAL}")
               for i in range(4)]
    samples.append(lv.Sample(index=4, error=lv.SampleError(
        kind="http_status", status=400, message=f"HTTP 400: {TERMINAL}")))
    collector = lv.VarianceCollector()
    collector.update(samples)
    report = collector.report(group_by=["fingerprint", "endpoint", "condition", "request"])
    suite = lv.analyze_suite({f"p{TERMINAL}": samples[:4], "q": ["x", "y"]}, answer=r"t\d")
    for text in (report.to_text(), suite.to_text(), str(lv.divergence_tree(samples))):
        assert raw_controls(text) == []
