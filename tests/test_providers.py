"""Anthropic Messages, OpenAI Responses and streaming for every API, at the transport seam.

Bodies and events are shaped as the providers' API references and official SDK types
define them; tests/test_simserver_apis.py and the `real` tests cover live servers.
"""

from __future__ import annotations

import itertools

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

import llmvariance as lv
from llmvariance._client.providers import iter_sse

pytestmark = pytest.mark.anyio

KEY = "sk-ant-PROVIDERKEY-0123456789"
EP = lv.Endpoint(base_url="http://127.0.0.1:9/v1", api_key=KEY)
MESSAGES = lv.MessagesRequest(model="claude-x", max_tokens=16,
                              messages=[{"role": "user", "content": "hi"}], system="be brief")
RESPONSES = lv.ResponsesRequest(model="gpt-x", input="hi", instructions="be brief",
                                max_output_tokens=16, top_logprobs=2)
ONCE = lv.RetryPolicy(max_attempts=1)


def sse(*events: tuple[str | None, object]) -> bytes:
    out = b""
    for name, data in events:
        if name is not None:
            out += f"event: {name}\n".encode()
        payload = data if isinstance(data, str) else orjson.dumps(data).decode()
        out += f"data: {payload}\n\n".encode()
    return out


def at_times(body: bytes, pieces: int) -> list[tuple[float, bytes]]:
    """The body cut into ``pieces`` chunks arriving 0.1 s apart."""
    size = -(-len(body) // pieces)
    return [(0.1 * (i + 1), body[i * size:(i + 1) * size]) for i in range(pieces)]


async def run(request: object, *answers: lv.HTTPResponse, n: int = 1,
              **kwargs: object) -> tuple[lv.SampleSet, list[lv.HTTPRequest]]:
    sent: list[lv.HTTPRequest] = []
    queue = list(answers)

    def handler(req: lv.HTTPRequest) -> lv.HTTPResponse:
        sent.append(req)
        return queue.pop(0) if len(queue) > 1 else queue[0]

    result = await lv.sample_many(request, n, endpoint=EP, transport=lv.MockTransport(handler),
                                  **kwargs)  # type: ignore[arg-type]
    return result, sent


# -- the SSE framing ------------------------------------------------------------------------

STREAM = (b"\xef\xbb\xbfevent: a\r\ndata: one\r\ndata: two\r\n\r\n: a comment\r\rdata:x\r\r"
          b"event: b\ndata: {\"k\": \"\xc3\xa9\"}\n\nevent: last\ndata: no blank line\n")
"""A byte-order mark, CRLF, lone-CR and LF line ends, and a last event without its blank line
(the body ended whole, so it is dispatched: the API's final event tells cut from whole)."""


@given(st.lists(st.integers(0, len(STREAM)), max_size=8))
def test_events_are_the_same_however_the_bytes_are_cut(cuts: list[int]) -> None:
    points = sorted({0, len(STREAM), *cuts})
    chunks = [(float(i), STREAM[a:b]) for i, (a, b) in enumerate(itertools.pairwise(points))]
    events = [(e.event, e.data) for e in iter_sse(chunks)]
    assert events == [("a", "one\ntwo"), (None, "x"), ("b", '{"k": "é"}'),
                      ("last", "no blank line")]


# -- Anthropic Messages ---------------------------------------------------------------------

MESSAGE = {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x",
           "content": [{"type": "text", "text": "Hello"}, {"type": "text", "text": " there"}],
           "stop_reason": "max_tokens", "stop_sequence": None,
           "usage": {"input_tokens": 5, "output_tokens": 16, "cache_creation_input_tokens": 2,
                     "cache_read_input_tokens": 3}}


async def test_messages_send_the_key_as_x_api_key_and_parse_the_answer() -> None:
    result, sent = await run(MESSAGES, lv.HTTPResponse(200, orjson.dumps(MESSAGE)))
    request = sent[0]
    assert request.url == "http://127.0.0.1:9/v1/messages"
    assert request.headers["x-api-key"] == KEY and "Authorization" not in request.headers
    assert request.headers["anthropic-version"] == "2023-06-01"
    assert orjson.loads(request.body or b"") == {
        "model": "claude-x", "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 16, "system": "be brief", "temperature": 0.0}
    sample = result.samples[0]
    assert (sample.text, sample.finish_reason, sample.model, sample.response_id) == (
        "Hello there", "max_tokens", "claude-x", "msg_1")
    assert sample.usage == lv.Usage(prompt_tokens=10, completion_tokens=16, total_tokens=26,
                                    cache_write_tokens=2, cache_read_tokens=3)


def messages_stream(text: list[str], *, end: bool = True, error: bool = False) -> bytes:
    start = {**MESSAGE, "content": [], "stop_reason": None,
             "usage": {"input_tokens": 5, "output_tokens": 1}}
    events: list[tuple[str | None, object]] = [
        ("message_start", {"type": "message_start", "message": start}),
        ("content_block_start", {"type": "content_block_start", "index": 0,
                                 "content_block": {"type": "text", "text": ""}}),
        ("ping", {"type": "ping"})]
    for piece in text:
        events.append(("content_block_delta", {"type": "content_block_delta", "index": 0,
                                               "delta": {"type": "text_delta", "text": piece}}))
    if error:
        events.append(("error", {"type": "error", "error": {
            "type": "overloaded_error", "message": "Overloaded"}}))
    if end:
        events += [("content_block_stop", {"type": "content_block_stop", "index": 0}),
                   ("message_delta", {"type": "message_delta", "delta": {
                       "stop_reason": "end_turn", "stop_sequence": None},
                       "usage": {"output_tokens": 2}}),
                   ("message_stop", {"type": "message_stop"})]
    return sse(*events)


async def test_a_streamed_message_equals_the_plain_one_and_times_the_first_token() -> None:
    body = messages_stream(["Hel", "lo"])
    result, sent = await run(MESSAGES.model_copy(update={"stream": True}),
                             lv.HTTPResponse(200, body, chunks=at_times(body, 4)))
    assert sent[0].stream and orjson.loads(sent[0].body or b"")["stream"] is True
    sample = result.samples[0]
    assert (sample.text, sample.finish_reason, sample.response_id) == ("Hello", "end_turn",
                                                                      "msg_1")
    assert sample.usage is not None and sample.usage.completion_tokens == 2
    assert sample.ttft_s is not None and 0.1 <= sample.ttft_s <= 0.4
    assert sample.itl_max_s is not None and sample.itl_max_s >= 0.0


async def test_an_overloaded_529_is_retried_and_its_message_kept() -> None:
    overloaded = lv.HTTPResponse(529, orjson.dumps({"type": "error", "error": {
        "type": "overloaded_error", "message": "Overloaded"}}))
    result, sent = await run(MESSAGES, overloaded, lv.HTTPResponse(200, orjson.dumps(MESSAGE)),
                             retry=lv.RetryPolicy(max_attempts=3, initial_backoff_s=0.001))
    assert result.samples[0].ok and result.samples[0].attempts == 2 and len(sent) == 2
    failed, _ = await run(MESSAGES, overloaded, retry=ONCE)
    error = failed.samples[0].error
    assert error is not None and error.status == 529
    assert error.message == "HTTP 529: overloaded_error: Overloaded"


@pytest.mark.parametrize(("body", "kind", "says"), [
    (messages_stream(["Hel"], end=False), "malformed_response", "before message_stop"),
    (messages_stream(["Hel"], error=True), "stream_error", "overloaded_error: Overloaded"),
])
async def test_a_cut_or_failing_message_stream_is_never_a_short_answer(
        body: bytes, kind: str, says: str) -> None:
    result, _ = await run(MESSAGES.model_copy(update={"stream": True}),
                          lv.HTTPResponse(200, body), retry=ONCE)
    error = result.samples[0].error
    assert result.samples[0].text is None
    assert error is not None and error.kind == kind and says in error.message


async def test_the_anthropic_key_echoed_in_a_stream_is_masked() -> None:
    body = messages_stream(["your key: ", KEY])
    result, _ = await run(MESSAGES.model_copy(update={"stream": True}),
                          lv.HTTPResponse(200, body))
    assert result.samples[0].text == "your key: ***"
    assert KEY not in result.model_dump_json()


def test_anthropic_endpoint_preset_reads_its_environment(monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    monkeypatch.setenv("ANTHROPIC_BASE_URL", "http://127.0.0.1:7")
    endpoint = lv.Endpoint.anthropic()
    assert endpoint.base_url == "http://127.0.0.1:7/v1" and endpoint.label == "anthropic"
    assert endpoint.api_key is not None and KEY not in repr(endpoint)
    monkeypatch.delenv("ANTHROPIC_BASE_URL")
    assert lv.Endpoint.anthropic().base_url == "https://api.anthropic.com/v1"
    assert lv.Endpoint.openai(base_url="http://127.0.0.1:8/v1").base_url.endswith(":8/v1")


# -- OpenAI Responses -----------------------------------------------------------------------

LOGPROBS = [{"token": "Hi", "logprob": -0.1, "bytes": [72, 105],
             "top_logprobs": [{"token": "Hi", "logprob": -0.1}, {"token": "Yo", "logprob": -2.5}]},
            {"token": "!", "logprob": -0.2, "bytes": [33],
             "top_logprobs": [{"token": "!", "logprob": -0.2}, {"token": ".", "logprob": -1.9}]}]
RESPONSE = {"id": "resp_1", "object": "response", "status": "incomplete",
            "incomplete_details": {"reason": "max_output_tokens"}, "model": "gpt-x",
            "output": [{"type": "reasoning", "id": "rs_1", "summary": []},
                       {"type": "message", "id": "msg_1", "role": "assistant",
                        "status": "incomplete", "content": [{
                            "type": "output_text", "text": "Hi!", "annotations": [],
                            "logprobs": LOGPROBS}]}],
            "usage": {"input_tokens": 7, "output_tokens": 2, "total_tokens": 9,
                      "input_tokens_details": {"cached_tokens": 4},
                      "output_tokens_details": {"reasoning_tokens": 0}}}


async def test_responses_ask_for_logprobs_and_parse_the_answer() -> None:
    result, sent = await run(RESPONSES, lv.HTTPResponse(200, orjson.dumps(RESPONSE)))
    assert sent[0].url.endswith("/v1/responses")
    assert sent[0].headers["Authorization"] == f"Bearer {KEY}"
    assert orjson.loads(sent[0].body or b"") == {
        "model": "gpt-x", "input": "hi", "instructions": "be brief", "max_output_tokens": 16,
        "temperature": 0.0, "top_logprobs": 2, "include": ["message.output_text.logprobs"]}
    sample = result.samples[0]
    assert (sample.text, sample.finish_reason, sample.response_id) == (
        "Hi!", "max_output_tokens", "resp_1")
    assert sample.tokens == ["Hi", "!"] and sample.token_logprobs == [-0.1, -0.2]
    assert sample.top_logprobs == [{"Hi": -0.1, "Yo": -2.5}, {"!": -0.2, ".": -1.9}]
    assert sample.usage == lv.Usage(prompt_tokens=7, completion_tokens=2, total_tokens=9,
                                    cache_read_tokens=4)


def responses_stream(*, end: str | None = "response.incomplete") -> bytes:
    events: list[tuple[str | None, object]] = [
        ("response.created", {"type": "response.created", "sequence_number": 0,
                              "response": {**RESPONSE, "status": "in_progress", "output": []}})]
    for i, entry in enumerate(LOGPROBS):
        events.append(("response.output_text.delta", {
            "type": "response.output_text.delta", "item_id": "msg_1", "output_index": 1,
            "content_index": 0, "delta": entry["token"], "logprobs": [entry],
            "sequence_number": i + 1}))
    if end == "error":
        events.append(("error", {"type": "error", "code": "server_error",
                                 "message": "The server had an error", "sequence_number": 9}))
    elif end is not None:
        events.append((end, {"type": end, "sequence_number": 9, "response": RESPONSE}))
    return sse(*events)


async def test_a_streamed_response_equals_the_plain_one() -> None:
    plain, _ = await run(RESPONSES, lv.HTTPResponse(200, orjson.dumps(RESPONSE)))
    body = responses_stream()
    streamed, _ = await run(RESPONSES.model_copy(update={"stream": True}),
                            lv.HTTPResponse(200, body, chunks=at_times(body, 3)))
    fields = ("text", "tokens", "token_logprobs", "top_logprobs", "finish_reason", "usage",
              "model", "response_id")
    a, b = plain.samples[0], streamed.samples[0]
    assert {f: getattr(a, f) for f in fields} == {f: getattr(b, f) for f in fields}
    assert a.ttft_s is None and b.ttft_s is not None and b.ttft_s > 0


@pytest.mark.parametrize(("end", "kind"), [(None, "malformed_response"),
                                           ("error", "stream_error")])
async def test_a_cut_or_failing_response_stream_is_recorded(end: str | None, kind: str) -> None:
    result, _ = await run(RESPONSES.model_copy(update={"stream": True}),
                          lv.HTTPResponse(200, responses_stream(end=end)), retry=ONCE)
    error = result.samples[0].error
    assert error is not None and error.kind == kind


# -- OpenAI chat and completions, streamed --------------------------------------------------

def chat_stream(pieces: list[str], *, done: bool = True) -> bytes:
    base = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "system_fingerprint": "fp_1"}
    events: list[tuple[str | None, object]] = [
        (None, {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                     "logprobs": None, "finish_reason": None}]})]
    for piece in pieces:
        events.append((None, {**base, "choices": [{
            "index": 0, "delta": {"content": piece}, "finish_reason": None,
            "logprobs": {"content": [{"token": piece, "logprob": -0.5, "bytes": [],
                                      "top_logprobs": [{"token": piece, "logprob": -0.5}]}]}}]}))
    events.append((None, {**base, "choices": [{"index": 0, "delta": {}, "logprobs": None,
                                               "finish_reason": "length"}]}))
    events.append((None, {**base, "choices": [], "usage": {
        "prompt_tokens": 3, "completion_tokens": len(pieces),
        "total_tokens": 3 + len(pieces)}}))
    if done:
        events.append((None, "[DONE]"))
    return sse(*events)


async def test_a_streamed_chat_equals_the_plain_one() -> None:
    request = lv.ChatRequest(model="m", messages=[{"role": "user", "content": "hi"}],
                             max_tokens=2, logprobs=True, top_logprobs=1, stream=True)
    body = chat_stream(["Hi", " you"])
    result, sent = await run(request, lv.HTTPResponse(200, body, chunks=at_times(body, 5)))
    assert orjson.loads(sent[0].body or b"")["stream_options"] == {"include_usage": True}
    sample = result.samples[0]
    assert (sample.text, sample.finish_reason, sample.system_fingerprint) == (
        "Hi you", "length", "fp_1")
    assert sample.tokens == ["Hi", " you"] and sample.token_logprobs == [-0.5, -0.5]
    assert sample.usage == lv.Usage(prompt_tokens=3, completion_tokens=2, total_tokens=5)
    assert sample.ttft_s is not None and sample.itl_mean_s is not None


async def test_a_chat_stream_without_done_is_retried_not_accepted() -> None:
    request = lv.ChatRequest(model="m", messages=[{"role": "user", "content": "hi"}],
                             stream=True)
    result, sent = await run(request, lv.HTTPResponse(200, chat_stream(["Hi"], done=False)),
                             lv.HTTPResponse(200, chat_stream(["Hi", " you"])),
                             retry=lv.RetryPolicy(max_attempts=2, initial_backoff_s=0.001))
    assert result.samples[0].text == "Hi you" and result.samples[0].attempts == 2
    assert len(sent) == 2


async def test_a_streamed_completion_equals_the_plain_one() -> None:
    base = {"id": "cmpl-1", "object": "text_completion", "created": 1, "model": "m"}
    body = sse(*[(None, {**base, "choices": [{"index": 0, "text": t, "logprobs": None,
                                              "finish_reason": f}]})
                 for t, f in (("Once", None), (" upon", "length"))],
               (None, {**base, "choices": [], "usage": {"prompt_tokens": 1,
                                                        "completion_tokens": 2,
                                                        "total_tokens": 3}}), (None, "[DONE]"))
    request = lv.CompletionRequest(model="m", prompt="p", max_tokens=2, stream=True)
    result, _ = await run(request, lv.HTTPResponse(200, body))
    sample = result.samples[0]
    assert (sample.text, sample.finish_reason) == ("Once upon", "length")
    assert sample.usage is not None and sample.usage.total_tokens == 3


async def test_every_request_type_resumes_from_its_run_file(tmp_path: object) -> None:
    from pathlib import Path

    path = Path(str(tmp_path)) / "run.jsonl"
    await run(MESSAGES, lv.HTTPResponse(200, orjson.dumps(MESSAGE)), n=2, output=path)
    assert lv.read_run(path).request == MESSAGES
    again, resent = await run(MESSAGES, lv.HTTPResponse(200, orjson.dumps(MESSAGE)), n=3,
                              output=path)
    assert len(resent) == 1 and [s.text for s in again.samples] == ["Hello there"] * 3


# -- against the simulator, with faulty streams ----------------------------------------------

PROMPT = "Tell me a story"
ALL_APIS = {
    "chat": lv.ChatRequest(model="dense", messages=[{"role": "user", "content": PROMPT}],
                           max_tokens=12, logprobs=True, top_logprobs=2),
    "completions": lv.CompletionRequest(model="dense", prompt=PROMPT, max_tokens=12,
                                        logprobs=2),
    "messages": lv.MessagesRequest(model="dense", max_tokens=12,
                                   messages=[{"role": "user", "content": PROMPT}]),
    "responses": lv.ResponsesRequest(model="dense", input=PROMPT, max_output_tokens=12,
                                     top_logprobs=2),
}


@pytest.mark.parametrize("api", list(ALL_APIS))
async def test_faulty_streams_still_give_every_sample_once_and_whole(api: str) -> None:
    from llmvariance.testing import Faults, SimServer

    request = ALL_APIS[api]
    faults = Faults(p_stream_cut=0.15, p_stream_error=0.05, seed=3)
    async with SimServer(faults=faults, step_time_s=0.001) as url:
        endpoint = lv.Endpoint(base_url=url, api_key=KEY)
        plain = await lv.sample_many(request, 1, endpoint=endpoint)
        seen: list[int] = []
        streamed = await lv.sample_many(
            request.model_copy(update={"stream": True}), 60, endpoint=endpoint,
            concurrency=8, on_sample=lambda s: seen.append(s.index),
            retry=lv.RetryPolicy(max_attempts=12, initial_backoff_s=0.001))
    assert sorted(seen) == list(range(60))
    assert all(s.ok for s in streamed.samples), [s.error for s in streamed.samples if s.error]
    want = plain.samples[0]
    for sample in streamed.samples:
        assert (sample.text, sample.tokens, sample.finish_reason) == (
            want.text, want.tokens, want.finish_reason)
        assert sample.ttft_s is not None and sample.usage == want.usage
    retried = sum(s.attempts - 1 for s in streamed.samples)
    assert retried >= 5  # the faults really fired, and every one was retried


async def test_anthropic_rate_limit_headers_pace_the_pool_end_to_end() -> None:
    from llmvariance.testing import Faults, SimServer

    request = ALL_APIS["messages"]
    server = SimServer(faults=Faults(requests_per_minute=600, window_s=1.0))
    async with server as url, lv.ClientPool(lv.Endpoint(base_url=url, api_key=KEY),
                                            concurrency=16) as pool:
        result = await lv.sample_many(request, 40, pool=pool)
        stats = pool.stats
    assert result.report.n_ok == 40 and result.report.unique_count == 1
    # 16 arrive at once and the server takes 10; after its 429s (with anthropic-ratelimit-*
    # headers) the pool pauses and paces itself instead of retrying one by one
    assert 6 <= server.stats.rate_limited <= 12
    assert stats.rate_limited == server.stats.rate_limited and stats.pauses >= 1


# -- found in review ------------------------------------------------------------------------

@pytest.mark.parametrize(("request_", "body"), [
    (ALL_APIS["chat"], orjson.dumps({"choices": 5})),
    (ALL_APIS["completions"], orjson.dumps({"choices": [{"text": "x", "logprobs": {
        "tokens": ["x"], "token_logprobs": 3}}]})),
    (RESPONSES, orjson.dumps({**RESPONSE, "output": [{"type": "message", "content": 7}]})),
    (RESPONSES.model_copy(update={"stream": True}),
     sse(("response.failed", {"type": "response.failed", "response": None}))),
])
async def test_bodies_of_unexpected_shape_are_failed_samples_not_exceptions(
        request_: object, body: bytes) -> None:
    result, _ = await run(request_, lv.HTTPResponse(200, body), retry=ONCE)
    error = result.samples[0].error
    assert error is not None and error.kind in ("malformed_response", "stream_error")


async def test_a_key_split_across_deltas_or_blocks_is_masked() -> None:
    half = len(KEY) // 2
    body = messages_stream(["my key is ", KEY[:half], KEY[half:], " ok"])
    streamed, _ = await run(MESSAGES.model_copy(update={"stream": True}),
                            lv.HTTPResponse(200, body))
    blocks = {**MESSAGE, "content": [{"type": "text", "text": KEY[:half]},
                                     {"type": "text", "text": KEY[half:]}]}
    plain, _ = await run(MESSAGES, lv.HTTPResponse(200, orjson.dumps(blocks)))
    assert streamed.samples[0].text == "my key is *** ok"
    assert plain.samples[0].text == "***"


@pytest.mark.parametrize(("request_", "body"), [
    (ALL_APIS["chat"].model_copy(update={"stream": True}), sse((None, "[DONE]"))),
    (MESSAGES.model_copy(update={"stream": True}),
     sse(("message_stop", {"type": "message_stop"}))),
])
async def test_a_stream_with_no_answer_is_not_an_empty_answer(request_: object,
                                                              body: bytes) -> None:
    result, _ = await run(request_, lv.HTTPResponse(200, body), retry=ONCE)
    error = result.samples[0].error
    assert error is not None and error.kind == "malformed_response"


async def test_a_responses_stream_takes_the_final_text_and_checks_the_deltas() -> None:
    streamed = RESPONSES.model_copy(update={"stream": True})
    only_final = sse(("response.completed", {"type": "response.completed",
                                             "response": RESPONSE}))
    result, _ = await run(streamed, lv.HTTPResponse(200, only_final))
    assert result.samples[0].text == "Hi!" and result.samples[0].ttft_s is not None
    wrong = {**RESPONSE, "output": [{"type": "message", "content": [
        {"type": "output_text", "text": "Bye"}]}]}
    body = responses_stream(end=None) + sse(("response.completed", {
        "type": "response.completed", "response": wrong}))
    disagreeing, _ = await run(streamed, lv.HTTPResponse(200, body), retry=ONCE)
    error = disagreeing.samples[0].error
    assert error is not None and "disagree" in error.message


async def test_a_failed_or_queued_response_is_not_an_answer() -> None:
    failed = {**RESPONSE, "status": "failed", "output": [],
              "error": {"code": "server_error", "message": "it broke"}}
    result, _ = await run(RESPONSES, lv.HTTPResponse(200, orjson.dumps(failed)), retry=ONCE)
    error = result.samples[0].error
    assert error is not None and error.message == "the response is failed: it broke"


async def test_only_the_first_choice_of_interleaved_streams_is_the_answer() -> None:
    base = {"id": "c", "object": "chat.completion.chunk", "model": "m"}
    events = [(None, {**base, "choices": [{"index": i, "delta": {"content": t},
                                           "finish_reason": None}]})
              for i, t in ((0, "Hel"), (1, "Wor"), (0, "lo"), (1, "ld"))]
    events += [(None, {**base, "choices": [{"index": i, "delta": {}, "finish_reason": "stop"}
                                           for i in (0, 1)]}), (None, "[DONE]")]
    request = ALL_APIS["chat"].model_copy(update={"stream": True, "extra": {"n": 2}})
    result, _ = await run(request, lv.HTTPResponse(200, sse(*events)))
    assert result.samples[0].text == "Hello"


async def test_completion_logprobs_in_the_chat_shape_are_read() -> None:
    # llama.cpp's /v1/completions answers logprobs in chat's shape
    content = [{"token": "Once", "logprob": -0.5, "top_logprobs": [
        {"token": "Once", "logprob": -0.5}, {"token": "One", "logprob": -1.5}]}]
    body = orjson.dumps({"choices": [{"text": "Once", "finish_reason": "length",
                                      "logprobs": {"content": content}}]})
    result, _ = await run(ALL_APIS["completions"], lv.HTTPResponse(200, body))
    sample = result.samples[0]
    assert sample.tokens == ["Once"] and sample.top_logprobs == [{"Once": -0.5, "One": -1.5}]


async def test_setting_headers_are_not_masked_in_answers() -> None:
    endpoint = lv.Endpoint(base_url="http://127.0.0.1:9/v1", api_key=KEY,
                           headers={"anthropic-version": "2023-06-01"})
    body = orjson.dumps({**MESSAGE, "content": [{"type": "text", "text": "On 2023-06-01."}]})
    result = await lv.sample_many(MESSAGES, 1, endpoint=endpoint, transport=lv.MockTransport(
        lambda r: lv.HTTPResponse(200, body)))
    assert result.samples[0].text == "On 2023-06-01."


async def test_anthropic_requests_carry_the_key_once_in_x_api_key() -> None:
    from aiohttp import web

    seen: list[dict[str, str]] = []

    async def handle(request: web.Request) -> web.Response:
        seen.append(dict(request.headers))
        return web.json_response(MESSAGE if request.path.endswith("/messages") else {
            "choices": [{"message": {"content": "x"}, "finish_reason": "stop"}]})

    app = web.Application()
    app.router.add_post("/v1/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        endpoint = lv.Endpoint(base_url=f"http://127.0.0.1:{runner.addresses[0][1]}/v1",
                               api_key=KEY)
        async with lv.ClientPool(endpoint) as pool:  # one pool, both APIs
            await lv.sample_many(ALL_APIS["chat"], 1, pool=pool)
            await lv.sample_many(MESSAGES, 1, pool=pool)
    finally:
        await runner.cleanup()
    chat, messages = seen
    assert chat["Authorization"] == f"Bearer {KEY}" and "x-api-key" not in chat
    assert messages["x-api-key"] == KEY and "Authorization" not in messages


# -- what servers and proxies put into streams (issue 19, defect 9) -------------------------

CHAT = lv.ChatRequest(model="m", messages=[{"role": "user", "content": "hi"}], stream=True)
COMPLETION = lv.CompletionRequest(model="m", prompt="hi", stream=True)


def completion_stream() -> bytes:
    base = {"id": "cmpl-1", "object": "text_completion", "created": 1, "model": "m"}
    return sse((None, {**base, "choices": [{"index": 0, "text": "Hi", "finish_reason": None}]}),
               (None, {**base, "choices": [{"index": 0, "text": " you",
                                            "finish_reason": "length"}]}),
               (None, "[DONE]"))


STREAMS = {
    "chat": (CHAT, chat_stream(["Hi", " you"]), "Hi you"),
    "completions": (COMPLETION, completion_stream(), "Hi you"),
    "messages": (MESSAGES.model_copy(update={"stream": True}), messages_stream(["Hi", " you"]),
                 "Hi you"),
    "responses": (RESPONSES.model_copy(update={"stream": True}), responses_stream(), "Hi!"),
}


@pytest.mark.parametrize("api", list(STREAMS))
async def test_a_keep_alive_event_of_no_known_type_is_skipped_on_every_api(api: str) -> None:
    request, body, text = STREAMS[api]
    noise = b"event: keepalive\ndata: still here\n\n"
    first_event_end = body.index(b"\n\n") + 2
    noisy = body[:first_event_end] + noise + body[first_event_end:] + noise
    result, _ = await run(request, lv.HTTPResponse(200, noisy), retry=ONCE)
    assert result.samples[0].error is None and result.samples[0].text == text


@pytest.mark.parametrize("api", list(STREAMS))
async def test_a_byte_order_mark_and_cr_line_ends_lose_nothing(api: str) -> None:
    request, body, text = STREAMS[api]
    marked = b"\xef\xbb\xbf" + body.replace(b"\n", b"\r")
    result, _ = await run(request, lv.HTTPResponse(200, marked,
                                                   chunks=at_times(marked, 7)), retry=ONCE)
    assert result.samples[0].error is None and result.samples[0].text == text


async def test_a_last_event_without_its_blank_line_is_read_not_cut_short() -> None:
    body = chat_stream(["Hi", " you"]).removesuffix(b"\n\n")  # ends "data: [DONE]"
    result, _ = await run(CHAT, lv.HTTPResponse(200, body), retry=ONCE)
    assert result.samples[0].error is None and result.samples[0].text == "Hi you"


async def test_a_login_page_for_a_stream_says_what_came_instead() -> None:
    page = b"<html><head><title>Sign in to the guest Wi-Fi</title></head></html>"
    result, _ = await run(CHAT, lv.HTTPResponse(200, page, {"Content-Type": "text/html"}),
                          retry=ONCE)
    error = result.samples[0].error
    assert error is not None and error.kind == "malformed_response"
    assert "answered with text/html, not an event stream" in error.message
    assert "Sign in to the guest Wi-Fi" in error.message
