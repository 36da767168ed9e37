"""What a server configuration costs: throughput and latency of one request, measured.

``measure_speed(request, endpoint=, concurrency=c, requests=m)`` sends ``m`` copies with at
most ``c`` in flight and reports completion tokens per second of wall time (all of the
run's completion tokens over the time from the first send to the last answer) and the
median and 90th percentile of the per-request latency. Completion tokens are the server's
``usage.completion_tokens``, else the number of tokens returned with logprobs. On a
machine shared with other work the figures move with that work: compare configurations
measured in the same run.
"""

from __future__ import annotations

import time

import numpy as np
from pydantic import BaseModel, ConfigDict

from ._client.endpoint import Endpoint
from ._client.retry import RetryPolicy
from ._client.transport import Timeouts
from ._errors import ConfigError
from ._request import Request
from ._sample import Sample
from ._sampler import sample_many

__all__ = ["Speed", "measure_speed"]


class Speed(BaseModel):
    """Throughput and latency of one request at one concurrency."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    concurrency: int
    requests: int
    failed: int = 0
    completion_tokens: int
    seconds: float
    """Wall time from the first request sent to the last answer."""
    tokens_per_s: float
    """``completion_tokens / seconds``."""
    latency_median_s: float | None
    latency_p90_s: float | None

    def describe(self) -> str:
        median = "-" if self.latency_median_s is None else f"{self.latency_median_s:.2f}"
        p90 = "-" if self.latency_p90_s is None else f"{self.latency_p90_s:.2f}"
        return (f"{self.tokens_per_s:.1f} tokens/s at concurrency {self.concurrency}, "
                f"latency median {median} s, p90 {p90} s")


def _completion_tokens(sample: Sample) -> int:
    if sample.usage is not None and sample.usage.completion_tokens is not None:
        return sample.usage.completion_tokens
    return len(sample.tokens or ())


def speed_of(samples: list[Sample], concurrency: int, seconds: float) -> Speed:
    """The speed figures of ``samples`` sent at ``concurrency`` in ``seconds`` (pure)."""
    ok = [s for s in samples if s.error is None]
    tokens = sum(_completion_tokens(s) for s in ok)
    latencies = np.array([s.latency_s for s in ok if s.latency_s is not None], dtype=float)
    median = float(np.median(latencies)) if latencies.size else None
    p90 = float(np.quantile(latencies, 0.9)) if latencies.size else None
    return Speed(concurrency=concurrency, requests=len(samples), failed=len(samples) - len(ok),
                 completion_tokens=tokens, seconds=seconds,
                 tokens_per_s=tokens / seconds if seconds > 0 else 0.0,
                 latency_median_s=median, latency_p90_s=p90)


async def measure_speed(request: Request, *, endpoint: Endpoint, concurrency: int,
                        requests: int | None = None, retry: RetryPolicy | None = None,
                        timeouts: Timeouts | None = None) -> Speed:
    """Send ``requests`` copies of ``request`` (default ``2 * concurrency``, at least 4)
    with at most ``concurrency`` in flight; their throughput and latency."""
    ConfigError.check_int("concurrency", concurrency)
    count = requests if requests is not None else max(4, 2 * concurrency)
    ConfigError.check_int("requests", count)
    started = time.perf_counter()
    result = await sample_many(request, count, endpoint=endpoint, concurrency=concurrency,
                               retry=retry, timeouts=timeouts)
    return speed_of(list(result.samples), concurrency, time.perf_counter() - started)
