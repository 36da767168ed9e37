"""Engine conditions: what else, beyond batching, changes an engine's answer.

Each is a ``Condition`` of the batch-effect experiment (registered by name, so
``batch_effect``, ``server_matrix`` and the CLI's ``--conditions`` take them):

- ``history`` (``history=chat|completions``): one at a time, each measured request right
  after a request with another prompt (by default through the same API, else through the
  one named), so the server's cache and slot state differs from sample to sample;
- ``cold`` (``cold=POLICY``): one at a time with the engine's caches out of the way,
  per ``llmvariance.engines.cache`` (default ``llamacpp``: ``"cache_prompt": false``).
  ``batch_effect(..., control="cold")`` makes it the reference that warm conditions are
  tested against;
- ``shared_prefix``: all at once while background requests whose prompts begin with the
  measured prompt keep the server busy (prefix-cache hits beside the measured requests);
- ``mixed_lengths`` (``mixed_lengths=WORDS``): all at once while background prompts of
  very different lengths, the longest ``WORDS`` words (default 1500), keep it busy, so
  long prefills (chunked, split across micro-batches) run beside the measured decodes;
- ``batch=K``: an exact batch. Each HTTP request is one OpenAI-style ``/completions``
  request whose ``prompt`` is a list of K prompts: copies of the measured prompt (each
  answer is a sample), topped up with background prompts when the cell's size is not a
  multiple of K. ``batch_mixed=K``: the measured prompt once among K-1 background prompts.
  The batch size is set by the request, not hoped for from timing. A chat request is
  rendered by llama.cpp's ``POST /apply-template`` first (llama.cpp only). What engines do
  with a prompt list: llama.cpp (b11312, verified) queues one task per prompt, so up to
  ``--parallel`` of them decode together, and answers one choice per prompt in prompt
  order with ``index`` = position (its ``usage`` covers one prompt only, so samples of a
  batch carry no usage); vLLM and SGLang (unverified) schedule the prompts as one batch
  and answer one choice per prompt with ``index`` = position.
- ``seeded`` / ``seeded_burst`` / ``seeded_loaded`` (``=SEED``, default 1234): sampling at
  the request's temperature (1.0 if it is 0) with a fixed ``seed`` — the same seed should
  give the same sample alone, in a burst, under load. They form an experiment of their
  own (``seeded`` is its control, the calibration is seeded too) and cannot be mixed with
  temperature-0 conditions. The seed goes in the body's ``seed`` (vLLM, llama.cpp; SGLang's
  OpenAI API takes ``seed`` too, its native API ``sampling_seed``: unverified).
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
from collections.abc import AsyncIterator, Callable, Sequence

import orjson

from ._client.pool import ClientPool
from ._errors import ConfigError, TransportError
from ._experiment import (
    Condition,
    Trial,
    background_load,
    background_request,
    background_text,
    register_condition,
)
from ._request import (
    ChatMessage,
    ChatRequest,
    CompletionRequest,
    Message,
    MessagesRequest,
    Request,
    ResponsesRequest,
)
from ._sample import Sample, SampleError

__all__ = ["Batch", "Cold", "History", "MixedLengths", "Seeded", "SharedPrefix",
           "prompt_text", "with_prompt"]

DEFAULT_SEED = 1234
DEFAULT_LONGEST_WORDS = 1500
_HAYSTACK = ("The harbour master logged the tides at dawn and again at dusk. ",
             "A bridge carries its load through tension and compression. ",
             "Bread needs flour, water, salt, yeast and time. ",
             "Clocks moved from water to pendulums to quartz. ")


# -- prompts of any API -----------------------------------------------------------------------

def prompt_text(request: Request) -> str:
    """The request's last user text (its prompt, for a completion)."""
    if isinstance(request, CompletionRequest):
        return request.prompt
    if isinstance(request, ResponsesRequest):
        if isinstance(request.input, str):
            return request.input
        return request.input[-1].content if request.input else ""
    messages: Sequence[ChatMessage | Message] = request.messages
    last = messages[-1].content
    return last if isinstance(last, str) else "".join(b.text for b in last)


def with_prompt(request: Request, text: str) -> Request:
    """``request`` with its last user text (or prompt) replaced by ``text``."""
    if isinstance(request, CompletionRequest):
        return request.model_copy(update={"prompt": text})
    if isinstance(request, ChatRequest):
        return request.model_copy(update={
            "messages": [*request.messages[:-1], ChatMessage(role="user", content=text)]})
    if isinstance(request, MessagesRequest):
        return request.model_copy(update={
            "messages": [*request.messages[:-1], Message(role="user", content=text)]})
    if isinstance(request.input, str) or not request.input:
        return request.model_copy(update={"input": text})
    last = request.input[-1].model_copy(update={"content": text})
    return request.model_copy(update={"input": [*request.input[:-1], last]})


def _as_api(request: Request, api: str) -> Request:
    """A request with the same text and settings through ``api`` (chat or completions)."""
    text = prompt_text(request)
    limit = (request.max_output_tokens if isinstance(request, ResponsesRequest)
             else request.max_tokens)
    if api == "chat" and not isinstance(request, ChatRequest):
        return ChatRequest(model=request.model, max_tokens=limit,
                           temperature=request.temperature or 0.0,
                           messages=[ChatMessage(role="user", content=text)])
    if api == "completions" and not isinstance(request, CompletionRequest):
        return CompletionRequest(model=request.model, max_tokens=limit,
                                 temperature=request.temperature or 0.0, prompt=text)
    return request


def _failed(trial: Trial, indices: Sequence[int], message: str, status: int | None,
            final: bool = True) -> list[Sample]:
    error = SampleError(kind="http_status" if status else "client_error", message=message[:500],
                        status=status, final=final)
    return [Sample(index=i, endpoint=trial.pool.endpoint.label, condition=trial.condition,
                   block=trial.block, error=error) for i in indices]


# -- one at a time, with history or without caches ------------------------------------------

class History(Condition):
    """One at a time, each measured request right after one with another prompt."""

    def __init__(self, api: str = "") -> None:
        self.api = api
        self.name = f"history={api}" if api else "history"

    async def run(self, trial: Trial) -> list[Sample]:
        base = _as_api(trial.request, self.api) if self.api else trial.request
        call = trial.call()
        samples = []
        for n, index in enumerate(trial.indices):
            other = trial.pool.prepare(background_request(base, index + n), "background")
            await trial.pool.send(other, 0)  # discarded: it only leaves its state behind
            samples.append(await trial.pool.send(call, index))
        return samples


class Cold(Condition):
    """One at a time with the engine's caches out of the way (``engines.cache``)."""

    def __init__(self, policy: str = "llamacpp") -> None:
        from .engines.cache import cache_policy

        self.policy = cache_policy(policy)
        self.name = "cold" if policy == "llamacpp" else f"cold={policy}"

    def adapt(self, request: Request) -> Request:
        if not self.policy.body:
            return request
        return request.model_copy(update={"extra": {**request.extra, **self.policy.body}})

    async def run(self, trial: Trial) -> list[Sample]:
        trial = dataclasses.replace(trial, request=self.adapt(trial.request))
        call = trial.call()
        samples = []
        for index in trial.indices:
            refused = await self.flush(trial.pool)
            if refused is not None:
                samples.extend(_failed(trial, [index], *refused))
                continue
            samples.append(await trial.pool.send(call, index))
        return samples

    async def flush(self, pool: ClientPool) -> tuple[str, int | None] | None:
        """POST each of the policy's flush paths; (why, status) when one fails."""
        paths = list(self.policy.flush)
        if any("{slot}" in p for p in paths):
            slots = await _total_slots(pool)
            if slots is None:
                return (f"cold={self.policy.name}: GET /props did not say how many slots "
                        "the server has", None)
            paths = [p.replace("{slot}", str(s)) for p in paths for s in range(slots)]
        for path in paths:
            try:
                response = await pool.call_server("POST", path, b"{}")
            except TransportError as exc:
                return f"cold={self.policy.name}: POST {path} failed: {exc}", None
            if not 200 <= response.status < 300:
                body = response.body[:200].decode("utf-8", "replace")
                return (f"cold={self.policy.name}: POST {path} answered {response.status}: "
                        f"{body} ({self.policy.note})", response.status)
        return None


async def _total_slots(pool: ClientPool) -> int | None:
    try:
        response = await pool.call_server("GET", "/props")
        slots = orjson.loads(response.body).get("total_slots")
    except (TransportError, orjson.JSONDecodeError, AttributeError):
        return None
    return slots if isinstance(slots, int) and slots > 0 else None


# -- all at once beside background requests of a given shape ---------------------------------

class SharedPrefix(Condition):
    """All at once while background prompts that begin with the measured one run."""

    name = "shared_prefix"

    async def run(self, trial: Trial) -> list[Sample]:
        text = prompt_text(trial.request)
        requests = [with_prompt(trial.request, f"{text}\n\n{background_text(i)}")
                    for i in range(trial.background)]
        async with _load(trial.pool, requests):
            return await trial.send(len(trial.indices))


class MixedLengths(Condition):
    """All at once while background prompts from a few words to ``longest`` keep the
    server busy (a needle in a haystack: a question after filler text)."""

    def __init__(self, longest: int = DEFAULT_LONGEST_WORDS) -> None:
        self.longest = longest
        self.name = ("mixed_lengths" if longest == DEFAULT_LONGEST_WORDS
                     else f"mixed_lengths={longest}")

    def lengths(self, count: int) -> list[int]:
        """``count`` prompt lengths in words, geometric from 8 up to ``longest``."""
        if count <= 1:
            return [self.longest][:count]
        ratio = (self.longest / 8) ** (1 / (count - 1))
        return [max(1, round(8 * ratio**i)) for i in range(count)]

    async def run(self, trial: Trial) -> list[Sample]:
        requests = [with_prompt(trial.request, haystack(words, i))
                    for i, words in enumerate(self.lengths(trial.background))]
        async with _load(trial.pool, requests):
            return await trial.send(len(trial.indices))


def haystack(words: int, i: int) -> str:
    """About ``words`` words of filler with a question at the end."""
    question = f"Question {i}: what did the harbour master log?"
    filler: list[str] = []
    sentences = itertools.cycle(_HAYSTACK)
    while sum(len(s.split()) for s in filler) + len(question.split()) < words:
        filler.append(next(sentences))
    return "".join(filler) + question




@contextlib.asynccontextmanager
async def _load(pool: ClientPool, requests: Sequence[Request]) -> AsyncIterator[None]:
    """``background_load`` with these requests instead of other topics."""
    calls = [pool.prepare(r, "background") for r in requests]
    async with background_load(pool, None, len(calls), calls=calls):
        yield


# -- an exact batch -------------------------------------------------------------------------

class Batch(Condition):
    """One ``/completions`` request of K prompts at a time: the batch size is set."""

    def __init__(self, k: int, mixed: bool = False) -> None:
        self.k = k
        self.mixed = mixed
        self.name = f"batch_mixed={k}" if mixed else f"batch={k}"

    async def run(self, trial: Trial) -> list[Sample]:
        rendered = await _as_completion(trial.pool, trial.request)
        indices = list(trial.indices)
        if isinstance(rendered, str):
            return _failed(trial, indices, rendered, None)
        text = rendered.prompt
        fillers = (background_text(i) for i in itertools.count())
        batches: list[tuple[list[str], list[int | None]]] = []
        per = 1 if self.mixed else self.k
        for start in range(0, len(indices), per):
            measured: list[int | None] = list(indices[start:start + per])
            prompts = [text] * len(measured)
            while len(prompts) < self.k:
                prompts.append(next(fillers))
                measured.append(None)
            if self.mixed:  # the measured prompt in the middle of the others
                middle = self.k // 2
                prompts[0], prompts[middle] = prompts[middle], prompts[0]
                measured[0], measured[middle] = measured[middle], measured[0]
            batches.append((prompts, measured))
        try:
            calls = [trial.pool.prepare_choices(rendered, prompts, trial.condition,
                                                block=trial.block) for prompts, _ in batches]
        except ConfigError as exc:
            return _failed(trial, indices, str(exc), None)
        found: list[Sample] = []
        # the batches of a cell go one after another: each request is the whole batch
        for call, (_, measured) in zip(calls, batches, strict=True):
            found.extend(await trial.pool.send_choices(call, measured))
        return sorted(found, key=lambda s: s.index)


async def _as_completion(pool: ClientPool, request: Request) -> CompletionRequest | str:
    """The request as a ``/completions`` request, or why it cannot be one."""
    if isinstance(request, CompletionRequest):
        return request
    if not isinstance(request, ChatRequest):
        return (f"an exact batch needs a CompletionRequest or a ChatRequest, not "
                f"{type(request).__name__}")
    messages = [m.model_dump() for m in request.messages]
    try:
        response = await pool.call_server("POST", "/apply-template",
                                          orjson.dumps({"messages": messages}))
        prompt = orjson.loads(response.body).get("prompt") if response.status == 200 else None
    except (TransportError, orjson.JSONDecodeError, AttributeError):
        prompt = None
    if not isinstance(prompt, str):
        return ("batch=K renders a chat request with llama.cpp's POST /apply-template, which "
                "this server does not answer; send a CompletionRequest with the rendered "
                "prompt instead")
    logprobs = (request.top_logprobs or 1) if request.logprobs else None
    return CompletionRequest(model=request.model, prompt=prompt, temperature=request.temperature,
                             top_p=request.top_p, max_tokens=request.max_tokens,
                             seed=request.seed, stop=request.stop,
                             logit_bias=request.logit_bias, extra=request.extra,
                             logprobs=min(logprobs, 5) if logprobs is not None else None)


# -- seeded sampling ------------------------------------------------------------------------

class Seeded(Condition):
    """Sampling with a fixed seed, one at a time (the control of its family), all at
    once, or all at once under load."""

    family = "seeded"

    def __init__(self, how: str, seed: int = DEFAULT_SEED) -> None:
        self.how = how
        self.seed = seed
        base = "seeded" if how == "sequential" else f"seeded_{how}"
        self.name = base if seed == DEFAULT_SEED else f"{base}={seed}"
        self.control = how == "sequential"

    def adapt(self, request: Request) -> Request:
        if isinstance(request, MessagesRequest | ResponsesRequest):
            if "seed" in request.extra:
                return request
            return request.model_copy(update={"extra": {**request.extra, "seed": self.seed}})
        return request.model_copy(update={"seed": self.seed,
                                          "temperature": request.temperature or 1.0})

    async def run(self, trial: Trial) -> list[Sample]:
        trial = dataclasses.replace(trial, request=self.adapt(trial.request))
        if self.how == "sequential":
            return await trial.send(1)
        if self.how == "burst":
            return await trial.send(len(trial.indices))
        async with background_load(trial.pool, trial.request, trial.background):
            return await trial.send(len(trial.indices))


def _positive(arg: str, default: int, minimum: int = 1) -> int | None:
    if not arg:
        return default
    return int(arg) if arg.isdigit() and int(arg) >= minimum else None


def _cold(arg: str) -> Condition | None:
    from .engines.cache import CACHE_POLICIES

    return Cold(arg or "llamacpp") if (arg or "llamacpp") in CACHE_POLICIES else None


def _seeded(how: str) -> Callable[[str], Condition | None]:
    def factory(arg: str) -> Condition | None:
        seed = _positive(arg, DEFAULT_SEED, 0)
        return None if seed is None else Seeded(how, seed)
    return factory


def _batch(mixed: bool) -> Callable[[str], Condition | None]:
    def factory(arg: str) -> Condition | None:
        k = _positive(arg, 0, 2 if mixed else 1) if arg else None
        return None if k is None else Batch(k, mixed)
    return factory


register_condition("history", lambda arg: History(arg) if arg in ("", "chat", "completions")
                   else None)
register_condition("cold", _cold)
register_condition("shared_prefix", lambda arg: None if arg else SharedPrefix())
register_condition("mixed_lengths", lambda arg: (
    None if (w := _positive(arg, DEFAULT_LONGEST_WORDS, 8)) is None else MixedLengths(w)))
register_condition("batch", _batch(mixed=False))
register_condition("batch_mixed", _batch(mixed=True))
register_condition("seeded", _seeded("sequential"))
register_condition("seeded_burst", _seeded("burst"))
register_condition("seeded_loaded", _seeded("loaded"))

