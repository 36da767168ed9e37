"""Thin ``Transport`` adapters over the fast HTTP clients that were candidates for the default.

None of these is shipped: they exist so ``pool_overhead.py`` and the conformance suite
(``LLMVARIANCE_CANDIDATES=1``) can measure each client under the same pool, with the same
error kinds. Each maps its library's errors onto the library's exception tree, reads
the body whole (or chunk by chunk with arrival times when streamed) and refuses a body
past ``max_response_bytes``. What a library cannot be told (e.g. a header-size bound)
is left as the library does it, so the suite measures the library, not the adapter.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from llmvariance import (
    ConnectError,
    HTTPRequest,
    HTTPResponse,
    MalformedResponseError,
    RequestTimeout,
    ResponseTooLargeError,
    Timeouts,
    Transport,
)
from llmvariance._client.transport import DEFAULT_MAX_RESPONSE_BYTES

__all__ = ["CANDIDATES"]


class _Base(Transport):
    def __init__(self, *, max_connections: int, timeouts: Timeouts | None = None,
                 headers: Mapping[str, str] | None = None,
                 max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
                 trust_env: bool = True, proxy: str | None = None) -> None:
        self.max_connections = max_connections
        self.timeouts = timeouts or Timeouts()
        self.limit = max_response_bytes
        self.trust_env = trust_env
        self.proxy = proxy
        self.client: Any = None

    def check(self, size: int, status: int, how: str) -> None:
        if size > self.limit:
            raise ResponseTooLargeError(self.limit, status, how)


class PyreqwestTransport(_Base):
    """pyreqwest: Rust's reqwest (hyper, tokio) behind an asyncio API."""

    def _open(self) -> Any:
        from pyreqwest.client import ClientBuilder

        t = self.timeouts
        b = (ClientBuilder().max_connections(self.max_connections)
             .pool_max_idle_per_host(self.max_connections).follow_redirects(False)
             .gzip(True).deflate(True).http1_only())
        if t.connect_s:
            b = b.connect_timeout(timedelta(seconds=t.connect_s))
        if t.read_s:
            b = b.read_timeout(timedelta(seconds=t.read_s))
        if t.total_s:
            b = b.timeout(timedelta(seconds=t.total_s))
        if not self.trust_env:
            b = b.no_proxy()
        return b.build()

    async def send(self, request: HTTPRequest) -> HTTPResponse:
        from pyreqwest import exceptions as e

        self.client = self.client or self._open()
        builder = (self.client.request(request.method, request.url)
                   .headers(dict(request.headers)).body_bytes(request.body or b""))
        sent = time.monotonic()
        try:
            if request.stream:
                async with builder.build_streamed() as response:
                    status = response.status
                    chunks, size = [], 0
                    while (chunk := await response.body_reader.read_chunk()) is not None:
                        size += len(chunk)
                        self.check(size, status, "streamed past it")
                        chunks.append((time.monotonic() - sent, bytes(chunk)))
                    headers = dict(response.headers.items())
                    return HTTPResponse(status, b"".join(c for _, c in chunks), headers,
                                        chunks if status < 300 else None)
            response = await builder.build().send()
            body = bytes(await response.bytes())
            self.check(len(body), response.status, "read past it")
            return HTTPResponse(response.status, body, dict(response.headers.items()))
        except e.RequestTimeoutError as exc:
            raise RequestTimeout(f"no complete response in time (Timeouts): {exc}"
                                 ) from None
        except e.DecodeError as exc:
            raise MalformedResponseError(f"unreadable body: {exc}") from None
        except e.PyreqwestError as exc:
            raise ConnectError(f"{type(exc).__name__}: {exc}") from None

    async def aclose(self) -> None:
        if self.client is not None:
            await self.client.close()
            self.client = None


class CurlCffiTransport(_Base):
    """curl-cffi: libcurl through cffi, on asyncio's event loop."""

    def _open(self) -> Any:
        from curl_cffi import AsyncSession

        return AsyncSession(max_clients=self.max_connections, trust_env=self.trust_env,
                            allow_redirects=False)

    def _timeout(self) -> Any:
        t = self.timeouts
        return (t.connect_s or 0, t.total_s or 0)

    async def send(self, request: HTTPRequest) -> HTTPResponse:
        from curl_cffi import CurlError
        from curl_cffi.requests.exceptions import Timeout

        self.client = self.client or self._open()
        sent = time.monotonic()
        try:
            if request.stream:
                async with self.client.stream(
                        request.method, request.url, data=request.body,
                        headers=dict(request.headers), timeout=self._timeout(),
                        proxy=self.proxy) as response:
                    chunks, size = [], 0
                    async for chunk in response.aiter_content():
                        size += len(chunk)
                        self.check(size, response.status_code, "streamed past it")
                        chunks.append((time.monotonic() - sent, chunk))
                    status = response.status_code
                    return HTTPResponse(status, b"".join(c for _, c in chunks),
                                        dict(response.headers), chunks if status < 300
                                        else None)
            response = await self.client.request(
                request.method, request.url, data=request.body, headers=dict(request.headers),
                timeout=self._timeout(), proxy=self.proxy)
            self.check(len(response.content), response.status_code, "read past it")
            return HTTPResponse(response.status_code, response.content,
                                dict(response.headers))
        except Timeout as exc:
            raise RequestTimeout(f"no complete response in time (Timeouts): {exc}") from None
        except (CurlError, OSError) as exc:
            raise ConnectError(f"{type(exc).__name__}: {exc}") from None
        except Exception as exc:  # curl-cffi's RequestException tree
            raise ConnectError(f"{type(exc).__name__}: {exc}") from None

    async def aclose(self) -> None:
        if self.client is not None:
            await self.client.close()
            self.client = None


class AiosonicTransport(_Base):
    """aiosonic: a pure-Python asyncio client."""

    def _open(self) -> Any:
        import aiosonic
        from aiosonic.connectors import TCPConnector
        from aiosonic.pools import PoolConfig
        from aiosonic.timeout import Timeouts as SonicTimeouts

        t = self.timeouts
        timeouts = SonicTimeouts(sock_connect=t.connect_s, sock_read=t.read_s,
                                 request_timeout=t.total_s)
        connector = TCPConnector(pool_configs={":default": PoolConfig(
            size=self.max_connections)}, timeouts=timeouts)
        return aiosonic.HTTPClient(connector=connector, max_decompressed_size=self.limit)

    async def send(self, request: HTTPRequest) -> HTTPResponse:
        from aiosonic import exceptions as e

        self.client = self.client or self._open()
        sent = time.monotonic()
        try:
            response = await self.client.request(request.url, request.method,
                                                 headers=dict(request.headers),
                                                 data=request.body, follow=False)
            status = response.status_code
            headers = dict(response.headers)
            if request.stream and status < 300:
                chunks, size = [], 0
                async for chunk in response.read_chunks():
                    size += len(chunk)
                    self.check(size, status, "streamed past it")
                    chunks.append((time.monotonic() - sent, chunk))
                return HTTPResponse(status, b"".join(c for _, c in chunks), headers, chunks)
            body = await response.content()
            self.check(len(body), status, "read past it")
            return HTTPResponse(status, body, headers)
        except (e.RequestTimeout, e.ReadTimeout, e.ConnectTimeout, TimeoutError) as exc:
            raise RequestTimeout(f"no complete response in time (Timeouts): {exc!r}"
                                 ) from None
        except (e.HttpParsingError, e.MissingEvent) as exc:
            raise MalformedResponseError(f"unreadable response: {exc!r}") from None
        except (OSError, e.ConnectionDisconnected, e.ConnectionPoolAcquireTimeout) as exc:
            raise ConnectError(f"{type(exc).__name__}: {exc}") from None

    async def aclose(self) -> None:
        if self.client is not None:
            await self.client.connector.cleanup()
            self.client = None


class RnetTransport(_Base):
    """rnet: Rust's wreq (a reqwest fork, hyper, tokio) behind an asyncio API."""

    def _open(self) -> Any:
        import rnet

        t = self.timeouts
        return rnet.Client(pool_max_size=self.max_connections,
                           pool_max_idle_per_host=self.max_connections,
                           allow_redirects=False, http1_only=True, gzip=True, deflate=True,
                           timeout=int(t.total_s) if t.total_s else None,
                           connect_timeout=int(t.connect_s) if t.connect_s else None,
                           read_timeout=int(t.read_s) if t.read_s else None,
                           no_proxy=not self.trust_env)

    async def send(self, request: HTTPRequest) -> HTTPResponse:
        import rnet
        from rnet import exceptions as e

        self.client = self.client or self._open()
        sent = time.monotonic()
        try:
            response = await self.client.request(rnet.Method.POST, request.url,
                                                 headers=dict(request.headers),
                                                 body=request.body)
            status = response.status
            headers = {k.decode(): v.decode() for k, v in response.headers.items()}
            if request.stream and status < 300:
                chunks, size = [], 0
                async with response.stream() as streamer:
                    async for chunk in streamer:
                        size += len(chunk)
                        self.check(size, status, "streamed past it")
                        chunks.append((time.monotonic() - sent, bytes(chunk)))
                return HTTPResponse(status, b"".join(c for _, c in chunks), headers, chunks)
            body = bytes(await response.bytes())
            self.check(len(body), status, "read past it")
            return HTTPResponse(status, body, headers)
        except e.TimeoutError as exc:
            raise RequestTimeout(f"no complete response in time (Timeouts): {exc}") from None
        except e.DecodingError as exc:
            raise MalformedResponseError(f"unreadable body: {exc}") from None
        except Exception as exc:
            raise ConnectError(f"{type(exc).__name__}: {exc}") from None


CANDIDATES: dict[str, type[Transport]] = {
    "pyreqwest": PyreqwestTransport,
    "curl-cffi": CurlCffiTransport,
    "aiosonic": AiosonicTransport,
    "rnet": RnetTransport,
}
