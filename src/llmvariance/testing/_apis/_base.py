"""What every simulated API provides: parse a request into a ``Call``, format errors.

A ``Call`` is one parsed request: the prompt and engine ``Job``, and the writer of this
request's answer, either as one JSON body or as server-sent events (head, one event per
token, tail). The server decides faults and drives the engine; the API only formats.
"""

from __future__ import annotations

import uuid
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar

import orjson

from .._engine import Delta, Generation, Job
from .._models import Context, SimModel
from .._vocab import prompt_tokens

__all__ = [
    "Api",
    "BadRequest",
    "Call",
    "OpenAIApi",
    "OpenAIChunkCall",
    "make_job",
    "new_id",
    "openai_error",
    "openai_stream_error",
    "openai_usage",
    "sse_data",
    "sse_event",
]


class BadRequest(Exception):
    """A request the API refuses; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str, param: str | None = None,
                 code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.param, self.code = status, param, code


def sse_data(payload: Any) -> bytes:
    """One unnamed server-sent event (OpenAI's chat and completions streams)."""
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def sse_event(name: str, payload: Any) -> bytes:
    """One named server-sent event (Anthropic's and the Responses API's streams)."""
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


def new_id(prefix: str) -> str:
    return prefix + uuid.uuid4().hex[:24]


def make_job(prompt: str, *, max_tokens: Any, temperature: Any = None, top_p: Any = None,
             top_k: Any = None, seed: Any = None, logit_bias: Any = None, top_logprobs: int = 0,
             stop: Any = None) -> Job:
    """The engine job for a request; a parameter of the wrong type is a 400."""
    stop = stop or ()
    try:
        return Job(
            context=Context.for_prompt(prompt),
            max_tokens=int(max_tokens),
            temperature=float(1.0 if temperature is None else temperature),
            top_p=float(1.0 if top_p is None else top_p),
            top_k=int(top_k or 0),
            seed=seed,
            logit_bias=dict(logit_bias or {}),
            top_logprobs=top_logprobs,
            stop=(stop,) if isinstance(stop, str) else tuple(str(s) for s in stop),
        )
    except (TypeError, ValueError) as exc:
        raise BadRequest(400, f"invalid parameter: {exc}") from None


class Call(ABC):
    """One parsed request and the writer of its answer.

    The stream methods return the bytes of zero or more whole events: ``head`` before the
    first token, ``delta`` for each engine ``Delta`` (never a terminal event), ``tail``
    with the terminal events, ``error_event`` to end a stream with the API's error.
    """

    def __init__(self, model: SimModel, prompt: str, job: Job, *, stream: bool) -> None:
        self.model = model
        self.prompt = prompt
        self.job = job
        self.stream = stream
        self.prompt_tokens = prompt_tokens(prompt)

    @abstractmethod
    def body(self, gen: Generation) -> bytes:
        """The whole non-streamed answer."""

    @abstractmethod
    def broken(self) -> bytes:
        """What a malformed answer looks like: a body or first event cut mid-JSON."""

    @abstractmethod
    def head(self) -> bytes: ...

    @abstractmethod
    def delta(self, delta: Delta) -> bytes: ...

    @abstractmethod
    def tail(self, gen: Generation) -> bytes: ...

    @abstractmethod
    def error_event(self, message: str) -> bytes: ...


class Api(ABC):
    """One HTTP API served at ``path``."""

    path: ClassVar[str]
    anthropic: ClassVar[bool] = False
    """Anthropic's conventions: ``x-api-key`` and ``anthropic-ratelimit-*`` headers."""

    def authorized(self, headers: Mapping[str, str], api_key: str) -> bool:
        return headers.get("Authorization") == f"Bearer {api_key}"

    @abstractmethod
    def parse(self, body: dict[str, Any], model: SimModel) -> Call:
        """The call for a JSON object body whose ``model`` is ``model``."""

    @abstractmethod
    def error(self, status: int, message: str, param: str | None = None,
              code: str | None = None) -> tuple[int, bytes]:
        """The status and JSON body of an error answer (an API may change the status)."""


def openai_error(status: int, message: str, param: str | None = None,
                 code: str | None = None) -> tuple[int, bytes]:
    """OpenAI's error body, shared by its three APIs."""
    if status == 429:
        kind = "requests"
    elif status < 500:
        kind = "invalid_request_error"
    else:
        kind = "server_error"
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return status, orjson.dumps(body)


def openai_stream_error(message: str) -> bytes:
    """How an OpenAI chat or completions stream reports an error mid-way."""
    return sse_data({"error": {"message": message, "type": "server_error", "param": None,
                               "code": None}})


def openai_usage(prompt_count: int, completion_count: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt_count,
        "completion_tokens": completion_count,
        "total_tokens": prompt_count + completion_count,
        # as OpenAI sends them, so clients meet the fields they must tolerate
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0},
    }


class OpenAIChunkCall(Call):
    """Chat and completions streams: chunks, a last chunk with the finish reason, usage in a
    chunk of its own when asked for (``stream_options.include_usage``), then ``[DONE]``."""

    include_usage: bool

    @abstractmethod
    def final_chunk(self, finish_reason: str | None) -> bytes:
        """The chunk that carries the finish reason."""

    @abstractmethod
    def usage_envelope(self) -> dict[str, Any]:
        """A chunk with no choices, for the usage."""

    def tail(self, gen: Generation) -> bytes:
        out = self.final_chunk(gen.finish_reason)
        if self.include_usage:
            payload = self.usage_envelope()
            payload["usage"] = openai_usage(self.prompt_tokens, len(gen.choices))
            out += sse_data(payload)
        return out + b"data: [DONE]\n\n"

    def error_event(self, message: str) -> bytes:
        return openai_stream_error(message)


def single_choice(body: dict[str, Any]) -> dict[str, Any]:
    """``body``, unless it asks for more than one choice (the simulator makes one)."""
    if body.get("n", 1) != 1:
        raise BadRequest(400, "only n=1 is supported", "n")
    return body


class OpenAIApi(Api):
    def error(self, status: int, message: str, param: str | None = None,
              code: str | None = None) -> tuple[int, bytes]:
        return openai_error(status, message, param, code)
