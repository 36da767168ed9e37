from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator

import pytest
import uvicorn
from app import openai_app as mock_ai_api  # mock-ai-api installs its code as `app`
from hypothesis import settings

from llmvariance.testing import SimServer

# Property tests assert results, not speed: on a 2-core machine shared with other work one
# example can take longer than Hypothesis's 200 ms deadline, which it reports as a failure.
settings.register_profile("shared-machine", deadline=None)
settings.load_profile("shared-machine")


@contextlib.contextmanager
def served(*options: str) -> Iterator[str]:
    """``llmvariance serve --port 0 OPTIONS`` in a process of its own: its base URL while
    it runs; stopped with SIGTERM after, which it must answer by exiting cleanly."""
    with subprocess.Popen([sys.executable, "-m", "llmvariance", "serve", "--port", "0",
                           *options], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                          text=True) as proc:
        try:
            assert proc.stdout is not None
            url = proc.stdout.readline().strip()
            assert url.startswith("http://127.0.0.1:") and url.endswith("/v1"), url
            yield url
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=10) == 0


@pytest.fixture
def anyio_backend() -> str:
    # aiohttp runs on asyncio only.
    return "asyncio"


@pytest.fixture
async def sim() -> AsyncIterator[SimServer]:
    server = SimServer()
    async with server:
        yield server


@pytest.fixture(autouse=True)
def _no_openai_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # Tests must never pick up a developer's real key or endpoint, nor send their
    # 127.0.0.1 traffic to a proxy of the machine's.
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.delenv("OPENAI_API_BASE", raising=False)
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


@pytest.fixture
async def third_party_url() -> AsyncIterator[str]:
    """mock-ai-api, an OpenAI-compatible server this project did not write."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(mock_ai_api.app, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        async with asyncio.timeout(10):
            while not server.started:  # noqa: ASYNC110 - uvicorn offers no event for this
                await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.should_exit = True
        await task
        sock.close()
