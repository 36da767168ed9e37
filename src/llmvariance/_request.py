"""What is sent: the request a user wants repeated N times.

One type per API — OpenAI chat and legacy completions, Anthropic Messages, OpenAI
Responses — each a frozen pydantic model validated once, at construction; the provider
adapter turns it into wire bytes once per run, not once per sample. ``stream=True`` asks
for the answer as server-sent events (and gives each sample its time to first token).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Annotated, Any, Literal, NotRequired, TypedDict

import orjson
from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["ChatMessage", "ChatMessageParam", "ChatRequest", "CompletionRequest",
           "InputMessage", "InputMessageParam", "Message", "MessageParam", "MessagesRequest",
           "Request", "ResponsesRequest", "TextBlock", "TextBlockParam"]


# What a type checker accepts where messages go: plain dicts of these shapes, as OpenAI's
# and Anthropic's SDKs accept them, or the models below. Either way the request holds the
# validated models.

class ChatMessageParam(TypedDict):
    """``{"role": "user", "content": "hi"}``: a chat message as a plain dict."""

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str


class TextBlockParam(TypedDict):
    """``{"type": "text", "text": "..."}``: an Anthropic text block as a plain dict."""

    type: NotRequired[Literal["text"]]
    text: str


class MessageParam(TypedDict):
    """An Anthropic message as a plain dict."""

    role: Literal["user", "assistant"]
    content: str | Sequence[TextBlockParam]


class InputMessageParam(TypedDict):
    """One message of a Responses ``input`` list as a plain dict."""

    role: Literal["system", "developer", "user", "assistant"]
    content: str

_FROZEN = ConfigDict(frozen=True, extra="forbid")

Temperature = Annotated[float, Field(ge=0.0, le=2.0)]
TopP = Annotated[float, Field(gt=0.0, le=1.0)]
MaxTokens = Annotated[int, Field(ge=1)]
LogitBias = dict[str, Annotated[float, Field(ge=-100.0, le=100.0)]]


_FIELDS_SETS: dict[frozenset[str], set[str]] = {}


class _Shared(BaseModel):
    """A frozen model made once per request of a suite (100,000 of them from one
    ``read_suite``): instances with the same fields set share one ``model_fields_set``.
    Pydantic gives each instance a set of its own (~0.2 KB, a request and each of its
    messages); frozen, the set is never changed, and ``model_copy`` copies it first."""

    model_config = _FROZEN

    def model_post_init(self, context: Any, /) -> None:
        given = self.__pydantic_fields_set__
        shared = _FIELDS_SETS.setdefault(frozenset(given), given)
        object.__setattr__(self, "__pydantic_fields_set__", shared)


def _check_extra(request: BaseModel, extra: dict[str, Any]) -> None:
    try:
        orjson.dumps(extra)
    except TypeError as exc:
        raise ValueError(f"extra: not JSON-serializable ({exc})") from None
    clash = sorted(set(extra) & (set(type(request).model_fields) - {"extra"}))
    if clash:
        raise ValueError(f"extra: {', '.join(clash)} must be set through its own field, not extra")


class ChatMessage(_Shared):
    """One chat message; plain dicts with the same keys are accepted wherever these are."""

    model_config = _FROZEN

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str


class _Common(_Shared):
    model_config = _FROZEN

    model: Annotated[str, Field(min_length=1)]
    temperature: Temperature = 0.0
    top_p: TopP | None = None
    max_tokens: MaxTokens | None = None
    seed: int | None = None
    stop: str | Annotated[list[str], Field(min_length=1, max_length=4)] | None = None
    logit_bias: LogitBias | None = None
    stream: bool = False
    extra: dict[str, Any] = Field(default_factory=dict)
    """Provider options with no field here, merged into the request body as given."""

    @model_validator(mode="after")
    def _extra_does_not_shadow_fields(self) -> _Common:
        _check_extra(self, self.extra)
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

    if TYPE_CHECKING:  # what a type checker sees: messages as models or plain dicts
        def __init__(self, *, model: str,
                     messages: Sequence[ChatMessage | ChatMessageParam],
                     temperature: float = 0.0, top_p: float | None = None,
                     max_tokens: int | None = None, seed: int | None = None,
                     stop: str | list[str] | None = None,
                     logit_bias: Mapping[str, float] | None = None, stream: bool = False,
                     extra: Mapping[str, Any] = ..., logprobs: bool = False,
                     top_logprobs: int | None = None) -> None: ...

    @model_validator(mode="after")
    def _top_logprobs_needs_logprobs(self) -> ChatRequest:
        if self.top_logprobs is not None and not self.logprobs:
            raise ValueError("top_logprobs: requires logprobs=True")
        return self


class CompletionRequest(_Common):
    """A legacy ``/completions`` request; ``logprobs`` is the number of alternatives (0-5)."""

    prompt: str
    logprobs: Annotated[int, Field(ge=0, le=5)] | None = None


class TextBlock(_Shared):
    """An Anthropic text content block."""

    model_config = _FROZEN

    type: Literal["text"] = "text"
    text: str


class Message(_Shared):
    """One Anthropic message: text, or text content blocks."""

    model_config = _FROZEN

    role: Literal["user", "assistant"]
    content: str | Annotated[list[TextBlock], Field(min_length=1)]


class MessagesRequest(_Shared):
    """An Anthropic ``/v1/messages`` request; ``max_tokens`` is required by the API."""

    model_config = _FROZEN

    model: Annotated[str, Field(min_length=1)]
    messages: Annotated[list[Message], Field(min_length=1)]
    max_tokens: MaxTokens
    system: str | list[TextBlock] | None = None
    temperature: Annotated[float, Field(ge=0.0, le=1.0)] = 0.0
    top_p: TopP | None = None
    top_k: Annotated[int, Field(ge=1)] | None = None
    stop_sequences: list[str] | None = None
    stream: bool = False
    extra: dict[str, Any] = Field(default_factory=dict)
    """Provider options with no field here, merged into the request body as given."""

    if TYPE_CHECKING:  # what a type checker sees: messages as models or plain dicts
        def __init__(self, *, model: str, messages: Sequence[Message | MessageParam],
                     max_tokens: int,
                     system: str | Sequence[TextBlock | TextBlockParam] | None = None,
                     temperature: float = 0.0, top_p: float | None = None,
                     top_k: int | None = None, stop_sequences: list[str] | None = None,
                     stream: bool = False, extra: Mapping[str, Any] = ...) -> None: ...

    @model_validator(mode="after")
    def _extra_is_json(self) -> MessagesRequest:
        _check_extra(self, self.extra)
        return self


class InputMessage(_Shared):
    """One message of a Responses ``input`` list."""

    model_config = _FROZEN

    role: Literal["system", "developer", "user", "assistant"]
    content: str


class ResponsesRequest(_Shared):
    """An OpenAI ``/v1/responses`` request.

    ``top_logprobs`` (0-20) asks for the chosen token's log-probability and that many
    alternatives at every position (sent with ``include=["message.output_text.logprobs"]``).
    """

    model_config = _FROZEN

    model: Annotated[str, Field(min_length=1)]
    input: str | Annotated[list[InputMessage], Field(min_length=1)]
    instructions: str | None = None
    max_output_tokens: MaxTokens | None = None
    temperature: Temperature = 0.0
    top_p: TopP | None = None
    top_logprobs: Annotated[int, Field(ge=0, le=20)] | None = None
    stream: bool = False
    extra: dict[str, Any] = Field(default_factory=dict)
    """Provider options with no field here, merged into the request body as given."""

    if TYPE_CHECKING:  # what a type checker sees: input messages as models or plain dicts
        def __init__(self, *, model: str,
                     input: str | Sequence[InputMessage | InputMessageParam],
                     instructions: str | None = None, max_output_tokens: int | None = None,
                     temperature: float = 0.0, top_p: float | None = None,
                     top_logprobs: int | None = None, stream: bool = False,
                     extra: Mapping[str, Any] = ...) -> None: ...

    @model_validator(mode="after")
    def _extra_is_json(self) -> ResponsesRequest:
        _check_extra(self, self.extra)
        return self


Request = ChatRequest | CompletionRequest | MessagesRequest | ResponsesRequest
REQUEST_TYPES = (ChatRequest, CompletionRequest, MessagesRequest, ResponsesRequest)
