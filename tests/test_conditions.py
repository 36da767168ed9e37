"""The engine conditions (history, cold, shared_prefix, mixed_lengths, batch=K, seeded),
exact batches through the pool, the server's configuration with every result, and the
price of determinism (speed per matrix row).

A fake llama.cpp at the transport seam records what each condition sends and answers as
a server with one slot and a prompt cache would: a request whose prompt is the one the
slot served last, with ``cache_prompt`` on, answers "warm"; any other answers "cold".
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest

import llmvariance as lv
from llmvariance.engines import llamacpp_command
from llmvariance.testing import SimServer

pytestmark = pytest.mark.anyio

URL = "http://127.0.0.1:9/v1"
PROMPT = "Name three colours of the rainbow."
CHAT = lv.ChatRequest(model="m", messages=[{"role": "user", "content": PROMPT}], max_tokens=8)
COMPLETION = lv.CompletionRequest(model="m", prompt=PROMPT, max_tokens=8)


class FakeLlama:
    """Records (method, path, body) and answers like a one-slot llama.cpp with a cache."""

    def __init__(self, slots: int = 2, flush_status: int = 200) -> None:
        self.sent: list[tuple[str, str, dict[str, Any] | None]] = []
        self.last_prompt: str | None = None
        self.slots = slots
        self.flush_status = flush_status

    def _answer(self, prompt: str, cache: bool) -> str:
        warm = cache and prompt == self.last_prompt
        self.last_prompt = prompt
        return f"{'warm' if warm else 'cold'} answer to {prompt[:12]}"

    def __call__(self, request: lv.HTTPRequest) -> lv.HTTPResponse:
        path = request.url.removeprefix("http://127.0.0.1:9")
        body = orjson.loads(request.body) if request.body else None
        self.sent.append((request.method, path, body))
        if path == "/props":
            return json_response({"build_info": "b1-test", "total_slots": self.slots,
                                  "default_generation_settings": {"n_ctx": 512}})
        if path == "/slots":
            return json_response([{"id": 0, "prompt": "another user's secret",
                                   "generated": "their output", "n_ctx": 512}])
        if path == "/apply-template":
            assert body is not None
            return json_response({"prompt": f"<user>{body['messages'][-1]['content']}</user>"})
        if path.startswith(("/slots/", "/flush_cache", "/reset_prefix_cache")):
            return lv.HTTPResponse(self.flush_status, b'{"error": "not here"}')
        assert body is not None
        cache = body.get("cache_prompt", True)
        if path == "/v1/completions":
            prompts = body["prompt"] if isinstance(body["prompt"], list) else [body["prompt"]]
            choices = [{"index": i, "text": self._answer(p, cache) + f" (of {len(prompts)})",
                        "finish_reason": "length"} for i, p in enumerate(prompts)]
            return json_response({"choices": choices[::-1],  # any order: index decides
                                  "usage": {"completion_tokens": 8, "prompt_tokens": 5,
                                            "total_tokens": 13},
                                  "system_fingerprint": "b1-test"})
        text = self._answer(body["messages"][-1]["content"], cache)
        return json_response({"choices": [{"index": 0, "message": {"content": text},
                                           "finish_reason": "length"}],
                              "usage": {"completion_tokens": 8, "prompt_tokens": 5,
                                        "total_tokens": 13}})

    def measured(self, path: str = "/v1/chat/completions") -> list[dict[str, Any]]:
        return [b for _, p, b in self.sent if p == path and b is not None]


def json_response(payload: Any) -> lv.HTTPResponse:
    return lv.HTTPResponse(200, orjson.dumps(payload), {"Content-Type": "application/json"})


async def run(fake: FakeLlama, request: lv.Request, n: int, conditions: list[str],
              **kwargs: Any) -> lv.BatchEffectResult:
    async def answer(request: lv.HTTPRequest) -> lv.HTTPResponse:
        # a request takes a moment, as on a network: background load stays in flight
        # and lets the measured requests run beside it
        await anyio.sleep(0.002)
        return fake(request)

    return await lv.batch_effect(request, n, endpoint=lv.Endpoint(base_url=URL),
                                 conditions=conditions, transport=lv.MockTransport(answer),
                                 **kwargs)


# -- cold against warm ------------------------------------------------------------------------

async def test_cold_as_the_control_finds_warm_requests_that_answer_differently() -> None:
    fake = FakeLlama()
    result = await run(fake, CHAT, 8, ["cold", "sequential", "history=completions"],
                       control="cold", blocks=2)
    assert result.control == "cold"
    # the calibration went out the control's way: with the prompt cache off
    assert fake.measured()[0]["cache_prompt"] is False
    assert result.reference == "cold answer to Name three c"
    assert result.conditions["cold"].unique_count == 1
    # one after another on a warm slot: every request but the first after a change is warm
    assert result.adjusted_pvalues["sequential"] < 0.05
    # after a request with another prompt the slot is cold again: no difference
    assert result.conditions["history=completions"].unique_count == 1
    assert result.adjusted_pvalues["history=completions"] == 1.0
    assert result.verdict_kind == "batch_dependent"
    assert result.verdict.startswith("outputs depend on how requests are sent (the server's")
    # history: each measured chat request right after a /completions one with another prompt
    order = [p for _, p, _ in fake.sent if p.startswith("/v1/")]
    firsts = [i for i, (_, p, b) in enumerate(fake.sent)
              if p == "/v1/chat/completions" and b is not None and "cache_prompt" not in b]
    assert order.count("/v1/completions") == 8
    others = [b["prompt"] for _, p, b in fake.sent if p == "/v1/completions" and b]
    assert all(PROMPT not in prompt for prompt in others)
    assert firsts  # sequential and history requests carry no cache_prompt


async def test_the_server_says_what_it_is_and_slots_keep_no_other_users_text() -> None:
    fake = FakeLlama(slots=4)
    result = await run(fake, CHAT, 2, ["cold", "sequential"], blocks=1, server_info=True)
    server = result.server
    assert server is not None and server.engine == "llama.cpp" and server.verified
    assert (server.build, server.total_slots) == ("b1-test", 4)
    assert server.props is not None and server.props["default_generation_settings"] == {
        "n_ctx": 512}
    assert server.slots == [{"id": 0, "n_ctx": 512}]  # no prompt, no generated text
    assert server.summary() == "llama.cpp b1-test, 4 slots"


async def test_an_unknown_server_is_recorded_as_unknown_and_the_run_goes_on() -> None:
    async with SimServer(step_time_s=0.0) as url:
        result = await lv.batch_effect(
            lv.ChatRequest(model="dense", messages=[{"role": "user", "content": "hi"}],
                           max_tokens=4), 2, endpoint=lv.Endpoint(base_url=url),
            conditions=["sequential", "cold"], blocks=1)
    assert result.server is not None and result.server.engine == "unknown"
    assert result.verdict_kind == "no_variation_observed"


@pytest.mark.parametrize(("policy", "paths"), [
    ("sglang", ["/flush_cache"]),
    ("vllm", ["/reset_prefix_cache"]),
    ("llamacpp_erase", ["/slots/0?action=erase", "/slots/1?action=erase"]),
])
async def test_cold_flush_policies_post_before_every_measured_request(
        policy: str, paths: list[str]) -> None:
    fake = FakeLlama(slots=2, flush_status=404)
    result = await run(fake, CHAT, 3, ["sequential", f"cold={policy}"], blocks=1,
                       calibration=False)
    flushes = [p for m, p, _ in fake.sent if m == "POST" and not p.startswith("/v1")]
    assert flushes == paths[:1] * 3  # llamacpp_erase stops at the first slot refused
    # each flush was refused (404 here): the sample is a failure saying which and why
    samples = list(result.samples[f"cold={policy}"])
    assert [s.index for s in samples] == [0, 1, 2]
    error = samples[0].error
    assert error is not None and error.status == 404 and error.final
    assert f"cold={policy}: POST {paths[0]} answered 404" in error.message


async def test_a_successful_flush_precedes_each_request_and_adds_nothing_to_the_body() -> None:
    fake = FakeLlama(flush_status=200)
    result = await run(fake, CHAT, 2, ["sequential", "cold=sglang"], blocks=1,
                       calibration=False)
    kinds = [p for _, p, _ in fake.sent if p in ("/flush_cache", "/v1/chat/completions")]
    assert kinds == ["/v1/chat/completions"] * 2 + ["/flush_cache", "/v1/chat/completions"] * 2
    assert all("cache_prompt" not in b for b in fake.measured())
    assert result.conditions["cold=sglang"].n_ok == 2


# -- exact batches ----------------------------------------------------------------------------

async def test_batch_k_sends_k_prompts_per_request_and_every_answer_is_a_sample() -> None:
    fake = FakeLlama()
    result = await run(fake, COMPLETION, 6, ["sequential", "batch=4"], blocks=1,
                       calibration=False)
    lists = [b["prompt"] for b in fake.measured("/v1/completions")
             if isinstance(b["prompt"], list)]
    # 6 samples: a batch of 4 copies, then 2 copies topped up with 2 other prompts
    assert [len(p) for p in lists] == [4, 4]
    assert lists[0] == [PROMPT] * 4
    assert lists[1][:2] == [PROMPT] * 2 and all(PROMPT not in p for p in lists[1][2:])
    samples = list(result.samples["batch=4"])
    assert [s.index for s in samples] == list(range(6))
    assert all(s.text is not None and s.text.endswith("(of 4)") for s in samples)
    assert all(s.usage is None and s.condition == "batch=4" for s in samples)


async def test_batch_mixed_puts_the_measured_prompt_among_others() -> None:
    fake = FakeLlama()
    result = await run(fake, COMPLETION, 2, ["sequential", "batch_mixed=3"], blocks=1,
                       calibration=False)
    lists = [b["prompt"] for b in fake.measured("/v1/completions")
             if isinstance(b["prompt"], list)]
    assert len(lists) == 2 and all(len(p) == 3 and p[1] == PROMPT and p.count(PROMPT) == 1
                                   for p in lists)
    assert [s.text for s in result.samples["batch_mixed=3"]] == [
        "cold answer to Name three c (of 3)"] * 2


async def test_a_chat_request_is_batched_through_the_servers_chat_template() -> None:
    fake = FakeLlama()
    result = await run(fake, CHAT.model_copy(update={"logprobs": True}), 2,
                       ["sequential", "batch=2"], blocks=1, calibration=False)
    batch = [b for b in fake.measured("/v1/completions") if isinstance(b["prompt"], list)]
    assert batch[0]["prompt"] == [f"<user>{PROMPT}</user>"] * 2
    assert batch[0]["logprobs"] == 1 and batch[0]["max_tokens"] == 8
    assert result.conditions["batch=2"].n_ok == 2


async def test_batch_k_on_a_server_without_chat_templates_fails_each_sample_saying_why() -> None:
    async with SimServer(step_time_s=0.0) as url:
        result = await lv.batch_effect(
            lv.ChatRequest(model="dense", messages=[{"role": "user", "content": "hi"}],
                           max_tokens=4), 3, endpoint=lv.Endpoint(base_url=url),
            conditions=["sequential", "batch=2"], blocks=1)
    samples = list(result.samples["batch=2"])
    assert len(samples) == 3 and all(s.error is not None for s in samples)
    assert samples[0].error is not None and "POST /apply-template" in samples[0].error.message


async def test_exact_batches_show_the_moe_batch_effect_and_none_on_dense() -> None:
    async with SimServer(step_time_s=0.001) as url:
        results = {}
        for model in ("moe", "dense"):
            results[model] = await lv.batch_effect(
                lv.CompletionRequest(model=model, prompt="Tell me a story", max_tokens=24), 16,
                endpoint=lv.Endpoint(base_url=url), conditions=["sequential", "batch=8"],
                blocks=2)
    moe, dense = results["moe"], results["dense"]
    assert moe.verdict_kind == "batch_dependent" and moe.adjusted_pvalues["batch=8"] < 0.01
    assert moe.conditions["sequential"].unique_count == 1
    assert dense.verdict_kind == "no_variation_observed"


async def test_send_choices_turns_one_failure_into_a_failed_sample_per_index() -> None:
    def refuse(request: lv.HTTPRequest) -> lv.HTTPResponse:
        return lv.HTTPResponse(400, b'{"error": {"message": "no"}}')

    def too_few(request: lv.HTTPRequest) -> lv.HTTPResponse:
        return json_response({"choices": [{"index": 0, "text": "x"}]})

    for handler, kind in ((refuse, "http_status"), (too_few, "malformed_response")):
        async with lv.ClientPool(lv.Endpoint(base_url=URL), transport=lv.MockTransport(handler),
                                 retry=lv.RetryPolicy(max_attempts=1)) as pool:
            call = pool.prepare_choices(COMPLETION, ["a", "b", "c"], "batch=3")
            samples = await pool.send_choices(call, [4, None, 5])
            assert [s.index for s in samples] == [4, 5]
            assert all(s.error is not None and s.error.kind == kind for s in samples)
            with pytest.raises(lv.ConfigError, match=r"^indices: "):
                await pool.send_choices(call, [1])
            with pytest.raises(lv.ConfigError, match=r"^request: ChatRequest has no list"):
                pool.prepare_choices(CHAT, ["a", "b"])
            with pytest.raises(lv.ConfigError, match=r"^stream: "):
                pool.prepare_choices(COMPLETION.model_copy(update={"stream": True}), ["a"])


# -- background of a given shape, history, seeds ---------------------------------------------

async def test_shared_prefix_and_mixed_lengths_load_the_server_with_their_prompts() -> None:
    fake = FakeLlama()
    await run(fake, COMPLETION, 2, ["sequential", "shared_prefix"], blocks=1,
              calibration=False, background_concurrency=3)
    background = {b["prompt"] for b in fake.measured("/v1/completions")
                  if b["prompt"] != PROMPT}
    assert len(background) == 3 and all(p.startswith(PROMPT + "\n\n") for p in background)

    from llmvariance._conditions import MixedLengths

    lengths = MixedLengths(400).lengths(4)
    assert lengths[0] == 8 and lengths[-1] == 400 and lengths == sorted(lengths)
    fake = FakeLlama()
    await run(fake, COMPLETION, 2, ["sequential", "mixed_lengths=400"], blocks=1,
              calibration=False, background_concurrency=4)
    words = sorted({len(b["prompt"].split()) for b in fake.measured("/v1/completions")
                    if b["prompt"] != PROMPT})
    assert len(words) == 4 and words[0] <= 12 and 390 <= words[-1] <= 410


async def test_seeded_conditions_send_a_seed_and_form_their_own_experiment() -> None:
    fake = FakeLlama()
    result = await run(fake, CHAT, 2, ["seeded=7", "seeded_burst=7"], blocks=1)
    bodies = fake.measured()
    assert all(b["seed"] == 7 and b["temperature"] == 1.0 for b in bodies)
    assert len(bodies) == 5  # the calibration is seeded too
    assert result.control == "seeded=7"
    with pytest.raises(lv.ConfigError, match=r"^conditions: .*mix families"):
        await run(fake, CHAT, 2, ["sequential", "seeded"])
    with pytest.raises(lv.ConfigError, match=r"^control: 'cold' is not one of"):
        await run(fake, CHAT, 2, ["sequential", "burst"], control="cold")


@pytest.mark.parametrize("name", ["history=messages", "cold=nope", "batch", "batch=0",
                                  "batch_mixed=1", "mixed_lengths=3", "shared_prefix=2",
                                  "seeded=x"])
async def test_bad_condition_arguments_are_refused_before_sending(name: str) -> None:
    fake = FakeLlama()
    with pytest.raises(lv.ConfigError, match=r"^conditions: unknown"):
        await run(fake, CHAT, 2, ["sequential", name])
    assert fake.sent == []


# -- the record and the price -----------------------------------------------------------------

async def test_the_run_file_header_holds_the_server_and_old_files_read_without_it(
        tmp_path: Path) -> None:
    fake = FakeLlama(slots=3)
    out = tmp_path / "run.jsonl"
    result = await lv.sample_many(CHAT, 2, endpoint=lv.Endpoint(base_url=URL), output=out,
                                  transport=lv.MockTransport(fake), server_info=True)
    assert result.server is not None and result.server.total_slots == 3
    contents = lv.read_run(out)
    assert contents.server is not None and contents.server["build"] == "b1-test"
    assert contents.header["format"] == "llmvariance.run/1"
    page = lv.html_report(contents.report, runs=[contents], plots=False)
    assert "<bdi>llama.cpp b1-test</bdi>" in page
    assert "server configuration (<bdi>llama.cpp</bdi>)" in page
    # a header without the key (older files, or no server_info) reads as before
    lines = out.read_text().splitlines()
    header = json.loads(lines[0])
    del header["server"]
    old = tmp_path / "old.jsonl"
    old.write_text("\n".join([json.dumps(header), *lines[1:]]) + "\n")
    assert lv.read_run(old).server is None and len(lv.read_run(old)) == 2


async def test_every_matrix_row_records_its_server_and_its_price(tmp_path: Path) -> None:
    class Started(SimServer):
        command = ("sim", "--max-batch", "x")

    out = tmp_path / "matrix.json"
    result = await lv.server_matrix(
        COMPLETION.model_copy(update={"model": "moe", "max_tokens": 12}), 8,
        ["max_batch=1", "max_batch=64"], output=out,
        server=lambda **settings: Started(step_time_s=0.001, **settings),
        conditions=["sequential", "burst"], blocks=1, speed=(1, 4), speed_requests=4)
    for row in result.rows:
        assert row.server is not None and row.server.command == ["sim", "--max-batch", "x"]
        assert [s.concurrency for s in row.speed] == [1, 4]
        assert all(s.requests == 4 and s.failed == 0 and s.completion_tokens == 48
                   and s.tokens_per_s > 0 and s.latency_median_s is not None
                   and s.latency_p90_s is not None and s.latency_p90_s >= s.latency_median_s
                   for s in row.speed)
    saved = json.loads(out.read_text())
    assert all(r["server"]["command"] == ["sim", "--max-batch", "x"] and len(r["speed"]) == 2
               for r in saved["rows"])
    text = result.to_text()
    assert "the price of determinism" in text and "tok/s @4" in text
    one, many = result.rows
    assert one.max_disagreement == 0.0 and many.max_disagreement is not None
    figure = lv.plot_price(result, tmp_path / "price.png")
    assert (tmp_path / "price.png").stat().st_size > 1000
    assert figure.axes[0].get_xlabel() == "completion tokens per second (this run)"


def test_llamacpp_flags_of_the_matrix_reach_the_command_line(tmp_path: Path) -> None:
    binary, model = tmp_path / "llama-server", tmp_path / "m.gguf"
    binary.write_text("")
    model.write_bytes(b"GGUF")
    argv = llamacpp_command(model, port=5, binary=binary, parallel=8, kv_unified=True,
                            ubatch_size=32, flash_attn=False, cont_batching=False,
                            cache_prompt=False, cache_ram=0,
                            slot_save_path=tmp_path / "s").argv
    text = " ".join(argv)
    for flag in ("--parallel 8", "--kv-unified", "--ubatch-size 32", "--flash-attn off",
                 "--no-cont-batching", "--no-cache-prompt", "--cache-ram 0",
                 f"--slot-save-path {tmp_path / 's'}"):
        assert flag in text
    assert "--flash-attn auto" in " ".join(llamacpp_command(
        model, port=5, binary=binary, flash_attn="auto").argv)
    with pytest.raises(lv.ConfigError, match=r"^flash_attn: "):
        llamacpp_command(model, port=5, binary=binary, flash_attn="fast")
    with pytest.raises(lv.ConfigError, match=r"^cache_ram: "):
        llamacpp_command(model, port=5, binary=binary, cache_ram=-2)


def test_cache_policies_name_what_each_engine_needs() -> None:
    from llmvariance.engines import CACHE_POLICIES, cache_policy

    assert cache_policy("llamacpp").body == {"cache_prompt": False}
    assert cache_policy("sglang").flush == ("/flush_cache",) and not CACHE_POLICIES[
        "sglang"].verified
    assert "VLLM_SERVER_DEV_MODE" in cache_policy("vllm").note
    with pytest.raises(lv.ConfigError, match=r"^cache_policy: unknown 'x'"):
        cache_policy("x")
