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
from .._runs.runfile import RunContents, read_run
from .._suite import suite_report_from_runs
from ._expected import add_expected_flags, expected


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
    add_expected_flags(suite)


def _figures_or_hint() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ConfigError("plot", "needs matplotlib: pip install 'llmvariance[plot]'"
                          ) from None


async def run(args: argparse.Namespace) -> int:
    if args.over_time:
        return _over_time(args)
    if args.min_count is not None:
        ConfigError.check_int("min_count", args.min_count)
    if args.plot:
        _figures_or_hint()  # before reading files that may be large
    collector = VarianceCollector()
    runs: list[RunContents] = []
    for path in args.files:
        contents = read_run(path)
        runs.append(contents)
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

        page = html_report(report, args.html, tree=tree, runs=runs, suite=suite)
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
    return 0


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
    if args.answer_pointer is not None:
        answer = JsonPointer(args.answer_pointer)
    return suite_report_from_runs(runs, answer=answer, normalize=args.normalize,
                                  expected=expected(args, answer))


def _over_time(args: argparse.Namespace) -> int:
    """``--over-time``: the history of runs of one request, a row per file."""
    from .._analysis.history import run_history

    ignored = [flag for flag, given in (("--tree", args.tree), ("--plot", args.plot),
                                        ("--group-by", args.group_by),
                                        ("--answer", args.answer or args.answer_pointer),
                                        ("--expected", args.expected)) if given]
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
    return 0
