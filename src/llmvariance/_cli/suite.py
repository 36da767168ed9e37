"""``llmvariance suite``: every request of a suite file N times; TARr@N and TARa@N."""

from __future__ import annotations

import argparse
from collections import Counter
from typing import Any

from .._analysis.answers import AnswerSpec, JsonPointer
from .._analysis.printable import printable
from .._errors import ConfigError
from .._progress import ProgressBar
from .._request import MessagesRequest
from .._runs.runfile import read_run
from .._runs.suitefile import read_suite
from .._suite import SuiteResult, sample_suite
from . import _common
from ._common import CouldNotMeasure, ExitCode
from ._console import Console
from ._expected import add_expected_flags, expected
from ._flow import (
    add_out_dir_flag,
    check_reachable,
    out_dir_run_file,
    provenance,
    resume_note,
    totals,
    write_out_dir,
)
from ._totals import Tally, add_cost_flags, dry_run_text


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "suite", help="send every request of a suite file N times; how many prompts vary",
        description="FILE is OpenAI Batch API input JSONL ({\"custom_id\", \"method\", "
                    "\"url\", \"body\"} per line) or one request body per line. The API "
                    "key is read from $OPENAI_API_KEY ($ANTHROPIC_API_KEY for messages), "
                    "never from the command line.")
    parser.add_argument("file", metavar="FILE")
    _common.add_endpoint_flags(parser)
    _common.add_api_flags(parser)
    parser.add_argument("--model", help="send every request to this model instead")
    parser.add_argument("-n", type=int, default=10, help="samples per request (default 10)")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--out", metavar="FILE",
                        help="one JSONL run file for the suite: running the same command "
                             "again resumes the missing or failed (request, index) pairs")
    parser.add_argument("--allow-endpoint-change", action="store_true",
                        help="resume a run file written against another base URL")
    answers = parser.add_mutually_exclusive_group()
    answers.add_argument("--answer", metavar="REGEX",
                         help="the answer in each output: the first group of the first "
                              "match (or the whole match); adds TARa@N")
    answers.add_argument("--answer-pointer", metavar="POINTER",
                         help="the answer as a JSON pointer (e.g. /answer) into JSON outputs")
    parser.add_argument("--normalize", action="store_true",
                        help="compare outputs with surrounding whitespace stripped and runs "
                             "of whitespace collapsed")
    add_expected_flags(parser, " (default: the \"expected\" fields of FILE's own lines)")
    parser.add_argument("--keep-samples", action="store_true",
                        help="hold every sample in memory (not needed for the report)")
    _common.add_shard_flags(parser)
    parser.add_argument("--json", action="store_true", help="print the suite report as JSON")
    _common.add_sampling_flags(parser)
    add_out_dir_flag(parser)
    add_cost_flags(parser)


async def run(args: argparse.Namespace) -> int:
    console = Console("suite", quiet=args.quiet)
    read = read_suite(args.file, api=args.api, model=args.model,
                      stream=True if args.stream else None)
    suite = [(rid, _common.with_sampling_flags(args, r)) for rid, r in read]
    ConfigError.check_int("n", args.n)
    ConfigError.check_int("concurrency", args.concurrency)
    limits, policy = _common.rate_limit(args), _common.retry(args)
    answer: AnswerSpec | None = args.answer
    if args.answer_pointer is not None:
        answer = JsonPointer(args.answer_pointer)
    grading = expected(args, answer, read.expected)
    anthropic = all(isinstance(r, MessagesRequest) for _, r in suite)
    endpoint = _common.endpoint(args, anthropic=anthropic)
    args.run_file = out_dir_run_file(args)
    if args.dry_run:
        print(dry_run_text([(rid, r, args.n) for rid, r in suite], rpm=args.rpm,
                           tpm=args.tpm))
        return ExitCode.MEASURED
    await check_reachable(args, console, endpoint, [r for _, r in suite])
    resume_note(console, args.run_file, len(suite) * args.n)
    tally = Tally()
    with ProgressBar(enabled=console.interactive) as bar:
        result = await sample_suite(
            suite, args.n, endpoint=endpoint,
            concurrency=args.concurrency, rate_limit=limits,
            retry=policy, output=args.run_file, progress=bar, on_sample=tally,
            allow_endpoint_change=args.allow_endpoint_change, answer=answer,
            normalize=args.normalize, keep_samples=args.keep_samples,
            expected=grading, shard=_common.shard(args))
    totals(console, args, tally)
    if result.stopped_early is not None:
        raise CouldNotMeasure(printable(result.stopped_early))
    if not any(p.n_ok for p in result.report.prompts):
        raise CouldNotMeasure(_all_failed(result))
    if args.json:
        print(result.report.model_dump_json(indent=2))
    else:
        print(f"{printable(result.endpoint)}  {printable(args.file)}  {len(suite)} requests "
              f"x n={args.n}  "
              f"concurrency={args.concurrency}")
        print(result.to_text())
    if args.out_dir:
        from .._render.html import html_report

        runs = [read_run(args.run_file)] if args.run_file else []
        write_out_dir(console, args.out_dir, {
            "provenance": provenance(None, endpoint, files=[args.run_file], suite=args.file,
                                     n=args.n),
            "suite": result.report.model_dump(mode="json")},
            lambda path: html_report(result.report, path, runs=runs))
    return ExitCode.MEASURED


def _all_failed(result: SuiteResult) -> str:
    """Every sample of the suite failed: how many, and the most common reason."""
    reasons: Counter[str] = Counter()
    total = 0
    for entry in result.entries:
        report = entry.report
        total += report.n_samples
        for failure in report.failure_messages:
            reasons[" ".join(failure.message.split())] += failure.count
    top = reasons.most_common(1)
    why = f": x{top[0][1]} {printable(top[0][0])}" if top else ""
    return f"every one of the {total:,} samples failed{why}"
