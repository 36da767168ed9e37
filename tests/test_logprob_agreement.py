"""The numbers under the text: bitwise comparison of the chosen tokens' logprobs."""

from __future__ import annotations

import orjson

import llmvariance as lv
from llmvariance._client.providers import OpenAIChatAdapter

TOKENS = [" the", " dragon", " slept", " in", " the", " tower"]
LOGPROBS = [-0.5, -1.25, -0.125, -2.0, -0.75, -0.0625]


def sample(index: int, logprobs: list[float], tokens: list[str] = TOKENS,
           ids: list[int] | None = None) -> lv.Sample:
    return lv.Sample(index=index, text="".join(tokens), tokens=tokens,
                     token_logprobs=list(logprobs), token_ids=ids)


def test_identical_texts_with_identical_numbers_say_so() -> None:
    report = lv.analyze([sample(i, LOGPROBS) for i in range(4)])
    agreement = report.logprobs
    assert agreement is not None
    assert agreement.identical_within_outputs and agreement.identical_in_prefix
    assert agreement.first_diff_within_outputs is None
    assert agreement.describe() == ("texts agree, and the numbers are bitwise identical "
                                    "(4 samples with logprobs, 1 repeated output)")
    assert "logprobs          texts agree, and the numbers are bitwise identical" in (
        report.to_text())


def test_agreeing_texts_whose_logprobs_differ_say_from_which_token() -> None:
    moved = list(LOGPROBS)
    moved[3] += 2e-3
    moved[5] += 1e-4
    report = lv.analyze([sample(0, LOGPROBS), sample(1, moved), sample(2, LOGPROBS)])
    agreement = report.logprobs
    assert agreement is not None
    assert agreement.identical_within_outputs is False
    assert agreement.first_diff_within_outputs == 3
    assert abs(agreement.max_abs_diff_within_outputs - 2e-3) < 1e-12
    assert agreement.describe() == ("texts agree, but the logprobs already differ from token 3 "
                                    "(max |Δ| 2.0e-03)")


def test_the_shared_prefix_of_different_texts_is_compared_too() -> None:
    other = [*TOKENS[:4], " a", " cave"]
    shifted = list(LOGPROBS)
    shifted[1] = -1.25000001
    report = lv.analyze([sample(0, LOGPROBS), sample(1, shifted, other)])
    agreement = report.logprobs
    assert agreement is not None
    assert agreement.prefix_tokens == 4 == report.common_prefix_tokens
    assert agreement.first_diff_in_prefix == 1
    assert agreement.identical_within_outputs is None  # each text once: nothing to compare
    assert agreement.describe().startswith("no two samples share a text")


def test_merging_collectors_gives_the_same_comparison() -> None:
    moved = list(LOGPROBS)
    moved[2] = -0.126
    items = [sample(0, LOGPROBS), sample(1, moved), sample(2, LOGPROBS), sample(3, moved)]
    a, b, both = lv.VarianceCollector(), lv.VarianceCollector(), lv.VarianceCollector()
    a.update(items[:2])
    b.update(items[2:])
    both.update(items)
    assert a.merge(b).report().logprobs == both.report().logprobs


def test_token_ids_are_compared_rather_than_their_text() -> None:
    # two different byte tokens that both render as U+FFFD: same strings, other ids
    tokens = ["\ufffd", " end"]
    first = sample(0, [-1.0, -1.0], tokens, ids=[240, 7])
    second = lv.Sample(index=1, text="\ufffd end!", tokens=[*tokens, "!"],
                       token_logprobs=[-1.0, -1.0, -1.0], token_ids=[241, 7, 9])
    assert lv.analyze([first, second]).common_prefix_tokens == 0
    without_ids = [s.model_copy(update={"token_ids": None}) for s in (first, second)]
    assert lv.analyze(without_ids).common_prefix_tokens == 2


def test_llama_cpp_token_ids_are_read_from_the_logprobs() -> None:
    body = {"id": "c", "object": "chat.completion", "model": "m", "choices": [{
        "index": 0, "finish_reason": "length",
        "message": {"role": "assistant", "content": "Hello there"},
        "logprobs": {"content": [
            {"id": 19556, "token": "Hello", "logprob": -1.13, "top_logprobs": []},
            {"id": 665, "token": " there", "logprob": -1.07, "top_logprobs": []}]}}]}
    got = OpenAIChatAdapter().decode(orjson.dumps(body))
    assert got["token_ids"] == [19556, 665]
    del body["choices"][0]["logprobs"]["content"][1]["id"]  # type: ignore[index]
    assert OpenAIChatAdapter().decode(orjson.dumps(body))["token_ids"] is None
