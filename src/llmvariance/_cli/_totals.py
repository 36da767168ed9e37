"""Before a run, what it would send (``--dry-run``); after it, what it cost (the totals).

The estimates are the rate limiter's: ~4 characters a prompt token plus the completion's
token limit per request. No price table is built in (it would go stale): the cost is
printed when ``--price-in`` / ``--price-out`` give dollars per million tokens.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterable

from .._client.ratelimit import DEFAULT_COMPLETION_ALLOWANCE, estimate_tokens
from .._request import ChatRequest, CompletionRequest, Request, ResponsesRequest
from .._sample import Sample

__all__ = ["Tally", "add_cost_flags", "dry_run_text", "record_bytes"]


def add_cost_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("before and after the run")
    group.add_argument("--dry-run", action="store_true",
                       help="print what would be sent (requests, estimated tokens, the time "
                            "the rate limits imply, the run file's size) and send nothing")
    group.add_argument("--no-preflight", action="store_true",
                       help="skip the preflight (GET /models, and one request when the model "
                            "is not listed) that turns an unreachable server, a bad key or "
                            "an unknown model into one line before N requests go out")
    group.add_argument("--price-in", type=float, metavar="USD",
                       help="dollars per million prompt tokens: the totals then show the cost")
    group.add_argument("--price-out", type=float, metavar="USD",
                       help="dollars per million completion tokens")
    group.add_argument("-q", "--quiet", action="store_true",
                       help="no progress, notes or totals on stderr (errors still print)")


def record_bytes(request: Request) -> int:
    """About how many bytes one sample record takes in a run file: ~450 for its fields,
    ~5 a completion token, or 40 + 30 per alternative a token with logprobs."""
    alternatives = _alternatives(request)
    per_token = 5 if alternatives is None else 40 + 30 * alternatives
    return 450 + _completion_limit(request) * per_token


def _completion_limit(request: Request) -> int:
    if isinstance(request, ResponsesRequest):
        return request.max_output_tokens or DEFAULT_COMPLETION_ALLOWANCE
    return request.max_tokens or DEFAULT_COMPLETION_ALLOWANCE


def _alternatives(request: Request) -> int | None:
    """How many alternatives a token's logprobs carry, or None without logprobs."""
    if isinstance(request, ChatRequest):
        return (request.top_logprobs or 0) if request.logprobs else None
    if isinstance(request, CompletionRequest | ResponsesRequest):
        value = request.logprobs if isinstance(request, CompletionRequest) else (
            request.top_logprobs)
        return value
    return None


def _prompt_tokens(request: Request) -> int:
    return estimate_tokens(request) - _completion_limit(request)


_LISTED = 10
"""Requests named one by one in a dry run; a suite's others are counted."""


def dry_run_text(parts: Iterable[tuple[str, Request, int]], *, rpm: float | None,
                 tpm: float | None, extra: str = "") -> str:
    """What a run would send: ``parts`` are (label, request, how many times)."""
    lines = ["dry run: nothing is sent"]
    requests = tokens = prompt = size = 0
    listed = 0
    for label, request, count in parts:
        each = estimate_tokens(request)
        requests += count
        tokens += each * count
        prompt += _prompt_tokens(request) * count
        size += record_bytes(request) * count
        listed += 1
        if listed <= _LISTED:
            lines.append(f"  {label}: {count:,} x {request.model} (about {each:,} tokens "
                         "each)")
    if listed > _LISTED:
        lines.append(f"  ... and {listed - _LISTED:,} more requests")
    lines.append(f"requests          {requests:,}{extra}")
    lines.append(f"tokens (at most)  about {tokens:,} ({prompt:,} prompt + "
                 f"{tokens - prompt:,} completion limit)")
    waits, limits = [], []
    if rpm:
        waits.append(requests / rpm)
        limits.append(f"--rpm {rpm:g}")
    if tpm:
        waits.append(tokens / tpm)
        limits.append(f"--tpm {tpm:g}")
    lines.append("time the limits imply  " + (
        f"at least {_duration(60 * max(waits))} ({', '.join(limits)})" if waits
        else "no client-side limit set (--rpm/--tpm)"))
    lines.append(f"run file          about {_size(size)}")
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _size(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


class Tally:
    """Counts a run's samples as they finish (an ``on_sample`` hook): tokens from
    ``usage``, requests, the wall time since it was made."""

    __slots__ = ("completion_tokens", "failed", "prompt_tokens", "requests", "start",
                 "without_usage")

    def __init__(self) -> None:
        self.start = time.monotonic()
        self.requests = self.failed = self.without_usage = 0
        self.prompt_tokens = self.completion_tokens = 0

    def __call__(self, sample: Sample) -> None:
        self.requests += 1
        self.failed += sample.error is not None
        usage = sample.usage
        if usage is None:
            self.without_usage += sample.error is None
            return
        self.prompt_tokens += usage.prompt_tokens or 0
        self.completion_tokens += usage.completion_tokens or 0

    def add(self, samples: Iterable[Sample]) -> Tally:
        for sample in samples:
            self(sample)
        return self

    def text(self, price_in: float | None = None, price_out: float | None = None,
             note: str = "") -> str:
        """One line: ``totals: 30 requests in 2.1 s (14.3/s), 1,200 prompt + 3,840
        completion tokens, $0.0042``."""
        wall = time.monotonic() - self.start
        rate = self.requests / wall if wall > 0 else 0.0
        parts = [f"totals: {self.requests:,} requests ({self.failed:,} failed) in "
                 f"{_duration(wall) if wall >= 1 else f'{wall:.2f} s'} ({rate:.1f}/s)",
                 f"{self.prompt_tokens:,} prompt + {self.completion_tokens:,} completion "
                 "tokens"]
        if self.without_usage:
            parts[-1] += f" ({self.without_usage:,} ok responses reported no usage)"
        if price_in is not None or price_out is not None:
            cost = (self.prompt_tokens * (price_in or 0.0)
                    + self.completion_tokens * (price_out or 0.0)) / 1e6
            parts.append(f"${cost:,.4f} at ${price_in or 0:g}/${price_out or 0:g} per "
                         "million tokens in/out")
        return ", ".join(parts) + (f"; {note}" if note else "")
