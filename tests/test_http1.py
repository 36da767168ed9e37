"""The default transport against a scripted server that answers with exact bytes.

Every case runs on both transports: the fast one must answer exactly as aiohttp does
where both succeed, and fail with the same kind of error where a server misbehaves.
"""

from __future__ import annotations

import asyncio
import gzip
import os
import shutil
import ssl
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest

import llmvariance as lv

pytestmark = pytest.mark.anyio

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
BODY = b'{"choices": []}'


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), 0)
    return head + await reader.readexactly(length)


@asynccontextmanager
async def scripted(script: Script) -> AsyncIterator[tuple[str, list[int]]]:
    """A server on 127.0.0.1 running ``script`` per connection; yields its URL and a list
    with one entry per connection accepted."""
    connections: list[int] = []
    tasks: set[asyncio.Task[None]] = set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        tasks.add(asyncio.current_task())  # type: ignore[arg-type]
        try:
            await script(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/v1", connections
    finally:
        server.close()
        for task in tasks:
            task.cancel()
        await server.wait_closed()


def answer(*responses: bytes, close: bool = False) -> Script:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for response in responses:
            await read_request(reader)
            writer.write(response)
            await writer.drain()
        if not close:
            await reader.read()  # until the client goes
    return script


def ok(body: bytes = BODY, extra: bytes = b"") -> bytes:
    return (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Trace: abc\r\n" + extra
            + b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


TRANSPORTS = [lv.Http1Transport, lv.AiohttpTransport]


def transport(kind: type[lv.Transport], **kwargs: object) -> lv.Transport:
    return kind(max_connections=4, **kwargs)  # type: ignore[call-arg]


def post(url: str, stream: bool = False, headers: dict[str, str] | None = None
         ) -> lv.HTTPRequest:
    return lv.HTTPRequest("POST", url + "/chat/completions",
                          headers or {"Content-Type": "application/json"}, b'{"a": 1}',
                          stream=stream)


@pytest.mark.parametrize("kind", TRANSPORTS)
async def test_bodies_by_length_chunks_close_and_gzip_arrive_whole(
        kind: type[lv.Transport]) -> None:
    chunked = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"5\r\n{\"cho\r\na\r\nices\": []}\r\n0\r\n\r\n")
    packed = gzip.compress(BODY)
    zipped = ok(packed, b"Content-Encoding: gzip\r\n")
    async with scripted(answer(ok(), chunked, zipped)) as (url, connections):
        t = transport(kind)
        request = post(url)
        got = [await t.send(request) for _ in range(3)]
        await t.aclose()
    assert [r.body for r in got] == [BODY] * 3 and [r.status for r in got] == [200] * 3
    assert got[0].headers["x-trace"] == "abc"  # names are case-insensitive
    assert connections == [1]  # one kept-alive connection for all three

    interim = b"HTTP/1.1 100 Continue\r\n\r\n" + ok()  # a server may send it unasked
    async with scripted(answer(interim)) as (url, _):
        t = transport(kind)
        response = await t.send(post(url))
        assert (response.status, response.body) == (200, BODY)
        await t.aclose()

    until_close = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + BODY
    async with scripted(answer(until_close, close=True)) as (url, _):
        t = transport(kind)
        assert (await t.send(post(url))).body == BODY
        await t.aclose()


@pytest.mark.parametrize("kind", TRANSPORTS)
async def test_a_streamed_body_keeps_each_chunk_with_its_time(kind: type[lv.Transport]) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"9\r\ndata: a\n\n\r\n")
        await writer.drain()
        await asyncio.sleep(0.1)  # the server's pace: the second event comes later
        writer.write(b"9\r\ndata: b\n\n\r\n0\r\n\r\n")
        await writer.drain()
        await reader.read()

    async with scripted(script) as (url, _):
        t = transport(kind)
        response = await t.send(post(url, stream=True))
        await t.aclose()
    assert response.body == b"data: a\n\ndata: b\n\n"
    assert response.chunks is not None
    assert b"".join(c for _, c in response.chunks) == response.body
    times = [at for at, _ in response.chunks]
    assert times == sorted(times) and times[-1] >= 0.1 > times[0]


@pytest.mark.parametrize("kind", TRANSPORTS)
async def test_cut_bodies_are_errors_never_short_answers(kind: type[lv.Transport]) -> None:
    cut = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + BODY
    for stream, error in ((False, lv.ConnectError), (True, lv.MalformedResponseError)):
        async with scripted(answer(cut, close=True)) as (url, _):
            t = transport(kind)
            with pytest.raises(error):
                await t.send(post(url, stream=stream))
            await t.aclose()


@pytest.mark.parametrize("kind", TRANSPORTS)
async def test_garbage_and_refused_connections_fail_as_transport_errors(
        kind: type[lv.Transport]) -> None:
    async with scripted(answer(b"HELLO THERE\r\n\r\n", close=True)) as (url, _):
        t = transport(kind)
        with pytest.raises((lv.MalformedResponseError, lv.ConnectError)):
            await t.send(post(url))
        await t.aclose()
    t = transport(kind)
    with pytest.raises(lv.ConnectError):
        await t.send(post("http://127.0.0.1:9/v1"))
    await t.aclose()


@pytest.mark.parametrize("kind", TRANSPORTS)
async def test_silence_and_the_total_limit_end_an_attempt(kind: type[lv.Transport]) -> None:
    stalled = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{")
        await writer.drain()
        await stalled.wait()  # never set: silent until the client gives up

    async def trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
        for _ in range(1000):  # a byte every 20 ms: never silent, never done in time
            writer.write(b" ")
            await writer.drain()
            await asyncio.sleep(0.02)

    for script, limits in ((silent, lv.Timeouts(read_s=0.2, total_s=10)),
                           (trickle, lv.Timeouts(read_s=1, total_s=0.3))):
        async with scripted(script) as (url, _):
            t = transport(kind, timeouts=limits)
            loop = asyncio.get_running_loop()
            start = loop.time()
            with pytest.raises(lv.RequestTimeout, match="Timeouts"):
                await t.send(post(url))
            assert loop.time() - start < 3
            await t.aclose()


@pytest.mark.parametrize("kind", TRANSPORTS)
async def test_a_body_past_the_limit_is_refused_announced_or_inflated(
        kind: type[lv.Transport]) -> None:
    bomb = gzip.compress(b"\0" * 2_000_000)
    announced = b"HTTP/1.1 200 OK\r\nContent-Length: 5000000\r\n\r\n"
    async with scripted(answer(ok(bomb, b"Content-Encoding: gzip\r\n"), close=True)
                        ) as (url, _):
        t = transport(kind, max_response_bytes=100_000)
        with pytest.raises(lv.ResponseTooLargeError, match="100,000"):
            await t.send(post(url))
        await t.aclose()
    async with scripted(answer(announced, close=True)) as (url, _):
        t = transport(kind, max_response_bytes=100_000)
        with pytest.raises(lv.ResponseTooLargeError, match="5,000,000 bytes announced"):
            await t.send(post(url))
        await t.aclose()


async def test_a_cancelled_request_closes_its_connection_and_the_next_one_gets_a_new_one(
        ) -> None:
    first_seen = asyncio.Event()
    calls = 0

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal calls
        calls += 1
        await read_request(reader)
        if calls == 1:
            first_seen.set()
            assert await reader.read() == b""  # the client closed it
            return
        writer.write(ok())
        await writer.drain()
        await reader.read()

    async with scripted(script) as (url, connections):
        t = lv.Http1Transport(max_connections=1)
        sending = asyncio.ensure_future(t.send(post(url)))
        await first_seen.wait()
        sending.cancel()
        with pytest.raises(asyncio.CancelledError):
            await sending
        assert (await t.send(post(url))).body == BODY
        await t.aclose()
    assert connections == [1, 1]


async def test_headers_that_could_smuggle_a_request_are_refused_before_sending() -> None:
    async with scripted(answer(ok())) as (url, connections):
        t = lv.Http1Transport(max_connections=1)
        with pytest.raises(lv.ConnectError, match="X-Bad"):
            await t.send(post(url, headers={"X-Bad": "a\r\nHost: evil"}))
        await t.aclose()
    assert connections == []


async def test_sample_many_uses_it_by_default_and_keeps_connections_alive() -> None:
    body = (b'{"choices": [{"message": {"content": "same"}, "finish_reason": "stop"}]}')
    async with scripted(answer(*[ok(body)] * 40)) as (url, connections):
        request = lv.ChatRequest(model="m", messages=[{"role": "user", "content": "hi"}])
        result = await lv.sample_many(request, 40, endpoint=lv.Endpoint(base_url=url),
                                      concurrency=1)
    assert result.report.n_ok == 40 and result.texts == ["same"] * 40
    assert connections == [1]


async def test_https_with_a_certificate_the_system_trusts(tmp_path: Path) -> None:
    """TLS through the default context: a local CA's certificate, trusted via
    $SSL_CERT_FILE in a child process (the system store stays untouched)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("needs the openssl command to make a certificate")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    made = await anyio.run_process(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"], check=False)
    assert made.returncode == 0, made.stderr
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    body = b'{"choices": [{"message": {"content": "over tls"}, "finish_reason": "stop"}]}'

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            for _ in range(3):
                await read_request(reader)
                writer.write(ok(body))
                await writer.drain()
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=context)
    port = server.sockets[0].getsockname()[1]
    child = ("import sys, llmvariance as lv\n"
             "r = lv.sample_many_sync(lv.ChatRequest(model='m', messages=[{'role': 'user', "
             "'content': 'hi'}]), 3, endpoint=lv.Endpoint(base_url=sys.argv[1]), "
             "concurrency=1, retry=lv.RetryPolicy(max_attempts=1))\n"
             "print(r.texts, [s.error for s in r.samples])")
    try:
        for trusted in (True, False):
            env = {**os.environ, "SSL_CERT_FILE": str(cert) if trusted else os.devnull}
            out = await anyio.run_process([sys.executable, "-c", child,
                                           f"https://127.0.0.1:{port}/v1"], env=env,
                                          check=False)
            text = out.stdout.decode()
            if trusted:
                assert "['over tls', 'over tls', 'over tls']" in text, out.stderr
            else:  # an untrusted certificate is a failed sample, never accepted
                assert "CERTIFICATE_VERIFY_FAILED" in text, text + out.stderr.decode()
    finally:
        server.close()
        await server.wait_closed()


async def test_never_more_sockets_than_max_connections() -> None:
    held = asyncio.Event()
    arrived: list[int] = []

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        arrived.append(1)
        if len(arrived) == 2:
            held.set()
        await held.wait()
        writer.write(ok())
        await writer.drain()
        await read_request(reader)
        writer.write(ok())
        await writer.drain()
        await reader.read()

    async with scripted(script) as (url, connections):
        t = lv.Http1Transport(max_connections=2)
        first = [asyncio.ensure_future(t.send(post(url))) for _ in range(2)]
        await held.wait()
        with pytest.raises(lv.ConnectError, match="more than 2"):
            await t.send(post(url))  # a caller past the limit is refused, not queued
        assert [(await f).body for f in first] == [BODY, BODY]
        assert (await t.send(post(url))).body == BODY  # an idle connection is reused
        await t.aclose()
    assert connections == [1, 1]
