"""What of an output is compared: its text, optionally whitespace-normalised, and the
answer extracted from that text.

``answer=`` is one of:

- a callable ``str -> str | None`` (None: no answer found);
- a regular expression, as a string or a compiled pattern: ``re.search`` finds its first
  match; the answer is the first group that took part in it, or the whole match when
  the pattern has no groups (``r"answer is (-?\\d+)"``). No match, or a match in which no
  group took part, means no answer. A plain string is always a regular expression;
- ``JsonPointer("/a/0")`` (RFC 6901; ``""`` is the whole document): the output is parsed
  as JSON — the whole text with surrounding whitespace stripped, or failing that the
  first fenced block (a line of three backticks with an optional language tag, up to
  the next three backticks). A string found there is the answer as is; any other value
  is its compact JSON with sorted keys, so ``4`` and ``"4"`` are the same answer and key
  order never matters. Unparseable JSON, or a pointer that leads nowhere: no answer.

An output with no answer is *unparseable*. ``normalize=True`` compares outputs after
stripping surrounding whitespace and collapsing each run of whitespace to one space
(off by default). The answer is extracted from the text *as compared* (normalised when
normalisation is on), so an answer is always a function of the compared text: outputs
that agree always agree on their answer, which is what makes TARa@N ≥ TARr@N.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any, Final

import orjson

from .._errors import ConfigError
from .._sample import Sample

__all__ = ["AnswerSpec", "Comparison", "JsonPointer", "OutputTally", "answer_extractor",
           "normalize_whitespace"]


class JsonPointer:
    """An RFC 6901 JSON pointer, ``"/choices/0/label"``; ``~1`` is ``/`` and ``~0`` ``~``
    inside a reference token. Raises ``ConfigError`` for a malformed pointer."""

    __slots__ = ("_tokens", "pointer")

    def __init__(self, pointer: str) -> None:
        if not isinstance(pointer, str) or (pointer and not pointer.startswith("/")):
            raise ConfigError("answer", f"a JSON pointer is empty or starts with '/', "
                              f"got {pointer!r}")
        if re.search(r"~(?![01])", pointer):
            raise ConfigError("answer", f"in JSON pointer {pointer!r}, '~' must be followed "
                              "by 0 or 1")
        self.pointer = pointer
        self._tokens = [t.replace("~1", "/").replace("~0", "~")
                        for t in pointer.split("/")[1:]]

    def resolve(self, document: Any) -> Any:
        """The value the pointer names; ``LookupError`` when there is none."""
        value = document
        for token in self._tokens:
            if isinstance(value, dict):
                value = value[token]
            elif isinstance(value, list) and re.fullmatch(r"0|[1-9][0-9]*", token):
                value = value[int(token)]
            else:
                raise LookupError(token)
        return value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, JsonPointer) and other.pointer == self.pointer

    def __hash__(self) -> int:
        return hash(self.pointer)

    def __repr__(self) -> str:
        return f"JsonPointer({self.pointer!r})"


AnswerSpec = Callable[[str], str | None] | str | re.Pattern[str] | JsonPointer
"""What ``answer=`` accepts: a function, a regular expression, or a ``JsonPointer``."""

_NOT_JSON: Final = object()
_FENCED = re.compile(r"```[\w+.-]*\s+(.*?)```", re.DOTALL)


def normalize_whitespace(text: str) -> str:
    """``text`` without surrounding whitespace, each inner run of whitespace one space."""
    return " ".join(text.split())


def _parse_json(text: str) -> Any:
    """The JSON value of an output: the whole text, else its first fenced block;
    ``_NOT_JSON`` when neither parses."""
    fenced = _FENCED.search(text)
    for candidate in (text, fenced.group(1) if fenced else None):
        if candidate is not None:
            try:
                return orjson.loads(candidate.strip())
            except orjson.JSONDecodeError:
                pass
    return _NOT_JSON


def _pointer_extractor(pointer: JsonPointer) -> Callable[[str], str | None]:
    def extract(text: str) -> str | None:
        document = _parse_json(text)
        if document is _NOT_JSON:
            return None
        try:
            value = pointer.resolve(document)
        except LookupError:
            return None
        if isinstance(value, str):
            return value
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()

    return extract


def _regex_extractor(pattern: re.Pattern[str]) -> Callable[[str], str | None]:
    def extract(text: str) -> str | None:
        match = pattern.search(text)
        if match is None:
            return None
        if pattern.groups == 0:
            return match.group(0)
        return next((g for g in match.groups() if g is not None), None)

    return extract


def _checked(function: Callable[[str], str | None]) -> Callable[[str], str | None]:
    def extract(text: str) -> str | None:
        answer = function(text)
        if answer is not None and not isinstance(answer, str):
            raise TypeError(f"the answer function returned {type(answer).__name__}; "
                            "it must return a str, or None for no answer")
        return answer

    return extract


def answer_extractor(spec: AnswerSpec) -> Callable[[str], str | None]:
    """A function giving an output's answer, or None when it has none (see module doc).

    Raises ``ConfigError`` for an invalid regular expression or an unsupported spec.
    """
    if isinstance(spec, JsonPointer):
        return _pointer_extractor(spec)
    if isinstance(spec, str):
        try:
            return _regex_extractor(re.compile(spec))
        except re.error as exc:
            raise ConfigError("answer", f"not a valid regular expression: {exc}") from None
    if isinstance(spec, re.Pattern):
        if not isinstance(spec.pattern, str):
            raise ConfigError("answer", "a bytes pattern cannot match text; use a str pattern")
        return _regex_extractor(spec)
    if callable(spec):
        return _checked(spec)
    raise ConfigError("answer", "must be a function, a regular expression or a JsonPointer, "
                      f"got {type(spec).__name__}")


def _describe(spec: AnswerSpec | None) -> str | None:
    if spec is None:
        return None
    if isinstance(spec, JsonPointer):
        return f"JSON pointer {spec.pointer!r}"
    if isinstance(spec, str | re.Pattern):
        pattern = spec if isinstance(spec, str) else spec.pattern
        return f"regex {pattern!r}"
    return f"function {getattr(spec, '__qualname__', type(spec).__name__)}"


class Comparison:
    """How a suite compares outputs: ``key(text)`` is the text as compared, ``answer(key)``
    its answer. ``description`` names the extractor for reports (None without one)."""

    __slots__ = ("_extract", "description", "normalize")

    def __init__(self, answer: AnswerSpec | None = None, *, normalize: bool = False) -> None:
        self._extract = None if answer is None else answer_extractor(answer)
        self.description = _describe(answer)
        self.normalize = normalize

    @property
    def has_answers(self) -> bool:
        return self._extract is not None

    def key(self, text: str) -> str:
        return normalize_whitespace(text) if self.normalize else text

    def answer(self, key: str) -> str | None:
        """The answer of an already compared text (None without an extractor)."""
        return None if self._extract is None else self._extract(key)

    def tally(self) -> OutputTally:
        return OutputTally(self)

    def __repr__(self) -> str:
        return f"Comparison(answer={self.description}, normalize={self.normalize})"


class OutputTally:
    """One prompt's ok outputs as compared: a count per distinct compared text, and the
    answer of each (extracted once per distinct text). Failed samples are skipped."""

    __slots__ = ("_answers", "_counts", "comparison")

    def __init__(self, comparison: Comparison) -> None:
        self.comparison = comparison
        self._counts: dict[str, int] = {}
        self._answers: dict[str, str | None] = {}

    def add(self, text: str) -> None:
        key = self.comparison.key(text)
        count = self._counts.get(key)
        if count is None:
            self._counts[key] = 1
            self._answers[key] = self.comparison.answer(key)
        else:
            self._counts[key] = count + 1

    def update(self, items: Iterable[str | Sample]) -> None:
        for item in items:
            if isinstance(item, str):
                self.add(item)
            elif item.error is None:
                self.add(item.text or "")

    def merge(self, other: OutputTally) -> OutputTally:
        """A new tally equal to one that saw both tallies' outputs."""
        merged = OutputTally(self.comparison)
        for tally in (self, other):
            for key, count in tally._counts.items():
                merged._counts[key] = merged._counts.get(key, 0) + count
                merged._answers.setdefault(key, tally._answers[key])
        return merged

    @property
    def n(self) -> int:
        """Outputs counted."""
        return sum(self._counts.values())

    @property
    def counts(self) -> list[int]:
        """How often each distinct compared text occurred."""
        return list(self._counts.values())

    @property
    def answers(self) -> Counter[str]:
        """How often each answer occurred, over the outputs that have one."""
        found: Counter[str] = Counter()
        for key, count in self._counts.items():
            answer = self._answers[key]
            if answer is not None:
                found[answer] += count
        return found

    @property
    def unparseable(self) -> int:
        """Outputs with no answer (all of them without an extractor)."""
        return sum(c for k, c in self._counts.items() if self._answers[k] is None)

    @property
    def answer_value_counts(self) -> list[int]:
        """Counts per answer value, *no answer* being one value of its own."""
        values = list(self.answers.values())
        missing = self.unparseable
        return [*values, missing] if missing else values

    def __repr__(self) -> str:
        return f"<OutputTally n={self.n} distinct={len(self._counts)} {self.comparison!r}>"
