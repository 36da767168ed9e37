"""OpenAI Chat Completions, ``POST /v1/chat/completions``.

Streamed, each chunk is ``data: {"object": "chat.completion.chunk", "choices": [...]}``:
first a ``{"role": "assistant", "content": ""}`` delta, then one ``{"content": token}``
delta per token (with ``logprobs.content`` when asked for), then an empty delta with the
``finish_reason``, then with ``stream_options.include_usage`` a chunk with
``"choices": []`` and the ``usage`` (every other chunk then has ``"usage": null``), and
finally ``data: [DONE]``.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from .._engine import Delta, Generation, TokenChoice
from .._models import SimModel
from ._base import (
    BadRequest,
    OpenAIApi,
    OpenAIChunkCall,
    make_job,
    new_id,
    openai_usage,
    single_choice,
    sse_data,
)

__all__ = ["ChatApi", "chat_prompt"]

DEFAULT_MAX_TOKENS = 256


def chat_prompt(messages: Any) -> str:
    """The text the model conditions on: one ``role: content`` line per message.

    Content may be a string or a list of ``{"type": "text", "text": ...}`` parts.
    """
    if not isinstance(messages, list) or not messages:
        raise BadRequest(400, "messages must be a non-empty array", "messages")
    lines = []
    try:
        for m in messages:
            content = m["content"]
            if isinstance(content, list):
                content = "".join(part["text"] for part in content
                                  if part.get("type") in ("text", "input_text", "output_text"))
            lines.append(f"{m['role']}: {content}")
    except (KeyError, TypeError, AttributeError):
        raise BadRequest(400, "each message needs a role and content", "messages") from None
    return "\n".join(lines)


def token_logprob(c: TokenChoice) -> dict[str, Any]:
    return {"token": c.token, "logprob": c.logprob, "bytes": list(c.token.encode()),
            "top_logprobs": [{"token": t, "logprob": lp, "bytes": list(t.encode())}
                             for t, lp in c.top]}


class ChatCall(OpenAIChunkCall):
    def __init__(self, body: dict[str, Any], model: SimModel) -> None:
        prompt = chat_prompt(body.get("messages"))
        self.want_logprobs = bool(body.get("logprobs"))
        top = int(body.get("top_logprobs") or 0) if self.want_logprobs else 0
        max_tokens = body.get("max_completion_tokens") or body.get("max_tokens") \
            or DEFAULT_MAX_TOKENS
        job = make_job(prompt, max_tokens=max_tokens, temperature=body.get("temperature"),
                       top_p=body.get("top_p"), seed=body.get("seed"),
                       logit_bias=body.get("logit_bias"), top_logprobs=top,
                       stop=body.get("stop"))
        super().__init__(model, prompt, job, stream=bool(body.get("stream")))
        options = body.get("stream_options") or {}
        self.include_usage = bool(isinstance(options, dict) and options.get("include_usage"))
        self.id = new_id("chatcmpl-")
        self.created = int(time.time())

    def _envelope(self, obj: str, choices: list[dict[str, Any]]) -> dict[str, Any]:
        return {"id": self.id, "object": obj, "created": self.created,
                "model": self.model.name, "system_fingerprint": self.model.fingerprint,
                "choices": choices}

    def body(self, gen: Generation) -> bytes:
        logprobs = ({"content": [token_logprob(c) for c in gen.choices]}
                    if self.want_logprobs else None)
        choice = {"index": 0, "message": {"role": "assistant", "content": gen.text},
                  "logprobs": logprobs, "finish_reason": gen.finish_reason}
        payload = self._envelope("chat.completion", [choice])
        payload["usage"] = openai_usage(self.prompt_tokens, len(gen.choices))
        return orjson.dumps(payload)

    def broken(self) -> bytes:
        if self.stream:
            return b'data: {"id": "broken", "object": "chat.completion.chunk", "ch\n\n'
        return b'{"id": "broken", "object": "chat.completion", "ch'

    def _chunk(self, delta: dict[str, Any], logprobs: dict[str, Any] | None,
               finish_reason: str | None) -> bytes:
        payload = self._envelope("chat.completion.chunk", [
            {"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish_reason}])
        if self.include_usage:
            payload["usage"] = None
        return sse_data(payload)

    def head(self) -> bytes:
        return self._chunk({"role": "assistant", "content": ""}, None, None)

    def delta(self, delta: Delta) -> bytes:
        if delta.choice is None and not delta.text:
            return b""
        logprobs = None
        if self.want_logprobs:
            logprobs = {"content": [] if delta.choice is None else [token_logprob(delta.choice)]}
        return self._chunk({"content": delta.text}, logprobs, None)

    def final_chunk(self, finish_reason: str | None) -> bytes:
        return self._chunk({}, None, finish_reason)

    def usage_envelope(self) -> dict[str, Any]:
        return self._envelope("chat.completion.chunk", [])


class ChatApi(OpenAIApi):
    path = "/v1/chat/completions"

    def parse(self, body: dict[str, Any], model: SimModel) -> ChatCall:
        return ChatCall(single_choice(body), model)
