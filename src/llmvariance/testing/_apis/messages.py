"""Anthropic Messages, ``POST /v1/messages``.

The key may come as ``x-api-key`` (Anthropic's way) or a Bearer token. ``max_tokens`` is
required. ``stop_reason`` is ``end_turn``, ``max_tokens`` or ``stop_sequence`` (with the
sequence in ``stop_sequence``). Errors are ``{"type": "error", "error": {"type": ...,
"message": ...}}``; a 503 becomes Anthropic's 529 ``overloaded_error``.

Streamed, every event is ``event: TYPE`` + ``data: {"type": TYPE, ...}``:
``message_start`` (the message with empty content and ``usage.input_tokens``),
``content_block_start``, ``ping``, one ``content_block_delta`` (a ``text_delta``) per
token, ``content_block_stop``, ``message_delta`` (``stop_reason``, ``stop_sequence`` and
the cumulative ``usage.output_tokens``), ``message_stop``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from .._engine import Delta, Generation
from .._models import SimModel
from ._base import Api, BadRequest, Call, make_job, new_id, sse_event
from .chat import chat_prompt

__all__ = ["MessagesApi"]

_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error",
                403: "permission_error", 404: "not_found_error", 413: "request_too_large",
                429: "rate_limit_error", 529: "overloaded_error"}


def _text(value: Any, field: str) -> str:
    """A string, or the joined text of a list of ``{"type": "text", "text": ...}`` blocks."""
    if isinstance(value, str):
        return value
    try:
        return "".join(block["text"] for block in value if block.get("type") == "text")
    except (KeyError, TypeError, AttributeError):
        raise BadRequest(400, f"{field}: must be a string or a list of text blocks",
                         field) from None


class MessageCall(Call):
    def __init__(self, body: dict[str, Any], model: SimModel) -> None:
        max_tokens = body.get("max_tokens")
        if max_tokens is None:
            raise BadRequest(400, "max_tokens: Field required", "max_tokens")
        if not isinstance(max_tokens, int) or max_tokens < 1:
            raise BadRequest(400, "max_tokens: must be a positive integer", "max_tokens")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise BadRequest(400, "messages: must be a non-empty list", "messages")
        turns = []
        for i, m in enumerate(messages):
            if not isinstance(m, dict) or m.get("role") not in ("user", "assistant"):
                raise BadRequest(400, f"messages.{i}.role: must be user or assistant",
                                 "messages")
            turns.append({"role": m["role"],
                          "content": _text(m.get("content"), f"messages.{i}.content")})
        system = body.get("system")
        if system is not None:
            turns.insert(0, {"role": "system", "content": _text(system, "system")})
        prompt = chat_prompt(turns)
        job = make_job(prompt, max_tokens=max_tokens, temperature=body.get("temperature"),
                       top_p=body.get("top_p"), top_k=body.get("top_k"),
                       stop=body.get("stop_sequences"))
        super().__init__(model, prompt, job, stream=bool(body.get("stream")))
        self.id = new_id("msg_")

    @staticmethod
    def _stop(gen: Generation) -> tuple[str, str | None]:
        if gen.finish_reason == "length":
            return "max_tokens", None
        if gen.stop_sequence is not None:
            return "stop_sequence", gen.stop_sequence
        return "end_turn", None

    def _usage(self, output_tokens: int) -> dict[str, int]:
        return {"input_tokens": self.prompt_tokens, "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0, "output_tokens": output_tokens}

    def _message(self, content: list[dict[str, Any]], stop: tuple[str | None, str | None],
                 output_tokens: int) -> dict[str, Any]:
        return {"id": self.id, "type": "message", "role": "assistant",
                "model": self.model.name, "content": content, "stop_reason": stop[0],
                "stop_sequence": stop[1], "usage": self._usage(output_tokens)}

    def body(self, gen: Generation) -> bytes:
        return orjson.dumps(self._message([{"type": "text", "text": gen.text}],
                                          self._stop(gen), len(gen.choices)))

    def broken(self) -> bytes:
        if self.stream:
            return b'event: message_start\ndata: {"type": "message_start", "mess\n\n'
        return b'{"id": "broken", "type": "message", "cont'

    def head(self) -> bytes:
        return (sse_event("message_start", {"type": "message_start",
                                            "message": self._message([], (None, None), 0)})
                + sse_event("content_block_start", {
                    "type": "content_block_start", "index": 0,
                    "content_block": {"type": "text", "text": ""}})
                + sse_event("ping", {"type": "ping"}))

    def delta(self, delta: Delta) -> bytes:
        if not delta.text:
            return b""  # Anthropic sends no empty text deltas
        return sse_event("content_block_delta", {
            "type": "content_block_delta", "index": 0,
            "delta": {"type": "text_delta", "text": delta.text}})

    def tail(self, gen: Generation) -> bytes:
        reason, sequence = self._stop(gen)
        return (sse_event("content_block_stop", {"type": "content_block_stop", "index": 0})
                + sse_event("message_delta", {
                    "type": "message_delta",
                    "delta": {"stop_reason": reason, "stop_sequence": sequence},
                    "usage": self._usage(len(gen.choices))})
                + sse_event("message_stop", {"type": "message_stop"}))

    def error_event(self, message: str) -> bytes:
        return sse_event("error", {"type": "error",
                                   "error": {"type": "overloaded_error", "message": message}})


class MessagesApi(Api):
    path = "/v1/messages"
    anthropic = True

    def authorized(self, headers: Mapping[str, str], api_key: str) -> bool:
        return headers.get("x-api-key") == api_key or super().authorized(headers, api_key)

    def parse(self, body: dict[str, Any], model: SimModel) -> Call:
        return MessageCall(body, model)

    def error(self, status: int, message: str, param: str | None = None,
              code: str | None = None) -> tuple[int, bytes]:
        if status == 503:
            status = 529
        kind = _ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
        return status, orjson.dumps({"type": "error",
                                     "error": {"type": kind, "message": message}})
