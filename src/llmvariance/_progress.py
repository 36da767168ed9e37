"""Progress of a run: a snapshot for callbacks, and the terminal bar the CLI shows."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

from tqdm import tqdm

__all__ = ["Progress", "ProgressBar"]


@dataclass(frozen=True, slots=True)
class Progress:
    """Where a run stands; passed to ``sample_many(progress=...)`` after every sample."""

    total: int
    """Samples the run will return (``n``)."""
    done: int
    """Samples finished so far, those read from a resumed run file included."""
    failed: int
    resumed: int
    """Samples read from the run file instead of sent."""
    elapsed_s: float
    rate_limited: int
    """429 responses so far."""
    paused_s: float
    """Time every worker spent paused by the server's rate limits."""
    retries: int = 0
    """Attempts that failed and were tried again."""
    timeouts: int = 0
    """Attempts that got no complete response in time."""
    in_flight: int = 0
    oldest_in_flight_s: float = 0.0
    """How long the oldest request still in flight has waited: a silent server shows here."""

    @property
    def rate_per_s(self) -> float:
        """Samples per second sent in this call (resumed ones excluded)."""
        sent = self.done - self.resumed
        return sent / self.elapsed_s if self.elapsed_s > 0 else 0.0


class ProgressBar:
    """A tqdm bar on stderr for runs longer than ``delay_s``; silent off a terminal."""

    def __init__(self, *, delay_s: float = 2.0, enabled: bool | None = None) -> None:
        self._enabled = sys.stderr.isatty() if enabled is None else enabled
        self._delay_s = delay_s
        self._bar: tqdm[Any] | None = None

    def __call__(self, progress: Progress) -> None:
        if not self._enabled:
            return
        bar = self._bar
        if bar is None:
            bar = tqdm(total=progress.total, initial=progress.resumed, unit="sample",
                       delay=self._delay_s, dynamic_ncols=True, file=sys.stderr)
            self._bar = bar
        bar.n = progress.done
        bar.set_postfix(_postfix(progress), refresh=False)
        bar.update(0)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


_SLOW_S = 10.0
"""A request waiting longer than this is shown on the bar."""


def _postfix(progress: Progress) -> dict[str, object]:
    """What the bar shows beside the count: failures, and every kind of waiting."""
    shown: dict[str, object] = {"failed": progress.failed}
    if progress.retries:
        shown["retries"] = progress.retries
    if progress.timeouts:
        shown["timeouts"] = progress.timeouts
    if progress.rate_limited:
        shown["429s"] = progress.rate_limited
    if progress.paused_s >= 0.5:
        shown["paused"] = f"{progress.paused_s:.0f}s"
    if progress.oldest_in_flight_s >= _SLOW_S:
        shown["waiting"] = f"{progress.oldest_in_flight_s:.0f}s"
    return shown
