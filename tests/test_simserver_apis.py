"""SimServer's four APIs over 127.0.0.1 with a plain aiohttp client: bodies, SSE streams
and the faults injected into them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
import pytest
from pydantic import ValidationError

from llmvariance._client.hints import parse_hints
from llmvariance.testing import Faults, SimServer

pytestmark = pytest.mark.anyio

PROMPT = "Write a unique, surprising, extremely randomized story."
MAX = 12
API_NAMES = ["chat", "completions", "responses", "messages"]


@dataclass
class Event:
    name: str | None
    data: str
    at: float
    """``time.monotonic()`` when the event's last line arrived."""

    def json(self) -> Any:
        return orjson.loads(self.data)


async def read_events(response: aiohttp.ClientResponse, into: list[Event]) -> None:
    """Parse server-sent events into ``into`` as they arrive (so a cut keeps what came)."""
    name: str | None = None
    data: list[str] = []
    async for raw in response.content:
        line = raw.decode().rstrip("\r\n")
        if not line:
            if data:
                into.append(Event(name, "\n".join(data), time.monotonic()))
            name, data = None, []
        elif line.startswith("event:"):
            name = line.removeprefix("event:").strip()
        elif line.startswith("data:"):
            data.append(line.removeprefix("data:").strip())


@dataclass(frozen=True)
class Api:
    """One API as a client sees it: path, request body, and how to read answers."""

    path: str
    request: Callable[[int], dict[str, Any]]
    text: Callable[[Any], str]
    """The text of a non-streamed body."""
    stream_text: Callable[[list[Event]], str]
    terminal: Callable[[Event], bool]
    """Whether an event is the stream's last, "complete" event."""


def _chat_text(events: list[Event]) -> str:
    return "".join(c["delta"].get("content", "") for e in events if e.data != "[DONE]"
                   for c in e.json().get("choices", []))


def _completion_text(events: list[Event]) -> str:
    return "".join(c["text"] for e in events if e.data != "[DONE]"
                   for c in e.json().get("choices", []))


def _response_text(events: list[Event]) -> str:
    return "".join(e.json()["delta"] for e in events if e.name == "response.output_text.delta")


def _message_text(events: list[Event]) -> str:
    return "".join(e.json()["delta"]["text"] for e in events if e.name == "content_block_delta")


APIS = {
    "chat": Api("/chat/completions",
                lambda n: {"model": "dense", "temperature": 0, "max_tokens": n,
                           "messages": [{"role": "user", "content": PROMPT}]},
                lambda body: body["choices"][0]["message"]["content"], _chat_text,
                lambda e: e.data == "[DONE]"),
    "completions": Api("/completions",
                       lambda n: {"model": "dense", "temperature": 0, "max_tokens": n,
                                  "prompt": PROMPT},
                       lambda body: body["choices"][0]["text"], _completion_text,
                       lambda e: e.data == "[DONE]"),
    "responses": Api("/responses",
                     lambda n: {"model": "dense", "temperature": 0, "max_output_tokens": n,
                                "input": PROMPT},
                     lambda body: body["output"][0]["content"][0]["text"], _response_text,
                     lambda e: e.name in ("response.completed", "response.incomplete")),
    "messages": Api("/messages",
                    lambda n: {"model": "dense", "temperature": 0, "max_tokens": n,
                               "messages": [{"role": "user", "content": PROMPT}]},
                    lambda body: body["content"][0]["text"], _message_text,
                    lambda e: e.name == "message_stop"),
}


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def post_json(session: aiohttp.ClientSession, url: str, body: dict[str, Any],
                    headers: dict[str, str] | None = None) -> tuple[int, Any, Any]:
    async with session.post(url, json=body, headers=headers) as r:
        return r.status, orjson.loads(await r.read()), r.headers


async def stream(session: aiohttp.ClientSession, url: str, body: dict[str, Any]
                 ) -> list[Event]:
    events: list[Event] = []
    async with session.post(url, json={**body, "stream": True}) as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/event-stream")
        await read_events(r, events)
    return events


# -- streamed text is the non-streamed text -----------------------------------------------


@pytest.mark.parametrize("name", API_NAMES)
async def test_streamed_text_equals_the_non_streamed_text(sim: SimServer,
                                                          session: aiohttp.ClientSession,
                                                          name: str) -> None:
    api = APIS[name]
    status, body, _ = await post_json(session, sim.base_url + api.path, api.request(MAX))
    events = await stream(session, sim.base_url + api.path, api.request(MAX))
    assert status == 200
    text = api.text(body)
    assert len(text.split()) >= MAX - 2  # MAX word tokens (and a few punctuation marks)
    assert api.stream_text(events) == text
    assert api.terminal(events[-1])
    assert sum(api.terminal(e) for e in events) == 1


async def test_chat_stream_chunks_carry_the_fingerprint_finish_reason_and_usage(
        sim: SimServer, session: aiohttp.ClientSession) -> None:
    request = {**APIS["chat"].request(MAX), "logprobs": True, "top_logprobs": 2}
    _, body, _ = await post_json(session, sim.base_url + "/chat/completions", request)
    events = await stream(session, sim.base_url + "/chat/completions",
                          {**request, "stream_options": {"include_usage": True}})
    assert events[-1].data == "[DONE]"
    chunks = [e.json() for e in events[:-1]]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert {c["system_fingerprint"] for c in chunks} == {"fp_sim_dense"}
    assert {c["model"] for c in chunks} == {"dense"}
    assert len({c["id"] for c in chunks}) == 1 and chunks[0]["id"].startswith("chatcmpl-")
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    tokens = chunks[1:1 + MAX]
    assert [c["choices"][0]["delta"] for c in tokens] == [
        {"content": lp["token"]} for lp in body["choices"][0]["logprobs"]["content"]]
    # one chunk per token, each with that token's logprobs exactly as in the body
    assert [c["choices"][0]["logprobs"]["content"][0] for c in tokens] == \
        body["choices"][0]["logprobs"]["content"]
    finish = chunks[1 + MAX]
    assert finish["choices"] == [{"index": 0, "delta": {}, "logprobs": None,
                                  "finish_reason": "length"}]
    assert body["choices"][0]["finish_reason"] == "length"
    usage = chunks[-1]
    assert usage["choices"] == [] and usage["usage"] == body["usage"]
    assert body["usage"]["completion_tokens"] == MAX
    assert all(c["usage"] is None for c in chunks[:-1])


async def test_completions_stream_logprobs_match_the_body_token_for_token(
        sim: SimServer, session: aiohttp.ClientSession) -> None:
    request = {**APIS["completions"].request(MAX), "logprobs": 2,
               "stream_options": {"include_usage": True}}
    _, body, _ = await post_json(session, sim.base_url + "/completions", request)
    events = await stream(session, sim.base_url + "/completions", request)
    chunks = [e.json() for e in events[:-1]]
    assert events[-1].data == "[DONE]"
    token_chunks = [c["choices"][0] for c in chunks if c["choices"] and c["choices"][0]["text"]]
    expected = body["choices"][0]["logprobs"]
    assert len(token_chunks) == MAX
    for i, choice in enumerate(token_chunks):
        assert choice["logprobs"] == {key: [values[i]] for key, values in expected.items()}
        assert choice["finish_reason"] is None
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "length"
    assert chunks[-1]["usage"] == body["usage"]
    assert {c["system_fingerprint"] for c in chunks} == {body["system_fingerprint"]}


async def test_messages_stream_events_in_anthropics_order_with_usage(
        sim: SimServer, session: aiohttp.ClientSession) -> None:
    api = APIS["messages"]
    status, body, _ = await post_json(session, sim.base_url + api.path, api.request(MAX))
    events = await stream(session, sim.base_url + api.path, api.request(MAX))
    assert status == 200
    assert body["type"] == "message" and body["role"] == "assistant"
    assert body["id"].startswith("msg_") and body["model"] == "dense"
    assert body["stop_reason"] == "max_tokens" and body["stop_sequence"] is None
    usage = body["usage"]
    assert usage["output_tokens"] == MAX and usage["input_tokens"] > 0
    assert usage["cache_creation_input_tokens"] == usage["cache_read_input_tokens"] == 0
    names = [e.name for e in events]
    assert names == ["message_start", "content_block_start", "ping"] \
        + ["content_block_delta"] * MAX \
        + ["content_block_stop", "message_delta", "message_stop"]
    assert all(e.json()["type"] == e.name for e in events)
    start = events[0].json()["message"]
    assert start["content"] == [] and start["stop_reason"] is None
    assert start["usage"]["input_tokens"] == usage["input_tokens"]
    assert events[1].json()["content_block"] == {"type": "text", "text": ""}
    delta = events[-2].json()
    assert delta["delta"] == {"stop_reason": "max_tokens", "stop_sequence": None}
    assert delta["usage"]["output_tokens"] == MAX


async def test_responses_stream_events_in_order_with_sequence_numbers(
        sim: SimServer, session: aiohttp.ClientSession) -> None:
    api = APIS["responses"]
    _, body, _ = await post_json(session, sim.base_url + api.path, api.request(MAX))
    events = await stream(session, sim.base_url + api.path, api.request(MAX))
    assert body["object"] == "response" and body["id"].startswith("resp_")
    assert body["status"] == "incomplete"
    assert body["incomplete_details"] == {"reason": "max_output_tokens"}
    assert body["usage"]["output_tokens"] == MAX
    assert body["usage"]["total_tokens"] == body["usage"]["input_tokens"] + MAX
    names = [e.name for e in events]
    assert names == ["response.created", "response.in_progress", "response.output_item.added",
                     "response.content_part.added"] + ["response.output_text.delta"] * MAX \
        + ["response.output_text.done", "response.content_part.done",
           "response.output_item.done", "response.incomplete"]
    data = [e.json() for e in events]
    assert [d["type"] for d in data] == names
    assert [d["sequence_number"] for d in data] == list(range(len(events)))
    final = data[-1]["response"]
    assert final["usage"] == body["usage"] and final["status"] == "incomplete"
    assert final["output"][0]["content"][0]["text"] == api.text(body)
    assert data[-4]["text"] == api.text(body)
    item_id = data[2]["item"]["id"]
    assert {d["item_id"] for d in data[3:-2]} == {item_id}


async def test_a_completed_response_says_completed(sim: SimServer,
                                                   session: aiohttp.ClientSession) -> None:
    # end-of-text before max_output_tokens: completed, not incomplete
    request = {**APIS["responses"].request(400)}
    _, body, _ = await post_json(session, sim.base_url + "/responses", request)
    events = await stream(session, sim.base_url + "/responses", request)
    assert body["status"] == "completed" and body["incomplete_details"] is None
    assert body["usage"]["output_tokens"] < 400
    assert events[-1].name == "response.completed"
    assert events[-1].json()["response"]["usage"] == body["usage"]


async def test_the_chat_like_apis_give_the_same_text_for_the_same_prompt(
        sim: SimServer, session: aiohttp.ClientSession) -> None:
    texts = set()
    for name in ("chat", "responses", "messages"):
        api = APIS[name]
        _, body, _ = await post_json(session, sim.base_url + api.path, api.request(MAX))
        texts.add(api.text(body))
    assert len(texts) == 1


@pytest.mark.parametrize("name", ["chat", "completions", "messages"])
async def test_a_stop_sequence_across_tokens_is_never_streamed(
        sim: SimServer, session: aiohttp.ClientSession, name: str) -> None:
    api = APIS[name]
    url = sim.base_url + api.path
    _, body, _ = await post_json(session, url, api.request(40))
    full = api.text(body)
    words = full.split(" ")
    # the end of word 4 and the start of word 5: a stop sequence split over two tokens
    stop = words[4][-2:] + " " + words[5][:2]
    expected = full[: full.index(stop)]
    key = "stop_sequences" if name == "messages" else "stop"
    request = {**api.request(40), key: [stop]}
    _, body, _ = await post_json(session, url, request)
    events = await stream(session, url, request)
    assert api.text(body) == expected
    assert api.stream_text(events) == expected
    if name == "messages":
        assert (body["stop_reason"], body["stop_sequence"]) == ("stop_sequence", stop)
        assert events[-2].json()["delta"] == {"stop_reason": "stop_sequence",
                                              "stop_sequence": stop}
    else:
        assert body["choices"][0]["finish_reason"] == "stop"


async def test_responses_logprobs_come_with_include_and_top_logprobs(
        sim: SimServer, session: aiohttp.ClientSession) -> None:
    url = sim.base_url + "/responses"
    request = {**APIS["responses"].request(MAX), "include": ["message.output_text.logprobs"],
               "top_logprobs": 2}
    _, body, _ = await post_json(session, url, request)
    part = body["output"][0]["content"][0]
    assert part["type"] == "output_text" and part["annotations"] == []
    logprobs = part["logprobs"]
    assert len(logprobs) == MAX
    assert "".join(lp["token"] for lp in logprobs) == part["text"]
    for lp in logprobs:
        assert lp["bytes"] == list(lp["token"].encode())
        assert len(lp["top_logprobs"]) == 2
        best = lp["top_logprobs"][0]
        # temperature 0: the chosen token is the most likely one
        assert (best["token"], best["logprob"]) == (lp["token"], lp["logprob"])
        assert best["logprob"] < 0
        assert best["bytes"] == list(best["token"].encode())
    events = await stream(session, url, request)
    streamed = [e.json()["logprobs"] for e in events if e.name == "response.output_text.delta"]
    assert [s[0]["token"] for s in streamed] == [lp["token"] for lp in logprobs]
    assert [s[0]["logprob"] for s in streamed] == [lp["logprob"] for lp in logprobs]
    assert [len(s[0]["top_logprobs"]) for s in streamed] == [2] * MAX

    _, plain, _ = await post_json(session, url, {**request, "include": []})
    assert plain["output"][0]["content"][0]["logprobs"] == []
    status, bad, _ = await post_json(session, url, {**request, "top_logprobs": 21})
    assert status == 400 and bad["error"]["param"] == "top_logprobs"


@pytest.mark.parametrize("name", API_NAMES)
async def test_tokens_arrive_as_they_are_decoded(session: aiohttp.ClientSession,
                                                 name: str) -> None:
    api = APIS[name]
    async with SimServer(step_time_s=0.01) as url:
        events = await stream(session, url + api.path, api.request(10))
    assert len(api.stream_text(events)) > 0
    deltas = [e for e in events if e.name in (None, "content_block_delta",
                                              "response.output_text.delta")
              and e.data != "[DONE]" and api.stream_text([e])]
    assert len(deltas) == 10
    # ten decode steps of 10 ms each: the first token comes ~90 ms before the last
    assert deltas[-1].at - deltas[0].at >= 0.05
    assert deltas[0].at - events[0].at < deltas[-1].at - deltas[0].at


async def test_a_client_that_hangs_up_mid_stream_frees_its_batch_slot() -> None:
    server = SimServer(step_time_s=0.005)
    async with server as url, aiohttp.ClientSession() as session:
        async with session.post(url + "/chat/completions",
                                json={**APIS["chat"].request(10_000), "stream": True}) as r:
            lines = 0
            async for _ in r.content:
                lines += 1
                if lines == 6:
                    break
            r.close()
        async with asyncio.timeout(5):
            await server.wait_for(lambda stats: stats.in_flight == 0)
        engine = server.engines["dense"]
        steps = len(engine.batch_sizes)
        _, body, _ = await post_json(session, url + "/chat/completions",
                                     APIS["chat"].request(3))
        assert body["usage"]["completion_tokens"] == 3
        assert engine.batch_sizes[steps:][-3:] == [1, 1, 1]


# -- errors ---------------------------------------------------------------------------------


async def test_messages_without_max_tokens_is_an_anthropic_400(
        sim: SimServer, session: aiohttp.ClientSession) -> None:
    request = APIS["messages"].request(MAX)
    del request["max_tokens"]
    status, body, _ = await post_json(session, sim.base_url + "/messages", request)
    assert status == 400
    assert body == {"type": "error", "error": {"type": "invalid_request_error",
                                               "message": "max_tokens: Field required"}}


async def test_messages_with_an_unknown_model_is_an_anthropic_404(
        sim: SimServer, session: aiohttp.ClientSession) -> None:
    status, body, _ = await post_json(session, sim.base_url + "/messages",
                                      {**APIS["messages"].request(4), "model": "nope"})
    assert status == 404
    assert body["type"] == "error" and body["error"]["type"] == "not_found_error"


async def test_messages_take_the_key_in_x_api_key() -> None:
    async with SimServer(api_key="sk-ant-sim") as url, aiohttp.ClientSession() as session:
        good, body, _ = await post_json(session, url + "/messages", APIS["messages"].request(3),
                                        headers={"x-api-key": "sk-ant-sim"})
        bad, error, _ = await post_json(session, url + "/messages", APIS["messages"].request(3),
                                        headers={"x-api-key": "wrong"})
        openai, _, _ = await post_json(session, url + "/responses",
                                       APIS["responses"].request(3),
                                       headers={"Authorization": "Bearer sk-ant-sim"})
    assert good == 200 and body["usage"]["output_tokens"] == 3
    assert bad == 401 and error["error"]["type"] == "authentication_error"
    assert openai == 200


async def test_an_injected_503_is_anthropics_529_overloaded_on_messages(
        session: aiohttp.ClientSession) -> None:
    async with SimServer(faults=Faults(p_503=1.0)) as url:
        status, body, _ = await post_json(session, url + "/messages",
                                          APIS["messages"].request(4))
        openai, openai_body, _ = await post_json(session, url + "/responses",
                                                 APIS["responses"].request(4))
    assert status == 529
    assert body["type"] == "error" and body["error"]["type"] == "overloaded_error"
    assert openai == 503 and openai_body["error"]["type"] == "server_error"


async def test_a_429_on_messages_carries_anthropic_rate_limit_headers(
        session: aiohttp.ClientSession) -> None:
    # one request per 1 s window: the second is refused
    server = SimServer(faults=Faults(requests_per_minute=60, tokens_per_minute=6000))
    async with server as url:
        first, _, headers = await post_json(session, url + "/messages",
                                            APIS["messages"].request(4))
        status, body, limited = await post_json(session, url + "/messages",
                                                APIS["messages"].request(4))
        _, _, openai = await post_json(session, url + "/chat/completions",
                                       APIS["chat"].request(4))
    assert first == 200 and headers["anthropic-ratelimit-requests-remaining"] == "0"
    assert status == 429
    assert body == {"type": "error", "error": {
        "type": "rate_limit_error",
        "message": "Rate limit reached for requests. Please try again later."}}
    assert limited["anthropic-ratelimit-requests-limit"] == "60"
    assert limited["anthropic-ratelimit-requests-remaining"] == "0"
    assert limited["anthropic-ratelimit-tokens-limit"] == "6000"
    assert limited["anthropic-ratelimit-requests-reset"].endswith("Z")
    # the client's header parser reads the Anthropic headers alone as the OpenAI ones
    anthropic = {k: v for k, v in limited.items() if k.startswith("anthropic-ratelimit-")}
    hints = parse_hints(anthropic, time.time())
    assert hints.remaining_requests == 0
    assert hints.reset_requests_s is not None and 0.0 < hints.reset_requests_s <= 1.01
    assert hints.remaining_tokens is not None and hints.remaining_tokens > 0
    assert "retry-after" in limited
    assert not any(k.lower().startswith("anthropic-") for k in openai)


@pytest.mark.parametrize("name", ["messages", "responses"])
async def test_cut_and_malformed_bodies_on_the_new_routes(session: aiohttp.ClientSession,
                                                          name: str) -> None:
    api = APIS[name]
    server = SimServer(faults=Faults(p_cut=1.0))
    async with server as url, session.post(url + api.path, json=api.request(4)) as r:
        assert r.status == 200
        with pytest.raises(aiohttp.ClientPayloadError):
            await r.read()
    assert server.faults.injected == {"cut": 1}
    async with SimServer(faults=Faults(p_malformed=1.0)) as url:
        async with session.post(url + api.path, json=api.request(4)) as r:
            raw = await r.read()
        with pytest.raises(orjson.JSONDecodeError):
            orjson.loads(raw)


# -- stream faults --------------------------------------------------------------------------


@pytest.mark.parametrize("name", API_NAMES)
async def test_a_cut_stream_breaks_off_before_its_terminal_event(
        session: aiohttp.ClientSession, name: str) -> None:
    api = APIS[name]
    server = SimServer(faults=Faults(p_stream_cut=1.0))
    events: list[Event] = []
    async with server as url:
        async with session.post(url + api.path, json={**api.request(MAX), "stream": True}) as r:
            assert r.status == 200
            with pytest.raises(aiohttp.ClientPayloadError):
                await read_events(r, events)
        # a plain request is not cut
        status, body, _ = await post_json(session, url + api.path, api.request(MAX))
    assert not any(api.terminal(e) for e in events)
    text = api.stream_text(events)
    assert text and api.text(body).startswith(text) and text != api.text(body)
    assert status == 200
    assert server.faults.injected == {"stream_cut": 1}


@pytest.mark.parametrize("name", API_NAMES)
async def test_an_error_event_ends_the_stream(session: aiohttp.ClientSession,
                                              name: str) -> None:
    api = APIS[name]
    server = SimServer(faults=Faults(p_stream_error=1.0))
    async with server as url:
        events = await stream(session, url + api.path, api.request(MAX))
        status, _, _ = await post_json(session, url + api.path, api.request(MAX))
    assert status == 200
    assert server.faults.injected == {"stream_error": 1}
    assert not any(api.terminal(e) for e in events)
    assert len(api.stream_text(events).split()) >= MAX // 2 - 1
    last = events[-1]
    message = "The server had an error while processing your request."
    if name in ("chat", "completions"):
        assert last.name is None
        assert last.json() == {"error": {"message": message, "type": "server_error",
                                         "param": None, "code": None}}
    elif name == "messages":
        assert last.name == "error"
        assert last.json() == {"type": "error",
                               "error": {"type": "overloaded_error", "message": message}}
    else:
        assert last.name == "error"
        assert last.json() == {"type": "error", "code": "server_error", "message": message,
                               "param": None, "sequence_number": len(events) - 1}


def test_stream_fault_probabilities_count_toward_the_sum() -> None:
    assert Faults(p_stream_cut=0.5, p_stream_error=0.5).p_stream_error == 0.5
    with pytest.raises(ValidationError, match=r"add up to 1\.2"):
        Faults(p_500=0.2, p_stream_cut=0.5, p_stream_error=0.5)


async def test_p_cut_and_p_malformed_also_break_streams(session: aiohttp.ClientSession) -> None:
    request = {**APIS["chat"].request(MAX), "stream": True}
    events: list[Event] = []
    async with SimServer(faults=Faults(p_cut=1.0)) as url, \
            session.post(url + "/chat/completions", json=request) as r:
        with pytest.raises(aiohttp.ClientPayloadError):
            await read_events(r, events)
    assert events and events[-1].data != "[DONE]"
    async with SimServer(faults=Faults(p_malformed=1.0)) as url:
        events = await stream(session, url + "/chat/completions", request)
    assert len(events) == 1
    with pytest.raises(orjson.JSONDecodeError):
        events[0].json()
