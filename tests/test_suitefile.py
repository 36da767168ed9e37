"""Suite files and single request bodies: what each field becomes, and errors that say where."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import llmvariance as lv
from llmvariance._client.providers import adapter_for
from llmvariance._runs.suitefile import (
    SuiteFileError,
    detect_api,
    read_request,
    read_suite,
    request_from_body,
)

EXAMPLE = Path(__file__).parent.parent / "examples" / "suite.jsonl"
USER = [{"role": "user", "content": "What is 2 + 2?"}]


def batch(custom_id: str, url: str, body: dict[str, Any], **record: Any) -> dict[str, Any]:
    return {"custom_id": custom_id, "method": "POST", "url": url, "body": body, **record}


def write(tmp_path: Path, *records: Any, name: str = "suite.jsonl") -> Path:
    path = tmp_path / name
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n"
                            for r in records))
    return path


def error_of(path: Path, **kwargs: Any) -> SuiteFileError:
    with pytest.raises(SuiteFileError) as caught:
        read_suite(path, **kwargs)
    return caught.value


# -- what the fields become ---------------------------------------------------------------

def test_batch_chat_record_keeps_every_field_the_request_carries(tmp_path: Path) -> None:
    body = {"model": "gpt-4o", "messages": [{"role": "system", "content": "Be brief."}, *USER],
            "temperature": 0.5, "top_p": 0.9, "max_tokens": 16, "seed": 7, "stop": ["\n"],
            "logit_bias": {"100257": -100}, "logprobs": True, "top_logprobs": 3,
            "response_format": {"type": "json_object"}, "presence_penalty": 0.1}
    [(request_id, request)] = read_suite(write(tmp_path, batch("q1", "/v1/chat/completions",
                                                                body)))
    assert request_id == "q1"
    assert isinstance(request, lv.ChatRequest)
    assert [(m.role, m.content) for m in request.messages] == [
        ("system", "Be brief."), ("user", "What is 2 + 2?")]
    assert (request.model, request.temperature, request.top_p, request.max_tokens,
            request.seed, request.stop) == ("gpt-4o", 0.5, 0.9, 16, 7, ["\n"])
    assert request.logit_bias == {"100257": -100.0}
    assert (request.logprobs, request.top_logprobs) == (True, 3)
    assert request.extra == {"response_format": {"type": "json_object"},
                             "presence_penalty": 0.1}


def test_sent_body_equals_the_file_body_except_the_temperature_default(tmp_path: Path) -> None:
    body = {"model": "m", "messages": USER, "max_completion_tokens": 9, "user": "u1"}
    [(_, request)] = read_suite(write(tmp_path, batch("q", "/v1/chat/completions", body)))
    sent = json.loads(adapter_for(request, lv.Endpoint(base_url="http://x/v1")).encode(request))
    assert sent == {**body, "temperature": 0.0}


def test_each_url_gives_its_request_type(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        batch("c", "/v1/completions", {"model": "m", "prompt": "2+2=", "logprobs": 2,
                                       "echo": True}),
        batch("r", "/v1/responses", {"model": "m", "instructions": "Be brief.",
                                     "input": [{"type": "message", "role": "user",
                                                "content": "hi"}],
                                     "max_output_tokens": 8, "top_logprobs": 2}),
        batch("a", "/v1/messages", {"model": "claude", "max_tokens": 8, "system": "Be brief.",
                                    "messages": USER, "top_k": 1, "stop_sequences": ["x"],
                                    "metadata": {"user_id": "u"}}),
    )
    (_, completion), (_, responses), (_, messages) = read_suite(path)
    assert isinstance(completion, lv.CompletionRequest)
    assert (completion.prompt, completion.logprobs, completion.extra) == (
        "2+2=", 2, {"echo": True})
    assert isinstance(responses, lv.ResponsesRequest)
    assert [(i.role, i.content) for i in responses.input] == [("user", "hi")]  # type: ignore[union-attr]
    assert (responses.instructions, responses.max_output_tokens, responses.top_logprobs) == (
        "Be brief.", 8, 2)
    assert isinstance(messages, lv.MessagesRequest)
    assert (messages.system, messages.max_tokens, messages.top_k, messages.stop_sequences) == (
        "Be brief.", 8, 1, ["x"])
    assert messages.extra == {"metadata": {"user_id": "u"}}


def test_a_responses_include_keeps_the_logprobs_top_logprobs_needs(tmp_path: Path) -> None:
    body = {"model": "m", "input": "hi", "top_logprobs": 2,
            "include": ["reasoning.encrypted_content"]}
    [(_, request)] = read_suite(write(tmp_path, batch("r", "/v1/responses", body)))
    assert request.extra == {"include": ["reasoning.encrypted_content",
                                         "message.output_text.logprobs"]}


def test_null_fields_count_as_absent(tmp_path: Path) -> None:
    body = {"model": "m", "messages": USER, "logprobs": None, "seed": None}
    [(_, request)] = read_suite(write(tmp_path, batch("q", "/v1/chat/completions", body)))
    assert isinstance(request, lv.ChatRequest)
    assert (request.logprobs, request.seed, request.extra) == (False, None, {})


def test_model_and_stream_overrides_replace_every_body_s(tmp_path: Path) -> None:
    path = write(tmp_path, batch("q", "/v1/chat/completions", {"model": "gpt-4o",
                                                                "messages": USER}))
    [(_, request)] = read_suite(path, model="moe", stream=True)
    assert (request.model, request.stream) == ("moe", True)


# -- plain bodies -------------------------------------------------------------------------

def test_plain_bodies_take_their_api_from_their_shape(tmp_path: Path) -> None:
    path = write(tmp_path, {"model": "m", "messages": USER}, {"model": "m", "prompt": "p"},
                 "", {"model": "m", "input": "i"})
    suite = read_suite(path)
    assert [(i, type(r).__name__) for i, r in suite] == [
        ("1", "ChatRequest"), ("2", "CompletionRequest"), ("4", "ResponsesRequest")]


def test_plain_bodies_take_their_id_from_custom_id_or_id_and_do_not_send_it(
        tmp_path: Path) -> None:
    path = write(tmp_path, {"custom_id": "first", "model": "m", "prompt": "p"},
                 {"id": 12, "model": "m", "prompt": "q"})
    suite = read_suite(path)
    assert [i for i, _ in suite] == ["first", "12"]
    assert [r.extra for _, r in suite] == [{}, {}]


def test_api_messages_reads_anthropic_bodies(tmp_path: Path) -> None:
    path = write(tmp_path, {"model": "claude", "max_tokens": 5, "system": "s",
                            "messages": USER})
    [(_, request)] = read_suite(path, api="messages")
    assert isinstance(request, lv.MessagesRequest)
    assert request.system == "s"


def test_the_example_suite_reads_as_36_chat_requests() -> None:
    suite = read_suite(EXAMPLE)
    assert len(suite) == 36
    assert len({i for i, _ in suite}) == 36
    assert {type(r) for _, r in suite} == {lv.ChatRequest}
    assert {(r.model, r.temperature) for _, r in suite} == {("moe", 0.0)}


# -- errors name the file, the line and the field -------------------------------------------

def test_an_invalid_field_names_file_line_and_body_field(tmp_path: Path) -> None:
    path = write(tmp_path, batch("ok", "/v1/chat/completions", {"model": "m", "messages": USER}),
                 batch("hot", "/v1/chat/completions",
                       {"model": "m", "messages": USER, "temperature": 5}))
    error = error_of(path)
    assert str(error) == (f"{path}:2: body.temperature: Input should be less than or "
                          "equal to 2")
    assert (error.path, error.line, error.field) == (str(path), 2, "body.temperature")
    assert isinstance(error, lv.ConfigError)


def test_duplicate_custom_id_is_refused_naming_both_lines(tmp_path: Path) -> None:
    record = batch("q1", "/v1/completions", {"model": "m", "prompt": "p"})
    error = error_of(write(tmp_path, record, "", record))
    assert str(error).endswith(":3: custom_id: 'q1' repeats the id of line 1; ids must be "
                               "unique")


def test_unknown_url_is_refused_listing_the_accepted_ones(tmp_path: Path) -> None:
    error = error_of(write(tmp_path, batch("e", "/v1/embeddings", {"model": "m"})))
    assert error.field == "url"
    assert str(error).endswith("url: '/v1/embeddings' is not supported; use one of "
                               "/v1/chat/completions, /v1/completions, /v1/messages, "
                               "/v1/responses")


def test_method_must_be_post(tmp_path: Path) -> None:
    record = batch("q", "/v1/completions", {"model": "m", "prompt": "p"}, method="GET")
    assert str(error_of(write(tmp_path, record))).endswith(
        ':1: method: must be "POST", got \'GET\'')


@pytest.mark.parametrize(("record", "field", "message"), [
    ({"custom_id": "q", "url": "/v1/completions", "body": {}}, "method",
     "missing; a Batch API record has custom_id, method, url, body"),
    ({**batch("q", "/v1/completions", {}), "extra": 1}, "extra",
     "not a Batch API record key; the keys are custom_id, method, url, body"),
    (batch("", "/v1/completions", {}), "custom_id", "must be a non-empty string, got a string"),
    (batch("q", "/v1/completions", []), "body", "must be a JSON object, got a array"),
    (batch("q", "/v1/chat/completions", {"messages": USER}), "body.model",
     "missing; give it in the body or pass model="),
    (batch("q", "/v1/chat/completions", {"model": "m", "messages": USER, "n": 5}), "body.n",
     "must be 1 or absent: llmvariance sends the N requests itself"),
    (batch("q", "/v1/chat/completions",
           {"model": "m", "messages": [{"role": "user", "content": [{"type": "text",
                                                                     "text": "x"}]}]}),
     "body.messages[0].content",
     "content parts are not supported; give the message text as one string"),
    (batch("q", "/v1/chat/completions", {"model": "m", "messages": USER, "stop": 5}),
     "body.stop", "Input should be a valid string or Input should be a valid list"),
    (batch("q", "/v1/chat/completions", {"model": "m", "messages": USER, "top_logprobs": 2}),
     "body.top_logprobs", "requires logprobs=True"),
    (batch("q", "/v1/chat/completions",
           {"model": "m", "messages": [{"role": "user", "content": "x", "name": "n"}]}),
     "body.messages[0].name", "unknown field"),
    (batch("q", "/v1/completions", {"model": "m", "prompt": ["a", "b"]}), "body.prompt",
     "must be one string (a list asks for several completions)"),
    (batch("q", "/v1/messages", {"model": "m", "messages": USER}), "body.max_tokens",
     "Field required"),
    (batch("q", "/v1/responses", {"model": "m", "input": [{"role": "user", "content": "x",
                                                           "foo": 1}]}),
     "body.input[0].foo", "unknown field"),
])
def test_record_errors_name_their_field(tmp_path: Path, record: dict[str, Any], field: str,
                                        message: str) -> None:
    path = write(tmp_path, record)
    error = error_of(path)
    assert (error.line, error.field) == (1, field)
    assert str(error) == f"{path}:1: {field}: {message}"


def test_a_chat_body_with_a_top_level_system_prompt_points_to_api_messages(
        tmp_path: Path) -> None:
    error = error_of(write(tmp_path, {"model": "m", "max_tokens": 5, "system": "s",
                                      "messages": USER}))
    assert error.field == "system"
    assert 'use api="messages"' in str(error)


def test_url_contradicting_api_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, batch("q", "/v1/chat/completions", {"model": "m", "messages": USER}))
    assert str(error_of(path, api="messages")).endswith(
        "url: /v1/chat/completions is the chat API, but api='messages' was asked")


@pytest.mark.parametrize(("line", "message"), [
    ('{"model": "m", "prompt": ', "not valid JSON (unexpected end of data: line 1 column 26 "
                                  "(char 25))"),
    ("[1, 2]", "a JSON array, not an object"),
    ('{"temperature": 0}', "cannot tell the API: a body needs messages (chat), prompt "
                           "(completions) or input (responses), or name its API with api="),
])
def test_unreadable_lines_name_the_line(tmp_path: Path, line: str, message: str) -> None:
    path = write(tmp_path, {"model": "m", "prompt": "p"}, line)
    error = error_of(path)
    assert str(error) == f"{path}:2: {message}"


def test_a_batch_record_in_a_file_of_bodies_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, {"model": "m", "prompt": "p"},
                 batch("q", "/v1/completions", {"model": "m", "prompt": "p"}))
    assert str(error_of(path)) == (f"{path}:2: a Batch API record in a file of request "
                                   "bodies (the first record was a body)")


def test_a_body_in_a_batch_file_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, batch("q", "/v1/completions", {"model": "m", "prompt": "p"}),
                 {"model": "m", "prompt": "p"})
    assert error_of(path).field == "custom_id"


def test_duplicate_plain_ids_are_refused(tmp_path: Path) -> None:
    path = write(tmp_path, {"id": "2", "model": "m", "prompt": "p"},
                 {"model": "m", "prompt": "q"})
    assert str(error_of(path)) == (f"{path}:2: id: '2' repeats the id of line 1; ids must "
                                   "be unique")


def test_empty_and_missing_files(tmp_path: Path) -> None:
    empty = write(tmp_path, "", "")
    assert str(error_of(empty)) == f"{empty}: no requests in the file"
    missing = tmp_path / "nope.jsonl"
    assert str(error_of(missing)) == (f"{missing}: cannot read the file: No such file or "
                                      "directory")


# -- one body -----------------------------------------------------------------------------

def test_read_request_reads_one_pretty_printed_body(tmp_path: Path) -> None:
    path = tmp_path / "body.json"
    path.write_text(json.dumps({"model": "m", "messages": USER, "seed": 3,
                                "logit_bias": {"50256": -100}}, indent=2))
    request = read_request(path)
    assert isinstance(request, lv.ChatRequest)
    assert (request.seed, request.logit_bias) == (3, {"50256": -100.0})


def test_read_request_accepts_one_batch_record_and_names_its_body_fields(
        tmp_path: Path) -> None:
    path = tmp_path / "record.json"
    path.write_text(json.dumps(batch("q", "/v1/completions", {"model": "m", "prompt": "p"})))
    assert isinstance(read_request(path), lv.CompletionRequest)
    path.write_text(json.dumps(batch("q", "/v1/completions", {"model": "m", "prompt": "p",
                                                               "top_p": 0})))
    with pytest.raises(SuiteFileError) as caught:
        read_request(path)
    assert str(caught.value) == f"{path}: body.top_p: Input should be greater than 0"
    assert caught.value.line is None


def test_request_from_body_raises_config_error_naming_the_key() -> None:
    request = request_from_body({"model": "m", "max_tokens": 5, "messages": USER},
                                api="messages", stream=True)
    assert isinstance(request, lv.MessagesRequest)
    assert (request.max_tokens, request.stream) == (5, True)
    with pytest.raises(lv.ConfigError) as caught:
        request_from_body({"model": "m", "messages": USER, "temperature": -1})
    assert (caught.value.field, str(caught.value)) == (
        "temperature", "temperature: Input should be greater than or equal to 0")


def test_detect_api_from_shape() -> None:
    assert [detect_api(b) for b in ({"messages": []}, {"prompt": ""}, {"input": ""})] == [
        "chat", "completions", "responses"]
    with pytest.raises(lv.ConfigError, match="cannot tell the API"):
        detect_api({})
