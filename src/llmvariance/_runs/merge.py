"""Merging shards: K run files of one study → the run file one process would have written.

``merge_runs(paths, output)`` checks that the files are of one study — the same kind of
run, the same request or suite (naming the first request that differs), the same design,
the same endpoint (unless ``allow_endpoint_change``: a suite sent through several regions
or replicas), shards of one partition — and refuses them otherwise, naming the difference.
It then accounts for every (request, index) pair of the study: a shard with no file is
refused unless ``allow_missing`` (the merged file then resumes the rest: rerun the study
with it as ``output``), pairs a present shard lacks are counted, and a pair recorded in
more than one file is kept once, from the file that was last started (a run's
``started_at`` or its last ``resume``; ties: the file given later), its last record there.

The merged file is an ordinary run file of the whole study: its header is the shards'
without ``shard`` (with ``merged``: the files it was made from), and its samples are the
kept records, byte for byte, in a fixed order (index, then request or condition position)
whatever order the shards finished in. So its report, tree and DataFrame are those of the
same samples read from one file, and ``sample_suite(..., output=merged)`` resumes it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import weakref
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import orjson

from .._errors import ConfigError
from .._sample import Sample
from .._version import __version__
from .runfile import RunContents, _difference, read_run
from .shard import PARTITIONS

if TYPE_CHECKING:
    import pandas as pd

    from .._analysis.report import VarianceReport

__all__ = ["MergedRun", "merge_runs", "read_runs"]

_EXAMPLES = 5
"""How many pairs a finding names before it says how many more."""


class MergedRun:
    """What ``merge_runs`` made: the merged run file (``run``, a ``RunContents``) and what
    the merge found: missing shards, missing and overlapping pairs.

    ``report``, ``to_pandas()``, ``iter_samples()`` and ``samples`` are the merged file's.
    A merge written to no ``output`` lives in a temporary file for as long as this object
    (or its ``run``).
    """

    __slots__ = ("__weakref__", "count", "expected_pairs", "files", "missing_by_shard",
                 "missing_examples", "missing_shards", "outside", "overlap_examples",
                 "overlapping_pairs", "partition", "run")

    def __init__(self, run: RunContents, *, files: list[Path], count: int, partition: str,
                 missing_shards: list[int], missing_by_shard: dict[int, int],
                 missing_examples: list[tuple[str, int]], overlapping_pairs: int,
                 overlap_examples: list[tuple[str, int]], outside: int,
                 expected_pairs: int) -> None:
        self.run = run
        self.files = files
        self.count = count
        """K: how many shards the study was cut into (1: the files are whole runs)."""
        self.partition = partition
        self.missing_shards = missing_shards
        """Shards (0-based) no file was given for."""
        self.missing_by_shard = missing_by_shard
        """Per present shard with gaps, how many of its pairs no file holds."""
        self.missing_examples = missing_examples
        self.overlapping_pairs = overlapping_pairs
        """Pairs recorded in more than one file (each kept once)."""
        self.overlap_examples = overlap_examples
        self.outside = outside
        """Records a shard's file held of pairs its shard does not own (kept all the same)."""
        self.expected_pairs = expected_pairs

    @property
    def path(self) -> Path:
        return self.run.path

    @property
    def missing_pairs(self) -> int:
        """Pairs of the study no file holds (those of missing shards included)."""
        return self.expected_pairs - len(self.run)

    @property
    def complete(self) -> bool:
        """Every pair of the study has a record (ok or failed)."""
        return self.missing_pairs == 0

    @property
    def findings(self) -> list[str]:
        """What a person merging these files should know, one line each (empty: nothing)."""
        lines = []
        if self.missing_shards:
            names = ", ".join(f"{k}/{self.count}" for k in self.missing_shards)
            lines.append(f"missing shard{'s' * (len(self.missing_shards) > 1)} {names}: "
                         "no file was given for them")
        for k, missing in sorted(self.missing_by_shard.items()):
            lines.append(f"shard {k}/{self.count} lacks {missing:,} of its pairs (stopped "
                         "before it finished?), e.g. " + _pairs_text(self.missing_examples))
        if self.overlapping_pairs:
            lines.append(f"{self.overlapping_pairs:,} pairs are in more than one file; each "
                         "is kept once, from the file started last, e.g. "
                         + _pairs_text(self.overlap_examples))
        if self.outside:
            lines.append(f"{self.outside:,} records are of pairs outside their file's shard")
        return lines

    def describe(self) -> str:
        """One line on what was merged, then the findings."""
        shards = ("whole runs" if self.count == 1 else
                  f"shards of {self.count} ({self.partition})")
        head = (f"merged {len(self.files)} files ({shards}): {len(self.run):,} of "
                f"{self.expected_pairs:,} pairs")
        return "\n".join([head, *self.findings])

    def iter_samples(self) -> Iterator[Sample]:
        return self.run.iter_samples()

    @property
    def samples(self) -> dict[int, Sample]:
        return self.run.samples

    @property
    def report(self) -> VarianceReport:
        return self.run.report

    def to_pandas(self, *, tokens: bool = False) -> pd.DataFrame:
        return self.run.to_pandas(tokens=tokens)

    def __repr__(self) -> str:
        return (f"<MergedRun {self.run.path} files={len(self.files)} shards={self.count} "
                f"pairs={len(self.run)}/{self.expected_pairs}>")


def _pairs_text(pairs: Sequence[tuple[str, int]]) -> str:
    return ", ".join(f"({rid!r}, {i})" if rid else f"index {i}" for rid, i in pairs)


def read_runs(paths: Sequence[str | os.PathLike[str]] | str | os.PathLike[str], *,
              allow_missing: bool = False, allow_endpoint_change: bool = False
              ) -> RunContents:
    """The run that ``paths`` hold together: one file as ``read_run`` reads it; several
    (the shards of a study, or runs of one study) merged as ``merge_runs`` merges them,
    into a temporary file that lives as long as the returned run. For commands and
    functions that take "a run" as files."""
    if isinstance(paths, str | os.PathLike):
        return read_run(paths)
    if len(paths) == 1:
        return read_run(paths[0])
    return merge_runs(paths, allow_missing=allow_missing,
                      allow_endpoint_change=allow_endpoint_change).run


def merge_runs(paths: Sequence[str | os.PathLike[str]],
               output: str | os.PathLike[str] | None = None, *,
               allow_missing: bool = False, allow_endpoint_change: bool = False) -> MergedRun:
    """Merge the run files of one study's shards (or whole runs of one study) into
    ``output`` (default: a temporary file kept while the result lives).

    Refuses, with ``ConfigError`` naming the difference, files of different studies,
    requests, designs, endpoints (unless ``allow_endpoint_change``) or partitions, and a
    study with a shard missing (unless ``allow_missing``). See the module for the rules.
    """
    if isinstance(paths, str | os.PathLike) or not paths:
        raise ConfigError("files", "name the run files to merge (a list of paths)")
    runs = [read_run(p) for p in paths]
    count, partition = _check_same_study(runs, allow_endpoint_change)
    if output is not None and any(Path(output).resolve() == r.path.resolve() for r in runs):
        raise ConfigError("output", f"{output} is one of the files being merged; write the "
                          "merged run to another path")
    reference = runs[0]
    width = reference.width
    n = max(r.max_n for r in runs)
    owners = _owners(reference, partition, count, n, width)
    present = {shard.index if shard else 0 for r in runs for shard in [r.shard]}
    missing_shards = sorted(set(range(count)) - present)
    if missing_shards and not allow_missing:
        sizes = np.bincount(owners[owners >= 0], minlength=count)
        names = "; ".join(f"shard {k}/{count} ({int(sizes[k]):,} of {int(sizes.sum()):,} "
                          "pairs)" for k in missing_shards)
        raise ConfigError("files", f"missing {names}: give its file too, or allow_missing="
                          "True (--allow-missing) to merge the others (the merged file then "
                          "resumes the rest)")
    # the files from first- to last-started: a later one's record of a pair wins
    order = sorted(range(len(runs)), key=lambda i: (runs[i].last_started, i))
    total = n * width
    seen = np.zeros(total, dtype=np.int32)
    winner = np.full(total, -1, dtype=np.int64)
    offset = np.zeros(total, dtype=np.int64)
    outside = 0
    for i in order:
        keys, offsets, _ = runs[i].keyed()
        seen[keys] += 1
        winner[keys] = i
        offset[keys] = offsets
        shard = runs[i].shard
        if shard is not None:
            outside += int(np.count_nonzero(owners[keys] != shard.index))
    ids = reference.suite_ids or reference.arms or [""]
    gaps = (owners >= 0) & (seen == 0)
    missing_by_shard = {k: int(c) for k, c in enumerate(np.bincount(owners[gaps],
                                                                    minlength=count))
                        if c and k not in missing_shards}
    in_present = gaps & np.isin(owners, sorted(present))
    target = Path(output) if output is not None else _temporary()
    _write(target, runs, winner, offset, n, count, partition)
    merged = MergedRun(
        read_run(target), files=[r.path for r in runs], count=count, partition=partition,
        missing_shards=missing_shards, missing_by_shard=missing_by_shard,
        missing_examples=_examples(np.flatnonzero(in_present), ids, width),
        overlapping_pairs=int(np.count_nonzero(seen > 1)),
        overlap_examples=_examples(np.flatnonzero(seen > 1), ids, width), outside=outside,
        expected_pairs=int(np.count_nonzero(owners >= 0)))
    if output is None:  # the file lives as long as its run (which the MergedRun holds)
        weakref.finalize(merged.run, shutil.rmtree, target.parent, True)
    return merged


def _temporary() -> Path:
    return Path(tempfile.mkdtemp(prefix="llmvariance-merge-")) / "merged.jsonl"


def _examples(keys: npt.NDArray[np.int64], ids: list[str], width: int
              ) -> list[tuple[str, int]]:
    return [(ids[int(k) % width], int(k) // width) for k in keys[:_EXAMPLES]]


def _owners(reference: RunContents, partition: str, count: int, n: int, width: int
            ) -> npt.NDArray[np.int64]:
    """For each key ``index * width + position`` below ``n * width``, the shard that owns
    it, or -1 for a key no shard sends (an experiment's calibration past index 0)."""
    keys = np.arange(n * width, dtype=np.int64)
    index, position = keys // width, keys % width
    if partition == "blocks":
        design = reference.study.get("design") or {}
        block = np.repeat(np.arange(len(design.get("sizes", [n]))),
                          design.get("sizes", [n]))[:n]
        owners = block[index] % count
        calibration = position == 0  # the calibration is the first arm
        owners[calibration] = np.where(index[calibration] == 0, 0, -1) if design.get(
            "calibration", True) else -1
        return owners
    if partition == "configurations":
        raise ConfigError("files", "a server matrix's shards are merged with merge_matrices")
    return (index + position) % count


def _check_same_study(runs: list[RunContents], allow_endpoint_change: bool
                      ) -> tuple[int, str]:
    """(K, partition) of files of one study; ``ConfigError`` naming the first difference."""
    first = runs[0]
    shards = [r.shard for r in runs]
    for run, shard in zip(runs, shards, strict=True):
        def differ(what: str, run: RunContents = run) -> ConfigError:
            return ConfigError("files", f"{first.path.name} and {run.path.name} are not of "
                               f"one study: {what}")
        kinds = (first.study.get("kind"), run.study.get("kind"))
        if kinds[0] != kinds[1]:
            raise differ(f"a {kinds[0]} run and a {kinds[1]} run")
        if first.requests_digest != run.requests_digest:
            raise differ(_request_difference(first, run))
        if first.study.get("id") != run.study.get("id"):
            designs = (first.study.get("design") or {}, run.study.get("design") or {})
            keys = sorted(k for k in designs[0].keys() | designs[1].keys()
                          if designs[0].get(k) != designs[1].get(k))
            raise differ(f"their designs differ ({', '.join(keys) or 'the study id'})")
        if first.endpoint_url != run.endpoint_url and not allow_endpoint_change:
            raise differ(f"sent to {first.endpoint_url} and to {run.endpoint_url} (pass "
                         "allow_endpoint_change=True, --allow-endpoint-change, when the "
                         "shards were meant for different endpoints)")
        if (shards[0] is None) != (shard is None):
            whole, part = (first, run) if shards[0] is None else (run, first)
            raise ConfigError("files", f"{whole.path.name} is a whole run and "
                              f"{part.path.name} a shard; merge the shards first")
        if shard is not None and shards[0] is not None and (
                shard.count != shards[0].count or run.partition != first.partition):
            raise differ(f"shard {shards[0]} ({first.partition}) and shard {shard} "
                         f"({run.partition}) are of different partitions")
    partition = first.partition or "diagonal"
    if partition not in PARTITIONS:
        raise ConfigError("files", f"{first.path.name}: unknown partition {partition!r}; this "
                          f"version knows {', '.join(PARTITIONS)}")
    return (shards[0].count if shards[0] is not None else 1), partition


def _request_difference(a: RunContents, b: RunContents) -> str:
    """Which request differs between two files, in words."""
    if a.suite_ids is None or b.suite_ids is None:
        if (a.suite_ids is None) != (b.suite_ids is None):
            return "a suite and a single request"
        ra, rb = a.header.get("request", {}), b.header.get("request", {})
        keys = sorted(k for k in ra.keys() | rb.keys() if ra.get(k) != rb.get(k))
        return f"their requests differ ({', '.join(keys)})"
    import itertools

    stored = zip(a.suite_ids, (orjson.dumps(f, option=orjson.OPT_SORT_KEYS)
                               for _, f in a.request_records()), strict=True)
    given = zip(b.suite_ids, (orjson.dumps(f, option=orjson.OPT_SORT_KEYS)
                              for _, f in b.request_records()), strict=True)
    for position, (old, new) in enumerate(itertools.zip_longest(stored, given)):
        if old != new:
            return f"their suites differ: {_difference(position, old, new)}"
    return "their suites differ"


def _write(target: Path, runs: list[RunContents], winner: npt.NDArray[np.int64],
           offset: npt.NDArray[np.int64], n: int, count: int, partition: str) -> None:
    """The merged file: the study's header, its request records, then each kept record."""
    reference = runs[0]
    header: dict[str, Any] = {k: v for k, v in reference.header.items() if k != "shard"}
    header["library_version"] = __version__
    header["started_at"] = min(str(r.header.get("started_at", "")) for r in runs)
    header["n"] = n
    header["merged"] = {"count": count, "partition": partition, "files": [
        {"name": r.path.name, "shard": None if r.shard is None else r.shard.index,
         "records": len(r)} for r in runs]}
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".partial")
        handles = [r.path.open("rb") for r in runs]
        try:
            with partial.open("wb") as out:
                out.write(orjson.dumps(header) + b"\n")
                if reference._requests_at is not None:
                    out.writelines(reference._request_lines())
                for key in np.flatnonzero(winner >= 0).tolist():
                    handle = handles[int(winner[key])]
                    handle.seek(int(offset[key]))
                    out.write(handle.readline())
                out.flush()
                os.fsync(out.fileno())
        finally:
            for handle in handles:
                handle.close()
        partial.replace(target)
    except OSError as exc:
        raise ConfigError("output", f"cannot write {target}: {exc.strerror or exc}") from None
