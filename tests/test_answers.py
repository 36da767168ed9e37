"""Answer extraction (function, regex, JSON pointer), normalisation and the output tally."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

import llmvariance as lv
from llmvariance._analysis.answers import (
    Comparison,
    JsonPointer,
    OutputTally,
    answer_extractor,
    normalize_whitespace,
)


@pytest.mark.parametrize(("pattern", "text", "answer"), [
    (r"answer is (-?\d+)", "So the answer is -12, and 13 is not.", "-12"),
    (r"-?\d+(?:\.\d+)?|\w+", "  3.5 apples", "3.5"),
    (r"-?\d+(?:\.\d+)?|\w+", " the golden fox", "the"),
    (r"(yes)|(no)", "Well, no.", "no"),  # the first group that took part
    (r"\d+", "in 1937 and 1938", "1937"),  # the first match, whole
    (r"answer: (\w*)", "answer: ", ""),  # an empty answer is still an answer
    (r"answer is (\d+)", "I cannot tell.", None),
    (r"(x)?y", "y", None),  # matched, but no group took part
])
def test_regex_answer_is_first_group_of_first_match(pattern: str, text: str,
                                                    answer: str | None) -> None:
    assert answer_extractor(pattern)(text) == answer
    assert answer_extractor(re.compile(pattern))(text) == answer


def test_compiled_pattern_keeps_its_flags() -> None:
    assert answer_extractor(re.compile(r"answer: (\w+)", re.I))("ANSWER: Yes") == "Yes"


@pytest.mark.parametrize(("pointer", "text", "answer"), [
    ("/answer", '{"answer": "Oslo"}', "Oslo"),
    ("/answer", '  {"answer": 4}\n', "4"),
    ("/answer", '{"answer": 4.5}', "4.5"),
    ("/answer", '{"answer": true}', "true"),
    ("/answer", '{"answer": null}', "null"),
    ("/answer", '{"answer": {"b": 1, "a": [2]}}', '{"a":[2],"b":1}'),
    ("/items/1", '{"items": ["a", "b"]}', "b"),
    ("/a~1b/c~0d", '{"a/b": {"c~d": "x"}}', "x"),
    ("", '{"b": 1,  "a": 2}', '{"a":2,"b":1}'),
    ("/answer", 'Here it is:\n```json\n{"answer": "yes"}\n```\nDone.', "yes"),
    ("/answer", '```\n{"answer": "yes"}\n```', "yes"),
    ("/answer", '```json {"answer": "yes"} ```', "yes"),  # as normalisation leaves it
])
def test_json_pointer_finds_the_value(pointer: str, text: str, answer: str) -> None:
    assert answer_extractor(JsonPointer(pointer))(text) == answer


@pytest.mark.parametrize(("pointer", "text"), [
    ("/answer", "The answer is 4."),  # not JSON
    ("/answer", '{"answer": 4'),
    ("/answer", '{"other": 4}'),
    ("/items/2", '{"items": [1, 2]}'),
    ("/items/01", '{"items": [1, 2]}'),  # RFC 6901: no leading zeros
    ("/items/-", '{"items": [1, 2]}'),
    ("/a/b", '{"a": "text"}'),
    ("/answer", 'Sure: {"answer": 4}'),  # bare JSON inside prose is not searched for
    ("/answer", '```json\n{"answer": 4\n```\n```json\n{"answer": 5}\n```'),  # first block only
])
def test_json_pointer_without_a_value_means_no_answer(pointer: str, text: str) -> None:
    assert answer_extractor(JsonPointer(pointer))(text) is None


def test_a_string_and_a_number_give_the_same_answer() -> None:
    extract = answer_extractor(JsonPointer("/n"))
    assert extract('{"n": "4"}') == extract('{"n": 4}') == "4"


@pytest.mark.parametrize(("spec", "message"), [
    ("(unclosed", "answer: not a valid regular expression: missing ), unterminated subpattern "
                  "at position 0"),
    (re.compile(rb"\d"), "answer: a bytes pattern cannot match text; use a str pattern"),
    (42, "answer: must be a function, a regular expression or a JsonPointer, got int"),
])
def test_bad_answer_specs_are_config_errors(spec: object, message: str) -> None:
    with pytest.raises(lv.ConfigError) as caught:
        answer_extractor(spec)  # type: ignore[arg-type]
    assert str(caught.value) == message


@pytest.mark.parametrize("pointer", ["answer", "/a~2", "/~"])
def test_malformed_pointers_are_refused(pointer: str) -> None:
    with pytest.raises(lv.ConfigError, match="answer: "):
        JsonPointer(pointer)


def test_function_answers_and_their_type_check() -> None:
    assert answer_extractor(lambda s: s.split()[0].lower() if s.split() else None)(
        " Yes, it is.") == "yes,"
    bad = answer_extractor(lambda s: len(s))  # type: ignore[arg-type,return-value]
    with pytest.raises(TypeError, match="the answer function returned int"):
        bad("abc")


def test_json_pointer_is_a_value() -> None:
    assert JsonPointer("/a") == JsonPointer("/a")
    assert len({JsonPointer("/a"), JsonPointer("/a"), JsonPointer("/b")}) == 2
    assert repr(JsonPointer("/a/0")) == "JsonPointer('/a/0')"


# -- normalisation and the tally ----------------------------------------------------------

def test_normalize_whitespace_strips_and_collapses() -> None:
    assert normalize_whitespace("  The  answer\n\tis 4.\n") == "The answer is 4."


def test_tally_counts_distinct_texts_and_answers() -> None:
    tally = Comparison(r"(\d+)").tally()
    tally.update(["x 4", "x 4", "y 4", "none", lv.Sample(index=0, text="z 5"),
                  lv.Sample(index=1, error=lv.SampleError(kind="timeout", message="t"))])
    assert tally.n == 5  # the failed sample is skipped
    assert sorted(tally.counts) == [1, 1, 1, 2]
    assert tally.answers == {"4": 3, "5": 1}
    assert tally.unparseable == 1
    assert sorted(tally.answer_value_counts) == [1, 1, 3]


def test_tally_without_extractor_has_no_answers() -> None:
    tally = Comparison().tally()
    tally.update(["a", "b"])
    assert (tally.answers, tally.unparseable, tally.answer_value_counts) == ({}, 2, [2])
    assert not tally.comparison.has_answers


def test_normalized_comparison_merges_whitespace_variants_and_answers_from_them() -> None:
    comparison = Comparison(r"is  (\w+)", normalize=True)
    tally = comparison.tally()
    tally.update(["it is  big", " it is big", "it is\nbig "])
    # one compared text; the double space the regex wants is gone in it: no answer
    assert (tally.counts, tally.unparseable) == ([3], 3)


def test_an_extractor_runs_once_per_distinct_output() -> None:
    seen: list[str] = []

    def answer(text: str) -> str:
        seen.append(text)
        return text[:1]

    tally = Comparison(answer).tally()
    tally.update(["ab"] * 100 + ["ac"] * 50)
    assert seen == ["ab", "ac"]
    assert tally.answers == {"a": 150}


def test_merged_tallies_equal_one_tally_of_everything() -> None:
    comparison = Comparison(r"\d+")
    a, b, both = comparison.tally(), comparison.tally(), comparison.tally()
    a.update(["1", "2", "x"])
    b.update(["2", "3", "x"])
    both.update(["1", "2", "x", "2", "3", "x"])
    merged = a.merge(b)
    assert (sorted(merged.counts), merged.answers, merged.unparseable) == (
        sorted(both.counts), both.answers, both.unparseable)
    assert isinstance(merged, OutputTally)


@given(st.lists(st.text(alphabet=" \n\tab12", max_size=8), min_size=1, max_size=12),
       st.booleans())
def test_one_compared_text_means_one_answer_value(texts: list[str], normalize: bool) -> None:
    tally = Comparison(r"a(\d)|b", normalize=normalize).tally()
    tally.update(texts)
    assert len(tally.answer_value_counts) <= len(tally.counts)
    assert sum(tally.answer_value_counts) == sum(tally.counts) == len(texts)
