from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from llmvariance.testing import SimServer


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
    # Tests must never pick up a developer's real key or endpoint.
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
