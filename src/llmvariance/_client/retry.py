"""When to try a request again, and how long to wait first."""

from __future__ import annotations

import math
import random
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["RETRYABLE_STATUSES", "RetryPolicy", "is_retryable_status"]

RETRYABLE_STATUSES = frozenset({408, 409, 429})
"""Besides every 5xx. 400, 401, 403, 404 and 422 are the caller's mistake: never retried."""


def is_retryable_status(status: int) -> bool:
    return status in RETRYABLE_STATUSES or 500 <= status <= 599


class RetryPolicy(BaseModel):
    """Capped exponential backoff with jitter.

    Before attempt ``k + 1`` (after ``k`` failed attempts) the wait is::

        base_k = min(max_backoff_s, initial_backoff_s * multiplier ** (k - 1))
        wait_k = base_k * (1 - jitter * U),   U uniform in [0, 1)

    so ``jitter=0`` is the plain exponential schedule and ``jitter=1`` is "full jitter".
    A server hint (``retry-after``, ``retry-after-ms``, an exhausted limit's reset) replaces
    ``wait_k``, capped at ``max_server_wait_s``. Retried: 408, 409, 429, 5xx, connection
    errors, timeouts and malformed or truncated bodies. ``max_attempts`` counts the first
    try (1 means never retry).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_attempts: Annotated[int, Field(ge=1, le=100)] = 6
    initial_backoff_s: Annotated[float, Field(gt=0)] = 0.5
    max_backoff_s: Annotated[float, Field(gt=0)] = 30.0
    multiplier: Annotated[float, Field(ge=1.0)] = 2.0
    jitter: Annotated[float, Field(ge=0.0, le=1.0)] = 0.5
    max_server_wait_s: Annotated[float, Field(gt=0)] = 120.0
    """The longest a server's ``retry-after`` or reset may hold the run, in seconds."""

    @model_validator(mode="after")
    def _cap_not_below_start(self) -> RetryPolicy:
        if self.max_backoff_s < self.initial_backoff_s:
            raise ValueError("max_backoff_s: must be >= initial_backoff_s")
        return self

    def backoff_s(self, failures: int, rng: random.Random) -> float:
        """The wait after ``failures`` failed attempts (``failures >= 1``), in seconds."""
        # in logs, so multiplier ** failures cannot overflow
        exponent = (failures - 1) * math.log(self.multiplier)
        cap = math.log(self.max_backoff_s / self.initial_backoff_s)
        base = self.max_backoff_s if exponent >= cap else (
            self.initial_backoff_s * math.exp(exponent))
        return base * (1.0 - self.jitter * rng.random())
