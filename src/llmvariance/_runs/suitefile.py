"""Suite files: many requests, one JSON object a line, read into ``(id, request)`` pairs.

Two formats, told apart by the first record (a record with a ``body`` is a Batch record):

- OpenAI Batch API input, ``{"custom_id", "method": "POST", "url", "body"}`` a line. The
  url picks the API: ``/v1/chat/completions``, ``/v1/completions``, ``/v1/responses``, or
  ``/v1/messages`` (an Anthropic body). ``custom_id`` is the id and must be unique.
- Request bodies, one a line. The id is the body's ``custom_id`` or ``id`` (taken out of
  the body, not sent), else the line number. The API is ``api=`` if given, else the
  body's shape: ``messages`` → chat, ``prompt`` → completions, ``input`` → responses
  (Anthropic bodies also have ``messages``: pass ``api="messages"``).

A body becomes a request field by field: a key the request type has sets that field (a
null is treated as absent), any other key goes to ``extra`` and is sent as given. One
exception: a body's ``temperature`` defaults to this library's 0.0, not the API's 1.0.
``n`` other than 1 is refused (llmvariance sends the N copies itself), and so are
content-part lists, prompt lists and other shapes the request types cannot carry.

A record may carry the prompt's expected answer as ``expected`` beside its ``custom_id``
(a Batch record) or in the body (taken out, never sent): a string, a number, or a list of
answers that are all right. ``read_suite(...).expected`` holds them by id, for
``sample_suite(..., answer=...)`` to grade every sample right or wrong.

Errors are ``SuiteFileError`` (a ``ConfigError``): ``suite.jsonl:3: body.temperature:
Input should be less than or equal to 2``. They never repeat a body's values.

A file is read one line at a time, none longer than ``MAX_LINE_BYTES`` (a request file:
its whole body), so memory follows the requests, not the file: ``/dev/zero`` or a binary
file is refused after one such line. A UTF-8 byte order mark at the start (Windows
editors write one) is skipped.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, BinaryIO, Literal, NamedTuple

import orjson
from pydantic import ValidationError

from .._errors import ConfigError, LLMVarianceError
from .._request import ChatRequest, CompletionRequest, MessagesRequest, Request, ResponsesRequest

__all__ = ["API", "MAX_LINE_BYTES", "URLS", "SuiteFileError", "SuiteRequest", "SuiteRequests",
           "detect_api", "read_request", "read_suite", "request_from_body"]

MAX_LINE_BYTES = 64 * 2**20
"""The longest line (one request) a suite file may have: 64 MiB, far past any context."""
_BOM = b"\xef\xbb\xbf"

API = Literal["chat", "completions", "messages", "responses"]
URLS: dict[str, API] = {"/v1/chat/completions": "chat", "/v1/completions": "completions",
                        "/v1/messages": "messages", "/v1/responses": "responses"}
"""The Batch record urls accepted, and the API each one means."""
_TYPES: dict[API, type[Request]] = {"chat": ChatRequest, "completions": CompletionRequest,
                                    "messages": MessagesRequest, "responses": ResponsesRequest}
_BATCH_KEYS = ("custom_id", "method", "url", "body")
_EXPECTED = "expected"
# pydantic's names for union members in an error location: "str", "list[str]", "InputMessage"
_UNION_TAG = re.compile(r"str|int|float|bool|[a-z-]+\[.*\]|[A-Z]\w*")


class SuiteFileError(ConfigError):
    """A suite or request file that cannot be read: ``path``, 1-based ``line`` (None for a
    whole-file problem or a one-object file) and ``field`` ("" when the record as a
    whole is wrong) say where."""

    def __init__(self, path: str, line: int | None, field: str, message: str) -> None:
        where = path if line is None else f"{path}:{line}"
        LLMVarianceError.__init__(self, f"{where}: {field}: {message}" if field
                                  else f"{where}: {message}")
        self.path, self.line, self.field = path, line, field


class SuiteRequest(NamedTuple):
    """One request of a suite and its id."""

    id: str
    request: Request


class SuiteRequests(list[SuiteRequest]):
    """What ``read_suite`` returns: the requests in file order (a list of
    ``SuiteRequest``), and ``expected``, the expected answers its records carry, by id."""

    def __init__(self, requests: Iterable[SuiteRequest] = (),
                 expected: dict[str, Any] | None = None) -> None:
        super().__init__(requests)
        self.expected: dict[str, Any] = expected or {}

    def __reduce__(self) -> tuple[Any, ...]:
        return (SuiteRequests, (list(self), self.expected))


class _Invalid(Exception):
    """A field of one record is wrong; the caller adds where the record came from."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(field, message)
        self.field, self.message = field, message


def detect_api(body: Mapping[str, Any]) -> API:
    """The API a body is for, from its shape: ``messages`` → chat, ``prompt`` →
    completions, ``input`` → responses; raises ``ConfigError`` when none is present."""
    try:
        return _detect(body)
    except _Invalid as exc:
        raise ConfigError(exc.field or "body", exc.message) from None


def request_from_body(body: Mapping[str, Any], *, api: API | None = None,
                      model: str | None = None, stream: bool | None = None) -> Request:
    """The request one API body describes (``api`` None: from its shape, see module doc).

    ``model`` and ``stream``, when given, replace the body's. Raises ``ConfigError``
    whose ``field`` is the body key at fault (``messages[0].content``).
    """
    try:
        return _build(body, api or _detect(body), model, stream)
    except _Invalid as exc:
        raise ConfigError(exc.field or "body", exc.message) from None


def read_request(path: str | os.PathLike[str], *, api: API | None = None,
                 model: str | None = None, stream: bool | None = None) -> Request:
    """The request in a JSON file holding one body, or one Batch record (whose url then
    decides the API). Raises ``SuiteFileError``."""
    name = os.fspath(path)
    with _open(name) as handle:
        raw = handle.read(MAX_LINE_BYTES + 1)
    if len(raw) > MAX_LINE_BYTES:
        raise SuiteFileError(name, None, "", f"larger than {MAX_LINE_BYTES >> 20} MiB: not "
                             "a request body")
    record = _as_object(_parse(raw.removeprefix(_BOM), name, None), name, None)
    try:
        if "body" in record:
            return _batch_record(record, api, model, stream)[1]
        return _build(record, api or _detect(record), model, stream)
    except _Invalid as exc:
        raise SuiteFileError(name, None, exc.field, exc.message) from None


def read_suite(path: str | os.PathLike[str], *, api: API | None = None,
               model: str | None = None, stream: bool | None = None) -> SuiteRequests:
    """Every request of a suite file, in file order; blank lines are skipped. The
    result is a list of ``SuiteRequest`` whose ``expected`` holds the expected answers
    the records carry (``"expected"``), by id.

    ``api`` sets the API of plain bodies; a Batch record's url sets its own, and an
    ``api`` that contradicts it is an error. ``model`` / ``stream`` replace every body's.
    Ids are unique. Raises ``SuiteFileError`` naming the file, line and field.
    """
    name = os.fspath(path)
    suite = SuiteRequests()
    first_line: dict[str, int] = {}
    batch: bool | None = None
    for number, raw in _lines(name):
        if not raw.strip():
            continue
        record = _as_object(_parse(raw, name, number), name, number)
        if batch is None:
            batch = "body" in record
        expected = record.pop(_EXPECTED, None)
        try:
            if batch:
                request_id, request = _batch_record(record, api, model, stream)
            else:
                if "body" in record:
                    raise _Invalid("", "a Batch API record in a file of request bodies "
                                   "(the first record was a body)")
                request_id, body = _take_id(record, number)
                request = _build(body, api or _detect(body), model, stream)
        except _Invalid as exc:
            raise SuiteFileError(name, number, exc.field, exc.message) from None
        if request_id in first_line:
            key = "custom_id" if batch else "id"
            raise SuiteFileError(name, number, key, f"{request_id!r} repeats the id of line "
                                 f"{first_line[request_id]}; ids must be unique")
        first_line[request_id] = number
        suite.append(SuiteRequest(request_id, request))
        if expected is not None:
            suite.expected[request_id] = expected
    if not suite:
        raise SuiteFileError(name, None, "", "no requests in the file")
    return suite


# -- one record ---------------------------------------------------------------------------

def _open(name: str) -> BinaryIO:
    try:
        return open(name, "rb")
    except OSError as exc:
        raise SuiteFileError(name, None, "", f"cannot read the file: {exc.strerror}") from None


def _lines(name: str) -> Iterator[tuple[int, bytes]]:
    """(1-based number, line) of a file, one line in memory at a time, the BOM dropped."""
    with _open(name) as handle:
        number = 0
        while True:
            try:
                line = handle.readline(MAX_LINE_BYTES + 1)
            except OSError as exc:
                raise SuiteFileError(name, number + 1, "", f"cannot read the file: "
                                     f"{exc.strerror}") from None
            if not line:
                return
            number += 1
            if len(line) > MAX_LINE_BYTES:
                raise SuiteFileError(name, number, "", f"longer than {MAX_LINE_BYTES >> 20} "
                                     "MiB: not a suite file of JSON lines")
            line = line.removesuffix(b"\n").removesuffix(b"\r")
            yield number, line.removeprefix(_BOM) if number == 1 else line


def _parse(raw: bytes, name: str, line: int | None) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise SuiteFileError(name, line, "", f"not valid JSON ({exc})") from None


def _as_object(value: Any, name: str, line: int | None) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise SuiteFileError(name, line, "", f"a JSON {_json_type(value)}, not an object")
    return value


def _json_type(value: Any) -> str:
    names = {list: "array", str: "string", bool: "boolean", int: "number", float: "number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def _batch_record(record: Mapping[str, Any], api: API | None, model: str | None,
                  stream: bool | None) -> tuple[str, Request]:
    missing = [k for k in _BATCH_KEYS if k not in record]
    if missing:
        raise _Invalid(missing[0], "missing; a Batch API record has "
                       + ", ".join(_BATCH_KEYS))
    unknown = sorted(set(record) - set(_BATCH_KEYS))
    if unknown:
        raise _Invalid(unknown[0], "not a Batch API record key; the keys are "
                       + ", ".join(_BATCH_KEYS))
    request_id, method, url, body = (record[k] for k in _BATCH_KEYS)
    if not isinstance(request_id, str) or not request_id:
        raise _Invalid("custom_id", f"must be a non-empty string, got a {_json_type(request_id)}")
    if method != "POST":
        raise _Invalid("method", f"must be \"POST\", got {method!r}")
    if url not in URLS:
        shown = repr(url) if isinstance(url, str) else f"a {_json_type(url)}"
        raise _Invalid("url", f"{shown} is not supported; use one of {', '.join(URLS)}")
    if api is not None and api != URLS[url]:
        raise _Invalid("url", f"{url} is the {URLS[url]} API, but api={api!r} was asked")
    if not isinstance(body, dict):
        raise _Invalid("body", f"must be a JSON object, got a {_json_type(body)}")
    try:
        return request_id, _build(body, URLS[url], model, stream)
    except _Invalid as exc:
        raise _Invalid(f"body.{exc.field}" if exc.field else "body", exc.message) from None


def _take_id(body: dict[str, Any], line: int) -> tuple[str, dict[str, Any]]:
    if "custom_id" in body and "id" in body:
        raise _Invalid("id", "give custom_id or id, not both")
    key = "custom_id" if "custom_id" in body else "id" if "id" in body else None
    if key is None:
        return str(line), body
    value = body[key]
    if isinstance(value, bool) or not isinstance(value, str | int) or value == "":
        raise _Invalid(key, f"must be a non-empty string or an integer, got {value!r}")
    return str(value), {k: v for k, v in body.items() if k != key}


_SHAPES: tuple[tuple[str, API], ...] = (("messages", "chat"), ("prompt", "completions"),
                                         ("input", "responses"))


def _detect(body: Mapping[str, Any]) -> API:
    for key, api in _SHAPES:
        if key in body:
            return api
    raise _Invalid("", "cannot tell the API: a body needs messages (chat), prompt "
                   "(completions) or input (responses), or name its API with api=")


def _build(body: Mapping[str, Any], api: API, model: str | None,
           stream: bool | None) -> Request:
    body = dict(body)
    if model is not None:
        body["model"] = model
    if stream is not None:
        body["stream"] = stream
    if "model" not in body:
        raise _Invalid("model", "missing; give it in the body or pass model=")
    _check_shape(body, api)
    kind = _TYPES[api]
    fields = set(kind.model_fields) - {"extra"}
    known = {k: v for k, v in body.items() if k in fields and v is not None}
    extra = {k: v for k, v in body.items() if k not in fields}
    if api == "responses":
        known, extra = _responses_fields(known, extra)
    try:
        return kind.model_validate({**known, "extra": extra})
    except ValidationError as exc:
        raise _Invalid(*_first_error(exc)) from None


def _check_shape(body: Mapping[str, Any], api: API) -> None:
    """Refuse what the request types cannot carry, with a clearer word than pydantic's."""
    n = body.get("n")
    if n is not None and n != 1:
        raise _Invalid("n", "must be 1 or absent: llmvariance sends the N requests itself")
    if api == "chat" and "system" in body:
        raise _Invalid("system", "a top-level system prompt is Anthropic's; for a "
                       "/v1/messages body use api=\"messages\", for chat a system message")
    if api == "completions" and not isinstance(body.get("prompt"), str):
        raise _Invalid("prompt", "must be one string (a list asks for several completions)")
    items = body.get("messages") if api in ("chat", "messages") else body.get("input")
    if isinstance(items, list):
        key = "input" if api == "responses" else "messages"
        for i, item in enumerate(items):
            content = item.get("content") if isinstance(item, dict) else None
            if api in ("chat", "responses") and isinstance(content, list):
                raise _Invalid(f"{key}[{i}].content", "content parts are not supported; "
                               "give the message text as one string")


def _responses_fields(known: dict[str, Any], extra: dict[str, Any]
                      ) -> tuple[dict[str, Any], dict[str, Any]]:
    items = known.get("input")
    if isinstance(items, list):
        # {"type": "message", ...} is what an item without a type means (EasyInputMessage)
        known["input"] = [{k: v for k, v in item.items() if (k, v) != ("type", "message")}
                          if isinstance(item, dict) else item for item in items]
    include = extra.get("include")
    if known.get("top_logprobs") is not None and isinstance(include, list):
        # the body's include replaces the adapter's: keep the logprobs it would have added
        logprobs = "message.output_text.logprobs"
        extra["include"] = include if logprobs in include else [*include, logprobs]
    return known, extra


def _first_error(exc: ValidationError) -> tuple[str, str]:
    """The first field at fault and what is wrong with it.

    Errors in a union are one per member; the member whose error lies deepest is the one
    the body meant, and several at the same depth are all offered (``a string or a list``).
    """
    errors: list[tuple[str, int, str]] = []
    for error in exc.errors():
        message = ("unknown field" if error["type"] == "extra_forbidden"
                   else error["msg"].removeprefix("Value error, "))
        parts = [p for p in error["loc"] if not (isinstance(p, str) and _UNION_TAG.fullmatch(p))]
        if not parts and ": " in message:  # a model validator names its field itself
            field, message = message.split(": ", 1)
        else:
            field = _field_path(parts)
        errors.append((field, len(parts), message))
    top = errors[0][0].split("[")[0].split(".")[0]
    same = [e for e in errors if e[0].split("[")[0].split(".")[0] == top]
    depth = max(e[1] for e in same)
    deepest = [e for e in same if e[1] == depth]
    messages = list(dict.fromkeys(e[2] for e in deepest))
    return deepest[0][0], " or ".join(messages)


def _field_path(parts: list[int | str]) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else f".{part}" if out else str(part)
    return out
