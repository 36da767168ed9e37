"""Server-sent events: the framing every streaming API shares, decoded incrementally.

Per the HTML living standard's event-stream format: lines end in LF or CRLF; a blank line
dispatches the event gathered so far; ``data:`` lines join with newlines; ``event:`` names
the event; lines starting with ``:`` are comments; one space after the colon is dropped.
An event the stream ends in the middle of is never dispatched. Each event carries the
arrival time of the bytes that completed it, which is what time to first token reads.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

__all__ = ["SSEEvent", "iter_sse", "stream_timing"]


@dataclass(frozen=True, slots=True)
class SSEEvent:
    event: str | None
    """The ``event:`` name, None for unnamed events (OpenAI chat and completions)."""
    data: str
    at: float
    """Seconds from sending the request to receiving the end of this event."""


def iter_sse(chunks: Iterable[tuple[float, bytes]]) -> Iterator[SSEEvent]:
    """Events from ``(arrival time, bytes)`` chunks cut anywhere, even inside a character."""
    pending = bytearray()
    name: str | None = None
    data: list[str] = []
    for at, chunk in chunks:
        # Only the new bytes are searched for line ends, so a huge event that arrives in
        # many small chunks costs linear, not quadratic, time.
        searched = len(pending)
        pending += chunk
        end = pending.rfind(b"\n", searched)
        if end == -1:
            continue
        lines = pending[:end].split(b"\n")
        del pending[:end + 1]
        for raw in lines:
            line = bytes(raw).removesuffix(b"\r").decode("utf-8", "replace")
            if not line:
                if data:
                    yield SSEEvent(name, "\n".join(data), at)
                name, data = None, []
                continue
            if line.startswith(":"):
                continue
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "data":
                data.append(value)
            elif field == "event":
                name = value


def stream_timing(content_at: Sequence[float]) -> dict[str, float | None]:
    """``ttft_s``, ``itl_mean_s`` and ``itl_max_s`` from the arrival times of content events."""
    if not content_at:
        return {"ttft_s": None, "itl_mean_s": None, "itl_max_s": None}
    gaps = [b - a for a, b in itertools.pairwise(content_at)]
    return {"ttft_s": content_at[0],
            "itl_mean_s": sum(gaps) / len(gaps) if gaps else None,
            "itl_max_s": max(gaps) if gaps else None}
