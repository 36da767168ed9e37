"""``assert_reproducible``: a test that fails when a server stops answering one request the
same way, with a message that says what varied.

    from llmvariance.testing import assert_reproducible

    def test_my_server_is_batch_invariant(server_url):
        assert_reproducible(lv.ChatRequest(model="m", messages=[...]), n=30,
                            endpoint=lv.Endpoint(base_url=server_url),
                            conditions=("sequential", "burst"))

It runs ``lv.check`` (the same arguments) and raises ``AssertionError`` unless it passed:
the evidence in one line, then for each condition that varied where its outputs first
differ and the most common of them with their counts. In an ``async`` test, call
``(await lv.check(...)).assert_holds()`` instead.
"""

from __future__ import annotations

from typing import Any

from .._check import CheckResult, check_sync
from .._request import Request

__all__ = ["assert_reproducible"]


def assert_reproducible(request: Request, n: int = 30, **kwargs: Any) -> CheckResult:
    """Fail the calling test unless ``lv.check(request, n, **kwargs)`` passes; return the
    ``CheckResult`` when it does (for further assertions)."""
    __tracebackhide__ = True  # pytest shows the caller's line, not this one
    result = check_sync(request, n, **kwargs)
    result.assert_holds()
    return result
