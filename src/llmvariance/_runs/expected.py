"""Expected answers from a file: a JSON mapping, or the ``expected`` field of suite lines.

Two shapes, told apart by the first line:

- a JSON object of prompt id to its expected answer (``examples/suite_answers.json``):
  ``{"arith-01": "42", "yesno-02": ["yes", "y"]}``; a list holds answers that are all
  right, and numbers are read as their text (``42`` is ``"42"``);
- JSON Lines whose records carry ``expected`` (the first line is an object with
  ``expected`` and another key): a suite file itself (a Batch record or a
  request body with ``"expected": "42"`` beside its ``custom_id``), or lines of just
  ``{"id": ..., "expected": ...}``. The id is the record's ``custom_id`` or ``id``, else its
  line number, as ``read_suite`` numbers the lines; records without ``expected`` have none.

Errors are ``SuiteFileError`` naming the file, line and field.
"""

from __future__ import annotations

import os
from typing import Any

import orjson

from .suitefile import MAX_LINE_BYTES, SuiteFileError
from .suitefile import _open as open_suite_file

__all__ = ["read_expected"]

_BOM = b"\xef\xbb\xbf"
_MAX_MAPPING_BYTES = 1 << 30


def read_expected(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The expected answers in ``path``, by prompt id (see the module doc)."""
    name = os.fspath(path)
    with open_suite_file(name) as handle:
        first = handle.readline(MAX_LINE_BYTES + 1).removeprefix(_BOM)
        try:
            record = orjson.loads(first)
        except orjson.JSONDecodeError:
            record = None
        # a record beside its id (or its request): JSON lines; else one mapping
        if isinstance(record, dict) and "expected" in record and len(record) > 1:
            return _lines(name, first, handle)
        rest = handle.read(_MAX_MAPPING_BYTES)
    try:
        value = orjson.loads(first + rest)
    except orjson.JSONDecodeError as exc:
        raise SuiteFileError(name, None, "", "neither a JSON object of id to answer nor JSON "
                             f"lines with an \"expected\" field ({exc})") from None
    if not isinstance(value, dict):
        raise SuiteFileError(name, None, "", "must be a JSON object of prompt id to expected "
                             "answer")
    return value


def _lines(name: str, first: bytes, handle: Any) -> dict[str, Any]:
    found: dict[str, Any] = {}
    raw, number = first, 0
    while raw:
        number += 1
        if len(raw) > MAX_LINE_BYTES:
            raise SuiteFileError(name, number, "", f"longer than {MAX_LINE_BYTES >> 20} MiB")
        if raw.strip():
            try:
                record = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                raise SuiteFileError(name, number, "", f"not valid JSON ({exc})") from None
            if not isinstance(record, dict):
                raise SuiteFileError(name, number, "", "not a JSON object")
            rid = _record_id(record, name, number)
            if "expected" in record:
                if rid in found:
                    raise SuiteFileError(name, number, "expected", f"{rid!r} has an expected "
                                         "answer on an earlier line already")
                found[rid] = record["expected"]
        raw = handle.readline(MAX_LINE_BYTES + 1)
    return found


def _record_id(record: dict[str, Any], name: str, number: int) -> str:
    for key in ("custom_id", "id"):
        if key in record:
            value = record[key]
            if isinstance(value, bool) or not isinstance(value, str | int) or value == "":
                raise SuiteFileError(name, number, key, "must be a non-empty string or an "
                                     f"integer, got {value!r}")
            return str(value)
    return str(number)
