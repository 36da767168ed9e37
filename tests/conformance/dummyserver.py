"""The servers the conformance suite runs against, each started and stopped by a test.

As urllib3's ``dummyserver/``: real servers this project did not write (nginx, tinyproxy,
llama.cpp's llama-server) on 127.0.0.1 with small configured limits, and scripted sockets
that answer with exact bytes for what no well-behaved server does. nginx and tinyproxy are
Debian packages that ``python3 dev.py test`` installs in CI; without them their cases skip
and say so.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme

import llmvariance as lv

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]

ANSWER = b'{"choices": [{"message": {"content": "same"}, "finish_reason": "stop"}]}'
"""The chat answer every server here gives: ``sample_many`` reads it as the text 'same'."""
EVENTS = (b'data: {"choices": [{"delta": {"content": "sa"}, "finish_reason": null}]}\n\n'
          b'data: {"choices": [{"delta": {"content": "me"}, "finish_reason": "stop"}]}\n\n'
          b"data: [DONE]\n\n")
"""The same answer streamed."""


# -- scripted sockets -----------------------------------------------------------------------

async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), 0)
    return head + await reader.readexactly(length)


@asynccontextmanager
async def scripted(script: Script, host: str = "127.0.0.1"
                   ) -> AsyncIterator[tuple[str, list[int]]]:
    """A server on ``host`` running ``script`` per connection; yields its base URL and a
    list with one entry per connection accepted."""
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

    server = await asyncio.start_server(handle, host, 0)
    port = server.sockets[0].getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    try:
        yield f"http://{shown}:{port}/v1", connections
    finally:
        server.close()
        for task in tasks:
            task.cancel()
        await server.wait_closed()


def answer(*responses: bytes, close: bool = False) -> Script:
    """Read a request, write the next response, for each response; then wait for the
    client to go (or close at once with ``close``)."""
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for response in responses:
            await read_request(reader)
            writer.write(response)
            await writer.drain()
        if not close:
            await reader.read()
    return script


def ok(body: bytes = ANSWER, extra: bytes = b"") -> bytes:
    return (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Trace: abc\r\n" + extra
            + b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


@contextlib.contextmanager
def unanswered_port() -> Iterator[int]:
    """A port on 127.0.0.1 whose SYNs are dropped: a listener with a full accept queue, as a
    host that does not answer looks to a client (connecting hangs, nothing is refused)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    try:
        for _ in range(8):  # the queue holds backlog + 1; fill it whatever the kernel rounds to
            filler = socket.socket()
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(("127.0.0.1", port))
            fillers.append(filler)
        yield port
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


# -- certificates ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Certificates:
    """A local CA (``ca``: the PEM a client trusts) and server certificates it issued."""

    ca: Path
    localhost: tuple[Path, Path]
    """cert chain, key: for ``localhost`` and 127.0.0.1."""
    other: tuple[Path, Path]
    """for ``other.test`` only: a name mismatch for any address here."""
    expired: tuple[Path, Path]
    """for ``localhost`` and 127.0.0.1, expired yesterday."""


def make_certificates(directory: Path) -> Certificates:
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(directory / "ca.pem"))
    now = datetime.datetime.now(datetime.UTC)

    def issue(name: str, *identities: str, **dates: datetime.datetime) -> tuple[Path, Path]:
        leaf = ca.issue_cert(*identities, **dates)  # type: ignore[arg-type]
        cert, key = directory / f"{name}.pem", directory / f"{name}.key"
        cert.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
        leaf.private_key_pem.write_to_path(str(key))
        return cert, key

    return Certificates(
        ca=directory / "ca.pem",
        localhost=issue("localhost", "localhost", "127.0.0.1"),
        other=issue("other", "other.test"),
        expired=issue("expired", "localhost", "127.0.0.1",
                      not_before=now - datetime.timedelta(days=10),
                      not_after=now - datetime.timedelta(days=1)))


# -- real servers ---------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def need(command: str, package: str) -> str:
    path = shutil.which(command) or shutil.which(command, path="/usr/sbin:/sbin")
    if path is None:
        pytest.skip(f"needs {command} (Debian package {package}; `python3 dev.py test` "
                    "installs it in CI, as root with apt-get)")
    return path


async def _wait_for_port(port: int, process: asyncio.subprocess.Process, log: Path) -> None:
    async with asyncio.timeout(10):
        while True:
            if process.returncode is not None:
                raise RuntimeError(f"exited with {process.returncode}: {_tail(log)}")
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                await asyncio.sleep(0.02)
                continue
            writer.close()
            return


def _write(path: Path, text: str) -> None:
    path.write_text(text)


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-2000:]


@asynccontextmanager
async def running(command: list[str], port: int, log: Path) -> AsyncIterator[None]:
    """``command`` running until the block ends, once it accepts connections on ``port``."""
    with log.open("ab") as out:
        process = await asyncio.create_subprocess_exec(
            *command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        await _wait_for_port(port, process, log)
        yield
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(5):
                await process.wait()
        except TimeoutError:
            process.kill()
            await process.wait()


@dataclass(frozen=True)
class Nginx:
    keepalive: str
    """``keepalive_timeout 1; keepalive_requests 3``: closes after every third answer."""
    close: str
    """``keepalive_timeout 0``: ``Connection: close`` on every answer."""
    tls: str
    """https://localhost with SNI (the default server has another name's certificate)."""
    tls_other: str
    """https://127.0.0.1 on the same port: no SNI for an address, so the other certificate."""
    ipv6: str
    plain_port_as_tls: str
    """https:// to the plain port: TLS spoken to a server that speaks HTTP."""
    expired: str
    """https://localhost with a certificate that expired yesterday."""
    access_log: Path


def _nginx_conf(directory: Path, ports: dict[str, int], certs: Certificates) -> str:
    answer = ANSWER.decode().replace('"', '\\"')
    events = EVENTS.decode().replace('"', '\\"').replace("\n", "\\n")
    routes = (f'location /stream/ {{ default_type text/event-stream; return 200 "{events}"; }}'
              f' location / {{ return 200 "{answer}"; }}')
    temp = " ".join(f"{kind}_temp_path {directory}/{kind};"
                    for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    return f"""
daemon off; master_process off; worker_processes 1;
error_log {directory}/error.log; pid {directory}/nginx.pid;
events {{ worker_connections 256; }}
http {{
  access_log {directory}/access.log; {temp}
  default_type application/json;
  gzip on; gzip_min_length 0; gzip_types application/json text/event-stream;
  server {{ listen 127.0.0.1:{ports['keepalive']}; listen [::1]:{ports['keepalive']};
           keepalive_timeout 1; keepalive_requests 3; {routes} }}
  server {{ listen 127.0.0.1:{ports['close']}; keepalive_timeout 0; {routes} }}
  server {{ listen 127.0.0.1:{ports['tls']} ssl; listen [::1]:{ports['tls']} ssl;
           server_name localhost;
           ssl_certificate {certs.localhost[0]}; ssl_certificate_key {certs.localhost[1]};
           {routes} }}
  server {{ listen 127.0.0.1:{ports['tls']} ssl default_server;
           listen [::1]:{ports['tls']} ssl default_server; server_name other.test;
           ssl_certificate {certs.other[0]}; ssl_certificate_key {certs.other[1]};
           {routes} }}
  server {{ listen 127.0.0.1:{ports['expired']} ssl; listen [::1]:{ports['expired']} ssl;
           ssl_certificate {certs.expired[0]}; ssl_certificate_key {certs.expired[1]};
           {routes} }}
}}
"""


@asynccontextmanager
async def nginx(directory: Path, certs: Certificates) -> AsyncIterator[Nginx]:
    binary = need("nginx", "nginx")
    ports = {name: free_port() for name in ("keepalive", "close", "tls", "expired")}
    conf = directory / "nginx.conf"
    _write(conf, _nginx_conf(directory, ports, certs))
    command = [binary, "-p", str(directory), "-c", str(conf)]
    async with running(command, ports["tls"], directory / "nginx.out"):
        yield Nginx(
            keepalive=f"http://127.0.0.1:{ports['keepalive']}/v1",
            close=f"http://127.0.0.1:{ports['close']}/v1",
            tls=f"https://localhost:{ports['tls']}/v1",
            tls_other=f"https://127.0.0.1:{ports['tls']}/v1",
            ipv6=f"http://[::1]:{ports['keepalive']}/v1",
            plain_port_as_tls=f"https://127.0.0.1:{ports['close']}/v1",
            expired=f"https://localhost:{ports['expired']}/v1",
            access_log=directory / "access.log")


@dataclass(frozen=True)
class Tinyproxy:
    url: str
    """With the credentials: ``http://user:secret@127.0.0.1:port``."""
    bare: str
    """Without them: the proxy answers 407."""
    log: Path

    def requests(self) -> list[str]:
        """The request lines the proxy has logged (``CONNECT localhost:443 ...``)."""
        lines = self.log.read_text(errors="replace").splitlines() if self.log.exists() else []
        return [line.split("): ", 1)[1] for line in lines if "Request (file descriptor" in line]


@asynccontextmanager
async def tinyproxy(directory: Path) -> AsyncIterator[Tinyproxy]:
    binary = need("tinyproxy", "tinyproxy")
    port = free_port()
    log = directory / "tinyproxy.log"
    conf = directory / "tinyproxy.conf"
    _write_tinyproxy_conf(directory, conf,
                          f"{_user()}Port {port}\nListen 127.0.0.1\n"
                          f"Timeout 10\nLogFile \"{log}\"\nLogLevel Connect\n"
                          "MaxClients 64\nAllow 127.0.0.1\n"
                          "BasicAuth user secret\nDisableViaHeader Yes\n")
    async with running([binary, "-d", "-c", str(conf)], port, directory / "tinyproxy.out"):
        yield Tinyproxy(f"http://user:secret@127.0.0.1:{port}", f"http://127.0.0.1:{port}",
                        log)


# -- the transports under test --------------------------------------------------------------

def transport_kinds() -> dict[str, type[lv.Transport]]:
    """Every transport the library ships; with ``LLMVARIANCE_CANDIDATES=1`` also the
    candidates ``benchmarks/candidates.py`` adapts (measured, not shipped)."""
    kinds: dict[str, type[lv.Transport]] = {"http1": lv.Http1Transport,
                                            "aiohttp": lv.AiohttpTransport}
    if os.environ.get("LLMVARIANCE_CANDIDATES"):
        benchmarks = str(Path(__file__).resolve().parents[2] / "benchmarks")
        if benchmarks not in sys.path:
            sys.path.insert(0, benchmarks)
        from candidates import CANDIDATES  # type: ignore[import-not-found]

        kinds.update(CANDIDATES)
    return kinds


def _write_tinyproxy_conf(directory: Path, conf: Path, text: str) -> None:
    conf.write_text(text)


def _user() -> str:
    """As root tinyproxy drops to the configured user, who must reach the log in a private
    temporary directory: stay root then."""
    return "User root\nGroup root\n" if os.geteuid() == 0 else ""
