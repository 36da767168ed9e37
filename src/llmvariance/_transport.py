"""The network seam: bytes out, status + headers + bytes back.

``AiohttpTransport`` is the real one: one ``ClientSession`` whose connector allows as
many connections as the pool allows requests, so connections are reused and never
queue inside aiohttp. ``MockTransport(handler)`` answers from a function, so unit tests
of everything above this seam run without a socket.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Annotated

import aiohttp
from multidict import CIMultiDict, CIMultiDictProxy
from pydantic import BaseModel, ConfigDict, Field

from ._errors import ConnectError, RequestTimeout

__all__ = ["AiohttpTransport", "HTTPRequest", "HTTPResponse", "MockTransport", "Timeouts",
           "Transport"]

Seconds = Annotated[float, Field(gt=0)] | None


class Timeouts(BaseModel):
    """Per-attempt time limits in seconds; None disables one.

    ``connect_s`` covers getting a connection, ``read_s`` the longest silence while
    reading, ``total_s`` the whole attempt. Long generations need a generous ``total_s``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    connect_s: Seconds = 30.0
    read_s: Seconds = 300.0
    total_s: Seconds = 600.0


@dataclass(frozen=True, slots=True)
class HTTPRequest:
    """A request; ``headers`` carry the key, so they stay out of the repr."""

    method: str
    url: str
    headers: Mapping[str, str] = field(repr=False)
    body: bytes | None = None


@dataclass(frozen=True, slots=True)
class HTTPResponse:
    """A response; transports deliver ``headers`` with case-insensitive names."""

    status: int
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)


class Transport(ABC):
    """Sends one HTTP request; raises ``TransportError`` when no response arrives."""

    @abstractmethod
    async def send(self, request: HTTPRequest) -> HTTPResponse: ...

    async def aclose(self) -> None:  # noqa: B027 - a no-op is the right default
        """Release connections; the transport is unusable afterwards."""


class AiohttpTransport(Transport):
    """HTTP over one aiohttp session with at most ``max_connections`` sockets."""

    __slots__ = ("_headers", "_max_connections", "_session", "_timeout")

    def __init__(self, *, max_connections: int, timeouts: Timeouts | None = None,
                 headers: Mapping[str, str] | None = None) -> None:
        t = timeouts or Timeouts()
        self._max_connections = max_connections
        # Headers every request carries are set once on the session, not merged per request.
        self._headers = headers
        self._timeout = aiohttp.ClientTimeout(total=t.total_s, connect=t.connect_s,
                                              sock_read=t.read_s)
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        # Created lazily so the session binds to the loop that sends, not the constructor's.
        connector = aiohttp.TCPConnector(limit=self._max_connections, limit_per_host=0)
        self._session = aiohttp.ClientSession(
            connector=connector, timeout=self._timeout, raise_for_status=False,
            headers=self._headers,
        )
        return self._session

    async def send(self, request: HTTPRequest) -> HTTPResponse:
        session = self._session or self._open()
        try:
            # No redirects: following one would hand custom auth headers to another host.
            headers = None if request.headers is self._headers else request.headers
            async with session.request(
                request.method, request.url, data=request.body, headers=headers,
                allow_redirects=False,
            ) as response:
                body = await response.read()
                return HTTPResponse(response.status, body, response.headers)
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise RequestTimeout(f"no response within the timeout ({type(exc).__name__})") from None
        except aiohttp.ClientPayloadError as exc:
            raise ConnectError(f"response body cut short: {exc}") from None
        except aiohttp.ClientError as exc:
            raise ConnectError(f"{type(exc).__name__}: {exc}") from None

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def __repr__(self) -> str:
        state = "open" if self._session is not None else "idle"
        return f"<AiohttpTransport max_connections={self._max_connections} {state}>"


Handler = Callable[[HTTPRequest], HTTPResponse | Awaitable[HTTPResponse]]


class MockTransport(Transport):
    """Answers every request with ``handler(request)``, sync or async.

    The handler may raise ``TransportError`` subclasses to simulate network failures.
    """

    __slots__ = ("_handler",)

    def __init__(self, handler: Handler) -> None:
        self._handler = handler

    async def send(self, request: HTTPRequest) -> HTTPResponse:
        result = self._handler(request)
        if inspect.isawaitable(result):
            result = await result
        if not isinstance(result, HTTPResponse):
            raise TypeError(f"mock handler returned {type(result).__name__}, not HTTPResponse")
        # Header names are case-insensitive, as from a real server.
        return HTTPResponse(result.status, result.body,
                            CIMultiDictProxy(CIMultiDict(result.headers)))
