"""The OpenAI wire formats, with bodies shaped like the API reference's examples."""

import orjson
import pytest

import llmvariance as lv
from llmvariance._client.providers import OpenAIChatAdapter, OpenAICompletionAdapter

CHAT_BODY = {
    "id": "chatcmpl-123",
    "object": "chat.completion",
    "created": 1702685778,
    "model": "gpt-4o-mini-2024-07-18",
    "system_fingerprint": "fp_44709d6fcb",
    "choices": [{
        "index": 0,
        "message": {"role": "assistant", "content": "Hello there"},
        "logprobs": {"content": [
            {"token": "Hello", "logprob": -0.31, "bytes": [72, 101, 108, 108, 111],
             "top_logprobs": [{"token": "Hello", "logprob": -0.31, "bytes": None},
                              {"token": "Hi", "logprob": -1.31, "bytes": None}]},
            {"token": " there", "logprob": -0.05, "bytes": None,
             "top_logprobs": [{"token": " there", "logprob": -0.05, "bytes": None},
                              {"token": "!", "logprob": -3.0, "bytes": None}]},
        ], "refusal": None},
        "finish_reason": "length",
    }],
    "usage": {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11},
}

COMPLETION_BODY = {
    "id": "cmpl-uqkvlQyYK7bGYrRHQ0eXlWi7",
    "object": "text_completion",
    "created": 1589478378,
    "model": "gpt-3.5-turbo-instruct",
    "system_fingerprint": "fp_44709d6fcb",
    "choices": [{
        "text": "\n\nThis is",
        "index": 0,
        "logprobs": {
            "tokens": ["\n\n", "This", " is"],
            "token_logprobs": [-0.2, -0.7, -0.01],
            "top_logprobs": [{"\n\n": -0.2, "\n": -1.9}, {"This": -0.7, "It": -0.9},
                             {" is": -0.01, " was": -4.6}],
            "text_offset": [5, 7, 11],
        },
        "finish_reason": "length",
    }],
    "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8},
}


def test_chat_body_decodes_text_tokens_logprobs_and_metadata() -> None:
    got = OpenAIChatAdapter().decode(orjson.dumps(CHAT_BODY))
    assert got["text"] == "Hello there"
    assert got["tokens"] == ["Hello", " there"]
    assert got["token_logprobs"] == [-0.31, -0.05]
    assert got["top_logprobs"] == [{"Hello": -0.31, "Hi": -1.31}, {" there": -0.05, "!": -3.0}]
    assert got["finish_reason"] == "length"
    assert got["system_fingerprint"] == "fp_44709d6fcb"
    assert got["model"] == "gpt-4o-mini-2024-07-18"
    assert got["usage"] == {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11}


def test_completion_body_decodes_parallel_logprob_lists() -> None:
    got = OpenAICompletionAdapter().decode(orjson.dumps(COMPLETION_BODY))
    assert got["text"] == "\n\nThis is"
    assert got["tokens"] == ["\n\n", "This", " is"]
    assert got["token_logprobs"] == [-0.2, -0.7, -0.01]
    assert got["top_logprobs"] is not None
    assert got["top_logprobs"][1] == {"This": -0.7, "It": -0.9}


def test_chat_without_logprobs_has_no_tokens() -> None:
    body = {**CHAT_BODY, "choices": [{**CHAT_BODY["choices"][0], "logprobs": None}]}
    got = OpenAIChatAdapter().decode(orjson.dumps(body))
    assert got["tokens"] is None and got["top_logprobs"] is None


def test_chat_logprobs_without_alternatives_leaves_top_logprobs_empty() -> None:
    entries = [{"token": "a", "logprob": -0.1, "top_logprobs": []}]
    choice = {**CHAT_BODY["choices"][0], "logprobs": {"content": entries}}
    got = OpenAIChatAdapter().decode(orjson.dumps({**CHAT_BODY, "choices": [choice]}))
    assert got["tokens"] == ["a"]
    assert got["top_logprobs"] is None


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"<html>502 Bad Gateway</html>", "body is not JSON"),
        (b"[1, 2]", "not an object"),
        (b'{"choices": []}', r"no choices\[0\]"),
        (b'{"choices": [{"message": {"content": 5}}]}', "not a string"),
        (b'{"choices": [{"message": {"content": "x"}, "logprobs": {"content": [{"t": 1}]}}]}',
         "logprobs.content is malformed"),
        (b'{"choices": [{"message": {"content": "x"}', "body is not JSON"),
    ],
)
def test_malformed_chat_bodies_raise_with_a_reason(body: bytes, message: str) -> None:
    with pytest.raises(lv.MalformedResponseError, match=message):
        OpenAIChatAdapter().decode(body)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"error": {"message": "Rate limit reached", "type": "requests"}}',
         "HTTP 429: Rate limit reached"),
        (b'{"error": "model overloaded"}', "HTTP 429: model overloaded"),
        (b'{"detail": "Not Found"}', "HTTP 429: Not Found"),
        (b"upstream timed out", "HTTP 429: 'upstream timed out'"),
        (b"", "HTTP 429: (empty)"),
    ],
)
def test_error_message_is_the_providers_own(body: bytes, expected: str) -> None:
    assert OpenAIChatAdapter().error_message(429, body) == expected


def test_encode_sends_only_set_fields_plus_extra() -> None:
    req = lv.ChatRequest(model="m", messages=[{"role": "user", "content": "hi"}],
                         max_tokens=5, logit_bias={"100257": -100}, seed=7,
                         extra={"repetition_penalty": 1.1})
    body = orjson.loads(OpenAIChatAdapter().encode(req))
    assert body == {"model": "m", "messages": [{"role": "user", "content": "hi"}],
                    "temperature": 0.0, "max_tokens": 5, "seed": 7,
                    "logit_bias": {"100257": -100.0}, "repetition_penalty": 1.1}


def test_encode_completion_keeps_integer_logprobs() -> None:
    req = lv.CompletionRequest(model="m", prompt="p", logprobs=0)
    body = orjson.loads(OpenAICompletionAdapter().encode(req))
    assert body == {"model": "m", "prompt": "p", "temperature": 0.0, "logprobs": 0}
