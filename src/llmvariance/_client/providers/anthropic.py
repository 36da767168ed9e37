"""Anthropic's Messages API (``/v1/messages``), streamed or not.

The key travels in ``x-api-key`` with an ``anthropic-version`` header. The text is the
concatenation of the ``text`` content blocks; ``stop_reason`` is the finish reason. Usage
counts ``input_tokens`` (without cache), ``cache_creation_input_tokens``,
``cache_read_input_tokens`` and ``output_tokens``. A stream is named events:
``message_start`` (id, model, input usage), ``content_block_delta`` with ``text_delta``s,
``message_delta`` (stop reason, output usage), ``message_stop`` at the end, ``ping`` to
ignore, and ``error`` mid-stream (e.g. ``overloaded_error``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

import orjson

from ..._errors import MalformedResponseError, StreamError
from ..._request import MessagesRequest, Request
from ..endpoint import Endpoint
from ._base import (
    Completion,
    ProviderAdapter,
    StreamResult,
    body_fields,
    event_json,
    load_json,
)
from ._sse import SSEEvent

__all__ = ["API_VERSION", "AnthropicMessagesAdapter"]

API_VERSION = "2023-06-01"


def _usage(*parts: Any) -> dict[str, Any] | None:
    """Anthropic's usage objects (start and delta of a stream) as ``Usage`` fields."""
    merged: dict[str, Any] = {}
    for part in parts:
        if isinstance(part, dict):
            merged.update({k: v for k, v in part.items() if v is not None})
    if not merged:
        return None
    counts = {k: v for k, v in merged.items() if isinstance(v, int) and not isinstance(v, bool)}
    written = counts.get("cache_creation_input_tokens", 0)
    read = counts.get("cache_read_input_tokens", 0)
    if "input_tokens" not in counts:
        return {"completion_tokens": counts.get("output_tokens")}
    prompt = counts["input_tokens"] + written + read
    output = counts.get("output_tokens")
    return {"prompt_tokens": prompt, "completion_tokens": output,
            "total_tokens": prompt + (output or 0),
            "cache_write_tokens": written, "cache_read_tokens": read}


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise MalformedResponseError(f"{where} is {type(value).__name__}, not a string")
    return value


_KNOWN_EVENTS = frozenset({None, "message_start", "content_block_start", "content_block_delta",
                           "content_block_stop", "message_delta", "message_stop", "error"})


class AnthropicMessagesAdapter(ProviderAdapter):
    path: ClassVar[str] = "/messages"
    supports_logprobs: ClassVar[bool] = False

    def headers(self, endpoint: Endpoint) -> dict[str, str]:
        headers = endpoint.request_headers(key_header="x-api-key")
        if not any(name.lower() == "anthropic-version" for name in headers):
            headers["anthropic-version"] = API_VERSION
        return headers

    def encode(self, request: Request) -> bytes:
        assert isinstance(request, MessagesRequest)
        return orjson.dumps(body_fields(request))

    def decode(self, body: bytes) -> Completion:
        data = load_json(body)
        content = data.get("content")
        if not isinstance(content, list):
            raise MalformedResponseError("body has no content list")
        text = "".join(_text(block.get("text"), "a text block's text") for block in content
                       if isinstance(block, dict) and block.get("type") == "text")
        return Completion(text=text, tokens=None, token_logprobs=None, top_logprobs=None,
                          finish_reason=data.get("stop_reason"), system_fingerprint=None,
                          model=data.get("model"), usage=_usage(data.get("usage")),
                          response_id=data.get("id"))

    def decode_stream(self, events: Iterable[SSEEvent]) -> StreamResult:
        parts: list[str] = []
        content_at: list[float] = []
        message: dict[str, Any] = {}
        stop_reason: Any = None
        usage_end: Any = None
        for event in events:
            if event.event == "ping":
                continue  # keep-alive; its data need not be JSON
            data = event_json(event, _KNOWN_EVENTS.__contains__)
            if data is None:
                continue
            kind = data.get("type", event.event)
            if kind == "message_start" and isinstance(data.get("message"), dict):
                message = data["message"]
            elif kind == "content_block_delta":
                delta = data.get("delta")
                if isinstance(delta, dict) and delta.get("type") == "text_delta":
                    piece = _text(delta.get("text"), "a text_delta's text")
                    if piece:
                        parts.append(piece)
                        content_at.append(event.at)
            elif kind == "message_delta":
                delta = data.get("delta")
                if isinstance(delta, dict) and delta.get("stop_reason") is not None:
                    stop_reason = delta["stop_reason"]
                usage_end = data.get("usage")
            elif kind == "error":
                error = data.get("error")
                detail = (f"{error.get('type')}: {error.get('message')}"
                          if isinstance(error, dict) else error)
                raise StreamError(f"error event mid-stream: {detail}")
            elif kind == "message_stop":
                if stop_reason is None:
                    raise MalformedResponseError("the stream stopped without a stop_reason")
                completion = Completion(
                    text="".join(parts), tokens=None, token_logprobs=None, top_logprobs=None,
                    finish_reason=stop_reason, system_fingerprint=None,
                    model=message.get("model"),
                    usage=_usage(message.get("usage"), usage_end),
                    response_id=message.get("id"))
                return completion, content_at
        raise MalformedResponseError("the stream ended before message_stop (cut short)")
