"""The default transport: HTTP/1.1 keep-alive on asyncio protocols, parsed by httptools.

Every request of a run is byte-for-byte the same, so it is encoded once and each send is
one socket write; the response is parsed by llhttp (the C parser behind Node.js, through
``httptools``) as it arrives. That is a third of what a general client (aiohttp's
``ClientSession``) spends per request, and the client's CPU per request is what decides
how hard one process can push a fast local server (``benchmarks/pool_overhead.py``; the
conformance suite in ``tests/conformance/`` holds it to what aiohttp survives). It speaks
exactly what the pool needs: POST, keep-alive, Content-Length or chunked bodies,
gzip/deflate, TLS, HTTP proxies (``CONNECT`` for HTTPS; ``proxy.py``), Happy Eyeballs
(addresses raced as aiohttp races them, through ``aiohappyeyeballs``), no redirects, no
cookies.

Limits on what a server may send: a header or trailer line of at most 8,190 bytes (as
aiohttp), at most 128 of them, and at most 128 KiB of status line, headers, chunk framing
and trailers per response; all of it counts against ``max_response_bytes`` too. A
failed, timed-out or cancelled request aborts its socket (no graceful close that waits on
a peer that stopped reading), so no socket outlives the request that broke it.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
import zlib
from collections.abc import Mapping
from urllib.parse import urlsplit

import aiohappyeyeballs
import httptools
from multidict import CIMultiDict, CIMultiDictProxy

from .._errors import ConnectError, MalformedResponseError, RequestTimeout, ResponseTooLargeError
from .._version import __version__
from .proxy import Proxy, proxy_for
from .transport import DEFAULT_MAX_RESPONSE_BYTES, HTTPRequest, HTTPResponse, Timeouts, Transport

__all__ = ["Http1Transport"]

_USER_AGENT = f"llmvariance/{__version__}"
_Origin = tuple[str, str, int]  # scheme, host, port

MAX_FIELD_BYTES = 8190
"""The longest header or trailer line (name and value), as aiohttp's ``max_field_size``."""
MAX_FIELDS = 128
"""The most header fields, and separately the most trailer fields, of one response."""
MAX_HEAD_BYTES = 128 * 1024
"""Per response: bytes of status line, headers, chunk framing and trailers (the wire bytes
that are not body), beyond a 64-byte allowance per chunk for its size line."""
_CHUNK_ALLOWANCE = 64


def _authority(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


_WRITE_PIECE = 256 * 1024
"""A request larger than this is written piece by piece as the socket drains (asyncio's
flow control), so a peer that stops reading holds one piece per connection, not a copy
of the whole request."""


class _Encoded:
    __slots__ = ("data", "origin", "proxy", "request")

    def __init__(self, request: HTTPRequest, origin: _Origin, data: bytes | list[bytes],
                 proxy: Proxy | None) -> None:
        self.request = request  # kept so the id() used as the cache key stays unique
        self.origin = origin
        self.data = data
        """The bytes to write: one string, or head and body of a large request (never
        copied into one)."""
        self.proxy = proxy
        """Where to connect instead of the origin (HTTPS: then a CONNECT tunnel)."""


def _encode(request: HTTPRequest, proxy: Proxy | None) -> _Encoded:
    parts = urlsplit(request.url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConnectError(f"cannot send to {parts.scheme}:// URLs", final=True)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    body = request.body or b""
    headers = {"Host": parts.netloc.rpartition("@")[2], "User-Agent": _USER_AGENT,
               "Accept-Encoding": "gzip, deflate", **request.headers,
               "Content-Length": str(len(body))}
    if proxy is not None and parts.scheme == "http":
        target = f"http://{headers['Host']}{target}"  # absolute form, for the proxy
        if proxy.authorization is not None:
            headers["Proxy-Authorization"] = proxy.authorization
    lines = [f"{request.method} {target} HTTP/1.1"]
    for name, value in headers.items():
        if "\r" in name or "\n" in name or "\r" in value or "\n" in value or ":" in name:
            raise ConnectError(f"header {name!r} has a character HTTP cannot carry",
                               final=True)
        lines.append(f"{name}: {value}")
    try:
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    except UnicodeEncodeError:
        # Endpoint refuses these up front; a hand-made request gets a message, not a crash
        raise ConnectError("a header or the URL has a character HTTP/1.1 cannot carry "
                           "(not Latin-1)", final=True) from None
    data = head + body if len(body) <= _WRITE_PIECE else [head, body]
    return _Encoded(request, (parts.scheme, parts.hostname, port), data, proxy)


def _connect_error(exc: BaseException, where: str) -> ConnectError:
    """What failed while connecting, and whether waiting could ever help."""
    if isinstance(exc, socket.gaierror):
        return ConnectError(f"cannot resolve {where}: {exc}",
                            final=exc.errno != socket.EAI_AGAIN)
    if isinstance(exc, ssl.SSLCertVerificationError):
        return ConnectError(f"cannot connect to {where}: {exc}", final=True)
    if isinstance(exc, ssl.SSLError):
        # an EOF during the handshake can be a dropped connection; the rest are settings
        # (TLS spoken to a plain port, no shared protocol version or cipher)
        transient = isinstance(exc, ssl.SSLEOFError | ssl.SSLZeroReturnError |
                               ssl.SSLSyscallError)
        return ConnectError(f"cannot connect to {where}: {exc}", final=not transient)
    return ConnectError(f"cannot connect to {where}: {exc}")


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
        self.reused = False
        """Taken from the idle connections for this request, not opened for it."""
        self.paused = False
        """The socket's buffer is full (asyncio's flow control): write no more yet."""
        self.unsent: list[memoryview] = []
        self.reset()

    def reset(self) -> None:
        self.headers: list[tuple[str, str]] = []
        self.chunks: list[bytes] = []
        self.times: list[float] = []
        self.size = 0
        self.inflate: zlib._Decompress | None = None
        self.complete = False
        self.headers_done = False
        self.answered = False
        """Some byte of the answer arrived: a failure now is no stale connection."""
        self.wire = 0
        """Bytes received for this response; ``wire - raw`` is its head, framing, trailers."""
        self.raw = 0
        self.fields = 0
        self.pieces = 0

    # -- the pool's side ------------------------------------------------------------

    def start(self, data: bytes | list[bytes], result: asyncio.Future[HTTPResponse],
              stream: bool, limit: int) -> None:
        assert self.transport is not None
        self.reset()
        self.parser = httptools.HttpResponseParser(self)
        self.result, self.stream, self.limit = result, stream, limit
        self.sent = self.last = time.monotonic()
        if isinstance(data, bytes):
            self.transport.write(data)  # the common case: one write
        else:
            self.unsent = [memoryview(part) for part in data]
            self._write_more()

    def _write_more(self) -> None:
        while self.unsent and not self.paused and self.transport is not None:
            part = self.unsent[0]
            if len(part) > _WRITE_PIECE:
                self.unsent[0] = part[_WRITE_PIECE:]
                part = part[:_WRITE_PIECE]
            else:
                self.unsent.pop(0)
            self.transport.write(part)  # may call pause_writing before it returns

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        self._write_more()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        """Drop the socket now: a graceful close would wait to flush what a peer that
        stopped reading never takes, and keep the socket (and its buffer) alive."""
        if self.transport is not None:
            self.transport.abort()

    def fail(self, exc: Exception) -> None:
        result, self.result = self.result, None
        self.unsent = []
        self.abort()
        if result is not None and not result.done():
            result.set_exception(exc)

    # -- asyncio's side --------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment] # uvloop's is no subclass

    def data_received(self, data: bytes) -> None:
        if self.result is None:  # bytes nobody asked for: the connection is unusable
            self.abort()
            return
        self.answered = True
        self.last = time.monotonic()
        self.wire += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            refused = exc.__context__
            self.fail(refused.error if isinstance(refused, _Refused)
                      else MalformedResponseError(f"unreadable response: {refused!r}"))
            return
        except httptools.HttpParserError as exc:
            self.fail(MalformedResponseError(f"not an HTTP/1.1 response: {exc}"))
            return
        if self.result is not None:
            # an endless header line, chunk extension or trailer section never reaches a
            # callback: bound the bytes that are not body instead
            head = self.wire - self.raw
            if head > MAX_HEAD_BYTES + _CHUNK_ALLOWANCE * self.pieces:
                self.fail(self._too_large(f"more than {MAX_HEAD_BYTES:,} bytes of status "
                                          "line, headers, chunk framing and trailers"))
            elif head + self.size > self.limit:
                self.fail(self._too_large("its headers and body together", self.limit,
                                          "headers and body"))

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
            # on a kept-alive connection, before any byte of an answer: the server had
            # closed it (as llama-server does after each stream), the request never arrived
            stale = self.reused and not self.answered
            self.fail(ConnectError(f"the server closed the connection ({exc or 'no answer'})"
                                   + (" it had kept alive" if stale else ""),
                                   resendable=stale))

    def _ends_at_close(self) -> bool:
        names = {name.lower(): value for name, value in self.headers}
        return "content-length" not in names and "chunked" not in names.get(
            "transfer-encoding", "").lower()

    def _too_large(self, detail: str, limit: int = MAX_HEAD_BYTES, part: str | None = None
                   ) -> ResponseTooLargeError:
        status = self.parser.get_status_code() if self.headers_done else 0
        return ResponseTooLargeError(limit, status, detail, part=part or (
            "trailers" if self.headers_done else "headers"))

    # -- httptools' callbacks --------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self.fields += 1
        if len(name) + len(value) > MAX_FIELD_BYTES:
            raise _Refused(self._too_large(f"a line over {MAX_FIELD_BYTES:,} bytes",
                                           MAX_FIELD_BYTES))
        if self.fields > MAX_FIELDS:
            raise _Refused(self._too_large(f"more than {MAX_FIELDS} fields"))
        if not self.headers_done:  # trailers are counted, never merged into the headers
            self.headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        self.headers_done = True
        self.fields = 0  # trailers have a budget of their own
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

    def on_chunk_header(self) -> None:
        self.pieces += 1

    def on_body(self, body: bytes) -> None:
        self.raw += len(body)
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
            how = ("streamed past it" if self.stream else
                   "inflated past it" if self.inflate is not None else "read past it")
            raise _Refused(ResponseTooLargeError(self.limit, status, how))
        self.chunks.append(body)
        if self.stream:
            self.times.append(self.last - self.sent)

    def on_message_complete(self) -> None:
        status = self.parser.get_status_code()
        if 100 <= status < 200:  # an interim response (100 Continue): the answer follows
            self.reset()
            self.answered = True
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
    """HTTP/1.1 with keep-alive and at most ``max_connections`` sockets (see module doc).

    ``trust_env`` honours ``HTTPS_PROXY``/``HTTP_PROXY``/``ALL_PROXY``/``NO_PROXY``;
    ``proxy`` (``http://[user:pass@]host:port``) sends everything through one proxy.
    ``happy_eyeballs_delay``: seconds before the next address of a host name is tried
    while the first still connects (None: one at a time).
    """

    __slots__ = ("_encoded", "_happy_eyeballs_delay", "_idle", "_max_body",
                 "_max_connections", "_open", "_proxy", "_ssl", "_timeouts", "_trust_env")

    def __init__(self, *, max_connections: int, timeouts: Timeouts | None = None,
                 headers: Mapping[str, str] | None = None,
                 max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
                 trust_env: bool = True, proxy: str | None = None,
                 happy_eyeballs_delay: float | None = 0.25) -> None:
        # ``headers`` are the ones every request carries; they arrive with each request
        # here (encoded once per request object), so the argument is not needed.
        self._timeouts = timeouts or Timeouts()
        self._max_connections = max_connections
        self._max_body = max_response_bytes
        self._trust_env = trust_env
        self._proxy = proxy
        self._happy_eyeballs_delay = happy_eyeballs_delay
        self._idle: dict[_Origin, list[_Connection]] = {}
        self._open: set[_Connection] = set()
        self._encoded: dict[int, _Encoded] = {}
        self._ssl: ssl.SSLContext | None = None

    def _encoding(self, request: HTTPRequest) -> _Encoded:
        encoded = self._encoded.get(id(request))
        if encoded is None or encoded.request is not request:
            if len(self._encoded) > 1024:
                self._encoded.clear()
            proxy = proxy_for(request.url, trust_env=self._trust_env, proxy=self._proxy)
            encoded = self._encoded[id(request)] = _encode(request, proxy)
        return encoded

    async def send(self, request: HTTPRequest) -> HTTPResponse:
        encoded = self._encoding(request)
        t = self._timeouts
        loop = asyncio.get_running_loop()
        # the total limit is the whole attempt: connecting and the TLS handshake included
        deadline = time.monotonic() + t.total_s if t.total_s else None
        connection = await self._connection(encoded, loop, deadline)
        result: asyncio.Future[HTTPResponse] = loop.create_future()
        connection.start(encoded.data, result, request.stream, self._max_body)
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

    async def _connection(self, encoded: _Encoded, loop: asyncio.AbstractEventLoop,
                          deadline: float | None) -> _Connection:
        origin = encoded.origin
        idle = self._idle.get(origin)
        while idle:
            connection = idle.pop()
            if connection.transport is not None and not connection.transport.is_closing():
                connection.reused = True
                return connection
        if len(self._open) >= self._max_connections and sum(
                c.transport is None or not c.transport.is_closing() for c in self._open
        ) >= self._max_connections:  # (aborted ones leave at their connection_lost)
            raise ConnectError(f"more than {self._max_connections} requests at once")
        connect_s = self._timeouts.connect_s
        which = "connect"
        if deadline is not None and (connect_s is None
                                     or deadline - time.monotonic() < connect_s):
            connect_s, which = max(0.0, deadline - time.monotonic()), "total"
        connection = _Connection(self, origin)
        self._open.add(connection)
        sock: socket.socket | None = None
        try:
            async with asyncio.timeout(connect_s):
                sock = await self._socket(encoded, loop)
                scheme, host, _ = origin
                context = None
                if scheme == "https":
                    self._ssl = self._ssl or ssl.create_default_context()
                    context = self._ssl
                await loop.create_connection(lambda: connection, sock=sock, ssl=context,
                                             server_hostname=host if context else None)
        except BaseException as exc:
            self._open.discard(connection)
            connection.abort()
            if sock is not None and connection.transport is None:
                sock.close()
            if isinstance(exc, TimeoutError):
                raise self._timeout_error(which) from None
            if isinstance(exc, ConnectError):
                raise
            if isinstance(exc, OSError):  # ssl.SSLError and socket.gaierror included
                raise _connect_error(exc, _authority(*origin[1:])) from None
            raise
        return connection

    async def _socket(self, encoded: _Encoded, loop: asyncio.AbstractEventLoop
                      ) -> socket.socket:
        """A connected socket to the origin, or to the proxy (a tunnel for HTTPS)."""
        proxy = encoded.proxy
        host, port = (proxy.host, proxy.port) if proxy else encoded.origin[1:]
        try:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            where = f"the proxy {proxy.url} from {proxy.source}" if proxy else host
            raise _connect_error(exc, where) from None
        try:
            sock = await aiohappyeyeballs.start_connection(
                infos, happy_eyeballs_delay=self._happy_eyeballs_delay, interleave=1)
        except OSError as exc:
            where = f"the proxy {proxy.url} from {proxy.source}" if proxy else _authority(
                host, port)
            raise ConnectError(f"cannot connect to {where}: {exc}") from None
        if proxy is not None and encoded.origin[0] == "https":
            try:
                await _tunnel(sock, proxy, encoded.origin, loop)
            except BaseException:
                sock.close()
                raise
        return sock

    def _forget(self, connection: _Connection) -> None:
        self._open.discard(connection)
        idle = self._idle.get(connection.origin)
        if idle and connection in idle:
            idle.remove(connection)

    async def aclose(self) -> None:
        for connection in list(self._open):
            connection.abort()
        self._idle.clear()
        self._encoded.clear()
        await asyncio.sleep(0)  # let the transports report connection_lost

    def __repr__(self) -> str:
        return (f"<Http1Transport max_connections={self._max_connections} "
                f"open={len(self._open)}>")


_MAX_TUNNEL_HEAD = 64 * 1024


async def _tunnel(sock: socket.socket, proxy: Proxy, origin: _Origin,
                  loop: asyncio.AbstractEventLoop) -> None:
    """Ask the proxy for a tunnel to ``origin`` (``CONNECT``); TLS then runs through it."""
    authority = _authority(*origin[1:])
    lines = [f"CONNECT {authority} HTTP/1.1", f"Host: {authority}"]
    if proxy.authorization is not None:
        lines.append(f"Proxy-Authorization: {proxy.authorization}")
    await loop.sock_sendall(sock, ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
    head = b""
    while b"\r\n\r\n" not in head:
        data = await loop.sock_recv(sock, 65536)
        if not data:
            raise ConnectError(f"the proxy {proxy.url} from {proxy.source} closed the "
                               f"connection instead of answering CONNECT {authority}")
        head += data
        if len(head) > _MAX_TUNNEL_HEAD:
            raise ConnectError(f"the proxy {proxy.url} answered CONNECT with over "
                               f"{_MAX_TUNNEL_HEAD:,} bytes of headers")
    status_line = head.split(b"\r\n", 1)[0].decode("latin-1")
    parts = status_line.split(" ", 2)
    status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
    if status == 407:
        raise ConnectError(f"the proxy {proxy.url} from {proxy.source} wants credentials "
                           f"({status_line}); put them in the proxy URL "
                           "(http://user:password@host:port)", final=True)
    if not 200 <= status < 300:
        raise ConnectError(f"the proxy {proxy.url} from {proxy.source} refused "
                           f"CONNECT {authority}: {status_line}", final=400 <= status < 500)
