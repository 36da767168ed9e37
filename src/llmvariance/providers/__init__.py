"""Provider adapters: the only place that knows a provider's wire format."""

from __future__ import annotations

from .._endpoint import Endpoint
from .._request import ChatRequest, CompletionRequest, Request
from ._base import Completion, ProviderAdapter
from .openai import OpenAIChatAdapter, OpenAICompletionAdapter

__all__ = [
    "Completion",
    "OpenAIChatAdapter",
    "OpenAICompletionAdapter",
    "ProviderAdapter",
    "adapter_for",
]


def adapter_for(request: Request, endpoint: Endpoint) -> ProviderAdapter:
    """The adapter that speaks ``request`` to ``endpoint``."""
    del endpoint  # only OpenAI-compatible endpoints so far
    if isinstance(request, ChatRequest):
        return OpenAIChatAdapter()
    if isinstance(request, CompletionRequest):
        return OpenAICompletionAdapter()
    raise TypeError(f"no adapter for {type(request).__name__}")
