"""The run file: a JSONL sink that makes runs crash-safe and resumable.

Line 1 is a header (the request, the endpoint without its key, the library version, the
start time); every later line is a finished sample, appended and flushed as it
completes, or a ``resume`` marker. A kill loses at most the requests in flight. A last
line cut by a crash is dropped and the file truncated before anything new is appended.
Only the last record for an index counts, so a failed sample retried on resume is
superseded by its new record.

    {"record": "header", "format": "llmvariance.run/1", "request": {...}, ...}
    {"record": "sample", "index": 0, "text": "...", ...}
    {"record": "resume", "at": "2026-11-27T23:40:00Z", "n": 300}
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson
from pydantic import ValidationError

from ._endpoint import Endpoint
from ._errors import ConfigError
from ._request import ChatRequest, CompletionRequest, Request
from ._sample import Sample

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory lock
    fcntl = None  # type: ignore[assignment]

__all__ = ["FORMAT", "RunContents", "RunFile", "read_run"]

FORMAT = "llmvariance.run/1"


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _request_record(request: Request) -> dict[str, Any]:
    kind = "chat" if isinstance(request, ChatRequest) else "completion"
    return {"kind": kind, **request.model_dump(mode="json")}


def _request_from(record: dict[str, Any]) -> Request:
    fields = dict(record)
    kind = fields.pop("kind", None)
    model = ChatRequest if kind == "chat" else CompletionRequest
    return model.model_validate(fields)


@dataclass
class RunContents:
    """What a run file holds: its header and the latest sample for every index."""

    path: Path
    header: dict[str, Any]
    samples: dict[int, Sample] = field(default_factory=dict)
    good_bytes: int = 0
    """Length of the file up to the end of its last complete line."""
    cut_line: bool = False
    """True when the last line was incomplete (a crash while writing)."""

    @property
    def request(self) -> Request:
        return _request_from(self.header["request"])

    @property
    def n(self) -> int | None:
        """The n the run was started with (resumes may have asked for more)."""
        value = self.header.get("n")
        return value if isinstance(value, int) else None


def read_run(path: str | os.PathLike[str]) -> RunContents:
    """Read a run file, tolerating a cut last line; raises ``ConfigError`` otherwise."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError("output", f"cannot read {path}: {exc.strerror}") from None
    lines = data.split(b"\n")
    # Everything after the last newline is an unfinished line (empty when all is well).
    tail = lines.pop()
    contents: RunContents | None = None
    offset = 0
    for number, line in enumerate(lines, 1):
        end = offset + len(line) + 1
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError:
            if number == len(lines) and not tail and contents is not None:
                contents.cut_line = True  # a cut record that a stray newline completed
                return contents
            raise ConfigError("output", f"{path}:{number} is not a JSON record; "
                              "the file is damaged beyond a cut last line") from None
        if not isinstance(record, dict):
            raise ConfigError("output", f"{path}:{number} is not a JSON object record")
        if contents is None:
            if record.get("record") != "header":
                raise ConfigError("output", f"{path} is not an llmvariance run file "
                                  "(no header on line 1)")
            if record.get("format") != FORMAT:
                raise ConfigError("output", f"{path} has format {record.get('format')!r}; "
                                  f"this version reads {FORMAT!r}")
            contents = RunContents(path, record)
        elif record.get("record") == "sample":
            fields = {k: v for k, v in record.items() if k != "record"}
            try:
                sample = Sample.model_validate(fields)
            except ValidationError as exc:
                raise ConfigError("output", f"{path}:{number}: bad sample record: "
                                  f"{exc.errors()[0]['msg']}") from None
            contents.samples[sample.index] = sample
        offset = end
        contents.good_bytes = offset
    if contents is None:
        if not lines and tail.startswith(b'{"record":"header"'):
            # the first write was cut: a run that never got going (RunFile.open restarts it)
            return RunContents(path, {}, cut_line=True)
        raise ConfigError("output", f"{path} is empty or holds no complete header")
    contents.cut_line = bool(tail)
    return contents


class RunFile:
    """An open run file that samples are appended to; use ``RunFile.open`` to create one."""

    __slots__ = ("_handle", "path")

    def __init__(self, path: Path, handle: IO[bytes]) -> None:
        self.path = path
        self._handle = handle

    @classmethod
    def open(cls, path: str | os.PathLike[str], request: Request, n: int, endpoint: Endpoint,
             version: str) -> tuple[RunFile, dict[int, Sample]]:
        """Open ``path`` for ``request``: create it, or resume it.

        Returns the file and the samples already in it. A file written for another
        request is refused with ``ConfigError`` and left untouched; a cut last line is
        truncated away first. The file is locked before it is read or changed, so two
        processes never interleave (the second is refused).
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        # O_CREAT without O_TRUNC: nothing is lost before the lock is ours.
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        handle = cls._lock(os.fdopen(fd, "r+b"), path)
        try:
            contents = read_run(path) if os.fstat(fd).st_size else None
            if contents is not None and not contents.header:
                contents = None  # only a header cut by a crash: nothing to keep
            if contents is None:
                handle.truncate(0)
                run = cls(path, handle)
                run._write({
                    "record": "header", "format": FORMAT, "library_version": version,
                    "started_at": _now(), "n": n, "request": _request_record(request),
                    "endpoint": {"base_url": endpoint.base_url, "name": endpoint.label,
                                 "header_names": sorted(endpoint.headers)},
                })
                return run, {}
            _check_same_request(path, contents, request)
        except BaseException:
            handle.close()
            raise
        handle.truncate(contents.good_bytes)  # drop a line cut by a crash
        handle.seek(contents.good_bytes)
        run = cls(path, handle)
        run._write({"record": "resume", "at": _now(), "n": n, "have": len(contents.samples)})
        return run, contents.samples

    @staticmethod
    def _lock(handle: IO[bytes], path: Path) -> IO[bytes]:
        if fcntl is not None:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                raise ConfigError("output", f"{path} is being written by another process"
                                  ) from None
        return handle

    def _write(self, record: dict[str, Any]) -> None:
        self._handle.write(orjson.dumps(record) + b"\n")
        self._handle.flush()  # in the OS's hands now: a killed process loses nothing

    def write(self, sample: Sample) -> None:
        """Append one finished sample."""
        self._write({"record": "sample", **sample.model_dump(mode="json")})

    def close(self) -> None:
        if not self._handle.closed:
            os.fsync(self._handle.fileno())
            self._handle.close()


def _check_same_request(path: Path, contents: RunContents, request: Request) -> None:
    stored = contents.header.get("request", {})
    wanted = _request_record(request)
    if stored != wanted:
        differ = sorted(k for k in stored.keys() | wanted.keys()
                        if stored.get(k) != wanted.get(k))
        raise ConfigError("output", f"{path} was written for a different request "
                          f"({', '.join(differ)} differ); resume with the same request or "
                          "choose another output file")
