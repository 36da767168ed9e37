"""Continuous batching: every running sequence advances one token per decode step.

Requests that arrive while others decode join the running batch at the next step, as in
vLLM or SGLang, so how many requests a client has in flight decides what the model is
batched with. A step takes ``step_time_s`` of real time.

``generate`` answers with the whole ``Generation`` at the end; ``stream`` yields one
``Delta`` per decoded token as the step that made it ends. Both run the same decode, so
the deltas' text joins to exactly the ``Generation``'s. Text that could be the start of a
stop sequence is held back until the next token shows it is not (as vLLM does), so a
stream never sends text that the stop sequence then removes.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import AsyncGenerator, Mapping, Sequence
from dataclasses import dataclass, field

from ._models import Context, SimModel
from ._vocab import EOS, EOS_ALIASES

__all__ = ["Delta", "Engine", "Generation", "Job", "TokenChoice"]


@dataclass(frozen=True, slots=True)
class TokenChoice:
    token: str
    logprob: float
    top: tuple[tuple[str, float], ...]


@dataclass(slots=True)
class Job:
    """One sequence to generate; the server builds it from a request body."""

    context: Context
    max_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    """Sample from the ``top_k`` most likely tokens only (0: all)."""
    seed: int | None = None
    logit_bias: Mapping[str, float] = field(default_factory=dict)
    top_logprobs: int = 0
    stop: tuple[str, ...] = ()


@dataclass(slots=True)
class Generation:
    choices: list[TokenChoice]
    text: str
    finish_reason: str
    """``stop`` (end-of-text or a stop sequence) or ``length`` (``max_tokens`` reached)."""
    stop_sequence: str | None = None
    """The stop sequence that ended the text, if one did."""


@dataclass(frozen=True, slots=True)
class Delta:
    """What one decode step added to a streamed sequence.

    ``choice`` is the token decoded (None only for the last delta of a sequence that
    ended with end-of-text, which releases held-back text). ``text`` is what became
    visible: usually ``choice.token``, but "" while text is held back for a possible
    stop sequence, and more or less than the token once that is decided. The last delta
    has ``finish_reason`` (and ``stop_sequence``) set.
    """

    text: str
    choice: TokenChoice | None
    finish_reason: str | None = None
    stop_sequence: str | None = None


@dataclass(slots=True)
class _Running:
    job: Job
    future: asyncio.Future[Generation]
    rng: random.Random
    bias: dict[int, float]
    deltas: asyncio.Queue[Delta | None] | None = None
    """Set when streaming; None is put there if the sequence is aborted."""
    choices: list[TokenChoice] = field(default_factory=list)
    text: str = ""
    sent: int = 0
    """Characters of ``text`` already streamed."""
    stop_sequence: str | None = None


def _held_back(text: str, stops: Sequence[str]) -> int:
    """Length of the longest end of ``text`` that begins some stop sequence."""
    best = 0
    for stop in stops:
        for k in range(min(len(stop) - 1, len(text)), best, -1):
            if text.endswith(stop[:k]):
                best = k
                break
    return best


def _log_softmax(logits: list[float]) -> list[float]:
    top = max(logits)
    log_z = top + math.log(sum(math.exp(x - top) for x in logits))
    return [x - log_z for x in logits]


class Engine:
    """Runs one model's batch; ``await engine.generate(job)`` from request handlers."""

    def __init__(self, model: SimModel, *, step_time_s: float = 0.0, max_batch: int = 256):
        self.model = model
        self.step_time_s = step_time_s
        self.max_batch = max_batch
        self.batch_sizes: list[int] = []
        """The batch size of every decode step so far (for tests and experiments)."""
        self._waiting: list[_Running] = []
        self._running: list[_Running] = []
        self._wake = asyncio.Event()

    def _bias(self, logit_bias: Mapping[str, float]) -> dict[int, float]:
        bias: dict[int, float] = {}
        for key, value in logit_bias.items():
            if key in EOS_ALIASES:
                bias[EOS] = value
            elif key.isdigit() and int(key) < len(self.model.vocab):
                bias[int(key)] = value
        return bias

    def _submit(self, job: Job, deltas: asyncio.Queue[Delta | None] | None) -> _Running:
        future: asyncio.Future[Generation] = asyncio.get_running_loop().create_future()
        running = _Running(job, future, random.Random(job.seed), self._bias(job.logit_bias),
                           deltas)
        self._waiting.append(running)
        self._wake.set()
        return running

    async def generate(self, job: Job) -> Generation:
        future = self._submit(job, None).future
        try:
            return await future
        finally:
            if not future.done():  # the client went away: free the batch slot
                future.cancel()

    async def stream(self, job: Job) -> AsyncGenerator[Delta]:
        """The sequence's deltas as they are decoded; the last has ``finish_reason``.

        Raises ``CancelledError`` if the engine aborts the sequence. Close the iterator
        (``contextlib.aclosing``) to give up early and free the batch slot.
        """
        deltas: asyncio.Queue[Delta | None] = asyncio.Queue()
        future = self._submit(job, deltas).future
        try:
            while True:
                delta = await deltas.get()
                if delta is None:
                    raise asyncio.CancelledError("the engine stopped")
                yield delta
                if delta.finish_reason is not None:
                    return
        finally:
            if not future.done():
                future.cancel()

    async def run(self) -> None:
        """The decode loop; runs until cancelled."""
        while True:
            if not self._running and not self._waiting:
                self._wake.clear()
                await self._wake.wait()
            self._admit()
            if self._running:
                self._step()
            # Sleeping (even for 0 s) lets requests that arrived meanwhile join the batch.
            await asyncio.sleep(self.step_time_s)

    def abort_all(self) -> None:
        """Fail every waiting and running sequence (the server is stopping)."""
        for running in (*self._waiting, *self._running):
            if not running.future.done():
                running.future.cancel()
                if running.deltas is not None:
                    running.deltas.put_nowait(None)
        self._waiting.clear()
        self._running.clear()

    def _admit(self) -> None:
        self._running = [r for r in self._running if not r.future.done()]
        room = self.max_batch - len(self._running)
        if room > 0 and self._waiting:
            self._running.extend(r for r in self._waiting[:room] if not r.future.done())
            del self._waiting[:room]

    def _step(self) -> None:
        batch = self._running
        self.batch_sizes.append(len(batch))
        all_logits = self.model.step([r.job.context for r in batch])
        still: list[_Running] = []
        for running, logits in zip(batch, all_logits, strict=True):
            count = len(running.choices)
            finish = self._advance(running, logits)
            if running.deltas is not None:
                self._send(running, running.choices[count] if len(running.choices) > count
                           else None, finish)
            if finish is None:
                still.append(running)
            elif not running.future.done():
                running.future.set_result(Generation(running.choices, running.text, finish,
                                                     running.stop_sequence))
        self._running = still

    @staticmethod
    def _send(running: _Running, choice: TokenChoice | None, finish: str | None) -> None:
        assert running.deltas is not None
        text = running.text
        end = len(text) if finish is not None else len(text) - _held_back(text,
                                                                          running.job.stop)
        delta = Delta(text[running.sent:end], choice, finish, running.stop_sequence)
        running.sent = max(running.sent, end)
        running.deltas.put_nowait(delta)

    def _advance(self, running: _Running, logits: list[float]) -> str | None:
        """Pick and record the next token; the finish reason once the sequence is done."""
        job = running.job
        for token_id, value in running.bias.items():
            logits[token_id] += value
        logprobs = _log_softmax(logits)
        if job.temperature == 0.0:
            chosen = max(range(len(logits)), key=logits.__getitem__)
        else:
            chosen = self._sample(logits, job.temperature, job.top_p, job.top_k, running.rng)
        if chosen == EOS:
            return "stop"
        vocab = self.model.vocab
        top: tuple[tuple[str, float], ...] = ()
        if job.top_logprobs:
            best = sorted(range(len(logprobs)), key=logprobs.__getitem__, reverse=True)
            top = tuple((vocab[i], logprobs[i]) for i in best[: job.top_logprobs])
        running.choices.append(TokenChoice(vocab[chosen], logprobs[chosen], top))
        running.text += vocab[chosen]
        job.context.tokens.append(chosen)
        for stop in job.stop:
            cut = running.text.find(stop)
            if cut >= 0:
                running.text = running.text[:cut]
                running.stop_sequence = stop
                return "stop"
        if len(running.choices) >= job.max_tokens:
            return "length"
        return None

    @staticmethod
    def _sample(logits: list[float], temperature: float, top_p: float, top_k: int,
                rng: random.Random) -> int:
        scaled = _log_softmax([x / temperature for x in logits])
        order = sorted(range(len(scaled)), key=scaled.__getitem__, reverse=True)
        if top_k:
            order = order[:top_k]
        kept: list[int] = []
        mass = 0.0
        for i in order:
            kept.append(i)
            mass += math.exp(scaled[i])
            if mass >= top_p:
                break
        weights = [math.exp(scaled[i]) for i in kept]
        return rng.choices(kept, weights=weights)[0]
