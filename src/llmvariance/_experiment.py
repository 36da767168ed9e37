"""The batch-effect experiment: does an endpoint's output depend on what it is batched with?

The same N identical requests are sent under named conditions:

- ``sequential``: one at a time, so each request has the server (nearly) to itself;
- ``burst``: all N at once, so they share batches with each other;
- ``loaded``: all N at once while background requests with other prompts keep the
  server busy, so they share batches with strangers;
- ``concurrency=K`` for each K of the sweep: K in flight at a time.

If outputs agree sequentially but not when batched, the model is deterministic per batch,
not per sequence.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Literal

import anyio
from pydantic import BaseModel, ConfigDict

from ._analysis.report import VarianceReport
from ._client.endpoint import Endpoint, endpoint_or_default
from ._client.pool import ClientPool, PreparedCall
from ._client.ratelimit import RateLimit
from ._client.retry import RetryPolicy
from ._client.transport import Timeouts, Transport
from ._errors import ConfigError
from ._kept import KeptSamples
from ._request import (
    ChatMessage,
    ChatRequest,
    Message,
    MessagesRequest,
    Request,
    ResponsesRequest,
)
from ._sampler import SampleSet, sample_many

__all__ = ["BatchEffectResult", "VerdictKind", "background_load", "batch_effect", "judge"]

VerdictKind = Literal["batch_dependent", "varies_alone", "deterministic", "inconclusive"]

_BACKGROUND_TOPICS = ("a harbour at dawn", "how bridges carry load", "a recipe for bread",
                      "the history of clocks", "a chess opening", "migrating birds",
                      "a city under snow", "how tides work")


class BatchEffectResult(BaseModel):
    """Per-condition reports of one batch-effect experiment, and what they mean."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    request: Request
    endpoint: str
    conditions: dict[str, VarianceReport]
    """Each condition's report, in the order the conditions ran."""
    samples: dict[str, KeptSamples]
    """Each condition's samples (each reads as a list of ``Sample``)."""
    verdict: str
    """A plain-language conclusion."""
    verdict_kind: VerdictKind


def _describe(name: str, report: VarianceReport) -> str:
    return f"{name}: {report.unique_count} distinct of {report.n_ok}"


def judge(conditions: Mapping[str, VarianceReport]) -> tuple[VerdictKind, str]:
    """The verdict on a batch-effect experiment's reports (``sequential`` is the control)."""
    usable = {name: r for name, r in conditions.items() if r.n_ok >= 2}
    sequential = usable.get("sequential")
    if sequential is None:
        return "inconclusive", ("inconclusive: the sequential condition needs at least two "
                                "successful samples to compare against")
    batched = {name: r for name, r in usable.items() if name != "sequential"}
    if not batched:
        return "inconclusive", "inconclusive: no batched condition had two successful samples"
    varying = [name for name, r in batched.items() if not r.all_agree]
    details = "; ".join(_describe(name, r) for name, r in usable.items())
    fingerprints = {fp for r in usable.values() for fp in r.system_fingerprints}
    note = (f" Note: the backend fingerprint changed during the run ({len(fingerprints)} "
            "values), so some variation may come from different backends."
            if len(fingerprints) > 1 else "")
    if not sequential.all_agree:
        return "varies_alone", (
            "outputs vary even one request at a time, so batching is not needed to explain "
            "them (sampling settings, seeds, or server-side non-determinism)"
            f" ({details}).{note}")
    if varying:
        return "batch_dependent", (
            "outputs vary only when requests share batches: batch-dependent "
            f"non-determinism ({details}).{note}")
    modes = {r.top_outputs[0].text for r in usable.values() if r.top_outputs}
    if len(modes) > 1:
        return "batch_dependent", (
            "outputs agree within each condition but differ between conditions: the result "
            f"depends on how requests are batched ({details}).{note}")
    return "deterministic", (
        "outputs never varied: every condition gave one and the same output, consistent "
        f"with batch-invariant inference at this sample size ({details}).{note}")


def _background_request(request: Request, i: int) -> Request:
    topic = _BACKGROUND_TOPICS[i % len(_BACKGROUND_TOPICS)]
    text = f"Background request {i}: write about {topic}."
    if isinstance(request, ChatRequest):
        return request.model_copy(
            update={"messages": [ChatMessage(role="user", content=text)]})
    if isinstance(request, MessagesRequest):
        return request.model_copy(update={"messages": [Message(role="user", content=text)]})
    if isinstance(request, ResponsesRequest):
        return request.model_copy(update={"input": text})
    return request.model_copy(update={"prompt": text})


async def batch_effect(
    request: Request,
    n: int = 30,
    *,
    endpoint: Endpoint | None = None,
    sweep: Sequence[int] = (2, 8),
    background_concurrency: int = 8,
    conditions: Sequence[str] | None = None,
    rate_limit: RateLimit | None = None,
    retry: RetryPolicy | None = None,
    timeouts: Timeouts | None = None,
    transport: Transport | None = None,
) -> BatchEffectResult:
    """Run the batch-effect experiment: ``request`` ``n`` times under each condition.

    ``conditions`` picks and orders them (default: ``sequential``, ``burst``, ``loaded``,
    then ``concurrency=K`` for K in ``sweep`` below n). Against a paid API this sends
    about ``n * len(conditions)`` requests plus the background traffic of ``loaded``.
    """
    ConfigError.check_int("n", n, 2, " to compare outputs")
    if not isinstance(sweep, Sequence):
        raise ConfigError("sweep", f"must be a sequence of integers >= 1, got {sweep!r}")
    for k in sweep:
        ConfigError.check_int("sweep", k)
    ConfigError.check_int("background_concurrency", background_concurrency)
    known = ["sequential", "burst", "loaded", *(f"concurrency={k}" for k in sweep if 1 < k < n)]
    chosen = list(conditions) if conditions is not None else known
    unknown = [c for c in chosen if c not in known]
    if unknown:
        raise ConfigError("conditions", f"unknown {unknown}; choose from {known}")
    endpoint = endpoint_or_default(endpoint)
    reports: dict[str, VarianceReport] = {}
    samples: dict[str, KeptSamples] = {}
    async with ClientPool(endpoint, concurrency=n + background_concurrency,
                          rate_limit=rate_limit, retry=retry, timeouts=timeouts,
                          transport=transport) as pool:
        for name in chosen:
            if name == "loaded":
                result = await _loaded(pool, request, n, background_concurrency)
            else:
                width = {"sequential": 1, "burst": n}.get(name) or int(name.split("=")[1])
                result = await sample_many(request, n, pool=pool, concurrency=width,
                                           condition=name)
            reports[name] = result.report
            samples[name] = result.samples
    kind, verdict = judge(reports)
    return BatchEffectResult(request=request, endpoint=endpoint.label, conditions=reports,
                             samples=samples, verdict=verdict, verdict_kind=kind)


@contextlib.asynccontextmanager
async def background_load(pool: ClientPool, request: Request, width: int
                          ) -> AsyncIterator[None]:
    """Keep ``width`` requests with other prompts (same model and settings as ``request``)
    in flight through ``pool`` for as long as the block runs, as other users would.

    The block starts once they are in flight (or after 2 s, should a rate limit hold them
    back); their samples are discarded.
    """
    if width == 0:
        yield
        return
    calls = [pool.prepare(_background_request(request, i), "background") for i in range(width)]

    async def keep_busy(call: PreparedCall) -> None:
        while True:
            await pool.send(call, index=0)

    async with anyio.create_task_group() as tg:
        for call in calls:
            tg.start_soon(keep_busy, call)
        with anyio.move_on_after(2.0):
            while pool.in_flight < width:  # noqa: ASYNC110 - bounded poll of a counter
                await anyio.sleep(0.001)
        yield
        tg.cancel_scope.cancel()


async def _loaded(pool: ClientPool, request: Request, n: int, background: int
                  ) -> SampleSet:
    """The burst, sent while ``background`` requests with other prompts are in flight."""
    async with background_load(pool, request, background):
        return await sample_many(request, n, pool=pool, concurrency=n, condition="loaded")
