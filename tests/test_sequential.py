"""Group-sequential stopping: the spending functions, the boundaries, the type-I error over
all looks, and ``batch_effect(..., early_stop=True)`` on the simulator."""

from __future__ import annotations

import json
import math
from pathlib import Path
from statistics import NormalDist

import numpy as np
import pytest

import llmvariance as lv
from llmvariance._analysis import sequential as seq
from llmvariance._analysis.stats import holm
from llmvariance._experiment import interim_pvalues
from llmvariance.testing import Faults, SimServer

PROMPT = ("Write a unique, surprising, extremely randomized story with highly unpredictable "
          "changes of events.")
EQUAL5 = [0.2, 0.4, 0.6, 0.8, 1.0]


def chat(model: str, max_tokens: int = 48) -> lv.ChatRequest:
    return lv.ChatRequest(model=model, messages=[{"role": "user", "content": PROMPT}],
                          max_tokens=max_tokens, logit_bias={"100257": -100})


# -- the spending functions and boundaries ---------------------------------------------------

@pytest.mark.parametrize(("t", "obf", "pocock"), [
    # Lan & DeMets (1983); DeMets & Lan (1994), Table 1, alpha = 0.05
    (0.25, 0.0001, 0.0179), (0.5, 0.0056, 0.0310), (0.75, 0.0236, 0.0414), (1.0, 0.05, 0.05)])
def test_spending_functions_match_the_published_values(t: float, obf: float,
                                                        pocock: float) -> None:
    assert seq.spent(t, 0.05) == pytest.approx(obf, abs=5e-5)
    assert seq.spent(t, 0.05, "pocock") == pytest.approx(pocock, abs=5e-5)
    # and the same formulas computed independently with the standard library
    z = NormalDist().inv_cdf(1 - 0.05 / 2)
    assert seq.spent(t, 0.05) == pytest.approx(2 - 2 * NormalDist().cdf(z / math.sqrt(t)),
                                               rel=1e-9)
    assert seq.spent(t, 0.05, "pocock") == pytest.approx(0.05 * math.log(1 + (math.e - 1) * t))
    assert seq.spent(0.0, 0.05) == seq.spent(0.0, 0.05, "pocock") == 0.0


def test_obrien_fleming_type_boundaries_match_the_published_ones() -> None:
    # one-sided alpha = 0.025, Lan-DeMets O'Brien-Fleming-type spending (gsDesign's
    # sfLDOF, rpact's asOF): 5 and 3 equally spaced looks
    assert seq.boundary(EQUAL5, 0.025) == pytest.approx(
        [4.8769, 3.3569, 2.6803, 2.2898, 2.0310], abs=2e-4)
    assert seq.boundary([1 / 3, 2 / 3, 1.0], 0.025) == pytest.approx(
        [3.7103, 2.5114, 1.9930], abs=2e-4)
    # one look is the fixed-sample test
    assert seq.boundary([1.0], 0.05) == pytest.approx([NormalDist().inv_cdf(0.95)])
    assert seq.nominal_level([1.0], 0.05) == pytest.approx(0.05)


@pytest.mark.parametrize("spending", ["obrien-fleming", "pocock"])
def test_boundaries_spend_exactly_alpha_by_an_independent_multivariate_normal(
        spending: seq.Spending) -> None:
    from scipy import stats

    fractions = [0.15, 0.5, 0.7, 1.0]  # unequal looks
    c = np.asarray(seq.boundary(fractions, 0.05, spending))
    t = np.asarray(fractions)
    cov = np.sqrt(np.minimum.outer(t, t) / np.maximum.outer(t, t))  # corr(Z_j, Z_k)
    for k in range(1, len(t) + 1):
        # P(no crossing by look k) = 1 - alpha(t_k), by Genz's algorithm (not ours)
        survive = stats.multivariate_normal.cdf(
            c[:k], mean=np.zeros(k), cov=cov[:k, :k], maxpts=2_000_000, abseps=1e-7,
            releps=1e-7, rng=np.random.default_rng(1))
        assert 1 - survive == pytest.approx(seq.spent(t[k - 1], 0.05, spending), abs=2e-5)


def test_the_boundary_keeps_the_type_one_error_over_all_looks_and_naive_testing_does_not(
        ) -> None:
    """A seeded simulation of the canonical statistics (partial sums of normal increments)."""
    rng = np.random.default_rng(7)
    reps, alpha = 200_000, 0.05
    t = np.asarray(EQUAL5)
    increments = rng.standard_normal((reps, t.size)) * np.sqrt(np.diff(t, prepend=0.0))
    z = np.cumsum(increments, axis=1) / np.sqrt(t)
    se = math.sqrt(alpha * (1 - alpha) / reps)  # 0.00049
    for spending in ("obrien-fleming", "pocock"):
        c = np.asarray(seq.boundary(EQUAL5, alpha, spending))
        rate = float(np.mean((z >= c).any(axis=1)))
        assert abs(rate - alpha) < 4 * se, (spending, rate)
    naive = float(np.mean((z >= NormalDist().inv_cdf(1 - alpha)).any(axis=1)))
    assert naive > 2.5 * alpha  # about 0.14: repeated testing without a boundary inflates


def test_the_designed_experiment_with_early_stop_keeps_alpha_under_the_null() -> None:
    """The decision as batch_effect takes it (interim_pvalues on samples, then the driver):
    three conditions that deviate alike, 20 per arm in 4 blocks, 600 seeded repetitions."""
    rng = np.random.default_rng(11)
    reps, n, blocks, alpha, rate = 600, 20, 4, 0.05, 0.25
    fractions = [(b + 1) / blocks for b in range(blocks)]
    names = ("sequential", "burst", "loaded")
    calibration = lv.Sample(index=0, text="ref")
    rejections = naive = 0
    for _ in range(reps):
        samples: dict[str, list[lv.Sample]] = {name: [] for name in names}
        test = lv.SequentialTest(fractions, hypotheses=["burst", "loaded"], alpha=alpha)
        stopped_naive = False
        for block in range(blocks):
            for name in names:
                deviate = rng.random(n // blocks) < rate
                samples[name] += [lv.Sample(index=0, text="other" if d else "ref", block=block)
                                  for d in deviate]
            pvalues = interim_pvalues(samples, calibration)
            stopped_naive |= min(holm(list(pvalues.values()))) < alpha
            if test.look(pvalues).stop:
                rejections += 1
                break
        naive += stopped_naive
    se = math.sqrt(alpha * (1 - alpha) / reps)
    assert rejections / reps <= alpha + 2 * se
    assert naive > rejections  # the same data without the boundary rejects more often


def test_repeated_pvalues_invert_the_boundary_and_agree_with_the_decision() -> None:
    fractions = EQUAL5[:2]
    for p in (1e-6, 0.0004, 0.002, 0.03):
        level = seq.repeated_pvalue(p, fractions)
        assert level >= p  # never smaller than the nominal p
        assert seq.nominal_level(fractions, level) == pytest.approx(p, rel=1e-9)
    # Holm's steps at look 2: p_(1) <= a(0.05/3) = 0.000154, p_(2) <= a(0.05/2) = 0.000394
    pvalues = {"burst": 0.0003, "loaded": 0.0001, "concurrency=8": 0.2}
    rejected = seq.rejected(pvalues, fractions, alpha=0.05)
    adjusted = seq.adjusted_pvalues(pvalues, fractions)
    assert rejected == [name for name in sorted(pvalues, key=pvalues.__getitem__)
                        if adjusted[name] <= 0.05]
    assert rejected == ["loaded", "burst"]
    # the same p-values without the first one's rejection stop at the first step
    assert seq.rejected({"burst": 0.0003, "loaded": 0.0002}, fractions, hypotheses=3) == []
    assert seq.repeated_pvalue(1.0, fractions) == 1.0


def test_the_driver_records_each_look_and_refuses_a_look_after_the_decision() -> None:
    test = lv.SequentialTest(EQUAL5, hypotheses=["burst", "loaded"], alpha=0.05)
    first = test.look({"burst": 0.001, "loaded": 0.5}, requests=13)
    assert not first.stop and first.nominal < 1e-5 and first.spent == seq.spent(0.2, 0.05)
    # at alpha/2 for Holm's first step: the boundary is the one at 0.025
    assert first.boundary == pytest.approx(seq.boundary(EQUAL5[:1], 0.025)[0])
    second = test.look({"burst": 1e-4, "loaded": 0.5}, requests=25)
    assert second.stop and second.rejected == ["burst"]
    with pytest.raises(ValueError, match="no look is left"):
        test.look({"burst": 0.0}, requests=37)
    summary = test.summary(planned_requests=61, sent_requests=25)
    assert (summary.saved_requests, summary.stopped, summary.decided_at) == (36, True, 1)
    assert "decided after look 2 of 5" in summary.describe()
    assert "25 of 61 requests sent, 36 saved (59%)" in summary.describe()
    with pytest.raises(lv.ConfigError, match=r"^fractions: must increase"):
        lv.SequentialTest([0.5, 0.5, 1.0], hypotheses=["b"])
    with pytest.raises(lv.ConfigError, match=r"^spending: "):
        lv.SequentialTest([1.0], hypotheses=["b"], spending="linear")  # type: ignore[arg-type]


# -- batch_effect on the simulator -----------------------------------------------------------

def _sent(result: lv.BatchEffectResult) -> int:
    return (result.calibration is not None) + sum(len(a) for a in result.samples.values())


@pytest.mark.anyio
async def test_moe_under_load_is_decided_early_and_dense_runs_every_block() -> None:
    async with SimServer(step_time_s=0.001) as url:
        ep = lv.Endpoint(base_url=url)
        moe = await lv.batch_effect(chat("moe"), 30, endpoint=ep,
                                    conditions=["sequential", "loaded"], early_stop=True)
        dense = await lv.batch_effect(chat("dense"), 30, endpoint=ep,
                                      conditions=["sequential", "loaded"], early_stop=True)
    assert moe.verdict_kind == "batch_dependent"
    stop = moe.early_stop
    assert stop is not None and stop.stopped and stop.decided_at is not None
    looks = len(stop.looks)
    assert looks <= 3  # 6 per block: decided by the second or third block
    assert stop.looks[-1].rejected == ["loaded"]
    assert all(not look.rejected for look in stop.looks[:-1])
    # the blocks never sent are not there, and nothing sent is missing
    for arm in moe.samples.values():
        assert [s.index for s in arm] == list(range(6 * looks))
        assert {s.block for s in arm} == set(range(looks))
    assert stop.planned_requests == 2 * 30 + 1
    assert stop.sent_requests == _sent(moe) == 1 + 2 * 6 * looks
    assert stop.saved_requests == stop.planned_requests - stop.sent_requests
    assert [look.requests for look in stop.looks] == [1 + 12 * (k + 1) for k in range(looks)]
    assert stop.attempts is not None and stop.attempts > stop.sent_requests  # + background
    # significance is the boundary's: adjusted p-values are repeated p-values
    assert moe.adjusted_pvalues["loaded"] < 0.05 < 0.5
    assert moe.adjusted_pvalues["loaded"] >= moe.comparisons["loaded"].pvalue
    assert any(f.startswith(f"early stop: decided after look {looks} of 5") for f in moe.findings)
    assert moe.blocks == looks
    # absence is never decided early
    assert dense.verdict_kind == "no_variation_observed"
    assert dense.early_stop is not None and not dense.early_stop.stopped
    assert len(dense.early_stop.looks) == 5 and dense.early_stop.saved_requests == 0
    assert all(len(arm) == 30 for arm in dense.samples.values())


@pytest.mark.anyio
async def test_requests_saved_are_counted_against_what_the_server_saw() -> None:
    server = SimServer(step_time_s=0.001)
    async with server as url:
        result = await lv.batch_effect(chat("moe"), 40, endpoint=lv.Endpoint(base_url=url),
                                       conditions=["sequential", "burst"], blocks=4,
                                       early_stop=True, server_info=False)  # no probe GETs
    stop = result.early_stop
    assert stop is not None
    # no background load and no retries: every request the server saw is counted as sent
    assert server.stats.requests == stop.sent_requests == _sent(result) == stop.attempts
    assert stop.saved_requests == 2 * 40 + 1 - server.stats.requests
    assert stop.stopped  # burst of 10 on moe: p ~ 1e-6 at look 2 against a boundary of 0.0055
    assert stop.saved_requests >= 20  # at least the last block of both conditions


@pytest.mark.anyio
async def test_failures_are_kept_and_unsent_requests_are_not_failures() -> None:
    faults = Faults(p_500=0.15, seed=3)
    server = SimServer(step_time_s=0.001, faults=faults)
    async with server as url:
        result = await lv.batch_effect(chat("moe"), 40, endpoint=lv.Endpoint(base_url=url),
                                       conditions=["sequential", "burst"], blocks=4,
                                       early_stop=True, retry=lv.RetryPolicy(max_attempts=1),
                                       server_info=False)
    stop = result.early_stop
    assert stop is not None
    failed = sum(1 for arm in result.samples.values() for s in arm if s.error is not None)
    assert failed > 0
    assert server.stats.requests == stop.sent_requests == _sent(result)
    reported = sum(r.n_samples for r in result.conditions.values())
    assert reported == stop.sent_requests - 1  # every sent request is a sample or a failure
    assert sum(r.n_failed for r in result.conditions.values()) == failed
    for arm in result.samples.values():
        blocks_run = len(stop.looks)
        assert [s.index for s in arm] == list(range(10 * blocks_run))


@pytest.mark.anyio
async def test_the_matrix_stops_each_configuration_early_and_resumes_with_the_record(
        tmp_path: Path) -> None:
    started: list[dict[str, object]] = []

    def sim(**settings: object) -> SimServer:
        started.append(settings)
        return SimServer(step_time_s=0.002, **settings)  # type: ignore[arg-type]

    out = tmp_path / "matrix.json"
    configs = ["max_batch=1", "max_batch=64"]
    result = await lv.server_matrix(chat("moe", 32), 24, configs, server=sim,
                                    conditions=["sequential", "burst"], output=out, blocks=3,
                                    early_stop=True)
    one, many = result.rows
    assert one.verdict_kind == "no_variation_observed"
    assert one.early_stop is not None and one.early_stop.saved_requests == 0
    assert many.early_stop is not None and many.verdict_kind == "batch_dependent"
    assert many.early_stop.sent_requests <= many.early_stop.planned_requests
    assert many.matrix_pvalue == min(1.0, 2 * many.pvalue)  # type: ignore[operator]
    on_disk = json.loads(out.read_text())
    assert on_disk["rows"][1]["early_stop"]["planned_requests"] == 2 * 24 + 1
    again = await lv.server_matrix(chat("moe", 32), 24, configs, server=sim,
                                   conditions=["sequential", "burst"], output=out, blocks=3,
                                   early_stop=True)
    assert len(started) == 2 and again == result
