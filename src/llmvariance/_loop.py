"""The event loop for code that starts one: uvloop when installed, asyncio otherwise.

With uvloop installed (``pip install uvloop``, or the ``fast`` extra; it does not exist on
Windows, where asyncio's loop is used) ``sample_many_sync``, the command line and the
benchmarks run on it; ``LLMVARIANCE_UVLOOP=0`` opts out. aiohttp needs an asyncio loop, and
uvloop is one.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio

__all__ = ["run", "uses_uvloop"]

T = TypeVar("T")


def uses_uvloop() -> bool:
    """Whether ``run`` will use uvloop: it is installed and ``$LLMVARIANCE_UVLOOP`` is not 0."""
    if os.environ.get("LLMVARIANCE_UVLOOP", "1").strip() in ("0", "false", "no"):
        return False
    return importlib.util.find_spec("uvloop") is not None


def run(func: Callable[..., Awaitable[T]], *args: Any) -> T:
    """``func(*args)`` on a new event loop (uvloop when ``uses_uvloop()``)."""
    return anyio.run(func, *args, backend="asyncio",
                     backend_options={"use_uvloop": uses_uvloop()})
