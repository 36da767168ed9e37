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

A suite's run file (``sample_suite``, format ``llmvariance.run/2``) has ``"suite": {"requests":
K, "digest": "sha256:..."}`` in its header instead of ``request``, then the K requests, one
compact record a line, before any sample; each sample names its ``request_id``: there, "an
index" is a (request id, index) pair. The digest is the SHA-256 of those K lines, so a
resume recognises its suite without reading them, and names the first request that
differs when it is not. The header stays the same size whatever K is.

    {"record": "header", "format": "llmvariance.run/2", "suite": {"requests": 2, ...}, ...}
    {"record": "request", "id": "q1", "request": {"kind": "chat", "model": "m", ...}}
    {"record": "request", "id": "q2", "request": {...}}
    {"record": "sample", "request_id": "q1", "index": 0, "text": "...", ...}

A header may hold ``"server"``: the configuration the server reported before the run
(``sample_many(server_info=True)``: engine, build, slots, settings, command line); readers
tolerate its absence.

Files of format ``llmvariance.run/1`` (a suite's requests were a list in the header) are
still read and resumed. A header is a JSON object: a later version adds keys to it and
raises the format's number only when an older reader would misread the file.

Keys added since: ``study`` (``{"id": "sha256:...", "kind": "sample" | "suite" |
"batch_effect"}``, and a designed experiment's ``design``: see ``shard.study_id``), which
names what was asked so that shards of one study are recognised when merged (written in a
designed experiment's and a shard's file; a plain run's study is worked out from its
request or suite digest, as for files written before it existed); ``shard``
(``{"index": k, "count": K, "partition": ...}``) in a shard's file; ``merged`` (the shards a
merged file was made from). A designed experiment's samples are keyed by (condition,
index), as a suite's by (request id, index): its ``design`` lists the conditions, the
calibration first.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import orjson
from pydantic import ValidationError

from .._client.endpoint import Endpoint
from .._errors import ConfigError
from .._request import ChatRequest, CompletionRequest, MessagesRequest, Request, ResponsesRequest
from .._sample import Sample
from .shard import Shard, study_id

if TYPE_CHECKING:
    import pandas as pd

    from .._analysis.report import VarianceReport

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory lock
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "FORMAT",
    "FORMATS",
    "SUITE_FORMAT",
    "RunContents",
    "RunFile",
    "Suite",
    "read_run",
    "request_digest",
]

FORMAT = "llmvariance.run/1"
"""What a one-request run file is written as."""
SUITE_FORMAT = "llmvariance.run/2"
"""What a suite's run file is written as: its requests are records after the header."""
FORMATS = (FORMAT, SUITE_FORMAT)
"""The formats this version reads and resumes."""

Suite = Sequence[tuple[str, Request]]
"""The requests of a suite, each with its id, in order."""


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


_KINDS: dict[str, type[Request]] = {"chat": ChatRequest, "completion": CompletionRequest,
                                    "messages": MessagesRequest, "responses": ResponsesRequest}


def _request_record(request: Request) -> dict[str, Any]:
    kind = next(k for k, t in _KINDS.items() if isinstance(request, t))
    return {"kind": kind, **request.model_dump(mode="json")}


def _request_from(record: dict[str, Any]) -> Request:
    fields = dict(record)
    model = _KINDS.get(fields.pop("kind", None), CompletionRequest)
    return model.model_validate(fields)


def _header_requests(request: Request | Suite) -> dict[str, Any]:
    """The header's ``request`` of one request, or ``suite`` of a suite's (format 1)."""
    if isinstance(request, Sequence):
        return {"suite": [{"id": rid, "request": _request_record(r)} for rid, r in request]}
    return {"request": _request_record(request)}


def _suite_lines(suite: Suite) -> Iterator[bytes]:
    """A suite's request records, one compact JSON line each (fields left at None
    omitted), made one at a time."""
    for rid, request in suite:
        kind = next(k for k, t in _KINDS.items() if isinstance(request, t))
        yield orjson.dumps({"record": "request", "id": rid, "request": {
            "kind": kind, **request.model_dump(mode="json", exclude_none=True)}}) + b"\n"


def _suite_digest(suite: Suite) -> str:
    digest = hashlib.sha256()
    for line in _suite_lines(suite):
        digest.update(line)
    return f"sha256:{digest.hexdigest()}"


def request_digest(request: Request | Suite) -> str:
    """SHA-256 of a request's header record (sorted keys), or a suite's digest."""
    if isinstance(request, Sequence):
        return _suite_digest(request)
    body = orjson.dumps(_request_record(request), option=orjson.OPT_SORT_KEYS)
    return f"sha256:{hashlib.sha256(body).hexdigest()}"


def _stored_request_digest(header: dict[str, Any]) -> str | None:
    """The digest ``request_digest`` gives for what a header names (None: not known)."""
    suite = header.get("suite")
    if isinstance(suite, dict):
        digest = suite.get("digest")
        return digest if isinstance(digest, str) else None
    request = header.get("request")
    if isinstance(request, dict):
        body = orjson.dumps(request, option=orjson.OPT_SORT_KEYS)
        return f"sha256:{hashlib.sha256(body).hexdigest()}"
    return None


class RunContents:
    """What a run file holds: its header and where the latest record of each index is.

    Reading it costs memory per index (8 bytes), not per sample: ``iter_samples()``
    streams the samples from the file one at a time; ``samples`` loads them all.
    """

    __slots__ = ("__weakref__", "_last", "_requests_at", "arms", "cut_line", "good_bytes",
                 "header", "last_started", "max_n", "path", "suite_ids")

    def __init__(self, path: Path, header: dict[str, Any], last: _LastRecords,
                 good_bytes: int, cut_line: bool, max_n: int,
                 suite_ids: list[str] | None = None, requests_at: int | None = None,
                 arms: list[str] | None = None, last_started: str = "") -> None:
        self.path = path
        self.header = header
        self.suite_ids = suite_ids
        """A suite's request ids in order; None for a run of one request."""
        self.arms = arms
        """A designed experiment's conditions (the calibration first), which its samples
        are keyed by with their index; None otherwise."""
        self.last_started = last_started
        """When the run last started: the header's ``started_at`` or the last ``resume``."""
        self._requests_at = requests_at
        """Where a format 2 suite's request records start (None: they are in the header)."""
        self._last = last
        self.good_bytes = good_bytes
        """Length of the file up to the end of its last complete line."""
        self.cut_line = cut_line
        """True when the last line was incomplete (a crash while writing)."""
        self.max_n = max_n
        """The largest n the run was started or resumed with."""

    @property
    def request(self) -> Request:
        """The request of a one-request run (a suite's file has ``requests``)."""
        if self.suite_ids is not None:
            raise ConfigError("output", f"{self.path} is a suite's run file; read its "
                              "requests with .requests")
        return _request_from(self.header["request"])

    @property
    def requests(self) -> list[tuple[str, Request]]:
        """A suite's requests with their ids (a one-request run: ``[("", request)]``)."""
        if self.suite_ids is None:
            return [("", self.request)]
        return [(rid, _request_from(fields)) for rid, fields in self.request_records()]

    def request_records(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """A suite's requests as stored (id, fields with ``kind``), read one at a time."""
        if self._requests_at is None:
            for entry in self.header.get("suite") or ():
                yield entry["id"], entry["request"]
            return
        for line in self._request_lines():
            record = orjson.loads(line)
            yield record["id"], record["request"]

    def _request_lines(self) -> Iterator[bytes]:
        """A format 2 suite's request lines, exactly as written."""
        assert self._requests_at is not None
        assert self.suite_ids is not None
        with self.path.open("rb") as handle:
            handle.seek(self._requests_at)
            for _ in self.suite_ids:
                yield handle.readline()

    @property
    def shard(self) -> Shard | None:
        """The shard this file holds (None: the whole study)."""
        record = self.header.get("shard")
        if not isinstance(record, dict):
            return None
        try:
            return Shard(index=record["index"], count=record["count"])
        except (KeyError, ValidationError):
            raise ConfigError("files", f"{self.path}: the header's shard is damaged: "
                              f"{record!r}") from None

    @property
    def partition(self) -> str | None:
        """The partition a shard's file was cut by (None: not a shard)."""
        record = self.header.get("shard")
        return record.get("partition", "diagonal") if isinstance(record, dict) else None

    @property
    def study(self) -> dict[str, Any]:
        """What was asked (``kind``, ``id``, a designed experiment's ``design``); worked out
        from the header for files written before it named its study."""
        stored = self.header.get("study")
        if isinstance(stored, dict):
            return stored
        kind = "suite" if self.suite_ids is not None else "sample"
        digest = _stored_request_digest(self.header) or ""
        return {"kind": kind, "id": study_id(kind, digest)}

    @property
    def requests_digest(self) -> str | None:
        """SHA-256 of the request (or the suite's digest) as the header names it."""
        return _stored_request_digest(self.header)

    def keyed(self) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.bool_]]:
        """Every pair with a record: its key (``index * K + position``, K the number of
        requests or arms), the byte offset of its latest record and whether that is ok."""
        return self._last.entries()

    @property
    def width(self) -> int:
        """K in ``keyed``: the suite's requests, the experiment's arms, or 1."""
        return len(self.suite_ids or self.arms or [""])

    @property
    def n(self) -> int | None:
        """The n the run was started with (resumes may have asked for more)."""
        value = self.header.get("n")
        return value if isinstance(value, int) else None

    @property
    def server(self) -> dict[str, Any] | None:
        """The server's configuration the header recorded (key ``server``); None in files
        written without it (before it existed, or without ``server_info=True``)."""
        value = self.header.get("server")
        return value if isinstance(value, dict) else None

    @property
    def endpoint_url(self) -> str | None:
        endpoint = self.header.get("endpoint")
        url = endpoint.get("base_url") if isinstance(endpoint, dict) else None
        return url if isinstance(url, str) else None

    def __len__(self) -> int:
        """Indices with a sample, ok or failed."""
        return self._last.count()

    def ok_indices(self) -> set[int]:
        """Indices whose latest sample is ok (not failed); for a suite see ``ok_pairs``."""
        return self._last.ok_indices()

    def ok_pairs(self) -> set[tuple[str, int]]:
        """(request id, index) pairs whose latest sample is ok (a one-request run: id "";
        a designed experiment's: (condition, index))."""
        ids = self.suite_ids or self.arms or [""]
        k = len(ids)
        return {(ids[key % k], key // k) for key in self._last.ok_indices()}

    def iter_samples(self) -> Iterator[Sample]:
        """The latest sample of every index, in file order, read one line at a time."""
        wanted = self._last.offsets()
        if not wanted.size:
            return
        position = -1
        with self.path.open("rb") as handle:
            for number, offset in enumerate(wanted.tolist()):
                if position != offset:  # skip superseded records
                    handle.seek(offset)
                line = handle.readline()
                position = offset + len(line)
                try:
                    yield Sample.model_validate_json(_SAMPLE_FIELDS.sub(b"{", line, count=1))
                except ValidationError as exc:
                    raise ConfigError("output", f"{self.path}: sample record {number + 1} "
                                      f"(byte {offset}) is damaged: "
                                      f"{exc.errors()[0]['msg']}") from None

    @property
    def samples(self) -> dict[int, Sample]:
        """Every index's latest sample, loaded into memory (``iter_samples`` streams)."""
        return {sample.index: sample for sample in self.iter_samples()}

    def to_pandas(self, *, tokens: bool = False) -> pd.DataFrame:
        """Every index's latest sample as one row, sorted by index, with typed columns
        (as ``SampleSet.to_pandas``). Needs pandas."""
        from .frames import samples_frame

        return samples_frame(self.iter_samples(), tokens=tokens, sort=True)

    @property
    def report(self) -> VarianceReport:
        """The ``VarianceReport`` of every index's latest sample (tree included), read
        from the file a record at a time on each access."""
        from .._analysis.collect import VarianceCollector

        collector = VarianceCollector()
        for sample in self.iter_samples():
            collector.add(sample)
        return collector.report()


class _LastRecords:
    """Per index, the byte offset of its latest record and whether it was ok.

    A growable int64 array indexed by sample index: ``2 * offset + ok``, or -1 for none.
    """

    __slots__ = ("_codes",)

    def __init__(self) -> None:
        self._codes = np.full(1024, -1, dtype=np.int64)

    def record(self, index: int, offset: int, ok: bool) -> None:
        if index >= self._codes.size:
            grown = np.full(max(2 * self._codes.size, index + 1), -1, dtype=np.int64)
            grown[:self._codes.size] = self._codes
            self._codes = grown
        self._codes[index] = 2 * offset + ok

    def count(self) -> int:
        return int(np.count_nonzero(self._codes >= 0))

    def ok_indices(self) -> set[int]:
        return set(np.flatnonzero((self._codes >= 0) & (self._codes % 2 == 1)).tolist())

    def offsets(self) -> npt.NDArray[np.int64]:
        codes = self._codes[self._codes >= 0]
        return np.sort(codes // 2)

    def entries(self) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64],
                               npt.NDArray[np.bool_]]:
        keys = np.flatnonzero(self._codes >= 0).astype(np.int64)
        codes = self._codes[keys]
        return keys, codes // 2, codes % 2 == 1


_SAMPLE_FIELDS = re.compile(rb'^\{"record":"sample",?')
"""The record tag a sample line starts with; what follows are the Sample's fields."""


def _as_record(record: object, path: Path, number: int) -> dict[str, Any]:
    if not isinstance(record, dict):
        raise ConfigError("output", f"{path}:{number} is not a JSON object record")
    return record


def read_run(path: str | os.PathLike[str]) -> RunContents:
    """Index a run file, tolerating a cut last line; raises ``ConfigError`` otherwise.

    One pass over the file, one line at a time; the samples stay on disk until
    ``iter_samples()`` (or ``samples``) reads them.
    """
    path = Path(path)
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise ConfigError("output", f"cannot read {path}: {exc.strerror}") from None
    with handle:
        first = handle.readline()
        if not first.endswith(b"\n"):
            raise ConfigError("output", f"{path} is not an llmvariance run file (no complete "
                              "header line); choose another path or delete it")
        try:
            header = _as_record(orjson.loads(first), path, 1)
        except orjson.JSONDecodeError:
            header = {}
        if header.get("record") != "header":
            raise ConfigError("output", f"{path} is not an llmvariance run file "
                              "(no header on line 1)")
        if header.get("format") not in FORMATS:
            raise ConfigError("output", f"{path} has format {header.get('format')!r}; "
                              f"this version reads {' and '.join(map(repr, FORMATS))}")
        offset = len(first)
        requests_at = None
        suite_ids: list[str] | None
        positions: dict[Any, int] | None
        arms = _arms(header, path)
        key_field = "request_id"
        if isinstance(header.get("suite"), dict):
            requests_at = offset
            suite_ids, positions, offset = _suite_records(header, handle, offset, path)
        elif arms is not None:
            suite_ids, key_field = None, "condition"
            positions = {arm: position for position, arm in enumerate(arms)}
        else:
            suite_ids, positions = _suite_positions(header, path)
        k = len(positions) if positions is not None else 1
        last = _LastRecords()
        first_n = header.get("n")
        max_n = first_n if isinstance(first_n, int) else 0
        started = header.get("started_at")
        last_started = started if isinstance(started, str) else ""

        def contents(good: int, cut: bool) -> RunContents:
            return RunContents(path, header, last, good, cut, max_n, suite_ids, requests_at,
                               arms, last_started)

        start = 2 + (len(suite_ids) if requests_at is not None and suite_ids else 0)
        for number, line in enumerate(handle, start):
            if not line.endswith(b"\n"):  # cut by a crash while writing
                return contents(offset, True)
            try:
                record = _as_record(orjson.loads(line), path, number)
            except orjson.JSONDecodeError:
                if handle.read(1):
                    raise ConfigError("output", f"{path}:{number} is not a JSON record; the "
                                      "file is damaged beyond a cut last line") from None
                # the last line: a cut record that a stray newline completed
                return contents(offset, True)
            kind = record.get("record")
            if kind == "sample":
                index = record.get("index")
                if (isinstance(index, bool) or not isinstance(index, int) or index < 0
                        or index >= max_n):
                    raise ConfigError("output", f"{path}:{number}: bad sample index {index!r} "
                                      f"(the run asked for {max_n})")
                position = 0
                if positions is not None:
                    position = positions.get(record.get(key_field), -1)
                    if position < 0:
                        where = "suite" if arms is None else "experiment's design"
                        raise ConfigError("output", f"{path}:{number}: {key_field} "
                                          f"{record.get(key_field)!r} is not in the {where}")
                last.record(index * k + position, offset, record.get("error") is None)
            elif kind == "resume" and isinstance(record.get("n"), int):
                max_n = max(max_n, record["n"])
                if isinstance(record.get("at"), str):
                    last_started = max(last_started, record["at"])
            offset += len(line)
    return contents(offset, False)


_REQUEST_ID = re.compile(rb'^\{"record":"request","id":("(?:[^"\\]|\\.)*")')
"""The id at the start of a request record as this library writes it (read without
parsing the request)."""


def _suite_records(header: dict[str, Any], handle: IO[bytes], offset: int, path: Path
                   ) -> tuple[list[str], dict[Any, int], int]:
    """A format 2 suite's ids in order, each id's position, and where its records end."""
    count = header["suite"].get("requests")
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ConfigError("output", f"{path}: the header's suite is damaged")
    ids: list[str] = []
    positions: dict[Any, int] = {}
    for number in range(2, count + 2):
        line = handle.readline()
        if not line.endswith(b"\n"):
            raise ConfigError("output", f"{path} holds {number - 2} of its suite's {count} "
                              "requests (cut while it was created?); delete it to start over")
        found = _REQUEST_ID.match(line)
        rid = orjson.loads(found.group(1)) if found else None
        if rid is None:
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError:
                record = None
            if isinstance(record, dict) and record.get("record") == "request":
                rid = record.get("id")
        if not isinstance(rid, str) or rid in positions:
            raise ConfigError("output", f"{path}:{number}: not a request record of a unique "
                              "id; the file is damaged")
        positions[rid] = len(ids)
        ids.append(rid)
        offset += len(line)
    return ids, positions, offset


def _arms(header: dict[str, Any], path: Path) -> list[str] | None:
    """A designed experiment's arms (what its samples are keyed by), or None."""
    study = header.get("study")
    design = study.get("design") if isinstance(study, dict) else None
    if not isinstance(design, dict) or "arms" not in design:
        return None
    arms = design["arms"]
    if (not isinstance(arms, list) or not arms or not all(isinstance(a, str) for a in arms)
            or len(set(arms)) != len(arms)):
        raise ConfigError("output", f"{path}: the header's design is damaged")
    return arms


def _suite_positions(header: dict[str, Any], path: Path
                     ) -> tuple[list[str], dict[Any, int]] | tuple[None, None]:
    """A suite header's ids in order and each id's position (None, None: one request)."""
    suite = header.get("suite")
    if suite is None:
        return None, None
    entries = suite if isinstance(suite, list) else []
    ids = [entry.get("id") for entry in entries if isinstance(entry, dict)]
    strings = [i for i in ids if isinstance(i, str)]
    if not strings or len(strings) != len(entries) or len(set(strings)) != len(strings):
        raise ConfigError("output", f"{path}: the header's suite is damaged")
    return strings, {rid: position for position, rid in enumerate(strings)}


class RunFile:
    """An open run file that samples are appended to; use ``RunFile.open`` to create one."""

    __slots__ = ("_handle", "_pending", "path")

    def __init__(self, path: Path, handle: IO[bytes],
                 pending: tuple[int, dict[str, Any]] | None = None) -> None:
        self.path = path
        self._handle = handle
        # (where to truncate, the resume marker): done at the first write, so a run that
        # stops before sending anything (a damaged record found while resuming) leaves the
        # file as it was
        self._pending = pending

    @classmethod
    def open(cls, path: str | os.PathLike[str], request: Request | Suite, n: int,
             endpoint: Endpoint,
             version: str, *, allow_endpoint_change: bool = False,
             server: dict[str, Any] | None = None,
             header: Mapping[str, Any] | None = None,
             shard: Shard | None = None, design: dict[str, Any] | None = None,
             partition: str = "diagonal",
             ) -> tuple[RunFile, RunContents | None]:
        """Open ``path`` for ``request`` (or a suite's requests): create it, or resume it.

        Returns the file and, when resuming, what it already holds. Only an empty or
        missing file is written from the start; anything else must be a run file of this
        request sent to this endpoint's URL (unless ``allow_endpoint_change``), of the same
        shard (``shard``, cut by ``partition``) and design (a designed experiment's), or it
        is refused with ``ConfigError`` and left untouched. A cut last line is truncated
        away first. The file is locked before it is read or changed, so two processes
        never interleave (the second is refused). ``server`` (``ServerInfo.model_dump``)
        goes in a new file's header as ``server``, and ``header`` adds more keys to it (a
        suite's ``comparison``); a resumed file keeps its header.
        """
        path = Path(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # O_CREAT without O_TRUNC: nothing is lost before the lock is ours.
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise ConfigError("output", f"cannot write the run file {path}: "
                              f"{exc.strerror or exc}") from None
        handle = cls._lock(os.fdopen(fd, "r+b"), path)
        try:
            contents = read_run(path) if os.fstat(fd).st_size else None
            suite = request if isinstance(request, Sequence) else None
            if suite is not None:  # its requests: records after the header, hashed there
                requests: dict[str, Any] = {"suite": {"requests": len(suite),
                                                      "digest": _suite_digest(suite)}}
            else:
                requests = _header_requests(request)
            kind = "suite" if suite is not None else "batch_effect" if design else "sample"
            study: dict[str, Any] = {"id": study_id(kind, request_digest(request), design),
                                     "kind": kind}
            if design:
                study["design"] = design
            shard_record = None if shard is None else shard.record(partition)
            if contents is None:
                run = cls(path, handle)
                run._write({
                    "record": "header", "format": FORMAT if suite is None else SUITE_FORMAT,
                    "library_version": version, "started_at": _now(), "n": n, **requests,
                    "endpoint": {"base_url": endpoint.base_url, "name": endpoint.label,
                                 "header_names": sorted(endpoint.headers)},
                    **({"server": server} if server is not None else {}),
                    **(header or {}),
                    # a plain run's study is its request (or suite digest): named only
                    # where it says more, in a design's or a shard's file
                    **({"study": study} if design or shard_record else {}),
                    **({"shard": shard_record} if shard_record else {}),
                }, flush=suite is None)
                if suite is not None:
                    run._handle.writelines(_suite_lines(suite))
                    run._handle.flush()
                return run, None
            if isinstance(request, Sequence):
                _check_same_suite(path, contents, request, requests["suite"])
            else:
                _check_same_request(path, contents, request)
            _check_same_part(path, contents, study, shard_record)
            if contents.endpoint_url != endpoint.base_url and not allow_endpoint_change:
                raise ConfigError("output", f"{path} holds samples from "
                                  f"{contents.endpoint_url}, not {endpoint.base_url}; mixing "
                                  "two servers' outputs in one run is refused (pass "
                                  "allow_endpoint_change=True if that is intended)")
        except BaseException:
            handle.close()
            raise
        marker = {"record": "resume", "at": _now(), "n": n, "have": len(contents),
                  "base_url": endpoint.base_url}
        return cls(path, handle, (contents.good_bytes, marker)), contents

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

    def _write(self, record: dict[str, Any], *, flush: bool = True) -> None:
        if self._pending is not None:
            good_bytes, marker = self._pending
            self._pending = None
            self._handle.truncate(good_bytes)  # drop a line cut by a crash
            self._handle.seek(good_bytes)
            self._write(marker)
        self._handle.write(orjson.dumps(record) + b"\n")
        if flush:
            self._handle.flush()  # in the OS's hands now: a killed process loses nothing

    def write(self, sample: Sample) -> None:
        """Append one finished sample."""
        self._write({"record": "sample", **sample.model_dump(mode="json")})

    def close(self) -> None:
        if not self._handle.closed:
            os.fsync(self._handle.fileno())
            self._handle.close()


def _check_same_suite(path: Path, contents: RunContents, suite: Suite,
                      wanted: dict[str, Any]) -> None:
    """Refuse to resume a file of another suite, naming the first request that differs."""
    if contents.suite_ids is None:
        raise ConfigError("output", f"{path} was not written for a suite; choose another "
                          "output file")
    if contents._requests_at is not None:
        if contents.header["suite"].get("digest") == wanted["digest"]:
            return
        stored: Iterator[tuple[str, bytes]] = zip(contents.suite_ids,
                                                   contents._request_lines(), strict=True)
        given: Iterator[tuple[str, bytes]] = zip((rid for rid, _ in suite),
                                                  _suite_lines(suite), strict=True)
    else:  # format 1: the requests are a list in the header
        records = _header_requests(suite)["suite"]
        if contents.header["suite"] == records:
            return
        stored = ((e.get("id"), orjson.dumps(e, option=orjson.OPT_SORT_KEYS))
                  for e in contents.header["suite"])
        given = ((e["id"], orjson.dumps(e, option=orjson.OPT_SORT_KEYS)) for e in records)
    for position, (old, new) in enumerate(itertools.zip_longest(stored, given)):
        if old != new:
            raise ConfigError("output", f"{path} was written for a different suite: "
                              f"{_difference(position, old, new)}; resume with the same "
                              "suite or choose another output file")


def _difference(position: int, old: tuple[str, bytes] | None,
                new: tuple[str, bytes] | None) -> str:
    """The first request where two suites differ, in words."""
    where = f"request {position + 1}"
    if old is None or new is None:
        only, rid = ("this suite", new[0]) if old is None else ("the file", old[0])  # type: ignore[index]
        return f"{where} ({rid!r}) is only in {only}"
    if old[0] != new[0]:
        return f"{where} is {old[0]!r} in the file and {new[0]!r} here"
    return f"{where} ({old[0]!r}) differs"


def _check_same_part(path: Path, contents: RunContents, study: dict[str, Any],
                     shard: dict[str, Any] | None) -> None:
    """Refuse to resume a file of another design or another shard (files that name no
    study are of a plain run: the request check covered them)."""
    stored = contents.header.get("study")
    if isinstance(stored, dict) and stored.get("id") != study.get("id"):
        raise ConfigError("output", f"{path} was written for a different "
                          f"{stored.get('kind', 'study')} design; resume with the same "
                          "arguments or choose another output file")
    held = contents.header.get("shard")
    if held != shard:
        def name(record: Any) -> str:
            return ("the whole study" if not isinstance(record, dict) else
                    f"shard {record.get('index')}/{record.get('count')} "
                    f"({record.get('partition')})")
        raise ConfigError("output", f"{path} holds {name(held)}, not {name(shard)}; resume "
                          "it with the same shard= (or choose another output file; "
                          "`llmvariance merge` joins shards)")


def _check_same_request(path: Path, contents: RunContents, request: Request) -> None:
    if contents.suite_ids is not None:
        raise ConfigError("output", f"{path} was not written for one request; choose "
                          "another output file")
    wanted: Any = _header_requests(request)
    stored = contents.header.get("request", {})
    wanted = wanted["request"]
    if stored != wanted:
        differ = sorted(k for k in stored.keys() | wanted.keys()
                        if stored.get(k) != wanted.get(k))
        raise ConfigError("output", f"{path} was written for a different request "
                          f"({', '.join(differ)} differ); resume with the same request or "
                          "choose another output file")
