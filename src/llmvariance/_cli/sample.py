"""``llmvariance sample``: send one request N times and report how the outputs vary."""

from __future__ import annotations

import argparse
from typing import Any

from .._collect import analyze
from .._progress import ProgressBar
from .._sampler import sample_many
from . import _common


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "sample", help="send one request N times and report how the outputs vary",
        description="The API key is read from $OPENAI_API_KEY, never from the command line.")
    _common.add_endpoint_flags(parser)
    _common.add_request_flags(parser)
    parser.add_argument("-n", type=int, default=30, help="number of requests (default 30)")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--out", metavar="FILE",
                        help="JSONL run file: samples are appended as they finish, and "
                             "running the same command again resumes")
    parser.add_argument("--allow-endpoint-change", action="store_true",
                        help="resume a run file written against another base URL")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--bootstrap", type=int, default=0, metavar="N",
                        help="add bootstrap intervals from N resamples (seeded)")


async def run(args: argparse.Namespace) -> int:
    with ProgressBar() as bar:
        result = await sample_many(
            _common.request(args), args.n, endpoint=_common.endpoint(args),
            concurrency=args.concurrency, rate_limit=_common.rate_limit(args),
            retry=_common.retry(args), output=args.out, progress=bar,
            allow_endpoint_change=args.allow_endpoint_change)
    report = result.report
    if args.bootstrap:
        report = analyze(result.samples, bootstrap=args.bootstrap)
    if args.json:
        print(report.model_dump_json(indent=2))
    else:
        print(f"{result.endpoint}  model={args.model}  n={args.n}  "
              f"concurrency={args.concurrency}")
        print(report.to_text())
    return 0
