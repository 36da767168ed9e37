"""Metric values against hand computation, and the collector's merge law."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

import llmvariance as lv
from llmvariance._metrics import common_prefix_length, word_tokens

A = "the cat sat on the mat"
B = "the cat sat on a hat"
C = "the cat ran"
TEN = [A] * 5 + [B] * 3 + [C] * 2


def test_five_three_two_matches_the_definitions() -> None:
    r = lv.analyze(TEN)
    assert (r.n_samples, r.n_ok, r.n_failed) == (10, 10, 0)
    assert r.unique_count == 3
    assert r.mode_count == 5
    assert r.mode_fraction == pytest.approx(0.5, abs=1e-12)
    assert not r.all_agree
    assert r.agreement_rate == pytest.approx((5 * 4 + 3 * 2 + 2 * 1) / (10 * 9), abs=1e-12)
    expected_h = -(0.5 * math.log2(0.5) + 0.3 * math.log2(0.3) + 0.2 * math.log2(0.2))
    assert r.entropy_bits == pytest.approx(expected_h, abs=1e-12)
    assert r.common_prefix_chars == len("the cat ")
    assert r.common_prefix_tokens == 2  # "the", " cat" then " sat" vs " ran"
    assert r.tokenization == "words"
    assert [(o.text, o.count) for o in r.top_outputs] == [(A, 5), (B, 3), (C, 2)]


def test_all_identical_outputs_have_no_divergence() -> None:
    r = lv.analyze([A] * 4)
    assert r.all_agree and r.unique_count == 1
    assert r.agreement_rate == 1.0
    assert r.entropy_bits == 0.0
    assert r.common_prefix_chars is None and r.common_prefix_tokens is None


def test_fewer_than_two_samples_has_no_agreement_rate() -> None:
    assert lv.analyze([A]).agreement_rate is None
    empty = lv.analyze([])
    assert (empty.unique_count, empty.mode_fraction, empty.all_agree) == (0, None, False)


def sample(index: int, tokens: list[str] | None, error: bool = False) -> lv.Sample:
    if error:
        return lv.Sample(index=index, error=lv.SampleError(kind="timeout", message="slow"))
    return lv.Sample(index=index, text="".join(tokens or []), tokens=tokens)


def test_provider_tokens_are_used_when_every_sample_has_them() -> None:
    # Provider tokens split differently from words: "Hello" + " wor" + "ld" vs "ms".
    samples = [sample(0, ["Hello", " wor", "ld"]), sample(1, ["Hello", " wor", "ms"]),
               sample(2, None, error=True)]
    r = lv.analyze(samples)
    assert r.tokenization == "provider"
    assert r.common_prefix_tokens == 2
    assert r.common_prefix_chars == len("Hello wor")
    assert (r.n_samples, r.n_ok, r.n_failed, r.failures) == (3, 2, 1, {"timeout": 1})


def test_word_fallback_when_any_sample_lacks_tokens() -> None:
    r = lv.analyze([sample(0, ["Hello", " wor", "ld"]),
                    lv.Sample(index=1, text="Hello worms")])
    assert r.tokenization == "words"
    assert r.common_prefix_tokens == 1  # "Hello", then " world" vs " worms"


def test_word_tokens_keep_whitespace_and_punctuation() -> None:
    assert word_tokens("Hi, you  there!") == ["Hi", ",", " you", "  there", "!"]
    assert "".join(word_tokens("a  b.\n c ")) == "a  b.\n c "


def test_report_text_names_the_key_figures() -> None:
    text = lv.analyze(TEN).to_text()
    assert "distinct outputs 3" in text
    assert "most common      5 of 10 (50.0%)" in text
    assert "first divergence char 8, words token 2" in text


@given(st.lists(st.text(alphabet="ab ", max_size=8), min_size=1, max_size=30))
def test_entropy_is_between_zero_and_log2_n(texts: list[str]) -> None:
    r = lv.analyze(texts)
    assert -1e-12 <= r.entropy_bits <= math.log2(len(texts)) + 1e-12


@given(st.lists(st.text(alphabet="ab", max_size=6), min_size=2, max_size=20))
def test_common_prefix_is_the_minimum_pairwise_prefix(texts: list[str]) -> None:
    def pair(a: str, b: str) -> int:
        i = 0
        while i < min(len(a), len(b)) and a[i] == b[i]:
            i += 1
        return i

    expected = min(pair(a, b) for a in texts for b in texts)
    assert common_prefix_length(texts) == expected


@given(st.lists(st.sampled_from([A, B, C, ""]), max_size=20),
       st.lists(st.sampled_from([A, B, C, "x"]), max_size=20), st.randoms())
def test_merge_equals_collecting_the_union_in_any_order(
        left: list[str], right: list[str], rnd: object) -> None:
    a, b = lv.VarianceCollector(), lv.VarianceCollector()
    a.update(left)
    b.update(right)
    union = left + right
    rnd.shuffle(union)  # type: ignore[attr-defined]
    whole = lv.VarianceCollector()
    whole.update(union)
    merged, expected = a.merge(b).report(), whole.report()
    # top_outputs order among equal counts may differ; compare as sets there
    assert merged.model_dump(exclude={"top_outputs"}) == expected.model_dump(
        exclude={"top_outputs"})
    assert {(o.text, o.count) for o in merged.top_outputs} == {
        (o.text, o.count) for o in expected.top_outputs}
