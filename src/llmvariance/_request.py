"""What is sent: the request a user wants repeated N times.

Both request types are frozen pydantic models validated once, at construction; the
provider adapter turns them into wire bytes once per run, not once per sample.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["ChatMessage", "ChatRequest", "CompletionRequest", "Request"]

_FROZEN = ConfigDict(frozen=True, extra="forbid")

Temperature = Annotated[float, Field(ge=0.0, le=2.0)]
TopP = Annotated[float, Field(gt=0.0, le=1.0)]
MaxTokens = Annotated[int, Field(ge=1)]
LogitBias = dict[str, Annotated[float, Field(ge=-100.0, le=100.0)]]


class ChatMessage(BaseModel):
    """One chat message; plain dicts with the same keys are accepted wherever these are."""

    model_config = _FROZEN

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str


class _Common(BaseModel):
    model_config = _FROZEN

    model: Annotated[str, Field(min_length=1)]
    temperature: Temperature = 0.0
    top_p: TopP | None = None
    max_tokens: MaxTokens | None = None
    seed: int | None = None
    stop: str | Annotated[list[str], Field(min_length=1, max_length=4)] | None = None
    logit_bias: LogitBias | None = None
    extra: dict[str, Any] = Field(default_factory=dict)
    """Provider options with no field here, merged into the request body as given."""

    @model_validator(mode="after")
    def _extra_does_not_shadow_fields(self) -> _Common:
        try:
            orjson.dumps(self.extra)
        except TypeError as exc:
            raise ValueError(f"extra: not JSON-serializable ({exc})") from None
        clash = sorted(set(self.extra) & (set(type(self).model_fields) - {"extra"}))
        if clash:
            raise ValueError(
                f"extra: {', '.join(clash)} must be set through its own field, not extra"
            )
        if self.logit_bias is not None:
            for key in self.logit_bias:
                if not key.isdigit():
                    raise ValueError(f"logit_bias: key {key!r} is not a token id")
        return self


class ChatRequest(_Common):
    """A ``/chat/completions`` request.

    ``logprobs=True`` asks for the chosen token's log-probability at every position,
    ``top_logprobs`` (0-20, needs ``logprobs``) for that many alternatives too.
    """

    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    logprobs: bool = False
    top_logprobs: Annotated[int, Field(ge=0, le=20)] | None = None

    @model_validator(mode="after")
    def _top_logprobs_needs_logprobs(self) -> ChatRequest:
        if self.top_logprobs is not None and not self.logprobs:
            raise ValueError("top_logprobs: requires logprobs=True")
        return self


class CompletionRequest(_Common):
    """A legacy ``/completions`` request; ``logprobs`` is the number of alternatives (0-5)."""

    prompt: str
    logprobs: Annotated[int, Field(ge=0, le=5)] | None = None


Request = ChatRequest | CompletionRequest
