"""The simulated models' batch behaviour and the batch-effect experiment."""

from __future__ import annotations

import asyncio
import re
from collections import Counter

import anyio
import pytest

import llmvariance as lv
from llmvariance.testing import (
    Context,
    DenseModel,
    DenseNBIModel,
    Engine,
    MoEModel,
    SimServer,
)
from llmvariance.testing._engine import Job

pytestmark = pytest.mark.anyio

PROMPT = ("Write a unique, surprising, extremely randomized story with highly unpredictable "
          "changes of events.")


def chat(model: str, max_tokens: int = 48) -> lv.ChatRequest:
    return lv.ChatRequest(model=model, messages=[{"role": "user", "content": PROMPT}],
                          max_tokens=max_tokens, logit_bias={"100257": -100})


def test_moe_capacity_drops_only_when_identical_tokens_compete() -> None:
    model = MoEModel(experts=8, top_k=2, capacity_factor=1.0)
    model.step([Context.for_prompt("x")])
    assert model.dropped == 0  # B = 1: capacity ceil(2/8) = 1 per expert, never exceeded
    model.step([Context.for_prompt("x") for _ in range(30)])
    # 30 identical tokens want the same 2 experts; each takes ceil(30*2/8) = 8
    assert model.capacity(30) == 8
    assert model.dropped == 2 * (30 - 8)


def test_moe_output_depends_on_the_batch_but_not_across_identical_batches() -> None:
    model = MoEModel()
    alone = model.step([Context.for_prompt(PROMPT)])[0]
    crowd = [Context.for_prompt(PROMPT) for _ in range(30)]
    first, again = model.step(crowd), model.step(crowd)
    assert first == again  # a batch of identical composition: identical outputs
    assert first[0] == alone  # the first in batch order gets its experts, as if alone
    assert first[-1] != alone  # the last one finds them full


def test_dense_nbi_changes_with_batch_size_only_by_a_little() -> None:
    model, dense = DenseNBIModel(noise_scale=0.01), DenseModel()
    ctx = Context.for_prompt(PROMPT)
    one, four = model.step([ctx])[0], model.step([ctx] * 4)[0]
    assert one != four
    assert max(abs(a - b) for a, b in zip(one, dense.logits(ctx), strict=True)) < 0.06
    assert model.step([ctx] * 4)[0] == four


async def engine_burst(model: MoEModel, n: int) -> Counter[str]:
    engine = Engine(model)
    jobs = [engine.generate(Job(Context.for_prompt(PROMPT), max_tokens=20)) for _ in range(n)]
    tasks = [asyncio.ensure_future(job) for job in jobs]
    await asyncio.sleep(0)  # every job is queued before the decode loop starts
    runner = asyncio.create_task(engine.run())
    texts = Counter(g.text for g in await asyncio.gather(*tasks))
    runner.cancel()
    assert engine.batch_sizes[0] == n
    return texts


async def test_engine_batches_concurrent_requests_reproducibly() -> None:
    first = await engine_burst(MoEModel(), 30)
    second = await engine_burst(MoEModel(), 30)
    assert first == second
    assert len(first) > 1


async def test_moe_sequential_agrees_burst_varies_dense_never_varies() -> None:
    async with SimServer(step_time_s=0.001) as url:
        ep = lv.Endpoint(base_url=url)
        moe_seq = await lv.sample_many(chat("moe"), 12, endpoint=ep, concurrency=1)
        moe_burst = await lv.sample_many(chat("moe"), 30, endpoint=ep, concurrency=30)
        dense_burst = await lv.sample_many(chat("dense"), 30, endpoint=ep, concurrency=30)
    assert moe_seq.report.unique_count == 1
    assert moe_burst.report.unique_count >= 3
    assert dense_burst.report.unique_count == 1
    # the first request of a burst has its experts, like a sequential one
    assert moe_seq.texts[0] in moe_burst.texts


async def test_batch_effect_tells_moe_from_dense() -> None:
    async with SimServer(step_time_s=0.001) as url:
        ep = lv.Endpoint(base_url=url)
        moe = await lv.batch_effect(chat("moe"), 16, endpoint=ep, sweep=(4,))
        dense = await lv.batch_effect(chat("dense"), 16, endpoint=ep, sweep=(4,))
    assert list(moe.conditions) == ["sequential", "burst", "loaded", "concurrency=4"]
    assert moe.verdict_kind == "batch_dependent"
    assert moe.verdict.startswith("outputs vary only when requests share batches")
    assert moe.conditions["sequential"].all_agree
    assert not moe.conditions["burst"].all_agree
    assert all(s.condition == "loaded" for s in moe.samples["loaded"])
    assert len(moe.samples["loaded"]) == 16
    assert dense.verdict_kind == "deterministic"
    assert all(r.unique_count == 1 for r in dense.conditions.values())


async def test_batch_effect_refuses_bad_arguments_before_sending() -> None:
    ep = lv.Endpoint(base_url="http://127.0.0.1:9/v1")
    with pytest.raises(lv.ConfigError, match=r"^n: "):
        await lv.batch_effect(chat("moe"), 1, endpoint=ep)
    with pytest.raises(lv.ConfigError, match=r"^conditions: unknown \['stampede'\]"):
        await lv.batch_effect(chat("moe"), 4, endpoint=ep, conditions=["stampede"])


def report(*texts: str, fingerprint: str = "fp") -> lv.VarianceReport:
    return lv.analyze([lv.Sample(index=i, text=t, system_fingerprint=fingerprint)
                       for i, t in enumerate(texts)])


@pytest.mark.parametrize(
    ("conditions", "kind", "start"),
    [
        ({"sequential": report("a", "a"), "burst": report("a", "b")},
         "batch_dependent", "outputs vary only when requests share batches"),
        ({"sequential": report("a", "b"), "burst": report("a", "b")},
         "varies_alone", "outputs vary even one request at a time"),
        ({"sequential": report("a", "a"), "burst": report("a", "a")},
         "deterministic", "outputs never varied"),
        ({"sequential": report("a", "a"), "burst": report("b", "b")},
         "batch_dependent", "outputs agree within each condition but differ between"),
        ({"sequential": report("a"), "burst": report("a", "b")},
         "inconclusive", "inconclusive: the sequential condition"),
        ({"sequential": report("a", "a")}, "inconclusive", "inconclusive: no batched"),
    ],
)
def test_verdicts_on_constructed_reports(conditions: dict[str, lv.VarianceReport], kind: str,
                                         start: str) -> None:
    got_kind, message = lv.judge(conditions)
    assert got_kind == kind
    assert message.startswith(start)


def test_verdict_notes_a_changing_backend_fingerprint() -> None:
    _, message = lv.judge({"sequential": report("a", "a", fingerprint="fp1"),
                           "burst": report("a", "b", fingerprint="fp2")})
    assert "the backend fingerprint changed during the run (2 values)" in message


async def test_demo_prints_the_table_and_both_verdicts() -> None:
    from llmvariance._demo import run_demo

    text = await run_demo(("moe", "dense"), n=12, max_tokens=32)
    lines = text.splitlines()
    table = {line.split()[0]: line for line in lines
             if line.split() and line.split()[0] in ("sequential", "burst", "loaded")}
    assert set(table) == {"sequential", "burst", "loaded"}
    counts = {name: re.findall(r"(\d+)/12", line) for name, line in table.items()}
    assert counts["sequential"] == ["1", "1"]  # moe and dense agree one at a time
    assert counts["burst"][1] == "1"  # dense never varies
    assert int(counts["burst"][0]) > 1  # moe splits in a shared batch
    assert any(line.startswith("moe: outputs vary only when requests share batches")
               for line in lines)
    assert any(line.startswith("dense: outputs never varied") for line in lines)


def test_a_custom_vocabulary_is_used_as_given() -> None:
    model = MoEModel(vocab=["<eos>", " alpha", " beta", " gamma"], experts=4, top_k=1)
    out = model.step([Context.for_prompt("x")] * 3)
    assert [len(row) for row in out] == [4, 4, 4]
    with pytest.raises(ValueError, match="top_k: must be between 1 and experts=4"):
        MoEModel(experts=4, top_k=5)


async def test_background_load_keeps_requests_in_flight_and_stops_with_the_block() -> None:
    server = SimServer(step_time_s=0.01)
    async with server as url, lv.ClientPool(lv.Endpoint(base_url=url), concurrency=4) as pool:
        async with lv.background_load(pool, chat("dense", max_tokens=200), 3):
            assert pool.in_flight == 3  # the block starts once they are out
            await server.wait_for_in_flight(3)
        with anyio.fail_after(10):
            await server.wait_for(lambda stats: stats.in_flight == 0)
        assert pool.in_flight == 0
