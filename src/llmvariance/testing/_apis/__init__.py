"""The HTTP APIs the simulated server speaks, one module each; ``APIS`` lists them."""

from ._base import Api, BadRequest, Call, openai_error
from .chat import ChatApi
from .completions import CompletionsApi
from .messages import MessagesApi
from .responses import ResponsesApi

__all__ = ["APIS", "Api", "BadRequest", "Call", "openai_error"]

APIS: tuple[Api, ...] = (ChatApi(), CompletionsApi(), ResponsesApi(), MessagesApi())
