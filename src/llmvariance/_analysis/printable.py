"""Server strings made safe to show: control, format and separator characters escaped.

A server decides what a finish reason, a fingerprint, a model name, an error message or an
output holds. Printed raw, an ESC or a C1 control starts a terminal sequence (clear the
screen, retitle the window, hide lines, OSC 8 links, OSC 52 clipboard writes), and a bidi
override (U+202E) reverses the text after it. ``printable`` escapes every character of
Unicode categories Cc (C0 and C1 controls, DEL), Cf (format: bidi controls, zero-width
characters, the BOM, soft hyphens), Cs (lone surrogates) and Zl / Zp (line and paragraph
separators) the way ``repr`` does (``\\x1b``, ``\\u202e``); nothing else changes, so plain
text costs one search. ``invisible`` finds the same characters, for the HTML report to
show them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

import regex

__all__ = ["INVISIBLE", "INVISIBLE_BUT_LINES", "escaped", "printable"]

INVISIBLE: Final = regex.compile(r"[\p{Cc}\p{Cf}\p{Cs}\p{Zl}\p{Zp}]")
"""One character a terminal or a browser would act on or hide instead of showing."""
INVISIBLE_BUT_LINES: Final = regex.compile(r"(?![\n\t])[\p{Cc}\p{Cf}\p{Cs}\p{Zl}\p{Zp}]")
"""The same, but for newline and tab: for text shown over several lines."""


_SHORT: Final = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}


def escaped(char: str) -> str:
    """``char`` as ``repr`` writes it: ``\\x1b``, ``\\u202e``, ``\\U000e0001``."""
    code = ord(char)
    if char in _SHORT:
        return _SHORT[char]
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def _escape(match: regex.Match[str]) -> str:
    return escaped(match.group())


def printable(text: str, *, lines: bool = False) -> str:
    """``text`` with every invisible character escaped; ``lines=True`` keeps newlines
    and tabs (for a message shown over several lines)."""
    pattern = INVISIBLE_BUT_LINES if lines else INVISIBLE
    replace: Callable[[regex.Match[str]], str] = _escape
    return pattern.sub(replace, text)
