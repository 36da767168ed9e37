"""Provider adapters: the only place that knows a provider's wire format.

One module per API, each with its non-streamed parser beside its stream's event
handling; ``_sse`` is the event-stream framing they share. The request type picks the API.
"""

from __future__ import annotations

from ..._request import ChatRequest, CompletionRequest, MessagesRequest, Request
from ..endpoint import Endpoint
from ._base import Completion, ProviderAdapter, preview
from ._sse import SSEEvent, iter_sse, stream_timing
from .anthropic import AnthropicMessagesAdapter
from .openai import OpenAIChatAdapter, OpenAICompletionAdapter
from .responses import ResponsesAdapter

__all__ = [
    "AnthropicMessagesAdapter",
    "Completion",
    "OpenAIChatAdapter",
    "OpenAICompletionAdapter",
    "ProviderAdapter",
    "ResponsesAdapter",
    "SSEEvent",
    "adapter_for",
    "iter_sse",
    "preview",
    "stream_timing",
]


def adapter_for(request: Request, endpoint: Endpoint) -> ProviderAdapter:
    """The adapter that speaks ``request`` to ``endpoint``: chosen by the request's type."""
    del endpoint  # every API is reached the same way; the request type decides
    if isinstance(request, ChatRequest):
        return OpenAIChatAdapter()
    if isinstance(request, CompletionRequest):
        return OpenAICompletionAdapter()
    if isinstance(request, MessagesRequest):
        return AnthropicMessagesAdapter()
    return ResponsesAdapter()
