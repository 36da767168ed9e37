"""OpenAI Responses, ``POST /v1/responses``.

The text is ``output[0].content[0].text`` (an ``output_text`` part); logprobs come with
``include: ["message.output_text.logprobs"]`` (``top_logprobs`` alternatives, 0-20). A
response cut by ``max_output_tokens`` has ``status: "incomplete"`` and
``incomplete_details.reason: "max_output_tokens"``.

Streamed, every event is ``event: TYPE`` + ``data: {"type": TYPE, "sequence_number": n,
...}``, n counting from 0: ``response.created``, ``response.in_progress``,
``response.output_item.added``, ``response.content_part.added``, one
``response.output_text.delta`` per token, ``response.output_text.done``,
``response.content_part.done``, ``response.output_item.done``, then
``response.completed`` or ``response.incomplete`` carrying the whole response with usage.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from .._engine import Delta, Generation, TokenChoice
from .._models import SimModel
from ._base import BadRequest, Call, OpenAIApi, make_job, new_id, sse_event
from .chat import DEFAULT_MAX_TOKENS, chat_prompt, token_logprob

__all__ = ["ResponsesApi"]

LOGPROBS = "message.output_text.logprobs"


def _prompt(body: dict[str, Any]) -> str:
    """Like a chat: ``instructions`` as a system message, then the input messages."""
    raw = body.get("input")
    if isinstance(raw, str):
        messages: Any = [{"role": "user", "content": raw}]
    elif isinstance(raw, list) and raw:
        messages = raw
    else:
        raise BadRequest(400, "input must be a string or a non-empty array", "input")
    instructions = body.get("instructions")
    if instructions is not None:
        if not isinstance(instructions, str):
            raise BadRequest(400, "instructions must be a string", "instructions")
        messages = [{"role": "system", "content": instructions}, *messages]
    try:
        return chat_prompt(messages)
    except BadRequest:
        raise BadRequest(400, "each input item needs a role and content", "input") from None


def _delta_logprob(c: TokenChoice) -> dict[str, Any]:
    """A delta event's logprob: no ``bytes`` there, unlike the output text's."""
    return {"token": c.token, "logprob": c.logprob,
            "top_logprobs": [{"token": t, "logprob": lp} for t, lp in c.top]}


class ResponseCall(Call):
    def __init__(self, body: dict[str, Any], model: SimModel) -> None:
        prompt = _prompt(body)
        include = body.get("include") or []
        if not isinstance(include, list):
            raise BadRequest(400, "include must be an array", "include")
        self.want_logprobs = LOGPROBS in include
        top = body.get("top_logprobs") or 0
        if not isinstance(top, int) or not 0 <= top <= 20:
            raise BadRequest(400, f"top_logprobs must be an integer from 0 to 20, got {top!r}",
                             "top_logprobs")
        self.max_output_tokens = body.get("max_output_tokens")
        job = make_job(prompt, max_tokens=self.max_output_tokens or DEFAULT_MAX_TOKENS,
                       temperature=body.get("temperature"), top_p=body.get("top_p"),
                       top_logprobs=top if self.want_logprobs else 0)
        super().__init__(model, prompt, job, stream=bool(body.get("stream")))
        self.request = body
        self.id = new_id("resp_")
        self.item_id = new_id("msg_")
        self.created = int(time.time())
        self._sequence = 0
        self._logprobs: list[dict[str, Any]] = []
        """The streamed tokens' logprobs, for the done events."""

    # -- the response object ----------------------------------------------------------

    def _response(self, gen: Generation | None) -> dict[str, Any]:
        """The response: in progress (``gen`` None) or finished with ``gen``."""
        body = self.request
        status = "in_progress"
        incomplete = None
        output: list[dict[str, Any]] = []
        usage = None
        if gen is not None:
            status = "incomplete" if gen.finish_reason == "length" else "completed"
            if status == "incomplete":
                incomplete = {"reason": "max_output_tokens"}
            output = [self._item(gen.text, self._output_logprobs(gen), status)]
            completion = len(gen.choices)
            usage = {"input_tokens": self.prompt_tokens,
                     "input_tokens_details": {"cached_tokens": 0},
                     "output_tokens": completion,
                     "output_tokens_details": {"reasoning_tokens": 0},
                     "total_tokens": self.prompt_tokens + completion}
        return {
            "id": self.id, "object": "response", "created_at": self.created,
            "status": status, "error": None, "incomplete_details": incomplete,
            "instructions": body.get("instructions"),
            "max_output_tokens": self.max_output_tokens, "model": self.model.name,
            "output": output, "parallel_tool_calls": True,
            "temperature": body.get("temperature", 1.0), "tool_choice": "auto", "tools": [],
            "top_logprobs": body.get("top_logprobs", 0), "top_p": body.get("top_p", 1.0),
            "truncation": "disabled", "usage": usage, "metadata": {},
        }

    def _output_logprobs(self, gen: Generation) -> list[dict[str, Any]]:
        return [token_logprob(c) for c in gen.choices] if self.want_logprobs else []

    @staticmethod
    def _part(text: str, logprobs: list[dict[str, Any]]) -> dict[str, Any]:
        return {"type": "output_text", "text": text, "annotations": [], "logprobs": logprobs}

    def _item(self, text: str | None, logprobs: list[dict[str, Any]], status: str
              ) -> dict[str, Any]:
        content = [] if text is None else [self._part(text, logprobs)]
        return {"type": "message", "id": self.item_id, "status": status, "role": "assistant",
                "content": content}

    def body(self, gen: Generation) -> bytes:
        return orjson.dumps(self._response(gen))

    def broken(self) -> bytes:
        if self.stream:
            return b'event: response.created\ndata: {"type": "response.created", "resp\n\n'
        return b'{"id": "broken", "object": "response", "out'

    # -- the stream -------------------------------------------------------------------

    def _event(self, kind: str, **fields: Any) -> bytes:
        event = sse_event(kind, {"type": kind, **fields, "sequence_number": self._sequence})
        self._sequence += 1
        return event

    def _where(self) -> dict[str, Any]:
        return {"item_id": self.item_id, "output_index": 0, "content_index": 0}

    def head(self) -> bytes:
        return (self._event("response.created", response=self._response(None))
                + self._event("response.in_progress", response=self._response(None))
                + self._event("response.output_item.added", output_index=0,
                              item=self._item(None, [], "in_progress"))
                + self._event("response.content_part.added", **self._where(),
                              part=self._part("", [])))

    def delta(self, delta: Delta) -> bytes:
        if delta.choice is None and not delta.text:
            return b""
        logprobs = []
        if self.want_logprobs and delta.choice is not None:
            logprobs = [_delta_logprob(delta.choice)]
            self._logprobs.append(logprobs[0])
        return self._event("response.output_text.delta", **self._where(), delta=delta.text,
                           logprobs=logprobs)

    def tail(self, gen: Generation) -> bytes:
        response = self._response(gen)
        item = response["output"][0]
        part = item["content"][0]
        final = "response.incomplete" if response["status"] == "incomplete" \
            else "response.completed"
        return (self._event("response.output_text.done", **self._where(), text=gen.text,
                            logprobs=self._logprobs)
                + self._event("response.content_part.done", **self._where(), part=part)
                + self._event("response.output_item.done", output_index=0, item=item)
                + self._event(final, response=response))

    def error_event(self, message: str) -> bytes:
        return self._event("error", code="server_error", message=message, param=None)


class ResponsesApi(OpenAIApi):
    path = "/v1/responses"

    def parse(self, body: dict[str, Any], model: SimModel) -> Call:
        return ResponseCall(body, model)
