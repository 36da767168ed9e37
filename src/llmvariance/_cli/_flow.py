"""The steps every measuring command takes around its run: the preflight, the resume note,
"could not measure" as one line, the totals, and the ``--out-dir`` folder."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import orjson

from .._analysis.printable import printable
from .._analysis.report import VarianceReport
from .._client.endpoint import Endpoint
from .._errors import ConfigError
from .._request import Request
from .._runs.runfile import read_run
from .._version import __version__
from ._common import CouldNotMeasure
from ._console import Console
from ._preflight import preflight
from ._totals import Tally

__all__ = ["add_out_dir_flag", "check_reachable", "failed_line", "out_dir_run_file",
           "provenance", "raise_if_failed", "resume_note", "totals", "write_out_dir"]


def add_out_dir_flag(parser: argparse.ArgumentParser, what: str = "the run file") -> None:
    parser.add_argument("--out-dir", metavar="DIR",
                        help=f"write {what}, report.json and report.html into DIR "
                             "(created; a rerun resumes)")


def out_dir_run_file(args: argparse.Namespace, name: str = "run.jsonl") -> str | None:
    """The run file: ``--out``, else ``DIR/run.jsonl`` with ``--out-dir``, else None. A
    directory given as ``--out`` is refused here, before the preflight sends anything."""
    out: str | None = getattr(args, "out", None)
    if out is not None and Path(out).is_dir():
        raise ConfigError("output", f"{out} is a directory: give a file (or --out-dir {out})")
    if out is None and getattr(args, "out_dir", None):
        out = str(Path(args.out_dir) / name)
    return out


async def check_reachable(args: argparse.Namespace, console: Console, endpoint: Endpoint,
                          requests: list[Request]) -> None:
    """The preflight, unless ``--no-preflight``: raise ``CouldNotMeasure`` with its line."""
    if getattr(args, "no_preflight", False):
        return
    seen: dict[str, Request] = {}
    for request in requests:
        seen.setdefault(request.model, request)
    problem = await preflight(endpoint, list(seen.values())[:8])
    if problem is not None:
        raise CouldNotMeasure(f"preflight: {printable(problem)} (nothing else was sent; "
                              "--no-preflight skips this check)")


def resume_note(console: Console, path: str | None, total: int) -> None:
    """``resuming: 1,234 of 10,000 done, sending 8,766`` when ``path`` holds samples."""
    if path is None or not Path(path).is_file() or Path(path).stat().st_size == 0:
        return
    try:
        contents = read_run(path)
    except Exception:  # the run itself refuses a bad file, with the reason
        return
    if contents.suite_ids is not None:
        done = len(contents.ok_pairs())
    else:
        done = sum(1 for i in contents.ok_indices() if i < total)
    done = min(done, total)
    console.note(f"resuming: {done:,} of {total:,} done, sending {total - done:,} "
                 f"({path})")


def failed_line(report: VarianceReport) -> str | None:
    """When nothing usable came back: every sample failed, with the most common reason."""
    if report.n_ok or not report.n_samples:
        return None if report.n_ok else "no samples"
    reason = ""
    if report.failure_messages:
        top = report.failure_messages[0]
        said = " ".join(top.message.split())
        reason = f": x{top.count} {printable(said)}"
    return f"every one of the {report.n_samples:,} samples failed{reason}"


def raise_if_failed(report: VarianceReport, stopped_early: str | None = None) -> None:
    if stopped_early is not None:
        raise CouldNotMeasure(printable(stopped_early))
    line = failed_line(report)
    if line is not None:
        raise CouldNotMeasure(line)


def totals(console: Console, args: argparse.Namespace, tally: Tally, note: str = "") -> None:
    console.note(tally.text(getattr(args, "price_in", None), getattr(args, "price_out", None),
                            note))


def provenance(request: Request | None, endpoint: Endpoint | None, *,
               started_at: str | None = None, files: list[str] | None = None,
               **more: Any) -> dict[str, Any]:
    """Where a report came from, for ``report.json``: the request, the model, the endpoint
    without its key, this library's version, the times."""
    from datetime import UTC, datetime

    found: dict[str, Any] = {"library_version": __version__,
                             "reported_at": datetime.now(UTC).isoformat(timespec="seconds")}
    if request is not None:
        found["model"] = request.model
        found["request"] = request.model_dump(mode="json", exclude_none=True)
    if endpoint is not None:
        found["endpoint"] = {"base_url": endpoint.base_url, "name": endpoint.label}
    if started_at is not None:
        found["started_at"] = started_at
    if files is not None:
        found["files"] = files
    found.update(more)
    return found


def write_out_dir(console: Console, folder: str | None, report_json: dict[str, Any],
                  html: Any) -> None:
    """``report.json`` and ``report.html`` beside the run file(s) in ``folder``; ``html``
    is called with the path to write."""
    if folder is None:
        return
    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    (path / "report.json").write_bytes(orjson.dumps(report_json, option=orjson.OPT_INDENT_2))
    html(str(path / "report.html"))
    console.note(f"wrote {path}/ (run file(s), report.json, report.html)")
