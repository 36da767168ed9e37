"""llmvariance.engines and the server matrix.

The launcher is tested against a stand-in server process (tests/fake_engine.py); tests
marked ``real`` run llama.cpp's llama-server on SmolLM2 when ``python3 dev.py engines``
has put them in the cache, and skip otherwise.
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

import aiohttp
import anyio
import pytest

import llmvariance as lv
from llmvariance.engines import (
    EngineCommand,
    LlamaCppServer,
    ServerProcess,
    llamacpp_command,
    sglang_command,
    vllm_command,
)
from llmvariance.engines._setup import llama_server_path, model_path
from llmvariance.testing import SimServer

pytestmark = pytest.mark.anyio

FAKE = str(Path(__file__).with_name("fake_engine.py"))


def fake(mode: str, **kwargs: object) -> ServerProcess:
    return ServerProcess(lambda port: EngineCommand((sys.executable, FAKE, str(port), mode)),
                         name="fake", **kwargs)  # type: ignore[arg-type]


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


async def get(url: str) -> int:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status


# -- the launcher ---------------------------------------------------------------------------

async def test_a_server_is_healthy_inside_and_gone_after() -> None:
    server = fake("ok")
    async with server as base_url:
        pid = server.pid
        assert pid is not None and alive(pid)
        assert base_url == f"http://127.0.0.1:{server.port}/v1"
        assert await get(base_url.removesuffix("/v1") + "/health") == 200
        log = server.log_path
    assert not alive(pid)
    assert log is not None and not log.exists()  # a clean run leaves no temporary log


async def test_an_exception_inside_stops_the_server_and_propagates() -> None:
    server = fake("ok")
    pids: list[int | None] = []

    async def fail_inside() -> None:
        async with server:
            pids.append(server.pid)
            raise KeyError("boom")

    with pytest.raises(KeyError, match="boom"):
        await fail_inside()
    assert pids[0] is not None and not alive(pids[0])


async def test_cancellation_inside_stops_the_server() -> None:
    server = fake("ok")
    with anyio.CancelScope() as scope:
        async with server:
            pid = server.pid
            scope.cancel()
            await anyio.sleep_forever()
    assert scope.cancelled_caught and pid is not None and not alive(pid)


async def test_cancellation_while_starting_leaves_nothing_behind() -> None:
    server = fake("ok")
    pids: list[int] = []
    with anyio.CancelScope() as scope:
        async def start() -> None:
            async with server:
                raise AssertionError("cancelled before it was healthy")
        async with anyio.create_task_group() as tg:
            tg.start_soon(start)
            while server.pid is None:  # noqa: ASYNC110 - the launcher offers no event
                await anyio.sleep(0.001)
            pids.append(server.pid)
            scope.cancel()
    assert pids and not alive(pids[0])


async def test_a_server_that_fails_to_start_is_an_error_with_its_log(tmp_path: Path) -> None:
    log = tmp_path / "engine.log"
    with pytest.raises(lv.EngineError) as info:
        async with fake("fail", log_path=log):
            raise AssertionError("never healthy")
    message = str(info.value)
    assert "exited with code 3 before it was ready" in message
    assert "cannot load model: file is corrupt" in message and str(log) in message


async def test_a_server_that_dies_during_the_run_is_reported() -> None:
    server = fake("die")

    async def crash_it() -> None:
        async with server as base_url:
            with pytest.raises(aiohttp.ClientError):
                await get(base_url + "/die")

    with pytest.raises(lv.EngineError, match=r"died during the run \(exit code 4\)") as info:
        await crash_it()
    assert "dying on request" in str(info.value)


async def test_a_server_that_ignores_sigterm_is_killed() -> None:
    server = fake("stubborn", stop_grace_s=0.2)
    async with server:
        pid = server.pid
    assert pid is not None and not alive(pid)


async def test_a_missing_executable_is_an_error_naming_it() -> None:
    server = ServerProcess(lambda port: EngineCommand(("/nonexistent/llama-server",)))
    with pytest.raises(lv.EngineError, match="cannot start /nonexistent/llama-server"):
        async with server:
            pass


# -- command lines --------------------------------------------------------------------------

@pytest.fixture
def fake_files(tmp_path: Path) -> tuple[Path, Path]:
    binary, model = tmp_path / "llama-server", tmp_path / "m.gguf"
    binary.write_text("")
    model.write_bytes(b"GGUF")
    return binary, model


def test_the_llamacpp_command_carries_every_setting(fake_files: tuple[Path, Path]) -> None:
    binary, model = fake_files
    command = llamacpp_command(model, port=8123, binary=binary, parallel=8, kv_unified=True,
                               ctx_size=4096, threads=3, batch_size=512, seed=7,
                               extra_args=["--flash-attn", "off"])
    assert command.argv == (
        str(binary), "--model", str(model), "--host", "127.0.0.1", "--port", "8123",
        "--no-webui", "--parallel", "8", "--ctx-size", "4096", "--threads", "3",
        "--batch-size", "512", "--seed", "7", "--threads-http", "64", "--kv-unified",
        "--flash-attn", "off")
    plain = llamacpp_command(model, port=1, binary=binary, kv_unified=False).argv
    assert "--no-kv-unified" in plain and "--parallel" not in plain


def test_the_binary_comes_from_the_argument_then_the_environment(
        fake_files: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    binary, model = fake_files
    monkeypatch.setenv("LLAMA_SERVER", str(binary))
    assert llamacpp_command(model, port=1).argv[0] == str(binary)
    monkeypatch.setenv("LLAMA_SERVER", "/nowhere/llama-server")
    with pytest.raises(lv.ConfigError, match=r"LLAMA_SERVER.*/nowhere/llama-server") as info:
        llamacpp_command(model, port=1)
    assert info.value.field == "binary"


def test_missing_paths_are_refused_before_anything_starts(
        fake_files: tuple[Path, Path]) -> None:
    binary, model = fake_files
    with pytest.raises(lv.ConfigError, match=r"/nowhere/m\.gguf") as info:
        LlamaCppServer("/nowhere/m.gguf", binary=binary)
    assert info.value.field == "model"
    with pytest.raises(lv.ConfigError, match="/nowhere/bin") as info:
        LlamaCppServer(model, binary="/nowhere/bin")
    assert info.value.field == "binary"
    with pytest.raises(lv.ConfigError, match="parallel"):
        LlamaCppServer(model, binary=binary, parallel=0)


def test_gpu_engine_presets_build_their_documented_commands() -> None:
    vllm = vllm_command("Qwen/Qwen3-8B", port=9000, batch_invariant=True, max_num_seqs=64)
    assert vllm.argv == ("vllm", "serve", "Qwen/Qwen3-8B", "--host", "127.0.0.1", "--port",
                         "9000", "--max-num-seqs", "64")
    assert vllm.env == {"VLLM_BATCH_INVARIANT": "1"}
    assert vllm_command("m", port=1).env == {}
    sglang = sglang_command("Qwen/Qwen3-8B", port=9001, deterministic=True)
    assert sglang.argv == ("python3", "-m", "sglang.launch_server", "--model-path",
                           "Qwen/Qwen3-8B", "--host", "127.0.0.1", "--port", "9001",
                           "--enable-deterministic-inference")
    assert "--enable-deterministic-inference" not in sglang_command("m", port=1).argv


# -- the matrix ------------------------------------------------------------------------------

REQ = lv.ChatRequest(model="moe", messages=[{"role": "user", "content": "Tell a story"}],
                     max_tokens=24)


def test_configurations_parse_from_text() -> None:
    from llmvariance._matrix import parse_config

    assert parse_config("parallel=8,kv_unified,ctx_size=4096,flash=false,x=a") == {
        "parallel": 8, "kv_unified": True, "ctx_size": 4096, "flash": False, "x": "a"}
    with pytest.raises(lv.ConfigError, match="config"):
        parse_config("8=parallel")


async def test_the_matrix_runs_each_configuration_and_resumes(tmp_path: Path) -> None:
    started: list[dict[str, object]] = []

    def sim(**settings: object) -> SimServer:
        started.append(settings)
        return SimServer(step_time_s=0.002, **settings)  # type: ignore[arg-type]

    out = tmp_path / "matrix.json"
    result = await lv.server_matrix(REQ, 12, ["max_batch=1", {"max_batch": 64}], server=sim,
                                    conditions=["sequential", "burst"], output=out, blocks=2)
    one, many = result.rows
    assert (one.config, many.config) == ("max_batch=1", "max_batch=64")
    assert one.verdict_kind == "no_variation_observed"
    assert many.verdict_kind == "batch_dependent"
    assert many.conditions["sequential"].unique_count == 1
    assert many.conditions["burst"].unique_count > 1
    # Holm across the two configurations: twice the smaller p-value, at most
    assert one.pvalue == 1.0 and many.pvalue is not None and many.pvalue < 0.01
    assert many.matrix_pvalue == min(1.0, 2 * many.pvalue)
    text = result.to_text()
    assert "max_batch=64: batch_dependent: outputs depend on how requests are batched" in text
    # a rerun reads what is done instead of starting the servers again
    again = await lv.server_matrix(REQ, 12, ["max_batch=1", "max_batch=64"], server=sim,
                                   conditions=["sequential", "burst"], output=out, blocks=2)
    assert len(started) == 2 and again == result
    with pytest.raises(lv.ConfigError, match="another request"):
        await lv.server_matrix(REQ, 13, ["max_batch=1"], server=sim,
                               conditions=["sequential", "burst"], output=out)


# -- the real engine ---------------------------------------------------------------------

SMOLLM2 = model_path("smollm2-135m-instruct-q4_1")
GEMMA3 = model_path("gemma3-270m-q4_k_m")
have_engine = llama_server_path().is_file() and SMOLLM2.is_file() and GEMMA3.is_file()
real = pytest.mark.skipif(
    not have_engine, reason="llama-server and SmolLM2 are not in the cache: run "
                            "`python3 dev.py engines` once to build and fetch them")
STORY = lv.ChatRequest(model="smollm2", messages=[{"role": "user", "content": (
    "Write a unique, surprising, extremely randomized story with highly unpredictable "
    "changes of events.")}], max_tokens=64)


@pytest.mark.real
@real
async def test_llama_server_starts_answers_and_leaves_no_process() -> None:
    server = LlamaCppServer(SMOLLM2, parallel=2, ctx_size=2048)
    with anyio.CancelScope() as scope:
        async with server as base_url:
            pid = server.pid
            result = await lv.sample_many(STORY.model_copy(update={"max_tokens": 8}), 2,
                                          endpoint=lv.Endpoint(base_url=base_url))
            assert all(s.ok and s.text for s in result.samples)
            assert result.samples[0].system_fingerprint  # llama.cpp's build, e.g. b11312-…
            scope.cancel()
            await anyio.sleep_forever()
    assert pid is not None and not alive(pid)


def bitwise_within_outputs(samples: list[lv.Sample]) -> bool:
    """Whether every two samples with the same text have the same logprobs, bit for bit."""
    by_text: dict[str, list[float | None]] = {}
    for s in samples:
        if s.ok and s.token_logprobs is not None:
            first = by_text.setdefault(s.text or "", s.token_logprobs)
            if first != s.token_logprobs:
                return False
    return True


@pytest.mark.real
@real
async def test_llama_server_with_shared_batches_is_batch_dependent_with_a_p_value() -> None:
    request = STORY.model_copy(update={"logprobs": True})
    async with LlamaCppServer(SMOLLM2, parallel=8, kv_unified=True, ctx_size=8192) as url:
        # two blocks: each burst is 10 wide, so the 8 slots fill. The control is `cold`
        # (the prompt cache off): on a shared KV cache even one-at-a-time requests answer
        # by what the requests before them left in the cache (issue 23's study: sequential
        # 3/10 distinct on these flags), so `sequential` is no clean control here
        result = await lv.batch_effect(request, 20, endpoint=lv.Endpoint(base_url=url),
                                       conditions=["cold", "sequential", "burst"],
                                       control="cold", blocks=2)
    assert result.conditions["cold"].unique_count == 1
    assert result.conditions["burst"].unique_count > 1
    assert result.verdict_kind == "batch_dependent"
    assert result.adjusted_pvalues["burst"] < 0.05
    assert result.verdict.startswith("outputs depend on how requests are ")
    assert "burst: D = " in result.verdict
    assert all(s.token_ids is not None for s in result.samples["burst"])  # llama.cpp's ids
    logprobs = result.logprobs
    assert logprobs is not None
    every = [s for arm in result.samples.values() for s in arm]
    assert logprobs.identical_within_outputs == bitwise_within_outputs(every)
    assert "logprobs: texts agree, " in result.to_text()


@pytest.mark.real
@real
async def test_llama_server_with_one_slot_shows_no_variation_within_its_bound() -> None:
    request = STORY.model_copy(update={"logprobs": True})
    async with LlamaCppServer(SMOLLM2, parallel=1, ctx_size=2048) as url:
        result = await lv.batch_effect(request, 8, endpoint=lv.Endpoint(base_url=url),
                                       conditions=["sequential", "burst", "loaded"],
                                       background_concurrency=2)
    assert [r.unique_count for r in result.conditions.values()] == [1, 1, 1]
    assert result.verdict_kind == "no_variation_observed"
    assert "at most 11.7% of requests differ (95% one-sided, 0 of 24)" in result.verdict
    logprobs = result.logprobs
    assert logprobs is not None and logprobs.samples == 25  # the calibration too
    every = [s for arm in result.samples.values() for s in arm]
    assert logprobs.identical_within_outputs == bitwise_within_outputs(
        [*every, result.calibration])  # type: ignore[list-item]
    print(result.to_text())


RAINBOW = lv.ChatRequest(model="smollm2", messages=[{"role": "user", "content": (
    "Name three colours of the rainbow.")}], max_tokens=64)
WARM_AND_COLD = ["cold", "sequential", "history=completions"]


@pytest.mark.real
@real
async def test_on_llamacpps_defaults_warm_requests_answer_otherwise_than_cold_ones() -> None:
    # llama.cpp's defaults here: 4 slots, one unified KV cache, the prompt cache on
    async with LlamaCppServer(SMOLLM2, ctx_size=8192) as url:
        result = await lv.batch_effect(RAINBOW, 8, endpoint=lv.Endpoint(base_url=url),
                                       conditions=WARM_AND_COLD, control="cold", blocks=2)
    # Measured: with the prompt cache off every request gives the first request's output;
    # a chat request sent right after a /completions request with another prompt gives
    # another one, every time (the observation, now with its p-value).
    assert result.reference_source == "the calibration output"
    assert result.conditions["cold"].unique_count == 1
    assert result.comparisons["history=completions"].b.deviation.count == 8
    assert result.adjusted_pvalues["history=completions"] < 0.01
    assert result.verdict_kind == "batch_dependent"
    server = result.server
    assert server is not None and server.engine == "llama.cpp"
    assert server.total_slots == 4 and server.build is not None
    print(result.to_text())


@pytest.mark.real
@real
async def test_with_the_prompt_cache_off_or_one_slot_no_condition_varies(tmp_path: Path) -> None:
    out = tmp_path / "matrix.json"
    server = functools.partial(LlamaCppServer, SMOLLM2, ctx_size=8192)
    result = await lv.server_matrix(RAINBOW, 6, ["cache_prompt=false", "parallel=1"],
                                    server=server, conditions=WARM_AND_COLD, control="cold",
                                    blocks=2, speed=(1,), speed_requests=2, output=out)
    for row in result.rows:
        assert row.verdict_kind == "no_variation_observed", row.verdict
        assert all(r.unique_count == 1 for r in row.conditions.values())
    # the server's configuration is in the result file, row by row
    saved = json.loads(out.read_text())["rows"]
    commands = [" ".join(row["server"]["command"]) for row in saved]
    assert "--no-cache-prompt" in commands[0] and "--parallel 1" in commands[1]
    assert [row["server"]["total_slots"] for row in saved] == [4, 1]
    assert all(row["server"]["props"]["build_info"] and row["speed"][0]["tokens_per_s"] > 0
               for row in saved)


@pytest.mark.real
@real
async def test_an_exact_batch_varies_as_a_burst_does_on_shared_slots() -> None:
    request = lv.CompletionRequest(model="gemma3", prompt=STORY.messages[0].content,
                                   max_tokens=48)
    async with LlamaCppServer(GEMMA3, parallel=8, kv_unified=True, ctx_size=8192) as url:
        result = await lv.batch_effect(request, 16, endpoint=lv.Endpoint(base_url=url),
                                       conditions=["sequential", "burst", "batch=8"],
                                       blocks=2)
    # one request of 8 prompts fills the 8 slots by itself, whatever the timing
    for name in ("burst", "batch=8"):
        assert result.adjusted_pvalues[name] < 0.05, result.to_text()
        assert result.conditions[name].unique_count > 1
    assert all(s.ok for s in result.samples["batch=8"])
    print(result.to_text())


API_REQUESTS = {
    "chat": lv.ChatRequest(model="m", messages=[{"role": "user", "content": "Tell a story."}],
                           max_tokens=24),
    "completions": lv.CompletionRequest(model="m", prompt="Once upon a time", max_tokens=24),
    "messages": lv.MessagesRequest(model="m", max_tokens=24,
                                   messages=[{"role": "user", "content": "Tell a story."}]),
    "responses": lv.ResponsesRequest(model="m", input="Tell a story.", max_output_tokens=24),
}


@pytest.mark.real
@real
@pytest.mark.parametrize("api", list(API_REQUESTS))
async def test_every_api_streamed_and_not_agrees_on_llama_server(api: str) -> None:
    plain_request = API_REQUESTS[api]
    async with LlamaCppServer(SMOLLM2, parallel=1, ctx_size=2048) as url:
        endpoint = lv.Endpoint(base_url=url)
        plain = await lv.sample_many(plain_request, 2, endpoint=endpoint, concurrency=1)
        streamed = await lv.sample_many(plain_request.model_copy(update={"stream": True}), 2,
                                        endpoint=endpoint, concurrency=1)
    samples = plain.samples + streamed.samples
    assert all(s.ok for s in samples), [s.error for s in samples]
    assert len({s.text for s in samples}) == 1 and samples[0].text
    assert {s.finish_reason for s in samples} <= {"length", "max_tokens", "completed", "stop"}
    assert all(s.usage is not None and s.usage.completion_tokens for s in samples)
    assert all(s.ttft_s is None for s in plain.samples)
    assert all(s.ttft_s is not None and 0 < s.ttft_s < s.latency_s for s in streamed.samples)


def test_holm_across_configurations_can_take_a_row_back_to_inconclusive() -> None:
    from llmvariance._matrix import across_configurations

    def row(config: str, p: float, kind: str) -> lv.MatrixRow:
        return lv.MatrixRow(config=config, settings={}, conditions={}, verdict="v",
                            verdict_kind=kind, pvalue=p)  # type: ignore[arg-type]

    rows = across_configurations([row("a", 0.03, "batch_dependent"),
                                  row("b", 0.02, "batch_dependent"),
                                  row("c", 1.0, "no_variation_observed")], alpha=0.05)
    assert [r.matrix_pvalue for r in rows] == pytest.approx([0.06, 0.06, 1.0])
    assert [r.verdict_kind for r in rows] == ["inconclusive", "inconclusive",
                                              "no_variation_observed"]
    assert rows[0].verdict == ("v; but not after Holm's correction across the 3 "
                               "configurations (p = 0.06)")
