"""The provider abstraction: encode a request once, decode each response, streamed or not."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from typing import Any, ClassVar, TypedDict

import orjson

from ..._errors import ConfigError, MalformedResponseError
from ..._request import Request
from ..endpoint import Endpoint
from ._sse import SSEEvent

__all__ = ["Completion", "ProviderAdapter", "StreamResult", "body_fields", "error_message",
           "event_json",
           "load_json", "preview"]

PREVIEW_CHARS = 2000
"""Adapters keep this much of a body in messages; the pool cuts to 500 *after* removing
secrets, so a key straddling the cut is still found whole."""


def body_fields(request: Request, **added: Any) -> dict[str, Any]:
    """The request's fields as a JSON body: unset ones left out, ``stream`` only when on,
    then ``added`` (API-specific fields), then the caller's ``extra`` over everything."""
    body = request.model_dump(exclude_none=True, exclude={"extra", "stream"})
    if request.stream:
        body["stream"] = True
    body.update(added)
    body.update(request.extra)
    return body


def load_json(body: bytes | str, what: str = "body") -> dict[str, Any]:
    """A JSON object, or ``MalformedResponseError`` saying what it was instead."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raw = body.encode() if isinstance(body, str) else body
        raise MalformedResponseError(f"{what} is not JSON: {preview(raw)}") from None
    if not isinstance(data, dict):
        raise MalformedResponseError(f"{what} is JSON {type(data).__name__}, not an object")
    return data


def event_json(event: SSEEvent, known: Callable[[str | None], bool]) -> dict[str, Any] | None:
    """The event's JSON object, or None for an event of a type the API does not define
    (``known(name)`` is false) whose data is not JSON: a server's or proxy's keep-alive,
    skipped as Anthropic's ``ping`` is. Non-JSON data in an event the API defines raises."""
    try:
        return load_json(event.data, f"the {event.event or 'unnamed'} event")
    except MalformedResponseError:
        if known(event.event):
            raise
        return None


def preview(body: bytes) -> str:
    text = body[:PREVIEW_CHARS].decode("utf-8", "replace")
    return repr(text) if text else "(empty)"


def error_message(status: int, body: bytes) -> str:
    """``HTTP 529: overloaded_error: Overloaded``: the status and the provider's words.

    Reads OpenAI's ``{"error": {"message"}}``, Anthropic's ``{"type": "error", "error":
    {"type", "message"}}``, and the ``detail`` / ``message`` of other servers.
    """
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return f"HTTP {status}: {preview(body)}"
    message: Any = data
    if isinstance(data, dict):
        message = data.get("error", data.get("detail", data.get("message", data)))
        if isinstance(message, dict):
            kind = message.get("type") if data.get("type") == "error" else None
            message = message.get("message", message)
            if kind and isinstance(message, str):
                message = f"{kind}: {message}"
    if not isinstance(message, str):
        message = orjson.dumps(message).decode()
    return f"HTTP {status}: {message[:PREVIEW_CHARS]}"


class Completion(TypedDict, total=False):
    """The ``Sample`` fields a response fills; the pool adds index, latency, attempts."""

    text: str
    tokens: list[str] | None
    token_ids: list[int] | None
    token_logprobs: list[float | None] | None
    top_logprobs: list[dict[str, float]] | None
    finish_reason: str | None
    system_fingerprint: str | None
    model: str | None
    usage: dict[str, Any] | None
    response_id: str | None


StreamResult = tuple[Completion, list[float]]
"""A streamed response's fields, and the arrival times of the events that carried text."""


class ProviderAdapter(ABC):
    """Speaks one API: where to POST, what to send, how to read the answer."""

    path: ClassVar[str]
    """Appended to the endpoint's base URL."""
    supports_logprobs: ClassVar[bool] = True
    overloaded_statuses: ClassVar[frozenset[int]] = frozenset({503, 529})
    """Statuses meaning "overloaded" (529: Anthropic's ``overloaded_error``, also sent by
    some proxies): with a retry-after they pause the whole pool."""

    def headers(self, endpoint: Endpoint) -> dict[str, str]:
        """The request headers, the key among them (``Authorization: Bearer`` by default)."""
        return endpoint.request_headers()

    @abstractmethod
    def encode(self, request: Request) -> bytes:
        """The request body; called once per run, since every request is identical."""

    @abstractmethod
    def decode(self, body: bytes) -> Completion:
        """The fields of a 2xx body; raises ``MalformedResponseError`` if unusable."""

    @abstractmethod
    def decode_stream(self, events: Iterable[SSEEvent]) -> StreamResult:
        """The fields of a 2xx event stream, assembled to equal the non-streamed ones.

        Raises ``StreamError`` for an error event, ``MalformedResponseError`` for a stream
        that ends before its final event (never a silently short text).
        """

    def encode_many(self, request: Request, prompts: Sequence[str]) -> bytes:
        """One body that asks for a completion of each of ``prompts`` (an exact batch);
        APIs without prompt lists refuse with ``ConfigError``."""
        raise ConfigError("request", f"{type(request).__name__} has no list of prompts: an "
                          "exact batch needs a CompletionRequest (OpenAI-style /completions)")

    def decode_choices(self, body: bytes) -> list[Completion]:
        """Every choice of a 2xx body, in the order of the prompts (default: the one)."""
        return [self.decode(body)]

    def error_message(self, status: int, body: bytes) -> str:
        """The provider's own explanation of a non-2xx response, for ``SampleError``."""
        return error_message(status, body)
