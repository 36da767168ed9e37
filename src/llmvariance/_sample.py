"""What comes back: one ``Sample`` per requested index, ok or failed."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["ErrorKind", "Sample", "SampleError", "Usage"]

_FROZEN = ConfigDict(frozen=True, extra="forbid")

ErrorKind = Literal["http_status", "connection", "timeout", "malformed_response",
                    "stream_error", "response_too_large", "client_error"]


class Usage(BaseModel):
    """Token counts as the provider reported them (other usage details are dropped)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    prompt_tokens: int | None = None
    """Input tokens, cached ones included."""
    completion_tokens: int | None = None
    total_tokens: int | None = None
    cache_read_tokens: int | None = None
    """Input tokens read from the provider's prompt cache (Anthropic, Responses)."""
    cache_write_tokens: int | None = None
    """Input tokens written to the provider's prompt cache (Anthropic)."""


class SampleError(BaseModel):
    """Why a request produced no output.

    ``kind`` is ``http_status`` (the server said no: see ``status`` and ``message``, the
    provider's own words), ``connection``, ``timeout``, ``malformed_response`` (a body
    that is not what the API promises, or a stream cut before its end),
    ``stream_error`` (an error event in the middle of a stream, the provider's words; retried),
    ``response_too_large`` (a body past the pool's
    ``max_response_bytes``, read no further and not retried), or ``client_error`` (the
    transport itself failed unexpectedly, e.g. a custom transport's bug; never retried).
    """

    model_config = _FROZEN

    kind: ErrorKind
    message: str
    status: int | None = None
    final: bool = False
    """Waiting cannot fix it: the same request fails the same way every time (HTTP 401,
    403 or 404, an unknown host name, a certificate that is not trusted, expired or for
    another name, TLS spoken to a plain port, a proxy that wants credentials). Never
    retried; a run whose first samples all end with one such error stops early."""


class Sample(BaseModel):
    """One of the N responses to the identical request, in request order by ``index``.

    When ``error`` is set the request failed and the output fields are empty.
    ``tokens``/``token_logprobs``/``top_logprobs`` are filled when the request asked for
    logprobs and the provider returned them; ``top_logprobs[i]`` maps each alternative
    token at position ``i`` to its log-probability (natural log).
    """

    model_config = _FROZEN

    index: Annotated[int, Field(ge=0)]
    text: str | None = None
    tokens: list[str] | None = None
    token_ids: list[int] | None = None
    """The tokens' ids, where the server sent them (llama.cpp does): tokens are compared by
    id, which two different tokens never share, rather than by their text."""
    token_logprobs: list[float | None] | None = None
    top_logprobs: list[dict[str, float]] | None = None
    finish_reason: str | None = None
    system_fingerprint: str | None = None
    model: str | None = None
    usage: Usage | None = None
    endpoint: str | None = None
    condition: str | None = None
    """The experiment condition the sample was taken under (e.g. ``burst``), if any."""
    request_id: str | None = None
    """In a suite (``sample_suite``): the id of the request this sample answers."""
    block: int | None = None
    """In a designed experiment (``batch_effect``): the block it ran in, 0-based."""
    latency_s: float = 0.0
    """Seconds from sending the (last) attempt to having its whole response."""
    ttft_s: float | None = None
    """Streamed responses: seconds from sending to the first content token."""
    itl_mean_s: float | None = None
    """Streamed responses: mean gap between successive content events, seconds."""
    itl_max_s: float | None = None
    """Streamed responses: the longest gap between successive content events, seconds."""
    response_id: str | None = None
    """The provider's id of the response, when it sent one."""
    attempts: int = 1
    error: SampleError | None = None

    @model_validator(mode="after")
    def _logprobs_match_tokens(self) -> Sample:
        if self.tokens is not None:
            for name in ("token_ids", "token_logprobs", "top_logprobs"):
                values = getattr(self, name)
                if values is not None and len(values) != len(self.tokens):
                    raise ValueError(f"{name}: {len(values)} entries for "
                                     f"{len(self.tokens)} tokens")
        return self

    @property
    def ok(self) -> bool:
        """True when the request produced an output."""
        return self.error is None
