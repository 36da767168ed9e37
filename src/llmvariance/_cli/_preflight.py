"""The preflight: before N requests go out, make sure one could come back.

One ``GET {base_url}/models`` (no tokens spent, no cache warmed) with no retries: a
refused connection, an unknown host, a bad key (401/403) or a server that is not there
becomes one line within seconds instead of N recorded failures after minutes of retries.
When the server lists models and the requested one is not among them, one real request
is sent (with no retries) to ask whether it exists — some servers (llama.cpp) answer any
model name, others (OpenAI, vLLM) refuse unknown ones with 404. A server without a
``/models`` route is not a failure: the run's own early stop covers the rest.
"""

from __future__ import annotations

import orjson

from .._client.endpoint import Endpoint
from .._client.http1 import Http1Transport
from .._client.pool import ClientPool
from .._client.providers import adapter_for
from .._client.retry import RetryPolicy
from .._client.transport import HTTPRequest, Timeouts, Transport
from .._errors import ConnectError, RequestTimeout, TransportError
from .._request import Request

__all__ = ["PREFLIGHT_TIMEOUTS", "preflight"]

PREFLIGHT_TIMEOUTS = Timeouts(connect_s=4.0, read_s=30.0, total_s=30.0)
"""A server that does not accept a connection in 4 s will not serve N requests either."""

_REFUSED_STATUSES = frozenset({401, 403})
"""The key is missing or wrong: every request would say the same."""


async def preflight(endpoint: Endpoint, requests: list[Request],
                    transport: Transport | None = None) -> str | None:
    """Why no request to ``endpoint`` can succeed, in one line, or None when one could.

    ``requests``: the distinct requests the run will send (a suite's first few), whose
    models are looked up in the server's list.
    """
    if not requests:
        return None
    own = transport or Http1Transport(
        max_connections=1, timeouts=PREFLIGHT_TIMEOUTS, trust_env=endpoint.trust_env,
        proxy=None if endpoint.proxy is None else endpoint.proxy.get_secret_value())
    try:
        return await _check(endpoint, requests, own)
    finally:
        if transport is None:
            await own.aclose()


async def _check(endpoint: Endpoint, requests: list[Request], own: Transport) -> str | None:
    adapter = adapter_for(requests[0], endpoint)
    async with ClientPool(endpoint, concurrency=1, retry=RetryPolicy(max_attempts=1),
                          transport=own) as pool:
        listing = HTTPRequest("GET", endpoint.base_url + "/models",
                              adapter.headers(endpoint))
        where = f"{endpoint.base_url}/models"
        try:
            response = await own.send(listing)
        except (ConnectError, RequestTimeout, TransportError) as exc:
            return f"cannot reach {endpoint.base_url}: {exc}"
        if response.status in _REFUSED_STATUSES:
            return (f"{endpoint.label} refused the key ({where}): "
                    f"{adapter.error_message(response.status, response.body)}")
        listed = _model_ids(response.body) if response.status == 200 else None
        for request in requests:
            if listed is None or request.model in listed:
                continue
            sample = await pool.send(pool.prepare(request, "preflight"), 0)
            error = sample.error
            if error is not None and (error.final or error.kind == "connection"):
                shown = ", ".join(sorted(listed)[:5]) + (", ..." if len(listed) > 5 else "")
                return (f"model {request.model!r}: {error.message} (the server lists: "
                        f"{shown or 'no models'})")
    return None


def _model_ids(body: bytes) -> set[str] | None:
    """The ids of an OpenAI or Anthropic model list, or None when the body is not one."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    entries = data.get("data") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        return None
    ids = {e.get("id") for e in entries if isinstance(e, dict)}
    return {i for i in ids if isinstance(i, str)}
