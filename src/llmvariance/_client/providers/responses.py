"""OpenAI's Responses API (``/v1/responses``), streamed or not.

The text is the concatenation of the ``output_text`` parts of the ``message`` items in
``output``; the finish reason is ``completed``, or the ``incomplete_details.reason`` of an
incomplete response (``max_output_tokens``). Logprobs, asked for with
``include=["message.output_text.logprobs"]``, sit on each ``output_text`` part as
``[{token, logprob, top_logprobs: [{token, logprob}]}]``. A stream is named events:
``response.output_text.delta`` (``delta``, ``logprobs``) carry the text;
``response.completed`` / ``response.incomplete`` carry the whole response at the end;
``error`` and ``response.failed`` are errors.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

import orjson

from ..._errors import MalformedResponseError, StreamError
from ..._request import Request, ResponsesRequest
from ._base import (
    Completion,
    ProviderAdapter,
    StreamResult,
    body_fields,
    event_json,
    load_json,
)
from ._sse import SSEEvent

__all__ = ["ResponsesAdapter"]

LOGPROBS_INCLUDE = "message.output_text.logprobs"


def _usage(usage: Any) -> dict[str, Any] | None:
    if not isinstance(usage, dict):
        return None
    details = usage.get("input_tokens_details")
    cached = details.get("cached_tokens") if isinstance(details, dict) else None
    return {"prompt_tokens": usage.get("input_tokens"),
            "completion_tokens": usage.get("output_tokens"),
            "total_tokens": usage.get("total_tokens"), "cache_read_tokens": cached}


def _finish(response: dict[str, Any]) -> str | None:
    details = response.get("incomplete_details")
    if isinstance(details, dict) and isinstance(details.get("reason"), str):
        reason: str = details["reason"]
        return reason
    status = response.get("status")
    return status if isinstance(status, str) else None


def _add_logprobs(entries: Any, tokens: list[str], values: list[float | None],
                  top: list[dict[str, float]]) -> None:
    try:
        for e in entries or ():
            tokens.append(e["token"])
            values.append(e["logprob"])
            top.append({t["token"]: t["logprob"] for t in e.get("top_logprobs") or ()})
    except (KeyError, TypeError) as exc:
        raise MalformedResponseError(f"output_text logprobs are malformed: {exc!r}") from None


def _check_status(response: dict[str, Any]) -> None:
    """Only a completed or incomplete response has an answer; ``failed``, ``cancelled`` or
    still ``queued`` / ``in_progress`` (background mode) do not."""
    status = response.get("status", "completed")
    if status not in ("completed", "incomplete"):
        error = response.get("error")
        detail = error.get("message") if isinstance(error, dict) else None
        raise MalformedResponseError(f"the response is {status}"
                                     + (f": {detail}" if detail else ""))


def _output(response: dict[str, Any]
            ) -> tuple[str, list[str], list[float | None], list[dict[str, float]]]:
    """The text and logprobs of the ``output_text`` parts of the ``message`` items."""
    output = response.get("output")
    if not isinstance(output, list):
        raise MalformedResponseError("the response has no output list")
    parts: list[str] = []
    tokens: list[str] = []
    values: list[float | None] = []
    top: list[dict[str, float]] = []
    for item in output:
        if not isinstance(item, dict) or item.get("type") != "message":
            continue  # reasoning, tool calls: not the answer's text
        content = item.get("content") or []
        if not isinstance(content, list):
            raise MalformedResponseError("a message item's content is not a list")
        for part in content:
            if isinstance(part, dict) and part.get("type") == "output_text":
                text = part.get("text")
                if not isinstance(text, str):
                    raise MalformedResponseError("an output_text has no text")
                parts.append(text)
                _add_logprobs(part.get("logprobs"), tokens, values, top)
    return "".join(parts), tokens, values, top


def _completion(response: dict[str, Any], text: str, tokens: list[str],
                values: list[float | None], top: list[dict[str, float]]) -> Completion:
    completion = Completion(text=text, tokens=None, token_logprobs=None, top_logprobs=None,
                            finish_reason=_finish(response), system_fingerprint=None,
                            model=response.get("model"), usage=_usage(response.get("usage")),
                            response_id=response.get("id"))
    if tokens:
        completion["tokens"] = tokens
        completion["token_logprobs"] = values
        completion["top_logprobs"] = top if any(top) else None
    return completion


def _responses_event(name: str | None) -> bool:
    return name is None or name == "error" or name.startswith("response.")


class ResponsesAdapter(ProviderAdapter):
    path: ClassVar[str] = "/responses"

    def encode(self, request: Request) -> bytes:
        assert isinstance(request, ResponsesRequest)
        added = {"include": [LOGPROBS_INCLUDE]} if request.top_logprobs is not None else {}
        return orjson.dumps(body_fields(request, **added))

    def decode(self, body: bytes) -> Completion:
        data = load_json(body)
        _check_status(data)
        text, tokens, values, top = _output(data)
        return _completion(data, text, tokens, values, top)

    def decode_stream(self, events: Iterable[SSEEvent]) -> StreamResult:
        parts: list[str] = []
        content_at: list[float] = []
        tokens: list[str] = []
        values: list[float | None] = []
        top: list[dict[str, float]] = []
        for event in events:
            data = event_json(event, _responses_event)
            if data is None:
                continue
            kind = data.get("type", event.event)
            if kind == "response.output_text.delta":
                piece = data.get("delta")
                if not isinstance(piece, str):
                    raise MalformedResponseError("an output_text delta has no text")
                if piece:
                    parts.append(piece)
                    content_at.append(event.at)
                _add_logprobs(data.get("logprobs"), tokens, values, top)
            elif kind in ("response.completed", "response.incomplete"):
                response = data.get("response")
                if not isinstance(response, dict):
                    raise MalformedResponseError(f"{kind} carries no response")
                final, final_tokens, final_values, final_top = _output(response)
                streamed = "".join(parts)
                if final and streamed and final != streamed:
                    raise MalformedResponseError("the streamed deltas and the final response "
                                                 "disagree on the text")
                if final and not streamed:  # the text came only in the final response
                    return _completion(response, final, final_tokens, final_values,
                                       final_top), [event.at]
                return _completion(response, streamed, tokens, values, top), content_at
            elif kind in ("error", "response.failed"):
                response = data.get("response") if kind == "response.failed" else None
                error = response.get("error") if isinstance(response, dict) else data
                message = error.get("message") if isinstance(error, dict) else error
                raise StreamError(f"error event mid-stream: {message}")
        raise MalformedResponseError("the stream ended before response.completed (cut short)")
