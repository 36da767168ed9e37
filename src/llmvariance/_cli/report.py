"""``llmvariance report``: the variance report of one or more run files, merged."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import orjson

from .._analysis.answers import AnswerSpec, JsonPointer
from .._analysis.collect import VarianceCollector
from .._analysis.suitereport import SuiteReport
from .._analysis.tree import DEFAULT_MAX_LEAVES
from .._errors import ConfigError
from .._runs.merge import MergedRun, merge_runs
from .._runs.runfile import RunContents, read_run
from .._suite import suite_report_from_runs
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
    shards = parser.add_argument_group("shards (--shard k/K): merged as `llmvariance merge` "
                                       "merges them")
    add_merge_flags(shards)


def _figures_or_hint() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ConfigError("plot", "needs matplotlib: pip install 'llmvariance[plot]'"
                          ) from None


async def run(args: argparse.Namespace) -> int:
    if args.min_count is not None:
        ConfigError.check_int("min_count", args.min_count)
    if args.plot:
        _figures_or_hint()  # before reading files that may be large
    collector = VarianceCollector()
    runs, merged = _read(args)
    for contents in runs:
        for sample in contents.iter_samples():
            collector.add(sample)
    report = collector.report(bootstrap=args.bootstrap,
                              group_by=[args.group_by] if args.group_by else [])
    suite = _suite_report(args, runs)
    # the report carries its tree; another pruning is a new cut of the same outputs
    tree = report.tree if args.min_count is None else collector.tree(min_count=args.min_count)
    wrote = []
    if args.plot:
        from .._render.plot import plot_report

        plot_report(report, args.plot, tree=tree)
        wrote.append(f"wrote {args.plot}")
    if args.html:
        from .._render.html import html_report

        page = html_report(report, args.html, tree=tree, runs=runs)
        without = ("" if "<svg" in page or not report.n_ok
                   else " (without figures: pip install 'llmvariance[plot]')")
        wrote.append(f"wrote {args.html}{without}")
    if args.json:
        if (args.tree and tree is not None) or suite is not None:
            parts = {"report": report.model_dump(mode="json")}
            if args.tree and tree is not None:
                parts["tree"] = tree.model_dump(mode="json")
            if suite is not None:
                parts["suite"] = suite.model_dump(mode="json")
            print(orjson.dumps(parts, option=orjson.OPT_INDENT_2).decode())
        else:
            print(report.model_dump_json(indent=2))
    else:
        print(f"{len(args.files)} run file(s)")
        print(report.to_text())
        if suite is not None:
            print()
            print(suite.to_text())
        if args.tree and tree is not None:
            print()
            print(tree.to_text())
    sys.stdout.flush()  # the report first, then what was written
    for line in wrote:
        print(line, file=sys.stderr)
    del merged  # shards' merged file: kept until now, removed with it
    return 0


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
        if args.answer or args.answer_pointer or args.normalize:
            raise ConfigError("answer", "--answer, --answer-pointer and --normalize are for "
                              "a suite's run files (llmvariance suite --out)")
        return None
    if not all(suites):
        raise ConfigError("files", "a suite's run files cannot be merged with other runs")
    answer: AnswerSpec | None = args.answer
    if args.answer_pointer is not None:
        answer = JsonPointer(args.answer_pointer)
    return suite_report_from_runs(runs, answer=answer, normalize=args.normalize)
