"""The provider abstraction: encode a request once, decode each response."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar, TypedDict

from .._request import Request

__all__ = ["Completion", "ProviderAdapter"]


class Completion(TypedDict, total=False):
    """The ``Sample`` fields a response fills; the pool adds index, latency, attempts."""

    text: str
    tokens: list[str] | None
    token_logprobs: list[float | None] | None
    top_logprobs: list[dict[str, float]] | None
    finish_reason: str | None
    system_fingerprint: str | None
    model: str | None
    usage: dict[str, Any] | None


class ProviderAdapter(ABC):
    """Speaks one API: where to POST, what bytes to send, how to read the answer."""

    path: ClassVar[str]
    """Appended to the endpoint's base URL."""
    supports_logprobs: ClassVar[bool] = True

    @abstractmethod
    def encode(self, request: Request) -> bytes:
        """The request body; called once per run, since every request is identical."""

    @abstractmethod
    def decode(self, body: bytes) -> Completion:
        """The fields of a 2xx body; raises ``MalformedResponseError`` if unusable."""

    @abstractmethod
    def error_message(self, status: int, body: bytes) -> str:
        """The provider's own explanation of a non-2xx response, for ``SampleError``."""
