"""OpenAI's ``/chat/completions`` and legacy ``/completions`` wire formats, streamed or not.

Also spoken by vLLM, SGLang, llama.cpp, Ollama, TGI and most hosted APIs. Logprobs come
in two shapes: chat puts a list of ``{token, logprob, top_logprobs: [{token, logprob}]}``
under ``choices[0].logprobs.content``; completions puts parallel lists ``tokens``,
``token_logprobs`` and ``top_logprobs`` (a ``{token: logprob}`` dict per position) under
``choices[0].logprobs``. Both become ``Sample.tokens``/``token_logprobs``/``top_logprobs``.
Streams are unnamed events of chunks with the same shapes (``delta`` instead of
``message``), usage in a last chunk with no choices (``stream_options.include_usage``),
and ``data: [DONE]`` at the end; an ``{"error": ...}`` chunk is an error mid-stream.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, ClassVar

import orjson

from ..._errors import ConfigError, MalformedResponseError, StreamError
from ..._request import ChatRequest, CompletionRequest, Request
from ._base import (
    Completion,
    ProviderAdapter,
    StreamResult,
    body_fields,
    event_json,
    load_json,
)
from ._sse import SSEEvent

__all__ = ["OpenAIChatAdapter", "OpenAICompletionAdapter"]


def _body_fields(request: ChatRequest | CompletionRequest) -> dict[str, Any]:
    # usage arrives in a last chunk only when asked for
    added = {"stream_options": {"include_usage": True}} if request.stream else {}
    return body_fields(request, **added)


def _first_choice(data: dict[str, Any]) -> dict[str, Any]:
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise MalformedResponseError("body has no choices[0]")
    return choices[0]


def _common(data: dict[str, Any], choice: dict[str, Any], text: Any) -> Completion:
    if not isinstance(text, str):
        raise MalformedResponseError(f"choices[0] text is {type(text).__name__}, not a string")
    usage = data.get("usage")
    return Completion(
        text=text,
        tokens=None,
        token_logprobs=None,
        top_logprobs=None,
        finish_reason=choice.get("finish_reason"),
        system_fingerprint=data.get("system_fingerprint"),
        model=data.get("model"),
        usage=usage if isinstance(usage, dict) else None,
        response_id=data.get("id") if isinstance(data.get("id"), str) else None,
    )


def _all_ints(ids: list[Any]) -> list[int] | None:
    """The token ids when every token has an integer one (else None: compare strings)."""
    if ids and all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
        return ids
    return None


def _none_if_all_empty(top: list[dict[str, float]]) -> list[dict[str, float]] | None:
    return top if any(top) else None


def _chat_logprobs(entries: Any, tokens: list[str], logprobs: list[float | None],
                   top: list[dict[str, float]], ids: list[Any]) -> None:
    """Append ``logprobs.content`` entries to the per-token lists (``ids``: llama.cpp's
    token ``id``, None where an entry has none)."""
    try:
        for e in entries:
            ids.append(e.get("id"))
            tokens.append(e["token"])
            logprobs.append(e["logprob"])
            top.append({t["token"]: t["logprob"] for t in e.get("top_logprobs") or ()})
    except (KeyError, TypeError) as exc:
        raise MalformedResponseError(f"logprobs.content is malformed: {exc!r}") from None


def _with_chat_logprobs(completion: Completion, entries: Any) -> None:
    """Fill the completion's per-token fields from ``logprobs.content`` entries."""
    tokens: list[str] = []
    values: list[float | None] = []
    top: list[dict[str, float]] = []
    ids: list[Any] = []
    _chat_logprobs(entries, tokens, values, top, ids)
    completion["tokens"] = tokens
    completion["token_ids"] = _all_ints(ids)
    completion["token_logprobs"] = values
    completion["top_logprobs"] = _none_if_all_empty(top)


def _openai_event(name: str | None) -> bool:
    return name in (None, "message", "error")


def _events(events: Iterable[SSEEvent]) -> Iterable[tuple[dict[str, Any], float]]:
    """The JSON chunks of an OpenAI-style stream up to ``[DONE]``; error chunks raise."""
    for event in events:
        if event.data == "[DONE]":
            return
        chunk = event_json(event, _openai_event)
        if chunk is None:
            continue
        error = chunk.get("error")
        if error is not None:
            message = error.get("message", error) if isinstance(error, dict) else error
            raise StreamError(f"error event mid-stream: {message}")
        yield chunk, event.at
    raise MalformedResponseError("the stream ended before data: [DONE] (cut short)")


class _StreamState:
    """What the chunks of one stream add up to."""

    __slots__ = ("content_at", "envelope", "finish", "ids", "logprobs", "parts", "tokens",
                 "top", "usage")

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.tokens: list[str] = []
        self.ids: list[Any] = []
        self.logprobs: list[float | None] = []
        self.top: list[dict[str, float]] = []
        self.content_at: list[float] = []
        self.finish: Any = None
        self.usage: Any = None
        self.envelope: dict[str, Any] = {}
        """The first id, model and system_fingerprint the chunks carried."""

    def chunk(self, chunk: dict[str, Any]) -> dict[str, Any] | None:
        """Note the chunk's envelope and usage; return its choice with index 0, if any."""
        for key in ("id", "model", "system_fingerprint"):
            if self.envelope.get(key) is None and chunk.get(key) is not None:
                self.envelope[key] = chunk[key]
        if isinstance(chunk.get("usage"), dict):
            self.usage = chunk["usage"]
        choices = chunk.get("choices")
        if not choices:
            return None
        if not isinstance(choices, list) or not all(isinstance(c, dict) for c in choices):
            raise MalformedResponseError("a stream chunk's choices are not a list of objects")
        # with n > 1 the choices interleave: the first one is the answer, as when not streamed
        choice = next((c for c in choices if c.get("index", 0) == 0), None)
        if choice is not None and choice.get("finish_reason") is not None:
            self.finish = choice["finish_reason"]
        return choice

    def text(self, piece: Any, at: float) -> None:
        if piece is None:
            return
        if not isinstance(piece, str):
            raise MalformedResponseError(f"a streamed text is {type(piece).__name__}")
        if piece:
            self.parts.append(piece)
            self.content_at.append(at)

    def result(self) -> StreamResult:
        if self.finish is None:  # e.g. a proxy closing a failed call with a bare [DONE]
            raise MalformedResponseError("the stream ended without a finish_reason")
        if self.tokens and len(self.logprobs) != len(self.tokens):
            raise MalformedResponseError("streamed logprobs do not match the tokens")
        completion = _common(self.envelope, {"finish_reason": self.finish},
                             "".join(self.parts))
        completion["usage"] = self.usage
        if self.tokens:
            completion["tokens"] = self.tokens
            completion["token_ids"] = _all_ints(self.ids)
            completion["token_logprobs"] = self.logprobs
            completion["top_logprobs"] = _none_if_all_empty(self.top)
        return completion, self.content_at


class OpenAIChatAdapter(ProviderAdapter):
    path: ClassVar[str] = "/chat/completions"

    def encode(self, request: Request) -> bytes:
        assert isinstance(request, ChatRequest)
        body = _body_fields(request)
        if not request.logprobs:
            body.pop("logprobs", None)
        return orjson.dumps(body)

    def decode(self, body: bytes) -> Completion:
        data = load_json(body)
        choice = _first_choice(data)
        message = choice.get("message")
        if not isinstance(message, dict):
            raise MalformedResponseError("choices[0] has no message")
        content = message.get("content")
        completion = _common(data, choice, "" if content is None else content)
        logprobs = choice.get("logprobs")
        entries = logprobs.get("content") if isinstance(logprobs, dict) else None
        if entries:
            _with_chat_logprobs(completion, entries)
        return completion

    def decode_stream(self, events: Iterable[SSEEvent]) -> StreamResult:
        state = _StreamState()
        for chunk, at in _events(events):
            choice = state.chunk(chunk)
            if choice is None:
                continue
            delta = choice.get("delta")
            if isinstance(delta, dict):
                state.text(delta.get("content"), at)
            logprobs = choice.get("logprobs")
            if isinstance(logprobs, dict) and logprobs.get("content"):
                _chat_logprobs(logprobs["content"], state.tokens, state.logprobs, state.top,
                               state.ids)
        return state.result()


class OpenAICompletionAdapter(ProviderAdapter):
    path: ClassVar[str] = "/completions"

    def encode(self, request: Request) -> bytes:
        assert isinstance(request, CompletionRequest)
        return orjson.dumps(_body_fields(request))

    def decode(self, body: bytes) -> Completion:
        data = load_json(body)
        return self._choice(data, _first_choice(data))

    def encode_many(self, request: Request, prompts: Sequence[str]) -> bytes:
        """One body whose ``prompt`` is the list ``prompts``: vLLM, SGLang and llama.cpp
        answer it with one choice per prompt, ``index`` giving its position."""
        assert isinstance(request, CompletionRequest)
        if request.stream:
            raise ConfigError("stream", "a request holding several prompts is sent "
                              "unstreamed (their streams would interleave)")
        body = _body_fields(request)
        body["prompt"] = list(prompts)
        return orjson.dumps(body)

    def decode_choices(self, body: bytes) -> list[Completion]:
        """Every choice, in the order of ``index`` (which must be 0..k-1, each once)."""
        data = load_json(body)
        choices = data.get("choices")
        if not isinstance(choices, list) or not all(isinstance(c, dict) for c in choices):
            raise MalformedResponseError("body has no list of choices")
        positions = [c.get("index", i) for i, c in enumerate(choices)]
        if sorted(positions) != list(range(len(choices))):
            raise MalformedResponseError(f"the choices' indices are {positions}, not "
                                         f"0..{len(choices) - 1} once each")
        ordered = sorted(zip(positions, choices, strict=True), key=lambda pc: pc[0])
        return [self._choice(data, choice) for _, choice in ordered]

    def _choice(self, data: dict[str, Any], choice: dict[str, Any]) -> Completion:
        completion = _common(data, choice, choice.get("text"))
        logprobs = choice.get("logprobs")
        if isinstance(logprobs, dict) and logprobs.get("content"):  # llama.cpp: chat shape
            _with_chat_logprobs(completion, logprobs["content"])
        elif isinstance(logprobs, dict) and logprobs.get("tokens"):
            tokens = logprobs["tokens"]
            token_logprobs = logprobs.get("token_logprobs")
            top = logprobs.get("top_logprobs")
            if not isinstance(tokens, list) or not isinstance(token_logprobs, list):
                raise MalformedResponseError("logprobs.tokens/token_logprobs are not lists")
            completion["tokens"] = tokens
            completion["token_logprobs"] = token_logprobs
            if isinstance(top, list):
                completion["top_logprobs"] = _none_if_all_empty([t or {} for t in top])
        return completion

    def decode_stream(self, events: Iterable[SSEEvent]) -> StreamResult:
        state = _StreamState()
        for chunk, at in _events(events):
            choice = state.chunk(chunk)
            if choice is None:
                continue
            state.text(choice.get("text"), at)
            logprobs = choice.get("logprobs")
            if not isinstance(logprobs, dict):
                continue
            if logprobs.get("content"):  # llama.cpp sends the chat shape here too
                _chat_logprobs(logprobs["content"], state.tokens, state.logprobs, state.top,
                               state.ids)
            elif isinstance(logprobs.get("tokens"), list):
                values, top = logprobs.get("token_logprobs"), logprobs.get("top_logprobs")
                if not isinstance(values, list) or len(values) != len(logprobs["tokens"]):
                    raise MalformedResponseError("streamed token_logprobs do not match tokens")
                state.tokens.extend(logprobs["tokens"])
                state.logprobs.extend(values)
                state.top.extend(t or {} for t in top or ())
        return state.result()
