"""Latency and time-to-first-token summaries: overall, per distinct output, mergeable, flat."""

from __future__ import annotations

import math
import random
import tracemalloc
from collections.abc import Iterator

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import llmvariance as lv
from llmvariance._analysis.latency import BUCKETS, RELATIVE_ERROR, LatencySketch
from llmvariance._analysis.report import LatencyStats

S = lv.Sample
QUANTILES = (0.0, 0.1, 0.5, 0.9, 0.99, 1.0)


def within_error(estimate: float, exact: float) -> bool:
    # the stated bound, plus room for floating-point rounding at bucket edges
    return abs(estimate - exact) <= RELATIVE_ERROR * exact * (1 + 1e-9) + 1e-15


def sketch_of(values: list[float]) -> LatencySketch:
    sketch = LatencySketch()
    for value in values:
        sketch.add(value)
    return sketch


# -- the sketch ---------------------------------------------------------------------------

def test_uniform_one_to_a_thousand_ms_quantiles_are_within_the_stated_error() -> None:
    values = [ms / 1000 for ms in range(1, 1001)]
    random.Random(3).shuffle(values)
    r = lv.analyze(S(index=i, text="same", latency_s=v) for i, v in enumerate(values))
    stats = r.latency
    assert stats is not None
    assert (stats.count, stats.min_s, stats.max_s) == (1000, 0.001, 1.0)  # exact
    assert within_error(stats.median_s, 0.5005)
    assert within_error(stats.p90_s, 0.9001)
    assert stats.median_s != 0.5005  # it really is the sketch's estimate, not the exact value


@settings(max_examples=150)
@given(st.lists(st.floats(min_value=1e-3, max_value=3600.0), min_size=1, max_size=200))
def test_quantiles_are_within_the_relative_error_of_numpy(values: list[float]) -> None:
    sketch = sketch_of(values)
    for q in QUANTILES:
        exact = float(np.quantile(values, q))
        assert within_error(sketch.quantile(q), exact), (q, sketch.quantile(q), exact)
    assert (sketch.quantile(0.0), sketch.quantile(1.0)) == (min(values), max(values))


def test_quantiles_of_a_heavy_tail_are_within_the_relative_error() -> None:
    values = list(np.random.default_rng(7).lognormal(mean=-1.0, sigma=1.5, size=20_000)
                  .clip(1e-3, 3600.0))
    sketch = sketch_of(values)
    for q in QUANTILES:
        assert within_error(sketch.quantile(q), float(np.quantile(values, q)))


def test_values_outside_one_ms_to_one_hour_land_in_the_edge_buckets_but_keep_exact_extremes(
        ) -> None:
    sketch = sketch_of([0.0, 1e-5, 5000.0])
    assert sketch.counts == {0: 2, BUCKETS - 1: 1}
    assert (sketch.min, sketch.max, sketch.quantile(1.0)) == (0.0, 5000.0, 5000.0)
    assert 0.0 <= sketch.quantile(0.5) <= 1e-3


def test_impossible_values_are_refused() -> None:
    sketch = LatencySketch()
    for bad in (-0.1, math.nan, math.inf):
        with pytest.raises(ValueError, match="seconds: must be finite and >= 0"):
            sketch.add(bad)
    with pytest.raises(ValueError, match="empty sketch"):
        sketch.quantile(0.5)
    sketch.add(1.0)
    with pytest.raises(ValueError, match="q: must be between 0 and 1"):
        sketch.quantile(1.5)
    assert sketch.count == 1 and repr(sketch).startswith("LatencySketch(count=1, min=1s")


# -- the report ---------------------------------------------------------------------------

def fast_mode_slow_divergence() -> list[lv.Sample]:
    """20 x "a" streamed fast (ttft 50 ms), 5 x "b" streamed slowly (ttft 800 ms)."""
    fast = [S(index=i, text="a", latency_s=0.4, ttft_s=0.05) for i in range(20)]
    slow = [S(index=20 + i, text="b", latency_s=1.5, ttft_s=0.8) for i in range(5)]
    return fast + slow


def test_per_output_summaries_separate_a_fast_mode_from_a_slow_divergent_output() -> None:
    r = lv.analyze(fast_mode_slow_divergence())
    mode, other = r.top_outputs
    assert (mode.text, mode.count, other.text, other.count) == ("a", 20, "b", 5)
    # every value of an output is equal, so min = max pins the estimates exactly
    assert mode.ttft == LatencyStats(count=20, min_s=0.05, median_s=0.05, p90_s=0.05,
                                     max_s=0.05)
    assert other.ttft == LatencyStats(count=5, min_s=0.8, median_s=0.8, p90_s=0.8, max_s=0.8)
    assert mode.latency is not None and mode.latency.median_s == 0.4
    assert other.latency is not None and other.latency.median_s == 1.5
    assert r.ttft is not None and r.latency is not None
    assert (r.ttft.count, r.ttft.min_s, r.ttft.max_s) == (25, 0.05, 0.8)
    assert within_error(r.ttft.median_s, 0.05)
    assert r.ttft.p90_s == 0.8  # ranks 21 and 22 of 0..24 are both "b"
    assert (r.latency.count, r.latency.max_s) == (25, 1.5)


def test_text_shows_overall_lines_and_per_output_medians() -> None:
    text = lv.analyze(fast_mode_slow_divergence()).to_text()
    lines = text.splitlines()
    latency = next(line for line in lines if line.startswith("latency s "))
    ttft = next(line for line in lines if line.startswith("ttft s "))
    assert latency.endswith("max 1.500  (25)") and "median 0.40" in latency
    assert ttft.endswith("p90 0.800  max 0.800  (25)") and "median 0.05" in ttft
    assert "  #1 x20    'a'  [median s: ttft 0.050, latency 0.400]" in lines
    assert ("  #2 x5     leaves the mode at char 0: '|b'  [median s: ttft 0.800, latency 1.500]"
            in lines)
    assert "most common       20 of 25 (80.0%)" in lines  # the existing lines are unchanged


def test_ttft_is_none_when_no_sample_was_streamed() -> None:
    r = lv.analyze([S(index=0, text="a", latency_s=0.3), S(index=1, text="b", latency_s=0.5)])
    assert r.ttft is None and all(o.ttft is None for o in r.top_outputs)
    assert r.latency is not None and r.latency.count == 2
    assert "ttft s            none (no streamed samples)" in r.to_text()


def test_unmeasured_latency_and_failures_are_not_counted() -> None:
    # 0.0 is the Sample default: hand-built samples and plain strings have no timing
    r = lv.analyze(["a", "b", S(index=0, text="a"),
                    S(index=1, latency_s=9.0, error=lv.SampleError(kind="timeout", message="t"))])
    assert r.latency is None and r.ttft is None
    assert all(o.latency is None for o in r.top_outputs)
    assert "latency s" not in r.to_text()
    partial = lv.analyze([S(index=0, text="a", latency_s=0.2), S(index=1, text="a")])
    assert partial.latency is not None and partial.latency.count == 1


def test_groups_carry_their_own_latency() -> None:
    samples = [S(index=i, text="a", condition="burst" if i % 2 else "sequential",
                 latency_s=2.0 if i % 2 else 0.2, ttft_s=1.0 if i % 2 else 0.1)
               for i in range(10)]
    r = lv.analyze(samples)
    burst, sequential = r.by_condition["burst"], r.by_condition["sequential"]
    assert burst.ttft is not None and burst.ttft.median_s == 1.0
    assert sequential.ttft is not None and sequential.ttft.median_s == 0.1
    assert r.latency is not None and (r.latency.count, r.latency.max_s) == (10, 2.0)


def timed_samples(seed: int, n: int) -> list[lv.Sample]:
    rng = random.Random(seed)
    return [S(index=i, text=rng.choice(["a", "b", "c"]),
              condition=rng.choice(["burst", "sequential"]),
              latency_s=rng.lognormvariate(-1, 1),
              ttft_s=rng.lognormvariate(-3, 1) if rng.random() < 0.7 else None)
            for i in range(n)]


def test_merge_equals_collecting_the_union_exactly() -> None:
    samples = timed_samples(1, 400)
    a, b, whole = lv.VarianceCollector(), lv.VarianceCollector(), lv.VarianceCollector()
    a.update(samples[:150])
    b.update(samples[150:])
    whole.update(samples)
    merged = a.merge(b)
    for text, output in whole._outputs.items():  # the histograms, bucket for bucket
        mine = merged._outputs[text]
        assert mine.latency == output.latency and mine.ttft == output.ttft
        assert mine.latency is not None
        assert mine.latency.counts == output.latency.counts
    got, expected = merged.report(), whole.report()
    assert (got.latency, got.ttft) == (expected.latency, expected.ttft)
    assert [(o.latency, o.ttft) for o in got.top_outputs] == [
        (o.latency, o.ttft) for o in expected.top_outputs]
    assert got == expected  # groups included
    assert a.report().latency != expected.latency  # the halves alone do differ


@settings(max_examples=40)
@given(st.integers(0, 10_000), st.integers(0, 60))
def test_merge_at_any_split_equals_the_whole(seed: int, split: int) -> None:
    samples = timed_samples(seed, 60)
    a, b, whole = lv.VarianceCollector(), lv.VarianceCollector(), lv.VarianceCollector()
    a.update(samples[:split])
    b.update(samples[split:])
    whole.update(samples)
    assert a.merge(b).report() == whole.report()


def test_reports_without_latency_fields_still_load() -> None:
    r = lv.analyze(fast_mode_slow_divergence())
    assert lv.VarianceReport.model_validate_json(r.model_dump_json()) == r
    old = r.model_dump(exclude={"latency", "ttft"})
    for output in old["top_outputs"]:
        del output["latency"], output["ttft"]
    loaded = lv.VarianceReport.model_validate(old)
    assert loaded.latency is None and loaded.top_outputs[0].ttft is None


def test_memory_stays_flat_over_two_hundred_thousand_samples() -> None:
    n = 200_000

    def stream() -> Iterator[lv.Sample]:
        for i in range(n):
            yield S(index=i, text="the same answer", latency_s=0.05 + (i % 997) * 1e-3,
                    ttft_s=0.01 + (i % 89) * 1e-4)

    collector = lv.VarianceCollector()
    collector.update(S(index=0, text="the same answer", latency_s=0.3, ttft_s=0.02)
                     for _ in range(10))
    output = collector._outputs["the same answer"]
    assert output.latency is not None and output.ttft is not None
    arrays = (output.latency.counts, output.ttft.counts)
    tracemalloc.start()
    try:
        collector.update(stream())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2_000_000
    # the same dicts, no more buckets than there are: the sketch only counted
    assert output.latency.counts is arrays[0] and output.ttft.counts is arrays[1]
    assert len(output.latency.counts) <= BUCKETS and len(output.ttft.counts) <= BUCKETS
    assert output.latency.count == n + 10 and sum(output.latency.counts.values()) == n + 10
    r = collector.report()
    assert r.latency is not None and r.latency.max_s == pytest.approx(0.05 + 996e-3)


def test_a_sketch_of_a_few_values_is_small() -> None:
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        sketches = [sketch_of([0.2, 0.21, 0.3]) for _ in range(1000)]
        each = (tracemalloc.get_traced_memory()[0] - before) / len(sketches)
    finally:
        tracemalloc.stop()
    assert each < 600  # a dense list of every bucket took 3 KB (300 MB at 100k prompts)
