"""``llmvariance report``: the variance report of one or more run files, merged."""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path
from typing import Any

import orjson

from .._analysis.answers import AnswerSpec, JsonPointer, comparison_from_record
from .._analysis.collect import VarianceCollector
from .._analysis.suitereport import SuiteReport
from .._analysis.tree import DEFAULT_MAX_LEAVES
from .._errors import ConfigError
from .._runs.merge import MergedRun, merge_runs
from .._runs.runfile import RunContents, read_run
from .._suite import suite_report_from_runs
from .._version import __version__
from ._common import CouldNotMeasure, ExitCode
from ._console import Console
from ._expected import add_expected_flags, expected
from ._flow import failed_line
from .merge import add_merge_flags


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "report", help="the variance report of one or more run files",
        description="Reports on JSONL run files written by `sample --out` or "
                    "sample_many(output=...); several files are merged. Files are read one "
                    "record at a time, so their size does not matter.")
    parser.add_argument("files", nargs="+", metavar="FILE")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--group-by", choices=["fingerprint", "endpoint", "condition",
                                               "request"],
                        help="also report each group separately (a suite's files are "
                             "grouped by request anyway)")
    parser.add_argument("--bootstrap", type=int, default=0, metavar="N",
                        help="add bootstrap intervals from N resamples (seeded)")
    parser.add_argument("--tree", action="store_true",
                        help="also print the divergence tree: where the outputs split, with "
                             "counts")
    parser.add_argument("--min-count", type=int, metavar="N",
                        help="in the tree, leave out alternatives with fewer than N samples "
                             f"(default: as few as keep it to {DEFAULT_MAX_LEAVES} leaves)")
    parser.add_argument("--plot", metavar="OUT",
                        help="write the figures to OUT (.png or .svg; needs the plot extra)")
    parser.add_argument("--html", metavar="OUT",
                        help="write a self-contained HTML report to OUT")
    parser.add_argument("--over-time", action="store_true",
                        help="a row per run file in the order the runs were started (D, "
                             "distinct, how the most common output begins, fingerprint), "
                             "with the steps marked, instead of one merged report")
    suite = parser.add_argument_group("suite run files (llmvariance suite --out)")
    answers = suite.add_mutually_exclusive_group()
    answers.add_argument("--answer", metavar="REGEX",
                         help="the answer in each output (first group of the first match, "
                              "or the whole match); adds TARa@N. Write --answer=REGEX when "
                              "it starts with -")
    answers.add_argument("--answer-pointer", metavar="POINTER",
                         help="the answer as a JSON pointer (e.g. /answer) into JSON outputs")
    suite.add_argument("--normalize", action="store_true",
                       help="compare outputs with whitespace stripped and collapsed")
    parser.add_argument("--out-dir", metavar="DIR",
                        help="write report.json (with provenance) and report.html into DIR")
    add_expected_flags(suite)
    shards = parser.add_argument_group("shards (--shard k/K): merged as `llmvariance merge` "
                                       "merges them")
    add_merge_flags(shards)


def _figures_or_hint() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ConfigError("plot", "needs matplotlib: pip install matplotlib"
                          ) from None


async def run(args: argparse.Namespace) -> int:
    if args.over_time:
        return _over_time(args)
    if args.min_count is not None:
        ConfigError.check_int("min_count", args.min_count)
    if args.plot:
        _figures_or_hint()  # before reading files that may be large
    console = Console("report")
    runs, merged = _read(args)
    labels = _request_labels(runs)
    group_by = [args.group_by] if args.group_by else []
    if labels is not None:
        console.note("llmvariance report: these files were written for different requests ("
                     + "; ".join(f"{path}: {label}" for path, label in
                                 zip(args.files, labels, strict=True))
                     + "): they are reported by request, and the pooled figures mix them")
        group_by = sorted({*group_by, "request"})
    collector = VarianceCollector()
    per_file: list[str | None] = list(labels) if labels is not None else [None] * len(runs)
    for contents, label in zip(runs, per_file, strict=True):
        for sample in contents.iter_samples():
            if label is not None and sample.request_id is None:
                sample = sample.model_copy(update={"request_id": label})
            collector.add(sample)
    report = collector.report(bootstrap=args.bootstrap, group_by=group_by)
    suite = _suite_report(args, runs)
    # the report carries its tree; another pruning is a new cut of the same outputs
    tree = report.tree if args.min_count is None else collector.tree(min_count=args.min_count)
    wrote = []
    html_path = args.html or (_folder(args.out_dir) + "/report.html" if args.out_dir else None)
    if args.plot:
        from .._render.plot import plot_report

        plot_report(report, args.plot, tree=tree)
        wrote.append(f"wrote {args.plot}")
    if html_path:
        from .._render.html import html_report

        page = html_report(suite if suite is not None else report, html_path, tree=tree,
                           runs=runs)
        without = ("" if "<svg" in page or not report.n_ok
                   else " (without figures: pip install matplotlib)")
        wrote.append(f"wrote {html_path}{without}")
    # the files the user gave: the shards, not their merge's temporary file
    given = runs if merged is None else [read_run(path) for path in args.files]
    parts: dict[str, Any] = {"provenance": _provenance(given),
                             "report": report.model_dump(mode="json")}
    if args.tree and tree is not None:
        parts["tree"] = tree.model_dump(mode="json")
    if suite is not None:
        parts["suite"] = suite.model_dump(mode="json")
    if args.out_dir:
        wrote.append(_write_json(args.out_dir, parts))
    if args.json:
        if (args.tree and tree is not None) or suite is not None:
            print(orjson.dumps(parts, option=orjson.OPT_INDENT_2).decode())
        else:  # the report's fields at the top, as before, with where it came from
            print(orjson.dumps({**parts["report"], "provenance": parts["provenance"]},
                               option=orjson.OPT_INDENT_2).decode())
    elif suite is not None:
        print(f"{len(args.files)} suite run file(s)")
        print(suite.to_text())
        print()
        print(f"pooled over every request of the suite ({report.n_samples:,} samples of "
              f"{suite.n_prompts:,} different prompts; not a measure of one request's "
              "variance):")
        print(report.to_text())
        if args.tree and tree is not None:
            print()
            print(tree.to_text())
    else:
        print(f"{len(args.files)} run file(s)")
        print(report.to_text())
        if args.tree and tree is not None:
            print()
            print(tree.to_text())
    sys.stdout.flush()  # the report first, then what was written
    for note in wrote:
        print(note, file=sys.stderr)
    del merged  # shards' merged file: kept until now, removed with it
    failed = failed_line(report)
    if failed is not None:
        raise CouldNotMeasure(failed)
    return ExitCode.MEASURED


def _folder(folder: str) -> str:
    Path(folder).mkdir(parents=True, exist_ok=True)
    return folder


def _write_json(folder: str, parts: dict[str, Any]) -> str:
    path = Path(folder) / "report.json"
    path.write_bytes(orjson.dumps(parts, option=orjson.OPT_INDENT_2))
    return f"wrote {path}"


def _request_labels(runs: list[RunContents]) -> list[str] | None:
    """A label per file when one-request files were written for different requests (then
    they are grouped by it), else None."""
    if len(runs) < 2 or any(r.suite_ids is not None for r in runs):
        return None
    bodies = [orjson.dumps(r.header.get("request"), option=orjson.OPT_SORT_KEYS)
              for r in runs]
    if len(set(bodies)) == 1:
        return None
    labels = []
    for contents, body in zip(runs, bodies, strict=True):
        fields = contents.header.get("request") or {}
        digest = hashlib.sha256(body).hexdigest()[:8]
        labels.append(f"{fields.get('model', '?')}#{digest}")
    return labels


def _provenance(runs: list[RunContents]) -> dict[str, Any]:
    """Where the report came from: each file's request, model, endpoint (never a key: run
    files hold none), the library that wrote it, its times; and this library's version."""
    from datetime import UTC, datetime

    files = []
    for contents in runs:
        header = contents.header
        request = header.get("request")
        files.append({
            "path": str(contents.path),
            "format": header.get("format"),
            "model": request.get("model") if isinstance(request, dict) else None,
            "request": request,
            "suite": header.get("suite"),
            "endpoint": header.get("endpoint"),
            "written_by": header.get("library_version"),
            "started_at": header.get("started_at"),
            "modified_at": datetime.fromtimestamp(contents.path.stat().st_mtime, UTC)
            .isoformat(timespec="seconds"),
            "n": contents.max_n,
            "samples": len(contents),
        })
    return {"library_version": __version__,
            "reported_at": datetime.now(UTC).isoformat(timespec="seconds"), "files": files}


def _read(args: argparse.Namespace) -> tuple[list[RunContents], MergedRun | None]:
    """The files; shards of a study (run with --shard) as the one run they make together
    (its temporary file lives as long as the ``MergedRun``)."""
    runs = [read_run(path) for path in args.files]
    if not any(contents.shard is not None for contents in runs):
        return runs, None
    merged = merge_runs(args.files, allow_missing=args.allow_missing,
                        allow_endpoint_change=args.allow_endpoint_change)
    print(merged.describe(), file=sys.stderr)
    return [merged.run], merged


def _suite_report(args: argparse.Namespace, runs: list[RunContents]) -> SuiteReport | None:
    """The suite report when the files are a suite's (TARr@N, TARa@N), else None."""
    suites = [r.suite_ids is not None for r in runs]
    if not any(suites):
        if args.answer or args.answer_pointer or args.normalize or args.expected:
            raise ConfigError("answer", "--answer, --answer-pointer, --normalize and "
                              "--expected are for a suite's run files (llmvariance suite "
                              "--out)")
        return None
    if not all(suites):
        raise ConfigError("files", "a suite's run files cannot be merged with other runs")
    answer: AnswerSpec | None = args.answer
    normalize: bool = args.normalize
    if args.answer_pointer is not None:
        answer = JsonPointer(args.answer_pointer)
    if answer is None and not normalize:  # as the run compared them (its header says how)
        stored = next((r.header["comparison"] for r in runs if "comparison" in r.header), None)
        answer, normalize, note = comparison_from_record(stored)
        if note is not None:
            print(f"llmvariance report: {note}", file=sys.stderr)
    return suite_report_from_runs(runs, answer=answer, normalize=normalize,
                                  expected=expected(args, answer))


def _over_time(args: argparse.Namespace) -> int:
    """``--over-time``: the history of runs of one request, a row per file."""
    from .._analysis.history import run_history

    ignored = [flag for flag, given in (("--tree", args.tree), ("--plot", args.plot),
                                        ("--group-by", args.group_by),
                                        ("--answer", args.answer or args.answer_pointer),
                                        ("--expected", args.expected),
                                        ("--out-dir", args.out_dir)) if given]
    if ignored:
        raise ConfigError("--over-time", f"cannot be combined with {', '.join(ignored)}")
    history = run_history(args.files)
    if args.html:
        from .._render.compare_html import history_page

        history_page(history, args.html)
    if args.json:
        print(history.model_dump_json(indent=2))
    else:
        print(history.to_text())
    sys.stdout.flush()
    if args.html:
        print(f"wrote {args.html}", file=sys.stderr)
    return ExitCode.MEASURED
