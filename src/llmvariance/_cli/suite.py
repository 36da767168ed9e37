"""``llmvariance suite``: every request of a suite file N times; TARr@N and TARa@N."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .._analysis.answers import AnswerSpec, JsonPointer
from .._analysis.printable import printable
from .._progress import ProgressBar
from .._request import MessagesRequest
from .._runs.suitefile import read_suite
from .._suite import sample_suite
from . import _common


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
    parser.add_argument("--keep-samples", action="store_true",
                        help="hold every sample in memory (not needed for the report)")
    _common.add_shard_flags(parser)
    parser.add_argument("--json", action="store_true", help="print the suite report as JSON")


async def run(args: argparse.Namespace) -> int:
    suite = read_suite(args.file, api=args.api, model=args.model,
                       stream=True if args.stream else None)
    answer: AnswerSpec | None = args.answer
    if args.answer_pointer is not None:
        answer = JsonPointer(args.answer_pointer)
    anthropic = all(isinstance(r, MessagesRequest) for _, r in suite)
    with ProgressBar() as bar:
        result = await sample_suite(
            suite, args.n, endpoint=_common.endpoint(args, anthropic=anthropic),
            concurrency=args.concurrency, rate_limit=_common.rate_limit(args),
            retry=_common.retry(args), output=args.out, progress=bar,
            allow_endpoint_change=args.allow_endpoint_change, answer=answer,
            normalize=args.normalize, keep_samples=args.keep_samples,
            shard=_common.shard(args))
    if result.stopped_early is not None:
        print(f"llmvariance: {result.stopped_early}", file=sys.stderr)
        return 1
    if args.json:
        print(result.report.model_dump_json(indent=2))
    else:
        print(f"{printable(result.endpoint)}  {printable(args.file)}  {len(suite)} requests "
              f"x n={args.n}  "
              f"concurrency={args.concurrency}")
        print(result.to_text())
    return 0
