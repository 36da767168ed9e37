"""Simulated language models: one decode step over a batch of sequences at a time.

A model maps each running sequence's context to next-token logits. ``step`` sees the
whole batch so that batch-dependent models can exist; ``DenseModel`` ignores it and is
therefore batch-invariant: identical requests always get identical logits.
"""

from __future__ import annotations

import hashlib
import random
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field

from ._vocab import EOS, VOCAB

__all__ = ["Context", "DenseModel", "SimModel"]


@dataclass(slots=True)
class Context:
    """What a model conditions on: the prompt (as a stable key) and the tokens so far."""

    prompt_key: int
    tokens: list[int] = field(default_factory=list)

    @classmethod
    def for_prompt(cls, prompt: str) -> Context:
        digest = hashlib.blake2b(prompt.encode(), digest_size=8).digest()
        return cls(int.from_bytes(digest, "little"))


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

    Logits are standard normal draws seeded by (prompt, position, last two tokens), with
    end-of-text lowered by ``eos_penalty`` (at 0, the default, a sequence ends at any
    given step with probability about 1/len(vocab)).
    """

    def __init__(self, name: str = "dense", *, eos_penalty: float = 0.0) -> None:
        self.name = name
        self.fingerprint = f"fp_sim_{name}"
        self._eos_penalty = eos_penalty

    def logits(self, context: Context) -> list[float]:
        tokens = context.tokens
        last = tuple(tokens[-2:])
        rng = random.Random(hash((context.prompt_key, len(tokens), last)))
        values = [rng.gauss(0.0, 1.0) for _ in self.vocab]
        values[EOS] -= self._eos_penalty
        return values

    def step(self, batch: Sequence[Context]) -> list[list[float]]:
        return [self.logits(context) for context in batch]
