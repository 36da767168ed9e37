"""Hostile servers and careless callers: the defects of the adversarial review (issue 9).

Each test failed on the code before the fix.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tracemalloc
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import orjson
import pytest
from aiohttp import web
from pydantic import ValidationError

import llmvariance as lv
from llmvariance._runs.runfile import RunFile

pytestmark = pytest.mark.anyio

KEY = "sk-ECHOED-0123456789abcdefXYZ"
CHAT = lv.ChatRequest(model="m", messages=[{"role": "user", "content": "hi"}],
                      logprobs=True, top_logprobs=2)
COMPLETION = lv.CompletionRequest(model="m", prompt="hi", logprobs=2)
ONCE = lv.RetryPolicy(max_attempts=1)


def _echo_body(api: str, field: str, key: str) -> dict[str, object]:
    """A well-formed response with the caller's key planted in ``field``."""
    def put(where: str, normal: str) -> str:
        return key if field == where else normal

    tokens = [put("tokens", "Hello"), " world"]
    top = [{put("top_logprobs", "Hi"): -1.0, tokens[0]: -0.1}, {" world": -0.2, " all": -2.0}]
    body: dict[str, object] = {"model": put("model", "m"),
                               "system_fingerprint": put("system_fingerprint", "fp_1"),
                               "usage": {"prompt_tokens": 1, "completion_tokens": 2,
                                         "total_tokens": 3}}
    text = put("text", "Hello") + " world" if field != "tokens" else "".join(tokens)
    finish = put("finish_reason", "stop")
    if api == "chat":
        content = [{"token": t, "logprob": -0.1,
                    "top_logprobs": [{"token": k, "logprob": v} for k, v in alts.items()]}
                   for t, alts in zip(tokens, top, strict=True)]
        body["choices"] = [{"message": {"role": "assistant", "content": text},
                            "finish_reason": finish, "logprobs": {"content": content}}]
    else:
        body["choices"] = [{"text": text, "finish_reason": finish,
                            "logprobs": {"tokens": tokens, "token_logprobs": [-0.1, -0.2],
                                         "top_logprobs": top}}]
    return body


@pytest.fixture
async def echo_server() -> AsyncIterator[str]:
    """Echoes the bearer key into the field named by the model, as a JSON-escaped string
    when the model ends in ``-escaped`` (so the key's bytes never appear in the body)."""

    async def handle(request: web.Request) -> web.Response:
        key = request.headers["Authorization"].removeprefix("Bearer ")
        model = (await request.json())["model"]
        api = "chat" if request.path.endswith("/chat/completions") else "completion"
        field = model.removesuffix("-escaped")
        body = orjson.dumps(_echo_body(api, field, key))
        if model.endswith("-escaped"):
            body = body.replace(key.encode(), "".join(f"\\u{ord(c):04x}" for c in key).encode())
        return web.Response(body=body, content_type="application/json")

    app = web.Application()
    app.router.add_post("/v1/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/v1"
    finally:
        await runner.cleanup()


FIELDS = ["text", "model", "system_fingerprint", "finish_reason", "tokens", "top_logprobs"]


@pytest.mark.parametrize("api", ["chat", "completion"])
@pytest.mark.parametrize("field", [*FIELDS, "model-escaped"])
async def test_a_key_echoed_into_any_field_leaves_no_trace(
        echo_server: str, tmp_path: Path, api: str, field: str) -> None:
    base = CHAT if api == "chat" else COMPLETION
    request = base.model_copy(update={"model": field})
    path = tmp_path / "run.jsonl"
    endpoint = lv.Endpoint(base_url=echo_server, api_key=KEY)
    result = await lv.sample_many(request, 3, endpoint=endpoint, output=path)
    assert all(s.ok for s in result.samples), result.samples[0].error
    sample = result.samples[0]
    views = [path.read_text(), repr(result), result.model_dump_json(), str(result.report),
             result.report.model_dump_json(), repr(sample)]
    for view in views:
        assert KEY not in view and KEY[3:15] not in view
    assert "***" in path.read_text()
    # the answer itself survives around the mask
    assert sample.text is not None and sample.text.endswith(" world")


async def test_a_key_split_across_tokens_is_masked_in_every_token_it_touches() -> None:
    def handler(request: lv.HTTPRequest) -> lv.HTTPResponse:
        tokens = ["The key: ", KEY[:10], KEY[10:], "!"]
        content = [{"token": t, "logprob": -0.1} for t in tokens]
        return lv.HTTPResponse(200, orjson.dumps({"choices": [{"message": {
            "content": "".join(tokens)}, "logprobs": {"content": content}}]}))

    result = await lv.sample_many(CHAT, 1, endpoint=lv.Endpoint(
        base_url="http://127.0.0.1:9/v1", api_key=KEY), transport=lv.MockTransport(handler))
    assert result.samples[0].tokens == ["The key: ", "***", "***", "!"]
    assert result.samples[0].text == "The key: ***!"


def test_the_cli_never_prints_an_echoed_key(echo_server_url_sync: str, tmp_path: Path) -> None:
    out_file = tmp_path / "run.jsonl"
    env = {**os.environ, "OPENAI_API_KEY": KEY}
    cli = [sys.executable, "-m", "llmvariance"]
    sample = subprocess.run(
        [*cli, "sample", "--base-url", echo_server_url_sync, "--model", "system_fingerprint",
         "--prompt", "hi", "-n", "3", "--out", str(out_file)],
        capture_output=True, text=True, timeout=60, env=env, check=False)
    report = subprocess.run([*cli, "report", str(out_file), "--json", "--group-by",
                             "fingerprint"],
                            capture_output=True, text=True, timeout=60, env=env, check=False)
    assert sample.returncode == 0 and report.returncode == 0, sample.stderr + report.stderr
    assert '"***"' in report.stdout  # the fingerprint group, masked
    for text in (sample.stdout, sample.stderr, report.stdout, report.stderr):
        assert KEY not in text


@pytest.fixture
def echo_server_url_sync() -> Iterator[str]:
    """The echo server on a loop in a thread of its own, for a CLI subprocess to call."""
    import asyncio
    import threading

    loop = asyncio.new_event_loop()

    async def handle(request: web.Request) -> web.Response:
        key = request.headers["Authorization"].removeprefix("Bearer ")
        field = (await request.json())["model"]
        return web.json_response(_echo_body("chat", field, key))

    async def start() -> web.AppRunner:
        app = web.Application()
        app.router.add_post("/v1/{tail:.*}", handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        return runner

    thread = threading.Thread(target=loop.run_forever)
    thread.start()
    try:
        runner = asyncio.run_coroutine_threadsafe(start(), loop).result(10)
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/v1"
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


# -- 2. response size -----------------------------------------------------------------------

_CLIENT = """
import resource, sys, orjson, llmvariance as lv
def peak_rss_mb():  # VmHWM: ru_maxrss would include the parent's RSS at fork
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
req = lv.ChatRequest(model="m", messages=[{"role": "user", "content": "hi"}])
result = lv.sample_many_sync(req, 1, endpoint=lv.Endpoint(base_url=sys.argv[1]))
s = result.samples[0]
print(orjson.dumps({"kind": s.error.kind if s.error else None, "attempts": s.attempts,
                    "message": s.error.message if s.error else "",
                    "rss_mb": peak_rss_mb()}).decode())
"""


@pytest.fixture
async def huge_server() -> AsyncIterator[str]:
    """/plain/v1: 50 MB of JSON-ish bytes, chunked; /sized/v1: the same with a length;
    /bomb/v1: 300 MB of zeros in about 300 KB of gzip."""
    import zlib

    chunk = b"a" * 2**20
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    bomb = b"".join(packer.compress(b"\0" * 2**20) for _ in range(300)) + packer.flush()

    async def handle(request: web.Request) -> web.StreamResponse:
        kind = request.match_info["kind"]
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        if kind == "sized":
            response.content_length = 50 * len(chunk)
        if kind == "bomb":
            response.headers["Content-Encoding"] = "gzip"
            response.content_length = len(bomb)
        await response.prepare(request)
        try:
            if kind == "bomb":
                await response.write(bomb)
            else:
                for _ in range(50):
                    await response.write(chunk)
        except (ConnectionResetError, ConnectionError):
            pass  # the client stopped reading, as it should
        return response

    app = web.Application()
    app.router.add_post("/{kind}/v1/chat/completions", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("kind", ["plain", "sized", "bomb"])
async def test_a_huge_or_inflating_body_is_one_failed_sample_in_bounded_memory(
        huge_server: str, kind: str) -> None:
    import anyio

    out = await anyio.run_process([sys.executable, "-c", _CLIENT, f"{huge_server}/{kind}/v1"],
                                  check=False)
    assert out.returncode == 0, out.stderr.decode()
    seen = orjson.loads(out.stdout)
    assert seen["kind"] == "response_too_large" and seen["attempts"] == 1
    assert "33,554,432-byte limit" in seen["message"]
    assert seen["rss_mb"] < 200


async def test_the_response_limit_is_a_setting(huge_server: str) -> None:
    result = await lv.sample_many(CHAT, 1, endpoint=lv.Endpoint(
        base_url=f"{huge_server}/sized/v1"), max_response_bytes=60 * 2**20, retry=ONCE)
    error = result.samples[0].error
    assert error is not None and error.kind == "malformed_response"  # read whole, not JSON
    with pytest.raises(lv.ConfigError, match="max_response_bytes"):
        await lv.sample_many(CHAT, 1, endpoint=lv.Endpoint(base_url=huge_server),
                             max_response_bytes=0)


# -- 3. memory does not grow with n ---------------------------------------------------------

async def test_a_billion_sample_run_costs_nothing_per_pending_index() -> None:
    import anyio

    body = orjson.dumps({"choices": [{"message": {"content": "x"}}]})
    tracemalloc.start()
    try:
        with anyio.CancelScope() as scope:
            await lv.sample_many(CHAT, 10**9, endpoint=lv.Endpoint(
                base_url="http://127.0.0.1:9/v1"), transport=lv.MockTransport(
                lambda r: lv.HTTPResponse(200, body)), on_sample=lambda s: scope.cancel())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert scope.cancelled_caught
    assert peak < 10 * 2**20


# -- 4. hook exceptions propagate as themselves ---------------------------------------------

class HookFailed(ValueError):
    pass


def _mock_ok() -> lv.MockTransport:
    body = orjson.dumps({"choices": [{"message": {"content": "x"}}]})
    return lv.MockTransport(lambda r: lv.HTTPResponse(200, body))


EP = lv.Endpoint(base_url="http://127.0.0.1:9/v1")


@pytest.mark.parametrize("hook", ["on_sample", "progress"])
async def test_a_hook_exception_propagates_as_itself_after_the_file_is_closed(
        tmp_path: Path, hook: str) -> None:
    path = tmp_path / "run.jsonl"

    def fail(arg: object) -> None:
        raise HookFailed("from the hook")

    with pytest.raises(HookFailed, match="from the hook"):
        await lv.sample_many(CHAT, 50, endpoint=EP, transport=_mock_ok(), output=path,
                             **{hook: fail})  # type: ignore[arg-type]
    run = lv.read_run(path)  # closed and complete: every sample line is whole
    assert not run.cut_line and len(run) >= 1
    # and the lock is released: the run resumes to completion
    result = await lv.sample_many(CHAT, 50, endpoint=EP, transport=_mock_ok(), output=path)
    assert len(result.samples) == 50


async def test_a_failing_close_does_not_hide_the_hook_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_close = RunFile.close

    def full_disk(self: RunFile) -> None:
        real_close(self)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(RunFile, "close", full_disk)

    def fail(sample: lv.Sample) -> None:
        raise HookFailed("from the hook")

    with pytest.raises(HookFailed) as info:
        await lv.sample_many(CHAT, 5, endpoint=EP, transport=_mock_ok(),
                             output=tmp_path / "run.jsonl", on_sample=fail)
    assert any("No space left" in note for note in info.value.__notes__)


async def test_a_run_file_that_cannot_be_written_raises_oserror_itself(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def full_disk(self: RunFile, sample: lv.Sample) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(RunFile, "write", full_disk)
    with pytest.raises(OSError, match="No space left"):
        await lv.sample_many(CHAT, 5, endpoint=EP, transport=_mock_ok(),
                             output=tmp_path / "run.jsonl")


# -- 5. resume checks the endpoint ----------------------------------------------------------

async def test_resuming_against_another_server_is_refused_naming_both(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    await lv.sample_many(CHAT, 3, endpoint=EP, transport=_mock_ok(), output=path)
    before = path.read_bytes()
    other = lv.Endpoint(base_url="http://127.0.0.1:10/v1")
    with pytest.raises(lv.ConfigError) as info:
        await lv.sample_many(CHAT, 5, endpoint=other, transport=_mock_ok(), output=path)
    assert info.value.field == "output"
    assert "http://127.0.0.1:9/v1" in str(info.value)
    assert "http://127.0.0.1:10/v1" in str(info.value)
    assert path.read_bytes() == before
    result = await lv.sample_many(CHAT, 5, endpoint=other, transport=_mock_ok(), output=path,
                                  allow_endpoint_change=True)
    assert [s.index for s in result.samples] == [0, 1, 2, 3, 4]


# -- 6. base_url oddities -------------------------------------------------------------------

@pytest.mark.parametrize(("url", "says"), [
    ("http://127.0.0.1:8000/v1#", "fragment"),
    ("http://127.0.0.1:8000/v1?", "query"),
    ("http://127.0.0.1:8000/v1\n", "whitespace or a control character"),
    ("http://127.0.0.1:8000/\tv1", "whitespace or a control character"),
    ("http://127.0.0.1:8000/v1 ", "whitespace or a control character"),
    ("http://127.0.0.1:8000/v1/chat/completions", "use 'http://127.0.0.1:8000/v1'"),
    ("http://127.0.0.1:8000/v1/completions/", "use 'http://127.0.0.1:8000/v1'"),
])
def test_odd_base_urls_are_refused_with_a_hint(url: str, says: str) -> None:
    with pytest.raises(ValidationError) as info:
        lv.Endpoint(base_url=url)
    assert "base_url" in str(info.value) and says in str(info.value)


# -- 7. unusable output paths ---------------------------------------------------------------

async def test_an_unusable_output_path_is_a_config_error_before_sending(tmp_path: Path) -> None:
    sent: list[object] = []
    transport = lv.MockTransport(lambda r: sent.append(r))  # type: ignore[arg-type, func-returns-value]
    for bad in (tmp_path, tmp_path / "file.txt" / "run.jsonl"):
        (tmp_path / "file.txt").write_text("x")
        with pytest.raises(lv.ConfigError) as info:
            await lv.sample_many(CHAT, 2, endpoint=EP, transport=transport, output=bad)
        assert info.value.field == "output" and str(bad) in str(info.value)
    assert sent == []


def test_the_cli_refuses_a_directory_as_out_in_one_line(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "llmvariance", "sample", "--base-url", "http://127.0.0.1:9/v1",
         "--model", "m", "--prompt", "hi", "-n", "1", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and "output" in out.stderr and str(tmp_path) in out.stderr


# -- 9. reading a run file streams it -------------------------------------------------------

async def test_reading_a_big_run_file_streams_one_record_at_a_time(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    text = "word " * 200
    body = orjson.dumps({"choices": [{"message": {"content": text}}]})
    await lv.sample_many(CHAT, 20_000, endpoint=EP, concurrency=64, output=path,
                         transport=lv.MockTransport(lambda r: lv.HTTPResponse(200, body)))
    assert path.stat().st_size > 20 * 2**20
    tracemalloc.start()
    try:
        collector = lv.VarianceCollector()
        collector.update(lv.read_run(path).iter_samples())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    report = collector.report()
    assert report.n_samples == 20_000 and report.unique_count == 1
    assert peak < 4 * 2**20


async def test_the_latest_record_of_each_index_wins_when_streaming(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    calls = 0

    def flaky(request: lv.HTTPRequest) -> lv.HTTPResponse:
        nonlocal calls
        calls += 1
        if calls == 2:
            return lv.HTTPResponse(400, b'{"error": {"message": "no"}}')
        return lv.HTTPResponse(200, orjson.dumps({"choices": [{"message": {
            "content": f"answer {calls}"}}]}))

    first = await lv.sample_many(CHAT, 3, endpoint=EP, concurrency=1, output=path,
                                 transport=lv.MockTransport(flaky))
    assert [s.ok for s in first.samples] == [True, False, True]
    second = await lv.sample_many(CHAT, 3, endpoint=EP, concurrency=1, output=path,
                                  transport=lv.MockTransport(flaky))
    run = lv.read_run(path)
    streamed = sorted(run.iter_samples(), key=lambda s: s.index)
    assert streamed == second.samples and all(s.ok for s in streamed)
    assert run.ok_indices() == {0, 1, 2} and run.max_n == 3


# -- 10. waits are visible --------------------------------------------------------------------

def test_a_silent_server_costs_minutes_not_half_an_hour_by_default() -> None:
    timeouts, policy = lv.Timeouts(), lv.RetryPolicy()
    assert timeouts.total_s is not None
    backoffs = sum(min(policy.max_backoff_s, policy.initial_backoff_s * policy.multiplier ** k)
                   for k in range(policy.max_attempts - 1))
    assert timeouts.total_s * policy.max_attempts + backoffs < 15 * 60


async def test_progress_shows_a_request_that_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    import anyio

    from llmvariance import _sampler
    from llmvariance._progress import _postfix

    monkeypatch.setattr(_sampler, "_TICK_S", 0.01)
    never = anyio.Event()

    async def silent(request: lv.HTTPRequest) -> lv.HTTPResponse:
        await never.wait()
        raise AssertionError("unreachable")

    seen: list[lv.Progress] = []

    def watch(progress: lv.Progress) -> None:
        seen.append(progress)
        if progress.oldest_in_flight_s > 0.02:
            scope.cancel()

    with anyio.CancelScope() as scope:
        await lv.sample_many(CHAT, 1, endpoint=EP, transport=lv.MockTransport(silent),
                             progress=watch)
    assert seen[-1].in_flight == 1 and seen[-1].done == 0
    assert _postfix(lv.Progress(total=1, done=0, failed=0, resumed=0, elapsed_s=95,
                                rate_limited=0, paused_s=0, in_flight=1, timeouts=2,
                                oldest_in_flight_s=95.0)) == {
        "failed": 0, "timeouts": 2, "waiting": "95s"}


async def test_a_damaged_record_found_on_resume_leaves_the_file_untouched(
        tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    await lv.sample_many(CHAT, 3, endpoint=EP, transport=_mock_ok(), output=path)
    lines = path.read_bytes().splitlines(keepends=True)
    damaged = lines[1].replace(b'"latency_s":', b'"latency_s":"oops","x":')
    path.write_bytes(b"".join([lines[0], damaged, *lines[2:]]) + b'{"record":"sam')
    before = path.read_bytes()
    with pytest.raises(lv.ConfigError, match="damaged"):
        await lv.sample_many(CHAT, 3, endpoint=EP, transport=_mock_ok(), output=path)
    assert path.read_bytes() == before


def test_an_index_beyond_the_run_is_refused_not_allocated(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    header = orjson.dumps({"record": "header", "format": "llmvariance.run/1", "n": 3,
                           "request": {"kind": "chat", **CHAT.model_dump(mode="json")}})
    path.write_bytes(header + b'\n{"record":"sample","index":100000000000,"text":"x"}\n')
    with pytest.raises(lv.ConfigError, match="bad sample index 100000000000"):
        lv.read_run(path)
