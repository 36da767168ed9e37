"""Odd servers, odd input, odd files: every request still ends as a sample, no secret leaks.

Regression tests for the defects a review found by attacking the promises in the README.
"""

from __future__ import annotations

import random
from pathlib import Path

import orjson
import pytest
from aiohttp import web
from pydantic import ValidationError

import llmvariance as lv

from fakes import FakeClock

pytestmark = pytest.mark.anyio

KEY = "sk-SECRETKEY1234567890abcdef"
EP = lv.Endpoint(base_url="http://127.0.0.1:9/v1", api_key=KEY)
REQ = lv.ChatRequest(model="m", messages=[{"role": "user", "content": "hi"}])
ONCE = lv.RetryPolicy(max_attempts=1)


async def run(handler: object, n: int = 2, **kwargs: object) -> lv.SampleSet:
    return await lv.sample_many(REQ, n, endpoint=EP, transport=lv.MockTransport(handler),
                                **kwargs)  # type: ignore[arg-type]


def ok_body(**extra: object) -> bytes:
    return orjson.dumps({"choices": [{"message": {"content": "x"}, "finish_reason": "stop"}],
                         **extra})


async def test_openai_usage_details_are_accepted() -> None:
    usage = {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2,
             "prompt_tokens_details": {"cached_tokens": 0},
             "completion_tokens_details": {"reasoning_tokens": 0}}
    result = await run(lambda r: lv.HTTPResponse(200, ok_body(usage=usage)))
    assert all(s.ok for s in result.samples)
    assert result.samples[0].usage == lv.Usage(prompt_tokens=1, completion_tokens=1,
                                               total_tokens=2)


@pytest.mark.parametrize("extra", [
    {"usage": {"total_tokens": "n/a"}},
    {"system_fingerprint": {"a": 1}},
    {"choices": [{"message": {"content": "x"}, "finish_reason": 1}]},
    {"choices": [{"message": {"content": "x"}, "logprobs": {"content": [
        {"token": 5, "logprob": -1.0}]}}]},
])
async def test_wrongly_typed_fields_become_malformed_samples(extra: dict[str, object]) -> None:
    body = orjson.dumps({"choices": [{"message": {"content": "x"}}], **extra})
    result = await run(lambda r: lv.HTTPResponse(200, body), retry=ONCE)
    assert [s.error.kind if s.error else None for s in result.samples] == [
        "malformed_response"] * 2


async def test_mismatched_completion_logprobs_become_malformed_samples() -> None:
    body = orjson.dumps({"choices": [{"text": "abc", "logprobs": {
        "tokens": ["a", "b", "c"], "token_logprobs": [-1.0, -1.0]}}]})
    req = lv.CompletionRequest(model="m", prompt="p", logprobs=1)
    result = await lv.sample_many(req, 2, endpoint=EP, retry=ONCE,
                                  transport=lv.MockTransport(lambda r: lv.HTTPResponse(200, body)))
    assert result.samples[0].error is not None
    assert "token_logprobs: 2 entries for 3 tokens" in result.samples[0].error.message


async def test_unparseable_limit_headers_are_ignored() -> None:
    headers = {"x-ratelimit-remaining-requests": "inf", "x-ratelimit-reset-requests": "1e400"}
    result = await run(lambda r: lv.HTTPResponse(200, ok_body(), headers))
    assert all(s.ok for s in result.samples)


@pytest.mark.parametrize("misbehave", [lambda r: None, lambda r: {}["missing"]])
async def test_a_broken_transport_is_recorded_not_raised(misbehave: object) -> None:
    result = await run(misbehave)
    assert [s.error.kind if s.error else None for s in result.samples] == ["client_error"] * 2
    assert [s.attempts for s in result.samples] == [1, 1]


async def test_a_key_straddling_the_message_cut_is_still_removed() -> None:
    body = ("e" * (500 - len(KEY) + 1) + KEY).encode()
    result = await run(lambda r: lv.HTTPResponse(500, body), retry=ONCE)
    message = result.samples[0].error.message if result.samples[0].error else ""
    assert KEY[:8] not in message and len(message) <= 500


async def test_a_key_echoed_in_an_answer_is_removed() -> None:
    result = await run(lambda r: lv.HTTPResponse(200, orjson.dumps(
        {"choices": [{"message": {"content": f"your key is {KEY}"}}]})))
    assert result.samples[0].text == "your key is ***"


def test_requests_and_prepared_calls_do_not_print_the_key() -> None:
    call = lv.ClientPool(EP).prepare(REQ)
    assert KEY not in repr(call) and KEY not in repr(call.http)


@pytest.mark.parametrize("bad", [KEY + "\n", "k\r\nX-Injected: 1"])
def test_keys_with_control_characters_are_refused_without_echo(bad: str) -> None:
    with pytest.raises(ValidationError) as info:
        lv.Endpoint(base_url="http://127.0.0.1:9/v1", api_key=bad)
    assert "api_key" in str(info.value) and bad.strip() not in str(info.value)
    with pytest.raises(ValidationError, match="control character"):
        lv.Endpoint(base_url="http://127.0.0.1:9/v1", headers={"X-Key": "a\nb"})


def test_a_bad_url_with_credentials_is_refused_without_echo() -> None:
    with pytest.raises(ValidationError) as info:
        lv.Endpoint(base_url=f"htp://u:{KEY}@127.0.0.1/v1")
    assert KEY not in str(info.value)


async def test_redirects_are_not_followed_so_headers_stay_home() -> None:
    seen: list[str] = []

    async def thief(request: web.Request) -> web.Response:
        seen.append(request.headers.get("X-Api-Key", ""))
        return web.json_response({"choices": [{"message": {"content": "stolen"}}]})

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPTemporaryRedirect(f"http://127.0.0.1:{thief_port}/steal")

    runners = []
    ports = []
    for handler in (thief, redirect):
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handler)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        runners.append(runner)
        ports.append(runner.addresses[0][1])
    thief_port, home_port = ports
    try:
        ep = lv.Endpoint(base_url=f"http://127.0.0.1:{home_port}/v1",
                         headers={"X-Api-Key": "hdr-SECRET-42"})
        result = await lv.sample_many(REQ, 1, endpoint=ep)
    finally:
        for runner in runners:
            await runner.cleanup()
    assert seen == []
    assert result.samples[0].error is not None and result.samples[0].error.status == 307


async def test_server_waits_are_capped() -> None:
    clock = FakeClock()
    answers = iter([lv.HTTPResponse(429, headers={"retry-after": "999999999"})])

    def handler(request: lv.HTTPRequest) -> lv.HTTPResponse:
        return next(answers, lv.HTTPResponse(200, ok_body()))

    async with lv.ClientPool(EP, concurrency=1, transport=lv.MockTransport(handler),
                             retry=lv.RetryPolicy(max_server_wait_s=30), clock=clock,
                             sleep=clock.sleep, rng=random.Random(0)) as pool:
        result = await lv.sample_many(REQ, 1, pool=pool)
        assert pool.stats.paused_s == 30.0
    assert result.samples[0].ok


def test_backoff_cannot_overflow() -> None:
    policy = lv.RetryPolicy(multiplier=1e6, max_attempts=100, max_backoff_s=30, jitter=0)
    assert policy.backoff_s(99, random.Random(0)) == 30.0


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"condition": 5}, "condition"), ({"progress": 1}, "progress"),
    ({"on_sample": "x"}, "on_sample"), ({"timeouts": "x"}, "timeouts"),
    ({"endpoint": "http://127.0.0.1:9/v1"}, "endpoint"), ({"output": 3}, "output"),
])
async def test_wrong_argument_types_name_the_field_before_sending(kwargs: dict[str, object],
                                                                  field: str) -> None:
    sent = []
    args = {"endpoint": EP, "transport": lv.MockTransport(lambda r: sent.append(r)), **kwargs}
    with pytest.raises(lv.ConfigError) as info:
        await lv.sample_many(REQ, 2, **args)  # type: ignore[arg-type]
    assert info.value.field == field and sent == []


async def test_batch_effect_argument_types_name_the_field() -> None:
    with pytest.raises(lv.ConfigError, match=r"^background_concurrency: "):
        await lv.batch_effect(REQ, 4, endpoint=EP, background_concurrency=2.5)  # type: ignore[arg-type]
    with pytest.raises(lv.ConfigError, match=r"^sweep: "):
        await lv.batch_effect(REQ, 4, endpoint=EP, sweep=4)  # type: ignore[arg-type]


def test_extra_must_be_json() -> None:
    with pytest.raises(ValidationError, match="extra: not JSON-serializable"):
        lv.ChatRequest(model="m", messages=[{"role": "user", "content": "x"}],
                       extra={"x": {1}})


async def test_a_file_that_only_starts_like_a_header_is_never_overwritten(
        tmp_path: Path) -> None:
    # The header goes out in one write, so only a full disk can cut it; a file like this is
    # far more likely someone else's, and the user decides whether to delete it.
    path = tmp_path / "run.jsonl"
    foreign = b'{"record":"header","format":"llmvariance.run/1","req'
    path.write_bytes(foreign)
    sent: list[int] = []
    with pytest.raises(lv.ConfigError, match=r"not an llmvariance run file.*delete it"):
        await run(lambda r: sent.append(1) or lv.HTTPResponse(200, ok_body()), n=3,
                  output=path)
    assert path.read_bytes() == foreign and sent == []


async def test_odd_records_are_refused_by_line(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    await run(lambda r: lv.HTTPResponse(200, ok_body()), n=2, output=path)
    lines = path.read_bytes().splitlines()
    for bad, message in ((b"[1, 2]", "not a JSON object record"),
                         (b'{"record": "sample", "index": -1, "text": "x"}', "bad sample")):
        path.write_bytes(b"\n".join([lines[0], bad, lines[1]]) + b"\n")
        with pytest.raises(lv.ConfigError, match=message):
            lv.read_run(path)


def test_a_refused_second_writer_leaves_the_file_intact(tmp_path: Path) -> None:
    from llmvariance._runs.runfile import RunFile

    path = tmp_path / "run.jsonl"
    first, _ = RunFile.open(path, REQ, 3, EP, "test")
    try:
        before = path.read_bytes()
        assert before.startswith(b'{"record":"header"')
        with pytest.raises(lv.ConfigError, match="being written by another process"):
            RunFile.open(path, REQ, 3, EP, "test")
        assert path.read_bytes() == before
    finally:
        first.close()
