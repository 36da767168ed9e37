"""Simulated language models: one decode step over a batch of sequences at a time.

A model maps each running sequence's context to next-token logits. ``step`` sees the
whole batch so that batch-dependent models can exist:

- ``DenseModel`` ignores the batch: batch-invariant, identical requests always agree.
- ``MoEModel`` routes every sequence's token to its top-k of E experts, with each expert
  taking at most ``ceil(capacity_factor * B * k / E)`` tokens per step, assigned in batch
  order; a token that finds its expert full loses that expert's contribution. So a
  sequence's output depends on what it was batched with (the Soft MoE paper, sec. 2.2).
- ``DenseNBIModel`` adds a tiny perturbation that depends on the batch size, as a kernel
  whose reduction order changes with B would: only near-ties flip.
"""

from __future__ import annotations

import hashlib
import math
import random
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from ._vocab import EOS, VOCAB, next_bonus

__all__ = ["Context", "DenseModel", "DenseNBIModel", "MoEModel", "SimModel", "default_models"]

_MASK64 = (1 << 64) - 1


@dataclass(slots=True)
class Context:
    """What a model conditions on: the prompt (as a stable key) and the tokens so far."""

    prompt_key: int
    tokens: list[int] = field(default_factory=list)

    @classmethod
    def for_prompt(cls, prompt: str) -> Context:
        digest = hashlib.blake2b(prompt.encode(), digest_size=8).digest()
        return cls(int.from_bytes(digest, "little"))

    def key(self) -> int:
        """A stable hash of (prompt, position, last two tokens): ints hash the same in
        every process, unlike strings."""
        return hash((self.prompt_key, len(self.tokens), tuple(self.tokens[-2:])))


class SimModel(ABC):
    """A simulated model; ``name`` is what clients put in ``model``."""

    name: str
    fingerprint: str
    vocab: Sequence[str] = VOCAB

    @abstractmethod
    def step(self, batch: Sequence[Context]) -> list[list[float]]:
        """Next-token logits for every sequence of the batch, in batch order."""


class DenseModel(SimModel):
    """Batch-invariant: each sequence's logits depend on its own context only.

    Logits are standard normal draws seeded by (prompt, position, last two tokens), plus
    the vocabulary's grammar bonus for the previous token, with end-of-text lowered by
    ``eos_penalty`` (0 by default: outputs end now and then after a full stop).
    ``variant`` > 0 mixes into the seed: another set of weights, as a redeployed backend
    would have, answering the same prompt differently (and as reproducibly).
    """

    def __init__(self, name: str = "dense", *, eos_penalty: float = 0.0,
                 vocab: Sequence[str] | None = None, variant: int = 0,
                 fingerprint: str | None = None) -> None:
        self.name = name
        self.fingerprint = fingerprint or f"fp_sim_{name}"
        self._eos_penalty = eos_penalty
        self._variant = variant
        # A custom vocabulary (index 0 = end-of-text) has no grammar: plain draws.
        self.vocab = VOCAB if vocab is None else tuple(vocab)
        self._grammar = vocab is None

    def logits(self, context: Context) -> list[float]:
        key = context.key()
        rng = random.Random(hash((key, self._variant)) if self._variant else key)
        if self._grammar:
            bonus = next_bonus(context.tokens[-1] if context.tokens else None)
            values = [rng.gauss(0.0, 1.0) + b for b in bonus]
        else:
            values = [rng.gauss(0.0, 1.0) for _ in self.vocab]
        values[EOS] -= self._eos_penalty
        return values

    def step(self, batch: Sequence[Context]) -> list[list[float]]:
        return [self.logits(context) for context in batch]


class DenseNBIModel(DenseModel):
    """Dense, but not batch-invariant: logits get ``noise_scale`` times a standard normal
    perturbation seeded by (batch size, context). With B fixed the model is
    deterministic; when B changes, only tokens within ~``noise_scale`` of a tie flip.
    """

    def __init__(self, name: str = "dense-nbi", *, noise_scale: float = 0.01,
                 vocab: Sequence[str] | None = None) -> None:
        super().__init__(name, vocab=vocab)
        self._noise_scale = noise_scale

    def step(self, batch: Sequence[Context]) -> list[list[float]]:
        size = len(batch)
        out = []
        for context in batch:
            values = self.logits(context)
            rng = random.Random(hash((size, context.key())))
            out.append([v + self._noise_scale * rng.gauss(0.0, 1.0) for v in values])
        return out


class MoEModel(DenseModel):
    """A sparse mixture of experts with per-step expert capacity over the batch.

    Each token has a hidden state h (``hidden_dim`` standard normals seeded by its
    context). The router scores experts as ``h @ R``; the token goes to its top ``k``
    with softmax gates over those k scores. Expert e adds ``expert_scale * gate *
    (W_e @ h)`` to the dense logits. Per decode step over a batch of B sequences each
    expert accepts ``ceil(capacity_factor * B * k / E)`` tokens, filled in batch order;
    the rest lose that expert's contribution. With B = 1 nothing overflows as long as
    ``capacity_factor * k / E`` rounds up to at least 1. The default ``expert_scale``
    (0.1, against dense logits of standard deviation 1) makes a lost expert flip only
    near-ties, so identical prompts batched together typically agree for a few to a few
    dozen tokens before they split.
    """

    def __init__(
        self,
        name: str = "moe",
        *,
        experts: int = 8,
        top_k: int = 2,
        capacity_factor: float = 1.0,
        expert_scale: float = 0.1,
        hidden_dim: int = 16,
        seed: int = 0,
        vocab: Sequence[str] | None = None,
    ) -> None:
        super().__init__(name, vocab=vocab)
        if not 1 <= top_k <= experts:
            raise ValueError(f"top_k: must be between 1 and experts={experts}, got {top_k}")
        self.experts, self.top_k = experts, top_k
        self.capacity_factor, self.expert_scale = capacity_factor, expert_scale
        self.hidden_dim = hidden_dim
        rng = np.random.default_rng(seed)
        self._router = rng.standard_normal((hidden_dim, experts))
        self._weights = rng.standard_normal((experts, len(self.vocab), hidden_dim)) / math.sqrt(
            hidden_dim)
        self.dropped = 0
        """Token-expert assignments lost to full experts so far."""

    def capacity(self, batch_size: int) -> int:
        return math.ceil(self.capacity_factor * batch_size * self.top_k / self.experts)

    def hidden(self, context: Context) -> npt.NDArray[np.float64]:
        rng = np.random.default_rng((context.key() ^ 0x9E3779B97F4A7C15) & _MASK64)
        return rng.standard_normal(self.hidden_dim)

    def step(self, batch: Sequence[Context]) -> list[list[float]]:
        size = len(batch)
        logits = np.array([self.logits(c) for c in batch])
        hidden = np.array([self.hidden(c) for c in batch])
        scores = hidden @ self._router
        chosen = np.argsort(-scores, axis=1, kind="stable")[:, : self.top_k]
        top = np.take_along_axis(scores, chosen, axis=1)
        gates = np.exp(top - top.max(axis=1, keepdims=True))
        gates /= gates.sum(axis=1, keepdims=True)
        capacity = self.capacity(size)
        load = [0] * self.experts
        for i in range(size):  # batch order decides who gets a full expert
            for j in range(self.top_k):
                expert = int(chosen[i, j])
                if load[expert] >= capacity:
                    self.dropped += 1
                    continue
                load[expert] += 1
                logits[i] += self.expert_scale * gates[i, j] * (self._weights[expert] @ hidden[i])
        rows: list[list[float]] = logits.tolist()  # Python floats: numpy's are not JSON
        return rows


def default_models() -> list[SimModel]:
    """What ``SimServer()`` serves: ``dense``, ``moe`` and ``dense-nbi``."""
    return [DenseModel(), MoEModel(), DenseNBIModel()]
