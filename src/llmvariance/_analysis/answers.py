"""What of an output is compared: its text, optionally whitespace-normalised, and the
answer extracted from that text.

``answer=`` is one of:

- a callable ``str -> str | None`` (None: no answer found);
- a regular expression, as a string or a compiled pattern: its first match (a search)
  gives the answer, the first group that took part in it, or the whole match when the
  pattern has no groups (``r"answer is (-?\\d+)"``). No match, or a match in which no
  group took part, means no answer. A plain string is always a regular expression. It
  is written in ``re``'s syntax (checked with ``re.compile``) and run by the ``regex``
  module, whose matching can be stopped: a search that takes longer than
  ``REGEX_TIMEOUT_S`` on one output (catastrophic backtracking) gives that output no
  answer, with the reason;
- ``JsonPointer("/a/0")`` (RFC 6901; ``""`` is the whole document): the output is parsed
  as JSON — the whole text with surrounding whitespace stripped, or failing that the
  first fenced block (a line of three backticks with an optional language tag, up to
  the next three backticks). A string found there is the answer as is; any other value
  is its compact JSON with sorted keys, so ``4`` and ``"4"`` are the same answer and key
  order never matters. Unparseable JSON, or a pointer that leads nowhere: no answer.

An output with no answer is *unparseable*. An extractor that fails on one output — a
regex that times out, a JSON value nested too deep to compare, a function that raises or
returns something other than a string — makes that output unparseable and records why
(``OutputTally.failures``); it never stops a suite, its resume or a report. A function's
exception is counted, not raised, so one bad output costs one answer, not the study (the
samples are kept either way: fix the function and report the run file again).

``normalize=True`` compares outputs after stripping surrounding whitespace and collapsing
each run of whitespace to one space (off by default). The answer is extracted from the
text *as compared* (normalised when normalisation is on), so an answer is always a
function of the compared text: outputs that agree always agree on their answer, which is
what makes TARa@N ≥ TARr@N.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any, Final

import orjson
import regex

from .._errors import ConfigError
from .._sample import Sample

__all__ = ["REGEX_TIMEOUT_S", "AnswerSpec", "Comparison", "JsonPointer", "OutputTally",
           "answer_extractor", "normalize_whitespace"]

REGEX_TIMEOUT_S: Final = 1.0
"""The longest one regex search may take on one output, in seconds. A legitimate answer
pattern takes microseconds on an output of a few kilobytes (``benchmarks/suite_scale.py``
measures it); a pattern that backtracks catastrophically would otherwise hold the event
loop, and so every request in flight, for minutes."""
_REASON_CHARS: Final = 160


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


class AnswerFailed(Exception):
    """An extractor could not tell one output's answer; the message says why."""


class AnswerTypeError(AnswerFailed, TypeError):
    """The answer function returned something other than a str or None."""


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
        try:
            return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
        except orjson.JSONEncodeError as exc:  # nested deeper than orjson writes
            raise AnswerFailed(f"the JSON value cannot be compared ({exc})") from None

    return extract


def _regex_extractor(pattern: regex.Pattern[str]) -> Callable[[str], str | None]:
    def extract(text: str) -> str | None:
        try:
            match = pattern.search(text, timeout=REGEX_TIMEOUT_S)
        except TimeoutError:
            raise AnswerFailed(f"the regex took over {REGEX_TIMEOUT_S:g} s on this output "
                               "(catastrophic backtracking?)") from None
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
            raise AnswerTypeError(f"the answer function returned {type(answer).__name__}; "
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
        return _regex_extractor(_compiled(spec, 0))
    if isinstance(spec, re.Pattern):
        if not isinstance(spec.pattern, str):
            raise ConfigError("answer", "a bytes pattern cannot match text; use a str pattern")
        return _regex_extractor(_compiled(spec.pattern, spec.flags))
    if callable(spec):
        return _checked(spec)
    raise ConfigError("answer", "must be a function, a regular expression or a JsonPointer, "
                      f"got {type(spec).__name__}")


_FLAGS: Final = tuple((int(flag), int(getattr(regex, flag.name)))
                      for flag in re.RegexFlag if flag.name and hasattr(regex, flag.name))
"""``re``'s flags as ``regex``'s (they differ: ASCII is 256 in one, 128 in the other)."""


def _compiled(pattern: str, flags: int) -> regex.Pattern[str]:
    """``pattern`` checked as ``re`` reads it, compiled by ``regex`` (which can time out)."""
    try:
        re.compile(pattern, flags)
    except re.error as exc:
        raise ConfigError("answer", f"not a valid regular expression: {exc}") from None
    converted = sum(theirs for ours, theirs in _FLAGS if flags & ours)
    try:
        return regex.compile(pattern, converted | regex.VERSION0)
    except regex.error as exc:  # pragma: no cover - re accepted it
        raise ConfigError("answer", f"not a regular expression the regex module reads: "
                          f"{exc}") from None


def _reason(exc: Exception) -> str:
    """Why an extractor failed, on one line and bounded."""
    if isinstance(exc, AnswerFailed):
        said = str(exc)
    else:
        said = f"the answer function raised {type(exc).__name__}"
        if str(exc):
            said += f": {' '.join(str(exc).split())}"
    return said if len(said) <= _REASON_CHARS else said[:_REASON_CHARS - 1] + "…"


def _describe(spec: AnswerSpec | None) -> str | None:
    if spec is None:
        return None
    if isinstance(spec, JsonPointer):
        return f"JSON pointer {spec.pointer!r}"
    if isinstance(spec, str | re.Pattern):
        pattern = spec if isinstance(spec, str) else spec.pattern
        return f"regex {pattern!r}"
    return f"function {getattr(spec, '__qualname__', type(spec).__name__)}"


def comparison_record(answer: AnswerSpec | None, normalize: bool) -> dict[str, Any]:
    """How a suite compared its outputs, as a suite run file's header stores it
    (``comparison``), so ``llmvariance report`` reproduces TARa@N without the flags. A
    regex and a JSON pointer are stored whole; a function cannot be (only its name is,
    with ``"stored": false``)."""
    stored: dict[str, Any] | None
    if answer is None:
        stored = None
    elif isinstance(answer, JsonPointer):
        stored = {"json_pointer": answer.pointer}
    elif isinstance(answer, str | re.Pattern):
        pattern = answer if isinstance(answer, str) else answer.pattern
        flags = 0 if isinstance(answer, str) else answer.flags & ~re.UNICODE
        stored = {"regex": pattern, "flags": flags}
    else:
        stored = {"function": _describe(answer), "stored": False}
    return {"answer": stored, "normalize": normalize}


def comparison_from_record(record: object) -> tuple[AnswerSpec | None, bool, str | None]:
    """``(answer, normalize, note)`` from a header's ``comparison``; ``note`` says why the
    answer could not be restored (a function), else None."""
    if not isinstance(record, dict):
        return None, False, None
    normalize = record.get("normalize") is True
    stored = record.get("answer")
    if not isinstance(stored, dict):
        return None, normalize, None
    if isinstance(stored.get("json_pointer"), str):
        return JsonPointer(stored["json_pointer"]), normalize, None
    if isinstance(stored.get("regex"), str):
        flags = stored.get("flags")
        pattern = stored["regex"]
        return (re.compile(pattern, flags) if isinstance(flags, int) and flags else pattern,
                normalize, None)
    return None, normalize, (f"the run extracted answers with a {stored.get('function')}, "
                             "which a file cannot hold: pass --answer or --answer-pointer "
                             "for TARa@N")


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
        """The answer of an already compared text (None without an extractor, or when
        the extractor failed on it)."""
        return self.extract(key)[0]

    def extract(self, key: str) -> tuple[str | None, str | None]:
        """(the answer of an already compared text, why the extractor failed on it):
        never raises for an extractor's failure on one output (see the module doc)."""
        if self._extract is None:
            return None, None
        try:
            return self._extract(key), None
        except Exception as exc:  # one output's failure is that output's, not the run's
            return None, _reason(exc)

    def tally(self) -> OutputTally:
        return OutputTally(self)

    def __repr__(self) -> str:
        return f"Comparison(answer={self.description}, normalize={self.normalize})"


class OutputTally:
    """One prompt's ok outputs as compared: a count per distinct compared text, and the
    answer of each (extracted once per distinct text). Failed samples are skipped."""

    __slots__ = ("_answers", "_counts", "_failed", "comparison")

    def __init__(self, comparison: Comparison) -> None:
        self.comparison = comparison
        self._counts: dict[str, int] = {}
        self._answers: dict[str, str | None] = {}
        self._failed: dict[str, str] = {}
        """Compared text → why the extractor failed on it (only for those it failed on)."""

    def add(self, text: str) -> str | None:
        """Count one output; its answer (None: none, or no extractor)."""
        key = self.comparison.key(text)
        count = self._counts.get(key)
        if count is None:
            self._counts[key] = 1
            answer, reason = self.comparison.extract(key)
            self._answers[key] = answer
            if reason is not None:
                self._failed[key] = reason
            return answer
        self._counts[key] = count + 1
        return self._answers[key]

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
                if key in tally._failed:
                    merged._failed.setdefault(key, tally._failed[key])
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
    def failures(self) -> Counter[str]:
        """Outputs the extractor failed on, by reason (they are among ``unparseable``)."""
        found: Counter[str] = Counter()
        for key, reason in self._failed.items():
            found[reason] += self._counts[key]
        return found

    @property
    def answer_value_counts(self) -> list[int]:
        """Counts per answer value, *no answer* being one value of its own."""
        values = list(self.answers.values())
        missing = self.unparseable
        return [*values, missing] if missing else values

    def __repr__(self) -> str:
        return f"<OutputTally n={self.n} distinct={len(self._counts)} {self.comparison!r}>"
