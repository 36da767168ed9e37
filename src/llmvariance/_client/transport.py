"""The network seam: bytes out, status + headers + bytes back.

The pool's default is ``Http1Transport`` (``http1.py``: one socket write per request,
llhttp parsing), chosen by the conformance suite and ``benchmarks/pool_overhead.py``.
``AiohttpTransport`` is the general one, for whoever wants aiohttp's client
(``ClientPool(..., transport=AiohttpTransport(...))``): one ``ClientSession`` whose
connector allows as many connections as the pool allows requests, so connections are
reused and never queue inside aiohttp. Both pass the same conformance suite
(``tests/conformance/``), honour the same proxy settings (``proxy.py``) and raise the same
errors: ``ConnectError(final=True)`` for what waiting cannot fix, ``resendable=True`` for a
request a kept-alive connection swallowed. ``MockTransport(handler)`` answers from a
function, so unit tests of everything above this seam run without a socket.
"""

from __future__ import annotations

import functools
import inspect
import socket
import ssl
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any

import aiohttp
import anyio
from aiohttp.client_proto import ResponseHandler
from multidict import CIMultiDict, CIMultiDictProxy
from pydantic import BaseModel, ConfigDict, Field

from .._errors import (
    ConnectError,
    MalformedResponseError,
    RequestTimeout,
    ResponseTooLargeError,
)
from .proxy import proxy_for

__all__ = ["DEFAULT_MAX_RESPONSE_BYTES", "AiohttpTransport", "HTTPRequest", "HTTPResponse",
           "MockTransport", "Timeouts", "Transport"]

DEFAULT_MAX_RESPONSE_BYTES = 32 * 2**20
"""32 MiB decompressed: a 4,000-token answer with 20 alternatives per token is ~5 MiB."""

Seconds = Annotated[float, Field(gt=0)] | None


class Timeouts(BaseModel):
    """Per-attempt time limits in seconds; None disables one.

    ``connect_s`` covers getting a connection, ``read_s`` the longest silence while
    reading, ``total_s`` the whole attempt. The defaults fit answers of a few hundred
    tokens from a responsive server: without streaming a server is silent until its
    answer is complete, so long generations on a slow server need a larger ``read_s``
    and ``total_s``. A stuck server costs at most ``total_s`` per attempt.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    connect_s: Seconds = 10.0
    read_s: Seconds = 90.0
    total_s: Seconds = 120.0


@dataclass(frozen=True, slots=True)
class HTTPRequest:
    """A request; ``headers`` carry the key, so they stay out of the repr. ``stream``: the
    body comes as server-sent events, so the response keeps each chunk's arrival time."""

    method: str
    url: str
    headers: Mapping[str, str] = field(repr=False)
    body: bytes | None = None
    stream: bool = False


@dataclass(frozen=True, slots=True)
class HTTPResponse:
    """A response; transports deliver ``headers`` with case-insensitive names.

    For a streamed request, ``chunks`` holds the body as it arrived: ``(seconds since the
    request was sent, bytes)`` pairs (``body`` is their concatenation).
    """

    status: int
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)
    chunks: Sequence[tuple[float, bytes]] | None = None


class Transport(ABC):
    """Sends one HTTP request; raises ``TransportError`` when no response arrives."""

    @abstractmethod
    async def send(self, request: HTTPRequest) -> HTTPResponse: ...

    async def aclose(self) -> None:  # noqa: B027 - a no-op is the right default
        """Release connections; the transport is unusable afterwards."""


class AiohttpTransport(Transport):
    """HTTP over one aiohttp session with at most ``max_connections`` sockets.

    ``trust_env`` and ``proxy`` as for ``Http1Transport`` (the proxy is chosen by
    ``proxy.py`` and handed to aiohttp per request, so both read the environment alike).
    """

    __slots__ = ("_bare_session", "_headers", "_max_body", "_max_connections", "_proxy",
                 "_session", "_timeout", "_timeouts", "_trust_env")

    def __init__(self, *, max_connections: int, timeouts: Timeouts | None = None,
                 headers: Mapping[str, str] | None = None,
                 max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
                 trust_env: bool = True, proxy: str | None = None) -> None:
        t = timeouts or Timeouts()
        self._timeouts = t
        self._max_connections = max_connections
        self._max_body = max_response_bytes
        self._trust_env = trust_env
        self._proxy = proxy
        # Headers every request carries are set once on the session, not merged per request.
        self._headers = headers
        self._timeout = aiohttp.ClientTimeout(total=t.total_s, connect=t.connect_s,
                                              sock_read=t.read_s)
        self._session: aiohttp.ClientSession | None = None
        self._bare_session: aiohttp.ClientSession | None = None

    def _open(self, headers: Mapping[str, str] | None) -> aiohttp.ClientSession:
        # Created lazily so the session binds to the loop that sends, not the constructor's.
        connector = aiohttp.TCPConnector(limit=self._max_connections, limit_per_host=0,
                                         interleave=1)
        if isinstance(getattr(connector, "_factory", None), functools.partial):
            # aiohttp closes a failed connection gracefully, which waits forever on a peer
            # that stopped reading (the socket outlives the session); abort it instead
            connector._factory = functools.partial(  # type: ignore[assignment]
                _AbortingHandler, **connector._factory.keywords)
        trace = aiohttp.TraceConfig()
        trace.on_connection_reuseconn.append(_mark_reused)
        return aiohttp.ClientSession(connector=connector, timeout=self._timeout,
                                     raise_for_status=False, headers=headers,
                                     trace_configs=[trace])

    def _session_for(self, request: HTTPRequest) -> aiohttp.ClientSession:
        """The session whose default headers are the request's own (no per-request merge),
        or one with none: aiohttp would add the defaults' key to another API's headers."""
        if request.headers is self._headers:
            self._session = self._session or self._open(self._headers)
            return self._session
        self._bare_session = self._bare_session or self._open(None)
        return self._bare_session

    async def send(self, request: HTTPRequest) -> HTTPResponse:
        proxy = proxy_for(request.url, trust_env=self._trust_env, proxy=self._proxy)
        session = self._session_for(request)
        sent = time.monotonic()
        state: dict[str, bool] = {}  # "reused": set by the trace; "answered": headers came
        try:
            # No redirects: following one would hand custom auth headers to another host.
            headers = None if request.headers is self._headers else request.headers
            proxy_headers = None
            if proxy is not None and proxy.authorization is not None:
                # aiohttp sends proxy_headers only in a CONNECT; plain HTTP carries them itself
                if request.url.startswith("https:"):
                    proxy_headers = {"Proxy-Authorization": proxy.authorization}
                else:
                    headers = {**request.headers, "Proxy-Authorization": proxy.authorization}
            body = request.body
            data: bytes | AsyncIterator[bytes] | None = body
            if body is not None and len(body) > _WRITE_PIECE:
                # in pieces as the socket drains: a peer that stops reading then holds one
                # piece per connection, not a copy of the whole request in its buffer
                headers = {**(headers or request.headers), "Content-Length": str(len(body))}
                data = _pieces(body)
            async with session.request(
                request.method, request.url, data=data, headers=headers,
                allow_redirects=False, trace_request_ctx=state,
                proxy=None if proxy is None else proxy.url, proxy_headers=proxy_headers,
            ) as response:
                state["answered"] = True
                if request.stream and response.status < 300:
                    chunks = await self._read_chunks(response, sent)
                    return HTTPResponse(response.status, b"".join(c for _, c in chunks),
                                        response.headers, chunks)
                body = await self._read_body(response)
                return HTTPResponse(response.status, body, response.headers)
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            t = self._timeouts
            raise RequestTimeout(
                f"no complete response in time ({type(exc).__name__}; limits: connect "
                f"{t.connect_s} s, silence {t.read_s} s, total {t.total_s} s — raise "
                "Timeouts(read_s=..., total_s=...) for long generations)") from None
        except aiohttp.ClientPayloadError as exc:
            if "Too many" in str(exc) or "Got more than" in str(exc):  # trailers
                raise ResponseTooLargeError(self._max_body, 0, str(exc), part="trailers"
                                            ) from None
            if request.stream:  # what was streamed so far must never pass for the answer
                raise MalformedResponseError(f"the stream was cut before its end: {exc}"
                                             ) from None
            raise ConnectError(f"response body cut short: {exc}") from None
        except aiohttp.ClientHttpProxyError as exc:
            where = f"the proxy {proxy.url} from {proxy.source}" if proxy else "the proxy"
            raise ConnectError(f"{where} answered {exc.status} {exc.message}",
                               final=400 <= exc.status < 500) from None
        except aiohttp.ClientResponseError as exc:  # what aiohttp's parser refused
            message = str(exc.message)
            if "Got more than" in message or "Too many" in message:
                raise ResponseTooLargeError(self._max_body, 0, message, part="headers"
                                            ) from None
            raise MalformedResponseError(f"not an HTTP/1.1 response: {message}") from None
        except ValueError as exc:  # aiohttp refuses CR/LF in a header before sending
            raise ConnectError(f"the request cannot be sent: {exc}", final=True) from None
        except aiohttp.ClientError as exc:
            stale = (state.get("reused", False) and not state.get("answered", False)
                     and isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientOSError))
            raise ConnectError(f"{type(exc).__name__}: {exc}", final=_final(exc),
                               resendable=stale) from None

    async def _read_body(self, response: aiohttp.ClientResponse) -> bytes:
        """The decompressed body, refused once it passes ``max_response_bytes``."""
        limit = self._max_body
        length = response.content_length
        if length is not None and length > limit:
            raise ResponseTooLargeError(limit, response.status, f"{length:,} bytes announced")
        inflating = "Content-Encoding" in response.headers
        if length is not None and not inflating:
            return await response.read()  # the common case: one read, nothing to inflate
        # aiohttp inflates gzip in bounded steps as it is read, so stopping here bounds memory
        chunks, size = [], 0
        async for chunk in response.content.iter_any():
            size += len(chunk)
            if size > limit:
                raise ResponseTooLargeError(limit, response.status,
                                            "inflated past it" if inflating else "read past it")
            chunks.append(chunk)
        return b"".join(chunks)

    async def _read_chunks(self, response: aiohttp.ClientResponse, sent: float
                           ) -> list[tuple[float, bytes]]:
        """The streamed body as it arrives, each chunk with its time since ``sent``."""
        chunks: list[tuple[float, bytes]] = []
        size, limit = 0, self._max_body
        async for chunk in response.content.iter_any():
            size += len(chunk)
            if size > limit:
                raise ResponseTooLargeError(limit, response.status, "streamed past it")
            chunks.append((time.monotonic() - sent, chunk))
        return chunks

    async def aclose(self) -> None:
        for session in (self._session, self._bare_session):
            if session is not None:
                await session.close()
        self._session = self._bare_session = None

    def __repr__(self) -> str:
        state = "open" if self._session is not None else "idle"
        return f"<AiohttpTransport max_connections={self._max_connections} {state}>"


class _AbortingHandler(ResponseHandler):
    """aiohttp's protocol, closing its socket by aborting it: nothing a closed connection
    still had to send is worth keeping the socket for."""

    def close(self) -> None:
        transport = self.transport
        if transport is not None:
            transport.abort()
        super().close()


_WRITE_PIECE = 256 * 1024


async def _pieces(body: bytes) -> AsyncIterator[bytes]:
    view = memoryview(body)
    for start in range(0, len(view), _WRITE_PIECE):
        yield bytes(view[start:start + _WRITE_PIECE])


async def _mark_reused(session: aiohttp.ClientSession, context: Any, params: object) -> None:
    if isinstance(context.trace_request_ctx, dict):
        context.trace_request_ctx["reused"] = True


def _final(exc: aiohttp.ClientError) -> bool:
    """Whether waiting cannot fix ``exc``: as ``http1._connect_error`` decides."""
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return True
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        cause = exc.os_error
        return not (isinstance(cause, socket.gaierror) and cause.errno == socket.EAI_AGAIN)
    if isinstance(exc, aiohttp.ClientConnectorSSLError | aiohttp.ClientSSLError):
        reason = getattr(exc, "os_error", None) or exc.__cause__
        return not isinstance(reason, ssl.SSLEOFError | ssl.SSLZeroReturnError |
                              ssl.SSLSyscallError)
    if isinstance(exc, aiohttp.ClientHttpProxyError):
        return exc.status == 407
    return False


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
        else:
            # A network always awaits, so a run on it can be cancelled between requests; a
            # handler that does not must still let a cancellation in (no scheduler round-trip).
            await anyio.lowlevel.checkpoint_if_cancelled()
        if not isinstance(result, HTTPResponse):
            raise TypeError(f"mock handler returned {type(result).__name__}, not HTTPResponse")
        chunks = result.chunks
        if request.stream and chunks is None and result.status < 300:
            chunks = [(0.0, result.body)]  # a stream that arrived all at once
        # Header names are case-insensitive, as from a real server.
        return HTTPResponse(result.status, result.body,
                            CIMultiDictProxy(CIMultiDict(result.headers)),
                            chunks if request.stream else None)
