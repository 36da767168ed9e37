"""Every metric against hand computation, and the laws collectors must obey."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import llmvariance as lv
from llmvariance._analysis.metrics import (
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
                 "first divergence  token 2 (provider tokens), char 8: all outputs agree on "
                 "the 2 tokens before it",
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


# -- regressions found in review ----------------------------------------------------------

S = lv.Sample


def test_noise_is_bounded_by_the_prefix_of_all_samples_whatever_the_order() -> None:
    # A text first seen without logprobs still limits where noise is measured.
    a = [S(index=0, text="ab", tokens=["a", "b"]),
         S(index=1, text="abcd", tokens=list("abcd"), token_logprobs=[-1.0] * 4),
         S(index=2, text="ab", tokens=["a", "b"], token_logprobs=[-1.0, -1.0])]
    assert lv.analyze(a).logprob_noise_max == 0.0
    assert lv.analyze(a[::-1]).logprob_noise_max == 0.0
    # a sample without logprobs that diverges at token 2 ends the prefix there
    b = [S(index=0, text="abc", tokens=list("abc"), token_logprobs=[-1.0, -1.0, -1.0]),
         S(index=1, text="abc", tokens=list("abc"), token_logprobs=[-1.0, -1.0, -3.0]),
         S(index=2, text="abd", tokens=list("abd"))]
    r = lv.analyze(b)
    assert (r.common_prefix_tokens, r.logprob_noise_mean, r.logprob_noise_max) == (2, 0.0, 0.0)
    # an empty shared prefix has no noise to measure
    c = [S(index=0, text="xy", tokens=["x", "y"]),
         S(index=1, text="ab", tokens=["a", "b"], token_logprobs=[-1.0, -1.0]),
         S(index=2, text="xy", tokens=["x", "y"], token_logprobs=[-5.0, -5.0])]
    assert lv.analyze(c).logprob_noise_mean is None
    assert lv.analyze(c[::-1]).logprob_noise_mean is None


def test_missing_logprobs_count_per_position() -> None:
    a = [S(index=i, text="ab", tokens=["a", "b"], token_logprobs=lp)
         for i, lp in enumerate([[-1.0, -1.0], [-1.5, None], [-2.0, -2.0]])]
    r = lv.analyze(a)
    assert r.logprob_noise_max == pytest.approx(0.5)  # position 1: std of -1 and -2
    assert r.logprob_noise_mean == pytest.approx((math.sqrt(1 / 6) + 0.5) / 2)


def test_divergence_margin_is_the_mean_over_modal_samples_with_alternatives() -> None:
    mode = {"text": "ab", "tokens": ["a", "b"]}
    a = [S(index=0, **mode),
         S(index=1, **mode, top_logprobs=[{"a": -0.1, "z": -2.0}, {"b": -0.1, "c": -0.2}]),
         S(index=2, **mode, top_logprobs=[{"a": -0.1, "z": -2.0}, {"b": -0.1, "c": -0.4}]),
         S(index=3, text="ac", tokens=["a", "c"])]
    assert lv.analyze(a).divergence_margin == pytest.approx(0.2)
    assert lv.analyze(a[::-1]).divergence_margin == pytest.approx(0.2)


def test_plain_strings_join_the_none_group() -> None:
    a = [S(index=0, text="a", condition="x"), S(index=1, text="b", condition="y"), "c", "c"]
    for order in (a, a[2:] + a[:2]):
        r = lv.analyze(order)
        assert {k: v.n_ok for k, v in r.by_condition.items()} == {"x": 1, "y": 1, "(none)": 2}
        assert sum(r.system_fingerprints.values()) == r.n_ok


def test_failures_join_no_fingerprint_group() -> None:
    a = [S(index=0, text="a", system_fingerprint="fp1"),
         S(index=1, error=lv.SampleError(kind="timeout", message="t")),
         S(index=2, text="b", system_fingerprint="fp2")]
    r = lv.analyze(a)
    assert {k: (v.n_ok, v.n_failed) for k, v in r.by_fingerprint.items()} == {
        "fp1": (1, 0), "fp2": (1, 0)}
    assert r.n_failed == 1


def test_logprobs_must_match_tokens() -> None:
    with pytest.raises(ValueError, match="token_logprobs: 3 entries for 2 tokens"):
        S(index=0, text="ab", tokens=["a", "b"], token_logprobs=[-1.0, -1.0, -1.0])
    with pytest.raises(ValueError, match="top_logprobs: 1 entries for 2 tokens"):
        S(index=0, text="ab", tokens=["a", "b"], top_logprobs=[{"a": -1.0}])


def test_same_text_tokenized_differently_is_order_independent() -> None:
    a = [S(index=0, text="ab", tokens=["ab"]), S(index=1, text="ab", tokens=["a", "b"]),
         S(index=2, text="ax", tokens=["a", "x"])]
    assert lv.analyze(a) == lv.analyze(a[::-1])


def test_merging_grouped_with_ungrouped_is_refused() -> None:
    with pytest.raises(ValueError, match="grouped collector with an ungrouped"):
        lv.VarianceCollector().merge(lv.VarianceCollector(grouped=False))


@settings(max_examples=80)
@given(st.lists(st.builds(
    lambda toks, lp, top: S(index=0, text="".join(toks), tokens=toks,
                            token_logprobs=[lp] * len(toks) if lp is not None else None,
                            top_logprobs=[{"a": -0.1, "b": top}] * len(toks)
                            if top is not None else None),
    st.lists(st.sampled_from(["a", "b"]), min_size=1, max_size=4),
    st.one_of(st.none(), st.floats(-5, 0)), st.one_of(st.none(), st.floats(-5, -0.2))),
    min_size=1, max_size=12), st.randoms(use_true_random=False))
def test_logprob_metrics_do_not_depend_on_order(samples: list[lv.Sample],
                                               rnd: random.Random) -> None:
    shuffled = list(samples)
    rnd.shuffle(shuffled)
    a, b = lv.analyze(samples), lv.analyze(shuffled)
    for field in ("logprob_noise_mean", "logprob_noise_max", "divergence_margin"):
        x, y = getattr(a, field), getattr(b, field)
        assert (x is None) == (y is None)
        if x is not None:
            assert x == pytest.approx(y, abs=1e-9)


def test_group_by_reports_a_single_group_when_asked() -> None:
    c = lv.VarianceCollector()
    c.update([S(index=0, text="a", condition="burst"), S(index=1, text="b", condition="burst")])
    assert c.report().by_condition == {}
    by = c.report(group_by=["condition"]).by_condition
    assert list(by) == ["burst"] and by["burst"].n_ok == 2
