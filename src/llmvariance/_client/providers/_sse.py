"""Server-sent events: the framing every streaming API shares, decoded incrementally.

Per the HTML living standard's event-stream format: lines end in CRLF, LF or a lone CR; a
blank line dispatches the event gathered so far; ``data:`` lines join with newlines;
``event:`` names the event; lines starting with ``:`` are comments; one space after the
colon is dropped; a UTF-8 byte-order mark at the very start is skipped. Each event carries
the arrival time of the bytes that completed it, which is what time to first token reads.

The chunks are a body the transport saw end as its framing says (a stream cut short is an
error before it gets here), so a last event whose blank line never came is dispatched at
the end rather than dropped: the API's own final event (``[DONE]``, ``message_stop``)
is what tells a whole answer from a cut one.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

__all__ = ["SSEEvent", "iter_sse", "stream_timing"]

_BOM = b"\xef\xbb\xbf"


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
    started = False
    at = 0.0

    def apply(block: bytes, at: float) -> Iterator[SSEEvent]:
        nonlocal name, data
        for line in _lines(block):
            applied = _field(line, data)
            if applied is _DISPATCH:
                if data:
                    yield SSEEvent(name, "\n".join(data), at)
                name, data = None, []
            elif isinstance(applied, str):
                name = applied

    for at, chunk in chunks:
        # Only the new bytes are searched for line ends, so a huge event that arrives in
        # many small chunks costs linear, not quadratic, time.
        searched = max(0, len(pending) - 1)
        pending += chunk
        if not started:
            if len(pending) < len(_BOM) and _BOM.startswith(bytes(pending)):
                continue  # maybe the start of a byte-order mark: wait for more
            started = True
            if pending.startswith(_BOM):
                del pending[:len(_BOM)]
                searched = 0
        end = max(pending.rfind(b"\n", searched), pending.rfind(b"\r", searched))
        if end >= 0 and end == len(pending) - 1 and pending[end] == 13:
            # a CR last may be half of a CRLF: keep its line until the next chunk decides
            end = max(pending.rfind(b"\n", 0, end), pending.rfind(b"\r", 0, end))
        if end == -1:
            continue
        block = bytes(pending[:end + 1])
        del pending[:end + 1]
        yield from apply(block, at)
    # the body ended: its last line may lack a line end, its last event the blank line
    if pending:
        yield from apply(bytes(pending), at)
    if data:
        yield SSEEvent(name, "\n".join(data), at)


def _lines(block: bytes) -> list[str]:
    """``block`` (ending in a line end, or the body's end) split at CRLF, LF and lone CR."""
    text = block.decode("utf-8", "replace")
    return text.replace("\r\n", "\n").replace("\r", "\n").removesuffix("\n").split("\n")


_DISPATCH = object()
_KEEP = object()


def _field(line: str, data: list[str]) -> object:
    """Apply one line: ``_DISPATCH`` for a blank line, the new event name (str) for an
    ``event:`` line, else ``_KEEP`` (``data`` is appended to in place)."""
    if not line:
        return _DISPATCH
    if line.startswith(":"):
        return _KEEP
    field, _, value = line.partition(":")
    value = value.removeprefix(" ")
    if field == "data":
        data.append(value)
    elif field == "event":
        return value
    return _KEEP


def stream_timing(content_at: Sequence[float]) -> dict[str, float | None]:
    """``ttft_s``, ``itl_mean_s`` and ``itl_max_s`` from the arrival times of content events."""
    if not content_at:
        return {"ttft_s": None, "itl_mean_s": None, "itl_max_s": None}
    gaps = [b - a for a, b in itertools.pairwise(content_at)]
    return {"ttft_s": content_at[0],
            "itl_mean_s": sum(gaps) / len(gaps) if gaps else None,
            "itl_max_s": max(gaps) if gaps else None}
