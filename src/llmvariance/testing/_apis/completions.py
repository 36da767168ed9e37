"""OpenAI (legacy) Completions, ``POST /v1/completions``.

Streamed, each chunk is ``data: {"object": "text_completion", "choices": [{"text": ...}]}``
with one token's text (and its one-element ``logprobs`` lists when asked for), then a chunk
with ``"text": ""`` and the ``finish_reason``, then with ``stream_options.include_usage`` a
chunk with ``"choices": []`` and the ``usage``, and finally ``data: [DONE]``.
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

__all__ = ["CompletionsApi"]

DEFAULT_MAX_TOKENS = 16  # OpenAI's default for /completions


class CompletionCall(OpenAIChunkCall):
    def __init__(self, body: dict[str, Any], model: SimModel) -> None:
        prompt = body.get("prompt")
        self.siblings: list[CompletionCall] = []
        """The calls of the other prompts of a prompt list (decoded beside this one, as
        vLLM and llama.cpp do: an exact batch); answered as one body by ``body_many``."""
        if isinstance(prompt, list) and len(prompt) > 1:
            if body.get("stream"):
                raise BadRequest(400, "a list of prompts is answered unstreamed", "stream")
            self.siblings = [CompletionCall({**body, "prompt": p}, model) for p in prompt[1:]]
            prompt = prompt[0]
        if isinstance(prompt, list) and len(prompt) == 1:
            prompt = prompt[0]
        if not isinstance(prompt, str):
            raise BadRequest(400, "prompt must be a string or a list of strings", "prompt")
        top = body.get("logprobs")
        self.want_logprobs = top is not None
        job = make_job(prompt, max_tokens=body.get("max_tokens") or DEFAULT_MAX_TOKENS,
                       temperature=body.get("temperature"), top_p=body.get("top_p"),
                       seed=body.get("seed"), logit_bias=body.get("logit_bias"),
                       top_logprobs=int(top or 0), stop=body.get("stop"))
        super().__init__(model, prompt, job, stream=bool(body.get("stream")))
        options = body.get("stream_options") or {}
        self.include_usage = bool(isinstance(options, dict) and options.get("include_usage"))
        self.id = new_id("cmpl-")
        self.created = int(time.time())
        self._offset = len(prompt)
        """``text_offset`` of the next streamed token."""

    def _envelope(self, choices: list[dict[str, Any]]) -> dict[str, Any]:
        return {"id": self.id, "object": "text_completion", "created": self.created,
                "model": self.model.name, "system_fingerprint": self.model.fingerprint,
                "choices": choices}

    def _logprobs(self, choices: list[TokenChoice], offset: int) -> dict[str, Any]:
        offsets = []
        for c in choices:
            offsets.append(offset)
            offset += len(c.token)
        return {
            "tokens": [c.token for c in choices],
            "token_logprobs": [c.logprob for c in choices],
            "top_logprobs": [dict(c.top) for c in choices] if self.job.top_logprobs else None,
            "text_offset": offsets,
        }

    def body(self, gen: Generation) -> bytes:
        logprobs = self._logprobs(gen.choices, len(self.prompt)) if self.want_logprobs else None
        choice = {"index": 0, "text": gen.text, "logprobs": logprobs,
                  "finish_reason": gen.finish_reason}
        payload = self._envelope([choice])
        payload["usage"] = openai_usage(self.prompt_tokens, len(gen.choices))
        return orjson.dumps(payload)

    def body_many(self, gens: list[Generation]) -> bytes:
        """One answer to a prompt list: a choice per prompt, ``index`` its position."""
        calls = [self, *self.siblings]
        choices = []
        for i, (call, gen) in enumerate(zip(calls, gens, strict=True)):
            logprobs = (call._logprobs(gen.choices, len(call.prompt)) if call.want_logprobs
                        else None)
            choices.append({"index": i, "text": gen.text, "logprobs": logprobs,
                            "finish_reason": gen.finish_reason})
        payload = self._envelope(choices)
        payload["usage"] = openai_usage(sum(c.prompt_tokens for c in calls),
                                        sum(len(g.choices) for g in gens))
        return orjson.dumps(payload)

    def broken(self) -> bytes:
        if self.stream:
            return b'data: {"id": "broken", "object": "text_completion", "ch\n\n'
        return b'{"id": "broken", "object": "text_completion", "ch'

    def _chunk(self, text: str, logprobs: dict[str, Any] | None,
               finish_reason: str | None) -> bytes:
        payload = self._envelope([{"index": 0, "text": text, "logprobs": logprobs,
                                   "finish_reason": finish_reason}])
        if self.include_usage:
            payload["usage"] = None
        return sse_data(payload)

    def head(self) -> bytes:
        return b""

    def delta(self, delta: Delta) -> bytes:
        if delta.choice is None and not delta.text:
            return b""
        logprobs = None
        if self.want_logprobs:
            choices = [] if delta.choice is None else [delta.choice]
            logprobs = self._logprobs(choices, self._offset)
            self._offset += sum(len(c.token) for c in choices)
        return self._chunk(delta.text, logprobs, None)

    def final_chunk(self, finish_reason: str | None) -> bytes:
        return self._chunk("", None, finish_reason)

    def usage_envelope(self) -> dict[str, Any]:
        return self._envelope([])


class CompletionsApi(OpenAIApi):
    path = "/v1/completions"

    def parse(self, body: dict[str, Any], model: SimModel) -> CompletionCall:
        return CompletionCall(single_choice(body), model)
