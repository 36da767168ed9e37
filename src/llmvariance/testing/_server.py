"""``SimServer``: an HTTP server over the simulated models, speaking OpenAI's and Anthropic's APIs.

    async with SimServer() as base_url:          # "http://127.0.0.1:PORT/v1"
        ...

Serves, under ``/v1``: ``POST /chat/completions`` and ``POST /completions`` (OpenAI, with
logprobs, usage and ``system_fingerprint``), ``POST /responses`` (OpenAI Responses),
``POST /messages`` (Anthropic Messages) and ``GET /models``. Every POST route streams
server-sent events, one per decoded token as the engine makes it, when the body has
``"stream": true``; the ``_apis`` package has each API's bodies and events. ``stats``
counts requests and the most that were ever in flight at once, so tests can check a
client's concurrency.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import orjson
from aiohttp import web

from ._apis import APIS, Api, BadRequest, Call, openai_error
from ._engine import Engine, Generation, TokenChoice
from ._faults import Fault, FaultInjector, Faults
from ._models import SimModel, default_models

__all__ = ["ModelSwitch", "ServerStats", "SimServer"]

_SERVER_ERROR = "The server had an error while processing your request."
_STREAM_FAULTS = frozenset({"cut", "stream_cut", "stream_error"})


@dataclass(frozen=True, slots=True)
class ModelSwitch:
    """Change a model's backend mid-run: once ``after`` requests for ``model.name`` have
    arrived, the later ones are served by ``model`` (same name, other weights), as a
    provider's silent redeployment would."""

    after: int
    model: SimModel


@dataclass(slots=True)
class ServerStats:
    requests: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    rate_limited: int = 0
    completed: int = 0
    """Requests answered (any status)."""
    accepted_at: list[float] = field(default_factory=list)
    """Monotonic times at which requests passed the rate limit (for measured rates)."""


class SimServer:
    """The simulated server; ``async with`` starts it on 127.0.0.1 and yields its base URL.

    ``models`` defaults to ``dense`` (batch-invariant), ``moe`` (expert capacity over the
    batch) and ``dense-nbi`` (batch-size-dependent rounding). ``step_time_s`` is the real
    duration of one decode step. With ``api_key`` set, requests must carry it as a
    Bearer token or get 401. ``faults`` injects rate limits, errors, dropped connections,
    malformed or cut bodies and latency. ``switch`` changes a model's weights after a
    number of its requests (``ModelSwitch``).
    """

    def __init__(
        self,
        *,
        models: Iterable[SimModel] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        step_time_s: float = 0.0,
        max_batch: int = 256,
        api_key: str | None = None,
        faults: Faults | None = None,
        switch: ModelSwitch | None = None,
    ) -> None:
        model_list = list(models) if models is not None else default_models()
        self.engines: dict[str, Engine] = {
            m.name: Engine(m, step_time_s=step_time_s, max_batch=max_batch) for m in model_list
        }
        self.stats = ServerStats()
        self.switch = switch
        self._arrived: dict[str, int] = {}
        self.faults = FaultInjector(faults or Faults())
        self._stats_changed = asyncio.Condition()
        self._host, self._port = host, port
        self._api_key = api_key
        self._runner: web.AppRunner | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.base_url = ""

    def _app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware])
        for api in APIS:
            app.router.add_post(api.path, functools.partial(self._handle, api))
        app.router.add_get("/v1/models", self._models)
        return app

    async def start(self) -> str:
        # handler_cancellation: a client that hangs up frees its batch slot, as in vLLM.
        self._runner = web.AppRunner(self._app(), access_log=None, handle_signals=False,
                                     handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.base_url = f"http://{host}:{port}/v1"
        self._tasks = [asyncio.create_task(engine.run()) for engine in self.engines.values()]
        return self.base_url

    async def stop(self) -> None:
        for engine in self.engines.values():
            engine.abort_all()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> str:
        return await self.start()

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.stop()

    # -- HTTP -----------------------------------------------------------------------

    async def wait_for(self, predicate: Callable[[ServerStats], bool]) -> None:
        """Return once ``predicate(stats)`` holds; rechecked as requests start and end."""
        async with self._stats_changed:
            await self._stats_changed.wait_for(lambda: predicate(self.stats))

    async def wait_for_in_flight(self, count: int) -> None:
        """Return once at least ``count`` requests are in flight at the same time."""
        await self.wait_for(lambda stats: stats.in_flight >= count)

    async def _count_in_flight(self, delta: int) -> None:
        stats = self.stats
        stats.in_flight += delta
        stats.max_in_flight = max(stats.max_in_flight, stats.in_flight)
        if delta < 0:
            stats.completed += 1
        async with self._stats_changed:
            self._stats_changed.notify_all()

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.stats.requests += 1
        await self._count_in_flight(+1)
        try:
            response: web.StreamResponse = await handler(request)
            return response
        finally:
            await self._count_in_flight(-1)

    def _refused(self, request: web.Request, api: Api | None) -> web.Response | None:
        """The 401 for a request without the server's key, if it has one."""
        key = self._api_key
        if key is None:
            return None
        if api is None:
            if request.headers.get("Authorization") == f"Bearer {key}":
                return None
            return _error(openai_error(401, "Incorrect API key provided.",
                                       code="invalid_api_key"))
        if api.authorized(request.headers, key):
            return None
        return _error(api.error(401, "Incorrect API key provided.", code="invalid_api_key"))

    async def _models(self, request: web.Request) -> web.Response:
        refused = self._refused(request, None)
        if refused is not None:
            return refused
        data = [{"id": name, "object": "model", "created": 0, "owned_by": "llmvariance"}
                for name in self.engines]
        return _json({"object": "list", "data": data})

    async def _handle(self, api: Api, request: web.Request) -> web.StreamResponse:
        refused = self._refused(request, api)
        if refused is not None:
            return refused
        try:
            call, engine = self._parse(api, await request.read())
        except BadRequest as exc:
            return _error(api.error(exc.status, str(exc), exc.param, exc.code))
        return await self._serve(request, api, engine, call)

    def _parse(self, api: Api, raw: bytes) -> tuple[Call, Engine]:
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise BadRequest(400, "request body is not valid JSON") from None
        if not isinstance(body, dict):
            raise BadRequest(400, "request body must be a JSON object")
        name = body.get("model")
        engine = self.engines.get(name) if isinstance(name, str) else None
        if engine is None:
            raise BadRequest(404, f"The model `{name}` does not exist.", "model",
                             "model_not_found")
        assert isinstance(name, str)
        arrived = self._arrived[name] = self._arrived.get(name, 0) + 1
        switch = self.switch
        if switch is not None and switch.model.name == name and arrived == switch.after + 1:
            engine.model = switch.model  # sequences in flight finish on the new weights
        return api.parse(body, engine.model), engine

    async def _serve(self, request: web.Request, api: Api, engine: Engine, call: Call
                     ) -> web.StreamResponse:
        """Generate, unless an injected fault says otherwise."""
        injector = self.faults
        if injector.faults.latency_s:
            await asyncio.sleep(injector.faults.latency_s)
        fault, headers = injector.decide(call.prompt_tokens + call.job.max_tokens,
                                         stream=call.stream, anthropic=api.anthropic)
        if fault == "429":
            self.stats.rate_limited += 1
            return _error(api.error(429, "Rate limit reached for requests. Please try again "
                                    "later.", code="rate_limit_exceeded"), headers)
        self.stats.accepted_at.append(time.monotonic())
        if fault in ("500", "502", "503"):
            return _error(api.error(int(fault), _SERVER_ERROR), headers)
        if fault == "drop":
            _hang_up(request)
            return web.Response()
        if fault == "malformed":
            return web.Response(body=call.broken(), headers=headers, content_type=(
                "text/event-stream" if call.stream else "application/json"))
        if call.stream:
            return await self._stream(request, engine, call, fault, headers)
        siblings = getattr(call, "siblings", None)
        if siblings:  # a prompt list: every prompt decodes at once, answered together
            calls = [call, *siblings]
            gens = await asyncio.gather(*(engine.generate(c.job) for c in calls))
            body = call.body_many(list(gens))  # type: ignore[attr-defined]
        else:
            body = call.body(await engine.generate(call.job))
        if fault == "cut":
            response = web.StreamResponse(headers=headers)
            response.content_type = "application/json"
            response.content_length = len(body)
            await response.prepare(request)
            await response.write(body[: len(body) // 2])
            _hang_up(request)
            return response
        return web.Response(body=body, content_type="application/json", headers=headers)

    async def _stream(self, request: web.Request, engine: Engine, call: Call,
                      fault: Fault | None, headers: Mapping[str, str]) -> web.StreamResponse:
        """Send one event per token as the engine decodes it, then the terminal events.

        A stream fault trips at half of ``max_tokens`` (or at the last token, if the text
        ends sooner), always before the terminal events: ``stream_error`` sends the API's
        error event there and ends the body cleanly; ``cut`` and ``stream_cut`` send half
        of that token's event and close the connection inside the chunked body.
        """
        trip_at = max(1, call.job.max_tokens // 2) if fault in _STREAM_FAULTS else None
        response = web.StreamResponse(headers=headers)
        response.content_type = "text/event-stream"
        response.headers["Cache-Control"] = "no-cache"
        await response.prepare(request)
        await _write(response, call.head())
        choices: list[TokenChoice] = []
        parts: list[str] = []
        gen: Generation | None = None
        tripped = b""
        async with contextlib.aclosing(engine.stream(call.job)) as deltas:
            async for delta in deltas:
                if delta.choice is not None:
                    choices.append(delta.choice)
                parts.append(delta.text)
                event = call.delta(delta)
                if trip_at is not None and (len(choices) >= trip_at
                                            or delta.finish_reason is not None):
                    tripped = event
                    break
                await _write(response, event)
                if delta.finish_reason is not None:
                    gen = Generation(choices, "".join(parts), delta.finish_reason,
                                     delta.stop_sequence)
        if trip_at is None:
            assert gen is not None
            await _write(response, call.tail(gen))
        elif fault == "stream_error":
            await _write(response, tripped + call.error_event(_SERVER_ERROR))
        else:
            await _write(response, tripped[: len(tripped) // 2])
            _hang_up(request)
            return response
        await response.write_eof()
        return response


async def _write(response: web.StreamResponse, data: bytes) -> None:
    if data:
        await response.write(data)


def _error(error: tuple[int, bytes], headers: Mapping[str, str] | None = None) -> web.Response:
    status, body = error
    # aiohttp knows no reason phrase for Anthropic's 529
    return web.Response(status=status, reason="Overloaded" if status == 529 else None,
                        body=body, content_type="application/json", headers=headers)


def _json(payload: Any) -> web.Response:
    return web.Response(body=orjson.dumps(payload), content_type="application/json")


def _hang_up(request: web.Request) -> None:
    if request.transport is not None:
        request.transport.close()
