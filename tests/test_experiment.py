"""The simulated models' batch behaviour and the batch-effect experiment."""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from typing import ClassVar

import anyio
import pytest

import llmvariance as lv
from llmvariance import Condition, Trial
from llmvariance.testing import (
    Context,
    DenseModel,
    DenseNBIModel,
    Engine,
    ModelSwitch,
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


async def test_batch_effect_tells_moe_from_dense_with_p_values_and_bounds() -> None:
    async with SimServer(step_time_s=0.001) as url:
        ep = lv.Endpoint(base_url=url)
        moe = await lv.batch_effect(chat("moe"), 20, endpoint=ep, sweep=(4,))
        dense = await lv.batch_effect(chat("dense"), 20, endpoint=ep, sweep=(4,))
    assert list(moe.conditions) == ["sequential", "burst", "loaded", "concurrency=4"]
    assert moe.verdict_kind == "batch_dependent"
    assert moe.verdict.startswith("outputs depend on how requests are batched: burst: D = ")
    assert moe.pvalue is not None and moe.pvalue < 0.01
    assert moe.adjusted_pvalues["burst"] < 0.01 and moe.adjusted_pvalues["loaded"] < 0.01
    assert moe.conditions["sequential"].all_agree
    assert not moe.conditions["burst"].all_agree
    # the calibration request comes first, in no condition, and is the reference
    assert moe.calibration is not None and moe.calibration.condition == "calibration"
    assert moe.reference == moe.calibration.text == moe.conditions["sequential"].top_outputs[
        0].text
    assert moe.reference_source == "the calibration output"
    # 5 blocks of 4: every sample records its block, every block has every condition
    assert moe.blocks == 5
    for name, samples in moe.samples.items():
        assert [s.index for s in samples] == list(range(20))
        assert all(s.condition == name for s in samples)
        assert Counter(s.block for s in samples) == dict.fromkeys(range(5), 4)
    assert dense.verdict_kind == "no_variation_observed"
    # 0 of 80 differ: 1 - 0.05^(1/80) = 3.7 %; 0 of 20: 1 - 0.05^(1/20) = 13.9 %
    assert ("no variation observed: all 80 outputs are identical, in every condition. So at "
            "most 3.7% of requests differ (95% one-sided, 0 of 80), and at most 13.9% in any "
            "one condition (0 of 20)") in dense.verdict
    assert "deterministic" in dense.verdict and "up to that bound" in dense.verdict
    assert all(r.unique_count == 1 for r in dense.conditions.values())
    assert all(p == 1.0 for p in dense.adjusted_pvalues.values())


def switched(after: int) -> SimServer:
    """A simulator whose `dense` model is redeployed (other weights) after ``after``
    requests: batch-invariant before and after, so any condition effect is spurious."""
    return SimServer(step_time_s=0.001, switch=ModelSwitch(after=after,
                                                           model=DenseModel(variant=1)))


async def test_a_backend_change_halfway_is_not_a_condition_effect_with_blocks() -> None:
    n = 30
    async with switched(1 + n) as url:  # the calibration and half of the 2n requests
        result = await lv.batch_effect(chat("dense"), n, endpoint=lv.Endpoint(base_url=url),
                                       conditions=["sequential", "burst"])
    assert result.verdict_kind != "batch_dependent"
    assert result.adjusted_pvalues["burst"] > 0.05
    # both arms saw both backends: they vary alike, and the drift is reported on its own
    seq, burst = result.conditions["sequential"], result.conditions["burst"]
    assert seq.unique_count == burst.unique_count == 2
    assert abs(result.comparisons["burst"].statistic) < 0.1  # ΔD
    assert any(f.startswith("the most common output changed between blocks (at block 2")
               for f in result.findings)


async def test_a_backend_change_halfway_poses_as_a_condition_effect_with_one_block() -> None:
    n = 30
    async with switched(1 + n) as url:
        result = await lv.batch_effect(chat("dense"), n, endpoint=lv.Endpoint(base_url=url),
                                       conditions=["sequential", "burst"], blocks=1)
    assert result.verdict_kind == "batch_dependent"
    assert result.adjusted_pvalues["burst"] < 1e-6
    assert result.conditions["sequential"].all_agree and result.conditions["burst"].all_agree
    assert result.comparisons["burst"].modes_differ
    assert "burst, another output:" in result.verdict
    assert "one block: each condition ran all its samples before the next" in result.design


class Recording(Condition):
    """A registered condition that notes when it ran and sends one at a time."""

    ran: ClassVar[list[tuple[int | None, str]]] = []

    def __init__(self, name: str) -> None:
        self.name = name

    async def run(self, trial: Trial) -> list[lv.Sample]:
        Recording.ran.append((trial.block, self.name))
        return await trial.send(1)


async def test_conditions_rotate_through_the_blocks_and_interim_results_arrive() -> None:
    lv.register_condition("rec", lambda arg: Recording(f"rec={arg}") if arg else None)
    Recording.ran.clear()
    interim: list[tuple[int, int]] = []
    async with SimServer(step_time_s=0.0) as url:
        result = await lv.batch_effect(
            chat("dense", 8), 7, endpoint=lv.Endpoint(base_url=url), blocks=3,
            conditions=["sequential", "rec=a", "rec=b"], calibration=False,
            on_block=lambda block, r: interim.append((block, r.conditions["rec=a"].n_ok)))
    # block b starts at condition b: [seq, a, b], [a, b, seq], [b, seq, a]
    assert Recording.ran == [(0, "rec=a"), (0, "rec=b"), (1, "rec=a"), (1, "rec=b"),
                             (2, "rec=b"), (2, "rec=a")]
    assert [Counter(s.block for s in arm) for arm in result.samples.values()] == [
        {0: 3, 1: 2, 2: 2}] * 3  # 7 split as 3, 2, 2
    assert interim == [(0, 3), (1, 5)]  # after each block but the last
    assert result.calibration is None
    assert result.reference_source == "the most common output over all conditions"
    with pytest.raises(lv.ConfigError, match=r"^conditions: unknown \['rec'\]"):
        await lv.batch_effect(chat("dense"), 4, endpoint=lv.Endpoint(base_url=url),
                              conditions=["sequential", "rec"])


async def test_batch_effect_refuses_bad_arguments_before_sending() -> None:
    ep = lv.Endpoint(base_url="http://127.0.0.1:9/v1")
    with pytest.raises(lv.ConfigError, match=r"^n: "):
        await lv.batch_effect(chat("moe"), 1, endpoint=ep)
    with pytest.raises(lv.ConfigError, match=r"^conditions: unknown \['stampede'\]"):
        await lv.batch_effect(chat("moe"), 4, endpoint=ep, conditions=["stampede"])
    with pytest.raises(lv.ConfigError, match=r"^blocks: must be at most n=4"):
        await lv.batch_effect(chat("moe"), 4, endpoint=ep, blocks=5)
    with pytest.raises(lv.ConfigError, match=r"^alpha: "):
        await lv.batch_effect(chat("moe"), 4, endpoint=ep, alpha=1.5)


def report(*texts: str, fingerprint: str = "fp") -> lv.VarianceReport:
    return lv.analyze([lv.Sample(index=i, text=t, system_fingerprint=fingerprint)
                       for i, t in enumerate(texts)])


def many(counts: dict[str, int]) -> lv.VarianceReport:
    return report(*(t for t, c in counts.items() for _ in range(c)))


@pytest.mark.parametrize(
    ("conditions", "kind", "start"),
    [
        ({"sequential": many({"a": 30}), "burst": many({"a": 22, **dict.fromkeys("bcdefghi",
                                                                             1)})},
         "batch_dependent", "outputs depend on how requests are batched: burst: D = 0.469"),
        ({"sequential": many({"a": 25, "b": 5}), "burst": many({"a": 25, "b": 5})},
         "varies_alone", "outputs vary even one request at a time (sequential: D = 0.287"),
        ({"sequential": many({"a": 30}), "burst": many({"a": 30})},
         "no_variation_observed", "no variation observed: all 60 outputs are identical"),
        ({"sequential": many({"a": 30}), "burst": many({"b": 30})},
         "batch_dependent", "outputs depend on how requests are batched: burst, another output"),
        ({"sequential": many({"a": 30}), "burst": many({"a": 29, "b": 1})},
         "inconclusive", "inconclusive at alpha = 0.05: some outputs differ but not "
                         "significantly"),
        ({"sequential": report("a"), "burst": report("a", "b")},
         "could_not_measure", "could not measure: the control condition (sequential) needs"),
        ({"sequential": report("a", "a")}, "could_not_measure",
         "could not measure: no other condition"),
    ],
)
def test_verdicts_on_constructed_reports(conditions: dict[str, lv.VarianceReport], kind: str,
                                         start: str) -> None:
    got_kind, message = lv.judge(conditions, resamples=999)
    assert got_kind == kind
    assert message.startswith(start)


def test_no_variation_observed_names_a_condition_that_could_not_be_measured() -> None:
    # burst's and loaded's outputs agree with the control; batch=8 has one successful sample,
    # so nothing bounds how it varies, and the verdict must not claim "every condition".
    kind, message = lv.judge({"sequential": many({"a": 30}), "burst": many({"a": 30}),
                              "batch=8": [lv.Sample(index=0, text="a")]}, resamples=999)
    assert kind == "no_variation_observed"
    assert ("all 61 outputs are identical, in every condition measured (not batch=8: too few "
            "successful samples)") in message


def test_an_inconclusive_verdict_says_what_would_decide_it() -> None:
    _, message = lv.judge({"sequential": many({"a": 30}), "burst": many({"a": 28, "b": 2})},
                          resamples=999)
    assert "p = 0.183" in message  # Boschloo one-sided, 2/30 vs 0/30
    assert ("At n = 30 per condition the exact test detects a deviation rate of 21.4% with "
            "80 % power") in message
    assert "to decide 6.7% vs 0.0% would take about" in message


def test_varies_alone_says_batching_is_not_ruled_out_on_a_shared_server() -> None:
    arms = {"sequential": many({"a": 25, "b": 5}), "burst": many({"a": 25, "b": 5})}
    _, remote = lv.judge(arms, resamples=999)
    assert "'one at a time from this client' may still be batched with other users' traffic" \
        in remote


def test_findings_note_a_changing_backend_fingerprint_and_failures() -> None:
    from llmvariance._experiment import analyze_conditions

    failed = lv.Sample(index=2, error=lv.SampleError(kind="timeout", message="slow"))
    samples = {"sequential": [lv.Sample(index=i, text="a", system_fingerprint="fp1")
                              for i in range(2)] + [failed],
               "burst": [lv.Sample(index=i, text=t, system_fingerprint="fp2")
                         for i, t in enumerate("ab")]}
    result = analyze_conditions(chat("dense"), "ep", samples, resamples=999)
    assert ("the backend fingerprint changed during the run (2 values), so some variation "
            "may come from different backends") in result.findings
    assert ("1 of 5 samples failed (timeout 1) and are left out of every figure"
            in result.findings)


def test_a_calibration_output_never_seen_again_is_its_own_finding() -> None:
    from llmvariance._experiment import analyze_conditions

    cold = lv.Sample(index=0, text="cold", condition="calibration")
    samples = {name: [lv.Sample(index=i, text="warm") for i in range(10)]
               for name in ("sequential", "burst")}
    result = analyze_conditions(chat("dense"), "ep", samples, calibration=cold,
                                resamples=999)
    assert result.findings[0].startswith(
        "the calibration (first) request's output never occurred again in 20 later requests")
    assert result.reference == "warm"
    assert result.verdict_kind == "no_variation_observed"


async def test_demo_prints_the_table_and_both_verdicts() -> None:
    from llmvariance._demo import run_demo

    text = await run_demo(("moe", "dense"), n=12, max_tokens=32)
    lines = text.splitlines()
    table = {line.split()[0]: line for line in lines  # table rows, not wrapped verdicts
             if line[:1].isalpha() and line.split()[0] in ("sequential", "burst", "loaded")}
    assert set(table) == {"sequential", "burst", "loaded"}
    counts = {name: re.findall(r"(\d+)/12 ", line) for name, line in table.items()}
    assert counts["sequential"] == ["1", "1"]  # moe and dense agree one at a time
    assert counts["burst"][1] == "1"  # dense never varies
    assert int(counts["burst"][0]) > 1  # moe splits in a shared batch
    assert any(line.startswith("moe: batch_dependent: outputs depend on how requests are "
                               "batched") for line in lines)
    assert any(line.startswith("dense: no_variation_observed: no variation observed")
               for line in lines)
    assert "Design: 5 blocks" in text


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
