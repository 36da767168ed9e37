import pytest
from pydantic import ValidationError

import llmvariance as lv

MSG = [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"temperature": 2.5}, "temperature"),
        ({"temperature": -0.1}, "temperature"),
        ({"top_p": 0.0}, "top_p"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"model": ""}, "model"),
        ({"messages": []}, "messages"),
        ({"top_logprobs": 21, "logprobs": True}, "top_logprobs"),
        ({"logit_bias": {"100257": -101}}, "logit_bias"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"frequency_penalty": 1.0}, "frequency_penalty"),
    ],
)
def test_chat_request_rejects_bad_values_naming_the_field(kwargs: dict, field: str) -> None:
    args = {"model": "m", "messages": MSG, **kwargs}
    with pytest.raises(ValidationError) as info:
        lv.ChatRequest(**args)
    assert field in str(info.value)


def test_top_logprobs_without_logprobs_is_refused() -> None:
    with pytest.raises(ValidationError, match="top_logprobs: requires logprobs=True"):
        lv.ChatRequest(model="m", messages=MSG, top_logprobs=3)


def test_extra_may_not_shadow_a_real_field() -> None:
    with pytest.raises(ValidationError, match="extra: temperature must be set through"):
        lv.ChatRequest(model="m", messages=MSG, extra={"temperature": 1.0})


def test_logit_bias_keys_must_be_token_ids() -> None:
    with pytest.raises(ValidationError, match="logit_bias: key 'eos' is not a token id"):
        lv.ChatRequest(model="m", messages=MSG, logit_bias={"eos": -100})


def test_completion_logprobs_is_a_count() -> None:
    req = lv.CompletionRequest(model="m", prompt="p", logprobs=3)
    assert req.logprobs == 3
    with pytest.raises(ValidationError, match="logprobs"):
        lv.CompletionRequest(model="m", prompt="p", logprobs=6)


def test_requests_are_frozen_and_messages_become_models() -> None:
    req = lv.ChatRequest(model="m", messages=MSG)
    assert req.messages == [lv.ChatMessage(role="user", content="hi")]
    with pytest.raises(ValidationError):
        req.temperature = 1.0  # type: ignore[misc]
