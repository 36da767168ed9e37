"""Every metric against hand computation, and the laws collectors must obey."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import llmvariance as lv
from llmvariance._metrics import (
    common_prefix_length,
    id_rows,
    pair_prefix_length,
    rows_prefix_length,
    word_tokens,
)

A = ["The", " cat", " sat", " on", " the", " mat"]
B = ["The", " cat", " sat", " on", " a", " hat"]
C = ["The", " cat", " ran"]
TOP_A = [{"The": -0.1, "A": -2.5}, {" cat": -0.2, " dog": -1.7},
         {" sat": -0.3, " ran": -0.9, " on": -3.0}, {" on": -0.05, " in": -3.0},
         {" the": -0.4, " a": -0.6}, {" mat": -0.2, " hat": -1.0}]


def ten() -> list[lv.Sample]:
    """5 x A, 3 x B, 2 x C, with per-sample logprob noise at position 0."""
    samples = []
    for i, (tokens, finish) in enumerate([(A, "length")] * 5 + [(B, "length")] * 3
                                         + [(C, "stop")] * 2):
        logprobs = [-0.5 + i * 1e-6, -1.0] + [-0.7] * (len(tokens) - 2)
        samples.append(lv.Sample(
            index=i, text="".join(tokens), tokens=tokens, token_logprobs=logprobs,
            top_logprobs=TOP_A[: len(tokens)] if tokens is A else None,
            finish_reason=finish, system_fingerprint="fp_a" if i < 7 else "fp_b"))
    return samples


def h(*ps: float) -> float:
    return -sum(p * math.log2(p) for p in ps)


def test_five_three_two_matches_every_definition() -> None:
    r = lv.analyze(ten())
    tol = {"abs": 1e-9}
    assert (r.n_samples, r.n_ok, r.n_failed, r.failures) == (10, 10, 0, {})
    assert (r.unique_count, r.mode_count, r.all_agree) == (3, 5, False)
    assert r.mode_fraction == pytest.approx(0.5, **tol)
    assert r.agreement_rate == pytest.approx(28 / 90, **tol)
    entropy = h(0.5, 0.3, 0.2)
    assert r.entropy_bits == pytest.approx(entropy, **tol)
    assert r.entropy_mm_bits == pytest.approx(entropy + 2 / (2 * 10 * math.log(2)), **tol)
    assert r.normalized_entropy == pytest.approx(entropy / math.log2(10), **tol)
    assert r.tokenization == "provider"
    assert r.common_prefix_chars == len("The cat ")
    assert r.common_prefix_tokens == 2
    # B shares "The cat sat on " (15 chars, 4 tokens) with the mode A; C "The cat " (8, 2)
    dc = r.divergence_from_mode_chars
    assert dc is not None
    assert (dc.samples, dc.min, dc.max) == (5, 8, 15)
    assert dc.median == 15 and dc.mean == pytest.approx((2 * 8 + 3 * 15) / 5, **tol)
    assert [(b.lo, b.hi, b.count) for b in dc.histogram] == [
        (8, 8, 2), *((v, v, 0) for v in range(9, 15)), (15, 15, 3)]
    dt = r.divergence_from_mode_tokens
    assert dt is not None
    assert (dt.min, dt.median, dt.max) == (2, 4, 4)
    assert dt.mean == pytest.approx(3.2, **tol)
    assert [(b.lo, b.count) for b in dt.histogram] == [(2, 2), (3, 0), (4, 3)]
    assert r.per_position_entropy == pytest.approx(
        [0, 0, h(0.8, 0.2), 0, h(5 / 8, 3 / 8), h(5 / 8, 3 / 8)], **tol)
    assert r.length_mean_tokens == pytest.approx(5.4, **tol)
    assert r.length_std_tokens == pytest.approx(1.2, **tol)
    # position 0: logprobs -0.5 + i*1e-6 for i in 0..9 (population std of 0..9 is
    # sqrt(8.25)); position 1: identical
    std0 = math.sqrt(8.25) * 1e-6
    assert r.logprob_noise_max == pytest.approx(std0, rel=1e-6)
    assert r.logprob_noise_mean == pytest.approx(std0 / 2, rel=1e-6)
    assert r.divergence_margin == pytest.approx(0.6, **tol)  # " sat" -0.3 vs " ran" -0.9
    assert r.finish_reasons == {"length": 8, "stop": 2}
    assert r.system_fingerprints == {"fp_a": 7, "fp_b": 3}
    assert [(o.text, o.count) for o in r.top_outputs] == [
        ("".join(A), 5), ("".join(B), 3), ("".join(C), 2)]


def test_groups_are_the_reports_of_their_samples() -> None:
    samples = ten()
    r = lv.analyze(samples)
    assert set(r.by_fingerprint) == {"fp_a", "fp_b"}
    assert r.by_fingerprint["fp_a"] == lv.analyze(samples[:7]).model_copy(
        update={"by_fingerprint": {}})
    assert r.by_fingerprint["fp_b"].unique_count == 2  # 1 x B, 2 x C
    assert r.by_endpoint == {} and r.by_condition == {}  # one group each: not repeated


def test_groups_by_endpoint_and_condition_in_one_pass() -> None:
    samples = [lv.Sample(index=i, text="x" if i % 3 else "y", endpoint=f"ep{i % 2}",
                         condition="burst" if i >= 4 else "sequential") for i in range(8)]
    r = lv.analyze(samples)
    assert {k: v.n_ok for k, v in r.by_endpoint.items()} == {"ep0": 4, "ep1": 4}
    assert {k: v.unique_count for k, v in r.by_condition.items()} == {
        "burst": 2, "sequential": 2}
    assert r.by_condition["sequential"].n_ok == 4


def test_word_fallback_when_any_sample_lacks_tokens() -> None:
    samples = [lv.Sample(index=0, text="Hello world", tokens=["Hello", " wor", "ld"]),
               lv.Sample(index=1, text="Hello worms")]
    r = lv.analyze(samples)
    assert r.tokenization == "words"
    assert r.common_prefix_tokens == 1  # "Hello", then " world" vs " worms"
    assert r.divergence_margin is None


def test_all_identical_outputs_have_no_divergence() -> None:
    r = lv.analyze(["same"] * 4)
    assert r.all_agree and r.unique_count == 1
    assert (r.agreement_rate, r.entropy_bits, r.entropy_mm_bits) == (1.0, 0.0, 0.0)
    assert r.common_prefix_chars is None and r.common_prefix_tokens is None
    assert r.divergence_from_mode_tokens is None
    assert r.per_position_entropy == [0.0]


def test_empty_and_single_sample_edge_cases() -> None:
    one = lv.analyze(["a b"])
    assert (one.agreement_rate, one.normalized_entropy, one.unique_count) == (None, 0.0, 1)
    empty = lv.analyze([])
    assert (empty.unique_count, empty.mode_fraction, empty.all_agree) == (0, None, False)
    assert empty.length_mean_tokens is None and empty.per_position_entropy == []
    failed = lv.analyze([lv.Sample(index=0, error=lv.SampleError(kind="timeout", message="x"))])
    assert (failed.n_samples, failed.n_ok, failed.failures) == (1, 0, {"timeout": 1})


def test_mode_ties_go_to_the_smallest_text_whatever_the_order() -> None:
    assert lv.analyze(["b", "a", "b", "a"]).top_outputs[0].text == "a"
    assert lv.analyze(["a", "b", "a", "b"]).top_outputs[0].text == "a"


def test_bootstrap_intervals_are_seeded_and_bracket_the_estimate() -> None:
    texts = ["a"] * 50 + ["b"] * 30 + ["c"] * 20
    r1 = lv.analyze(texts, bootstrap=500, seed=4)
    r2 = lv.analyze(texts, bootstrap=500, seed=4)
    assert r1.entropy_bits_ci == r2.entropy_bits_ci
    ci = r1.entropy_bits_ci
    assert ci is not None and (ci.resamples, ci.seed, ci.level) == (500, 4, 0.95)
    assert ci.low < r1.entropy_bits < ci.high
    assert 0.1 < ci.high - ci.low < 0.5
    agree = r1.agreement_rate_ci
    assert agree is not None and r1.agreement_rate is not None
    assert agree.low < r1.agreement_rate < agree.high
    assert lv.analyze(texts, bootstrap=500, seed=5).entropy_bits_ci != ci
    assert lv.analyze(texts).entropy_bits_ci is None


def test_word_tokens_keep_whitespace_and_punctuation() -> None:
    assert word_tokens("Hi, you  there!") == ["Hi", ",", " you", "  there", "!"]
    assert "".join(word_tokens("a  b.\n c ")) == "a  b.\n c "


def test_report_text_and_json_name_the_key_figures() -> None:
    r = lv.analyze(ten())
    text = r.to_text()
    for line in ("distinct outputs  3", "most common       5 of 10 (50.0%)",
                 "first divergence  provider token 2, char 8 (0-based)",
                 "divergence margin 0.6000", "finish reasons    length 8, stop 2",
                 "by fingerprint:"):
        assert line in text
    assert lv.VarianceReport.model_validate_json(r.model_dump_json()) == r


# -- properties ---------------------------------------------------------------------------

texts_strategy = st.lists(st.text(alphabet="ab ", max_size=8), min_size=1, max_size=30)


@given(texts_strategy)
def test_entropy_is_between_zero_and_log2_n(texts: list[str]) -> None:
    r = lv.analyze(texts)
    assert -1e-12 <= r.entropy_bits <= math.log2(len(texts)) + 1e-12
    assert 0.0 <= r.normalized_entropy <= 1.0 + 1e-12
    assert r.entropy_mm_bits >= r.entropy_bits


@given(texts_strategy, st.randoms(use_true_random=False))
def test_reports_do_not_depend_on_sample_order(texts: list[str], rnd: random.Random) -> None:
    shuffled = list(texts)
    rnd.shuffle(shuffled)
    assert lv.analyze(shuffled) == lv.analyze(texts)


@given(st.lists(st.text(alphabet="ab", max_size=6), min_size=2, max_size=20))
def test_common_prefix_is_the_minimum_pairwise_prefix(texts: list[str]) -> None:
    expected = min(pair_prefix_length(a, b) for a in texts for b in texts)
    assert common_prefix_length(texts) == expected
    assert rows_prefix_length(id_rows(texts)) == expected  # the token-id path
    naive = min(next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y),
                     min(len(a), len(b))) for a in texts for b in texts)
    assert expected == naive


sample_strategy = st.builds(
    lambda text, fp, cond, fail: lv.Sample(
        index=0, text=None if fail else text, system_fingerprint=fp, condition=cond,
        error=lv.SampleError(kind="timeout", message="t") if fail else None),
    st.sampled_from(["the cat", "the dog", "a cat", ""]),
    st.sampled_from(["fp1", "fp2", None]), st.sampled_from(["burst", "sequential", None]),
    st.booleans())


@settings(max_examples=60)
@given(st.lists(sample_strategy, max_size=15), st.lists(sample_strategy, max_size=15))
def test_merge_equals_collecting_the_union(left: list[lv.Sample], right: list[lv.Sample]
                                           ) -> None:
    a, b, whole = lv.VarianceCollector(), lv.VarianceCollector(), lv.VarianceCollector()
    a.update(left)
    b.update(right)
    whole.update(left + right)
    assert a.merge(b).report() == whole.report()


def test_merge_combines_logprob_noise_exactly() -> None:
    samples = ten()
    a, b, whole = lv.VarianceCollector(), lv.VarianceCollector(), lv.VarianceCollector()
    a.update(samples[::2])
    b.update(samples[1::2])
    whole.update(samples)
    merged, expected = a.merge(b).report(), whole.report()
    assert merged.logprob_noise_max == pytest.approx(expected.logprob_noise_max, rel=1e-9)
    assert merged.logprob_noise_mean == pytest.approx(expected.logprob_noise_mean, rel=1e-9)
    assert merged.model_dump(exclude={"logprob_noise_max", "logprob_noise_mean",
                                      "by_fingerprint"}) == expected.model_dump(
        exclude={"logprob_noise_max", "logprob_noise_mean", "by_fingerprint"})
