"""The default transport: HTTP/1.1 keep-alive on asyncio protocols, parsed by httptools.

Every request of a run is byte-for-byte the same, so it is encoded once and each send is
one socket write; the response is parsed by llhttp (the C parser behind Node.js, through
``httptools``) as it arrives. That is a third of what a general client (aiohttp's
``ClientSession``) spends per request, and the client's CPU per request is what decides
how hard one process can push a fast local server. It speaks exactly what the pool needs:
POST, keep-alive, Content-Length or chunked bodies, gzip/deflate, TLS, no redirects, no
proxies, no cookies.
"""

from __future__ import annotations

import asyncio
import ssl
import time
import zlib
from collections.abc import Mapping
from urllib.parse import urlsplit

import httptools
from multidict import CIMultiDict, CIMultiDictProxy

from .._errors import ConnectError, MalformedResponseError, RequestTimeout, ResponseTooLargeError
from .._version import __version__
from .transport import DEFAULT_MAX_RESPONSE_BYTES, HTTPRequest, HTTPResponse, Timeouts, Transport

__all__ = ["Http1Transport"]

_USER_AGENT = f"llmvariance/{__version__}"
_Origin = tuple[str, str, int]  # scheme, host, port


class _Encoded:
    __slots__ = ("data", "origin", "request")

    def __init__(self, request: HTTPRequest, origin: _Origin, data: bytes) -> None:
        self.request = request  # kept so the id() used as the cache key stays unique
        self.origin = origin
        self.data = data


def _encode(request: HTTPRequest) -> _Encoded:
    parts = urlsplit(request.url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConnectError(f"cannot send to {parts.scheme}:// URLs")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    body = request.body or b""
    headers = {"Host": parts.netloc.rpartition("@")[2], "User-Agent": _USER_AGENT,
               "Accept-Encoding": "gzip, deflate", **request.headers,
               "Content-Length": str(len(body))}
    lines = [f"{request.method} {target} HTTP/1.1"]
    for name, value in headers.items():
        if "\r" in name or "\n" in name or "\r" in value or "\n" in value or ":" in name:
            raise ConnectError(f"header {name!r} has a character HTTP cannot carry")
        lines.append(f"{name}: {value}")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return _Encoded(request, (parts.scheme, parts.hostname, port), head + body)


class _Connection(asyncio.Protocol):
    """One socket; parses one response at a time (``start`` .. the future's result)."""

    def __init__(self, owner: Http1Transport, origin: _Origin) -> None:
        self.owner = owner
        self.origin = origin
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.result: asyncio.Future[HTTPResponse] | None = None
        self.stream = False
        self.sent = 0.0
        self.last = 0.0
        self.limit = 0
        self.timer: asyncio.TimerHandle | None = None
        self.reset()

    def reset(self) -> None:
        self.headers: list[tuple[str, str]] = []
        self.chunks: list[bytes] = []
        self.times: list[float] = []
        self.size = 0
        self.inflate: zlib._Decompress | None = None
        self.complete = False
        self.headers_done = False

    # -- the pool's side ------------------------------------------------------------

    def start(self, data: bytes, result: asyncio.Future[HTTPResponse], stream: bool,
              limit: int) -> None:
        assert self.transport is not None
        self.reset()
        self.parser = httptools.HttpResponseParser(self)
        self.result, self.stream, self.limit = result, stream, limit
        self.sent = self.last = time.monotonic()
        self.transport.write(data)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def fail(self, exc: Exception) -> None:
        result, self.result = self.result, None
        self.close()
        if result is not None and not result.done():
            result.set_exception(exc)

    # -- asyncio's side --------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment] # uvloop's is no subclass

    def data_received(self, data: bytes) -> None:
        if self.result is None:  # bytes nobody asked for: the connection is unusable
            self.close()
            return
        self.last = time.monotonic()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            refused = exc.__context__
            self.fail(refused.error if isinstance(refused, _Refused)
                      else MalformedResponseError(f"unreadable response: {refused!r}"))
        except httptools.HttpParserError as exc:
            self.fail(MalformedResponseError(f"not an HTTP/1.1 response: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.owner._forget(self)
        if self.result is None or self.result.done():
            return
        if self.headers_done and not self.complete and self._ends_at_close():
            self.on_message_complete()  # a body delimited by the connection's end
            return
        if self.headers_done and self.stream and 200 <= self.parser.get_status_code() < 300:
            self.fail(MalformedResponseError("the stream was cut before its end"))
        elif self.headers_done:
            self.fail(ConnectError("response body cut short"))
        else:
            self.fail(ConnectError(f"the server closed the connection ({exc or 'no answer'})"))

    def _ends_at_close(self) -> bool:
        names = {name.lower(): value for name, value in self.headers}
        return "content-length" not in names and "chunked" not in names.get(
            "transfer-encoding", "").lower()

    # -- httptools' callbacks --------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        self.headers_done = True
        status = self.parser.get_status_code()
        for name, value in self.headers:
            lowered = name.lower()
            if lowered == "content-length" and value.isdigit() and int(value) > self.limit:
                raise _Refused(ResponseTooLargeError(self.limit, status,
                                                     f"{int(value):,} bytes announced"))
            if lowered == "content-encoding":
                coding = value.strip().lower()
                if coding in ("gzip", "x-gzip", "deflate"):
                    self.inflate = zlib.decompressobj(47)  # gzip or zlib header
                elif coding not in ("", "identity"):
                    raise _Refused(MalformedResponseError(
                        f"unsupported Content-Encoding {value!r}"))

    def on_body(self, body: bytes) -> None:
        if self.inflate is not None:
            try:
                body = self.inflate.decompress(body, self.limit - self.size + 1)
            except zlib.error as exc:
                raise _Refused(MalformedResponseError(f"bad compressed body: {exc}")) from None
            if self.inflate.unconsumed_tail:
                self.size = self.limit + 1
        self.size += len(body)
        if self.size > self.limit:
            status = self.parser.get_status_code()
            how = "streamed past it" if self.stream else "inflated past it"
            raise _Refused(ResponseTooLargeError(self.limit, status, how))
        self.chunks.append(body)
        if self.stream:
            self.times.append(self.last - self.sent)

    def on_message_complete(self) -> None:
        status = self.parser.get_status_code()
        if 100 <= status < 200:  # an interim response (100 Continue): the answer follows
            self.reset()
            return
        self.complete = True
        result, self.result = self.result, None
        if result is None or result.done():
            return
        headers = CIMultiDictProxy(CIMultiDict(self.headers))
        body = b"".join(self.chunks)
        chunks = None
        if self.stream and status < 300:
            chunks = list(zip(self.times, self.chunks, strict=True))
        if not self.parser.should_keep_alive():
            self.close()
        result.set_result(HTTPResponse(status, body, headers, chunks))


class _Refused(Exception):
    def __init__(self, error: Exception) -> None:
        self.error = error


class Http1Transport(Transport):
    """HTTP/1.1 with keep-alive and at most ``max_connections`` sockets (see module doc)."""

    __slots__ = ("_encoded", "_idle", "_max_body", "_max_connections", "_open", "_ssl",
                 "_timeouts")

    def __init__(self, *, max_connections: int, timeouts: Timeouts | None = None,
                 headers: Mapping[str, str] | None = None,
                 max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES) -> None:
        # ``headers`` are the ones every request carries; they arrive with each request
        # here (encoded once per request object), so the argument is not needed.
        self._timeouts = timeouts or Timeouts()
        self._max_connections = max_connections
        self._max_body = max_response_bytes
        self._idle: dict[_Origin, list[_Connection]] = {}
        self._open: set[_Connection] = set()
        self._encoded: dict[int, _Encoded] = {}
        self._ssl: ssl.SSLContext | None = None

    def _encoding(self, request: HTTPRequest) -> _Encoded:
        encoded = self._encoded.get(id(request))
        if encoded is None or encoded.request is not request:
            if len(self._encoded) > 1024:
                self._encoded.clear()
            encoded = self._encoded[id(request)] = _encode(request)
        return encoded

    async def send(self, request: HTTPRequest) -> HTTPResponse:
        encoded = self._encoding(request)
        t = self._timeouts
        loop = asyncio.get_running_loop()
        connection = await self._connection(encoded.origin, loop)
        result: asyncio.Future[HTTPResponse] = loop.create_future()
        connection.start(encoded.data, result, request.stream, self._max_body)
        deadline = connection.sent + t.total_s if t.total_s else None
        self._arm(loop, connection, result, deadline)
        try:
            response = await result
        except BaseException:
            connection.fail(ConnectError("cancelled"))  # mid-response: unusable
            raise
        finally:
            if connection.timer is not None:
                connection.timer.cancel()
        if connection.transport is not None and not connection.transport.is_closing():
            self._idle.setdefault(encoded.origin, []).append(connection)
        return response

    def _arm(self, loop: asyncio.AbstractEventLoop, connection: _Connection,
             result: asyncio.Future[HTTPResponse], deadline: float | None) -> None:
        """One timer per request, re-armed only when it fires (never per chunk): at the
        total deadline or when the silence since the last bytes reaches ``read_s``."""
        read_s = self._timeouts.read_s

        def due() -> float | None:
            silence = connection.last + read_s if read_s else None
            times = [x for x in (deadline, silence) if x is not None]
            return min(times) if times else None

        def check() -> None:
            connection.timer = None
            when = due()
            if result.done() or when is None:
                return
            now = time.monotonic()
            if now >= when:
                which = "total" if deadline is not None and now >= deadline else "silence"
                connection.fail(self._timeout_error(which))
            else:
                connection.timer = loop.call_at(loop.time() + (when - now), check)

        when = due()
        connection.timer = None if when is None else loop.call_at(
            loop.time() + (when - time.monotonic()), check)

    def _timeout_error(self, which: str) -> RequestTimeout:
        t = self._timeouts
        return RequestTimeout(
            f"no complete response in time ({which} limit; limits: connect {t.connect_s} s, "
            f"silence {t.read_s} s, total {t.total_s} s — raise Timeouts(read_s=..., "
            "total_s=...) for long generations)")

    async def _connection(self, origin: _Origin, loop: asyncio.AbstractEventLoop
                          ) -> _Connection:
        idle = self._idle.get(origin)
        while idle:
            connection = idle.pop()
            if connection.transport is not None and not connection.transport.is_closing():
                return connection
        if len(self._open) >= self._max_connections and sum(
                c.transport is None or not c.transport.is_closing() for c in self._open
        ) >= self._max_connections:  # (closed ones leave at their connection_lost)
            raise ConnectError(f"more than {self._max_connections} requests at once")
        scheme, host, port = origin
        context = None
        if scheme == "https":
            self._ssl = self._ssl or ssl.create_default_context()
            context = self._ssl
        connection = _Connection(self, origin)
        self._open.add(connection)
        try:
            async with asyncio.timeout(self._timeouts.connect_s):
                await loop.create_connection(lambda: connection, host, port, ssl=context)
        except TimeoutError:
            self._open.discard(connection)
            raise self._timeout_error("connect") from None
        except (OSError, ssl.SSLError) as exc:
            self._open.discard(connection)
            raise ConnectError(f"cannot connect to {host}:{port}: {exc}") from None
        except BaseException:
            self._open.discard(connection)
            connection.close()
            raise
        return connection

    def _forget(self, connection: _Connection) -> None:
        self._open.discard(connection)
        idle = self._idle.get(connection.origin)
        if idle and connection in idle:
            idle.remove(connection)

    async def aclose(self) -> None:
        for connection in list(self._open):
            connection.close()
        self._idle.clear()
        self._encoded.clear()
        await asyncio.sleep(0)  # let the transports report connection_lost

    def __repr__(self) -> str:
        return (f"<Http1Transport max_connections={self._max_connections} "
                f"open={len(self._open)}>")
