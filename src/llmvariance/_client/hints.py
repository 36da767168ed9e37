"""Server feedback: what a response's headers say about when to send again.

Read, in order of precedence for "when may I retry":
``retry-after-ms`` (milliseconds), ``retry-after`` (seconds or an HTTP date), then the
reset of whichever limit is exhausted. Limit state comes from OpenAI's
``x-ratelimit-{limit,remaining,reset}-{requests,tokens}`` (reset as a Go-style duration:
``1s``, ``6m0s``, ``20ms``, ``1h2m3.5s``) and Anthropic's
``anthropic-ratelimit-{requests,tokens}-{limit,remaining,reset}`` (reset as an RFC 3339
time).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime

__all__ = ["ServerHints", "has_limit_state", "parse_duration", "parse_hints"]

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|us|µs|ns|h|m|s)")
_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6,
                 "ns": 1e-9}


def parse_duration(value: str) -> float | None:
    """Seconds in a Go-style duration (``6m0s``, ``20ms``) or a bare number of seconds."""
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    parts = _DURATION_PART.findall(value)
    if not parts or "".join(n + u for n, u in parts) != value:
        return None
    return sum(float(number) * _UNIT_SECONDS[unit] for number, unit in parts)


def _seconds_until(value: str, now_epoch: float) -> float | None:
    """Seconds from ``now_epoch`` until an RFC 3339 or HTTP date; None if unparseable."""
    try:
        when = datetime.fromisoformat(value.strip())
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - now_epoch)


def _int(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(float(value))
    except (ValueError, OverflowError):  # "inf", "nan", "1e400"
        return None


@dataclass(frozen=True, slots=True)
class ServerHints:
    """What one response's headers said; None where a header was absent or unreadable."""

    retry_after_s: float | None = None
    remaining_requests: int | None = None
    remaining_tokens: int | None = None
    reset_requests_s: float | None = None
    reset_tokens_s: float | None = None

    def exhausted_for_s(self, next_cost: int = 1) -> float | None:
        """How long until the server will take the next request, if a limit is used up."""
        waits = []
        if self.remaining_requests is not None and self.remaining_requests <= 0:
            waits.append(self.reset_requests_s)
        if self.remaining_tokens is not None and self.remaining_tokens < next_cost:
            waits.append(self.reset_tokens_s)
        known = [w for w in waits if w is not None]
        return max(known) if known else None


_LIMIT_STATE = ("x-ratelimit-remaining-requests", "x-ratelimit-remaining-tokens",
                "anthropic-ratelimit-requests-remaining", "anthropic-ratelimit-tokens-remaining")


def has_limit_state(headers: Mapping[str, str]) -> bool:
    """Whether a (case-insensitive) header mapping reports remaining limits at all."""
    # spelled out: on every response's path, and a generator costs more than the lookups
    a, b, c, d = _LIMIT_STATE
    return a in headers or b in headers or c in headers or d in headers


def parse_hints(headers: Mapping[str, str], now_epoch: float) -> ServerHints:
    """The ``ServerHints`` in ``headers``; ``now_epoch`` resolves dates.

    ``headers`` must look names up case-insensitively, as transports deliver them.
    """
    if not headers:
        return ServerHints()
    h = headers

    retry_after: float | None = None
    if "retry-after-ms" in h:
        ms = parse_duration(h["retry-after-ms"])
        retry_after = None if ms is None else ms / 1000.0
    if retry_after is None and "retry-after" in h:
        raw = h["retry-after"]
        retry_after = parse_duration(raw) if raw.strip().replace(".", "").isdigit() \
            else _seconds_until(raw, now_epoch)

    def reset(kind: str) -> float | None:
        openai = h.get(f"x-ratelimit-reset-{kind}")
        if openai is not None:
            return parse_duration(openai)
        anthropic = h.get(f"anthropic-ratelimit-{kind}-reset")
        return None if anthropic is None else _seconds_until(anthropic, now_epoch)

    def remaining(kind: str) -> int | None:
        value = h.get(f"x-ratelimit-remaining-{kind}")
        return _int(value if value is not None else h.get(f"anthropic-ratelimit-{kind}-remaining"))

    return ServerHints(
        retry_after_s=retry_after,
        remaining_requests=remaining("requests"),
        remaining_tokens=remaining("tokens"),
        reset_requests_s=reset("requests"),
        reset_tokens_s=reset("tokens"),
    )
