"""What a command says on stderr besides its result: notes, progress lines, one-line errors.

stdout carries the result alone (a report, JSON), so ``--json | jq`` and ``> file`` get
nothing else; everything a person watches goes to stderr. ``--quiet`` silences notes and
progress (errors still print); ``$NO_COLOR`` (any value, https://no-color.org) or a
stderr that is not a terminal turns colour off.
"""

from __future__ import annotations

import os
import sys
import time
from typing import TextIO

from .._analysis.printable import printable

__all__ = ["Console"]


class Console:
    """stderr for one command: ``note`` (unless quiet), ``error`` (always, one line)."""

    __slots__ = ("_last_progress", "command", "quiet", "stream")

    def __init__(self, command: str, *, quiet: bool = False,
                 stream: TextIO | None = None) -> None:
        self.command = command
        self.quiet = quiet
        self.stream = stream or sys.stderr
        self._last_progress = 0.0

    @property
    def color(self) -> bool:
        """Colour only on a terminal, and never with ``$NO_COLOR`` set."""
        return "NO_COLOR" not in os.environ and self.stream.isatty()

    @property
    def interactive(self) -> bool:
        """A progress bar is drawn (a terminal, not ``--quiet``)."""
        return not self.quiet and self.stream.isatty()

    def note(self, text: str) -> None:
        if not self.quiet:
            print(text, file=self.stream, flush=True)

    def progress(self, text: str, *, every_s: float = 0.0) -> None:
        """A progress line (at most one per ``every_s`` seconds)."""
        now = time.monotonic()
        if every_s and now - self._last_progress < every_s:
            return
        self._last_progress = now
        self.note(text)

    def error(self, text: str, *, one_line: bool = True) -> None:
        """``llmvariance CMD: error: TEXT``, whatever ``quiet`` says; on one line unless
        ``one_line=False`` (an engine's log tail)."""
        label = "error:"
        if self.color:
            label = "\x1b[1;31merror:\x1b[0m"
        line = printable(text, lines=True)
        if one_line:
            line = " ".join(line.split())
        print(f"llmvariance {self.command}: {label} {line}", file=self.stream, flush=True)
