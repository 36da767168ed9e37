"""``SimServer``: an OpenAI-compatible HTTP server over the simulated models.

    async with SimServer() as base_url:          # "http://127.0.0.1:PORT/v1"
        ...

Serves ``POST /v1/chat/completions``, ``POST /v1/completions`` and ``GET /v1/models``
with logprobs, usage and ``system_fingerprint``. ``stats`` counts requests and the most
that were ever in flight at once, so tests can check a client's concurrency.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import orjson
from aiohttp import web

from ._engine import Engine, Generation, Job
from ._faults import FaultInjector, Faults
from ._models import Context, SimModel, default_models
from ._vocab import prompt_tokens

__all__ = ["ServerStats", "SimServer"]

_DEFAULT_CHAT_MAX_TOKENS = 256
_DEFAULT_COMPLETION_MAX_TOKENS = 16  # OpenAI's default for /completions


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


class _BadRequest(Exception):
    def __init__(self, status: int, message: str, param: str | None = None,
                 code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.param, self.code = status, param, code


def _error(status: int, message: str, param: str | None = None, code: str | None = None,
           headers: Mapping[str, str] | None = None) -> web.Response:
    kind = ("invalid_request_error" if status < 500 else "server_error") if status != 429 \
        else "requests"
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json",
                        headers=headers)


def _json(payload: Any) -> web.Response:
    return web.Response(body=orjson.dumps(payload), content_type="application/json")


class SimServer:
    """The simulated server; ``async with`` starts it on 127.0.0.1 and yields its base URL.

    ``models`` defaults to ``dense`` (batch-invariant), ``moe`` (expert capacity over the
    batch) and ``dense-nbi`` (batch-size-dependent rounding). ``step_time_s`` is the real
    duration of one decode step. With ``api_key`` set, requests must carry it as a
    Bearer token or get 401. ``faults`` injects rate limits, errors, dropped connections,
    malformed or cut bodies and latency.
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
    ) -> None:
        model_list = list(models) if models is not None else default_models()
        self.engines: dict[str, Engine] = {
            m.name: Engine(m, step_time_s=step_time_s, max_batch=max_batch) for m in model_list
        }
        self.stats = ServerStats()
        self.faults = FaultInjector(faults or Faults())
        self._stats_changed = asyncio.Condition()
        self._host, self._port = host, port
        self._api_key = api_key
        self._runner: web.AppRunner | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.base_url = ""

    def _app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware])
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/completions", self._completions)
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
            if self._api_key is not None and (
                request.headers.get("Authorization") != f"Bearer {self._api_key}"
            ):
                return _error(401, "Incorrect API key provided.", code="invalid_api_key")
            try:
                response: web.StreamResponse = await handler(request)
            except _BadRequest as exc:
                return _error(exc.status, str(exc), exc.param, exc.code)
            return response
        finally:
            await self._count_in_flight(-1)

    async def _models(self, request: web.Request) -> web.Response:
        data = [{"id": name, "object": "model", "created": 0, "owned_by": "llmvariance"}
                for name in self.engines]
        return _json({"object": "list", "data": data})

    async def _body(self, request: web.Request) -> tuple[dict[str, Any], Engine]:
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            raise _BadRequest(400, "request body is not valid JSON") from None
        if not isinstance(body, dict):
            raise _BadRequest(400, "request body must be a JSON object")
        name = body.get("model")
        engine = self.engines.get(name) if isinstance(name, str) else None
        if engine is None:
            raise _BadRequest(404, f"The model `{name}` does not exist.", "model",
                              "model_not_found")
        if body.get("stream"):
            raise _BadRequest(400, "stream=true is not supported by this server yet", "stream")
        if body.get("n", 1) != 1:
            raise _BadRequest(400, "only n=1 is supported", "n")
        return body, engine

    @staticmethod
    def _job(body: Mapping[str, Any], prompt: str, default_max: int, top: int) -> Job:
        stop = body.get("stop") or ()
        try:
            return Job(
                context=Context.for_prompt(prompt),
                max_tokens=int(body.get("max_tokens") or default_max),
                temperature=float(body.get("temperature", 1.0)),
                top_p=float(body.get("top_p", 1.0)),
                seed=body.get("seed"),
                logit_bias=dict(body.get("logit_bias") or {}),
                top_logprobs=top,
                stop=(stop,) if isinstance(stop, str) else tuple(stop),
            )
        except (TypeError, ValueError) as exc:
            raise _BadRequest(400, f"invalid parameter: {exc}") from None

    def _envelope(self, kind: str, engine: Engine, prompt: str, gen: Generation,
                  choice: dict[str, Any]) -> bytes:
        prompt_count = prompt_tokens(prompt)
        return orjson.dumps({
            "id": f"{kind[:4]}-{uuid.uuid4().hex[:24]}",
            "object": kind,
            "created": int(time.time()),
            "model": engine.model.name,
            "system_fingerprint": engine.model.fingerprint,
            "choices": [choice],
            "usage": {
                "prompt_tokens": prompt_count,
                "completion_tokens": len(gen.choices),
                "total_tokens": prompt_count + len(gen.choices),
                # as OpenAI sends them, so clients meet the fields they must tolerate
                "prompt_tokens_details": {"cached_tokens": 0},
                "completion_tokens_details": {"reasoning_tokens": 0},
            },
        })

    async def _serve(self, request: web.Request, kind: str, engine: Engine, prompt: str,
                     job: Job, make_choice: Callable[[Generation], dict[str, Any]]
                     ) -> web.StreamResponse:
        """Generate, unless an injected fault says otherwise."""
        injector = self.faults
        if injector.faults.latency_s:
            await asyncio.sleep(injector.faults.latency_s)
        fault, headers = injector.decide(prompt_tokens(prompt) + job.max_tokens)
        if fault == "429":
            self.stats.rate_limited += 1
            return _error(429, "Rate limit reached for requests. Please try again later.",
                          code="rate_limit_exceeded", headers=headers)
        self.stats.accepted_at.append(time.monotonic())
        if fault in ("500", "502", "503"):
            return _error(int(fault), "The server had an error while processing your request.",
                          headers=headers)
        if fault == "drop":
            _hang_up(request)
            return web.Response()
        if fault == "malformed":
            return web.Response(body=b'{"id": "broken", "object": "' + kind.encode() + b'", "ch',
                                content_type="application/json", headers=headers)
        gen = await engine.generate(job)
        body = self._envelope(kind, engine, prompt, gen, make_choice(gen))
        if fault == "cut":
            response = web.StreamResponse(headers=headers)
            response.content_type = "application/json"
            response.content_length = len(body)
            await response.prepare(request)
            await response.write(body[: len(body) // 2])
            _hang_up(request)
            return response
        return web.Response(body=body, content_type="application/json", headers=headers)

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body, engine = await self._body(request)
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise _BadRequest(400, "messages must be a non-empty array", "messages")
        try:
            prompt = "\n".join(f"{m['role']}: {m['content']}" for m in messages)
        except (KeyError, TypeError):
            raise _BadRequest(400, "each message needs a role and content", "messages") from None
        want_logprobs = bool(body.get("logprobs"))
        top = int(body.get("top_logprobs") or 0) if want_logprobs else 0

        def choice(gen: Generation) -> dict[str, Any]:
            logprobs = None
            if want_logprobs:
                logprobs = {"content": [
                    {"token": c.token, "logprob": c.logprob, "bytes": list(c.token.encode()),
                     "top_logprobs": [{"token": t, "logprob": lp, "bytes": list(t.encode())}
                                      for t, lp in c.top]}
                    for c in gen.choices
                ]}
            return {"index": 0, "message": {"role": "assistant", "content": gen.text},
                    "logprobs": logprobs, "finish_reason": gen.finish_reason}

        job = self._job(body, prompt, _DEFAULT_CHAT_MAX_TOKENS, top)
        return await self._serve(request, "chat.completion", engine, prompt, job, choice)

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        body, engine = await self._body(request)
        prompt = body.get("prompt")
        if not isinstance(prompt, str):
            raise _BadRequest(400, "prompt must be a string", "prompt")
        top = body.get("logprobs")

        def choice(gen: Generation) -> dict[str, Any]:
            logprobs = None
            if top is not None:
                offsets, at = [], len(prompt)
                for c in gen.choices:
                    offsets.append(at)
                    at += len(c.token)
                logprobs = {
                    "tokens": [c.token for c in gen.choices],
                    "token_logprobs": [c.logprob for c in gen.choices],
                    "top_logprobs": [dict(c.top) for c in gen.choices] if top else None,
                    "text_offset": offsets,
                }
            return {"index": 0, "text": gen.text, "logprobs": logprobs,
                    "finish_reason": gen.finish_reason}

        job = self._job(body, prompt, _DEFAULT_COMPLETION_MAX_TOKENS, int(top or 0))
        return await self._serve(request, "text_completion", engine, prompt, job, choice)


def _hang_up(request: web.Request) -> None:
    if request.transport is not None:
        request.transport.close()
