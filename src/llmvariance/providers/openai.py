"""OpenAI's ``/chat/completions`` and legacy ``/completions`` wire formats.

Also spoken by vLLM, SGLang, llama.cpp, Ollama, TGI and most hosted APIs. Logprobs come
in two shapes: chat puts a list of ``{token, logprob, top_logprobs: [{token, logprob}]}``
under ``choices[0].logprobs.content``; completions puts parallel lists ``tokens``,
``token_logprobs`` and ``top_logprobs`` (a ``{token: logprob}`` dict per position) under
``choices[0].logprobs``. Both become ``Sample.tokens``/``token_logprobs``/``top_logprobs``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import orjson

from .._errors import MalformedResponseError
from .._request import ChatRequest, CompletionRequest, Request
from ._base import Completion, ProviderAdapter

__all__ = ["OpenAIChatAdapter", "OpenAICompletionAdapter"]

_PREVIEW_CHARS = 2000
"""Adapters keep this much of a body in messages; the pool cuts to 500 *after* removing
secrets, so a key straddling the cut is still found whole."""


def _body_fields(request: Request) -> dict[str, Any]:
    body = request.model_dump(exclude_none=True, exclude={"extra"})
    body.update(request.extra)
    return body


def _load(body: bytes) -> dict[str, Any]:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise MalformedResponseError(f"body is not JSON: {_preview(body)}") from None
    if not isinstance(data, dict):
        raise MalformedResponseError(f"body is JSON {type(data).__name__}, not an object")
    return data


def _preview(body: bytes) -> str:
    text = body[:_PREVIEW_CHARS].decode("utf-8", "replace")
    return repr(text) if text else "(empty)"


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
    )


def _none_if_all_empty(top: list[dict[str, float]]) -> list[dict[str, float]] | None:
    return top if any(top) else None


class _OpenAIAdapter(ProviderAdapter):
    def encode(self, request: Request) -> bytes:
        return orjson.dumps(_body_fields(request))

    def error_message(self, status: int, body: bytes) -> str:
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            return f"HTTP {status}: {_preview(body)}"
        message: Any = data
        if isinstance(data, dict):
            message = data.get("error", data.get("detail", data.get("message", data)))
            if isinstance(message, dict):
                message = message.get("message", message)
        if not isinstance(message, str):
            message = orjson.dumps(message).decode()
        return f"HTTP {status}: {message[:_PREVIEW_CHARS]}"


class OpenAIChatAdapter(_OpenAIAdapter):
    path: ClassVar[str] = "/chat/completions"

    def encode(self, request: Request) -> bytes:
        assert isinstance(request, ChatRequest)
        body = _body_fields(request)
        if not request.logprobs:
            body.pop("logprobs", None)
        return orjson.dumps(body)

    def decode(self, body: bytes) -> Completion:
        data = _load(body)
        choice = _first_choice(data)
        message = choice.get("message")
        if not isinstance(message, dict):
            raise MalformedResponseError("choices[0] has no message")
        content = message.get("content")
        completion = _common(data, choice, "" if content is None else content)
        logprobs = choice.get("logprobs")
        entries = logprobs.get("content") if isinstance(logprobs, dict) else None
        if entries:
            try:
                completion["tokens"] = [e["token"] for e in entries]
                completion["token_logprobs"] = [e["logprob"] for e in entries]
                completion["top_logprobs"] = _none_if_all_empty(
                    [{t["token"]: t["logprob"] for t in e.get("top_logprobs") or ()}
                     for e in entries]
                )
            except (KeyError, TypeError) as exc:
                raise MalformedResponseError(f"logprobs.content is malformed: {exc!r}") from None
        return completion


class OpenAICompletionAdapter(_OpenAIAdapter):
    path: ClassVar[str] = "/completions"

    def encode(self, request: Request) -> bytes:
        assert isinstance(request, CompletionRequest)
        return orjson.dumps(_body_fields(request))

    def decode(self, body: bytes) -> Completion:
        data = _load(body)
        choice = _first_choice(data)
        completion = _common(data, choice, choice.get("text"))
        logprobs = choice.get("logprobs")
        if isinstance(logprobs, dict) and logprobs.get("tokens"):
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
