"""``llmvariance sample``: send one request N times and report how the outputs vary."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .._analysis.collect import analyze
from .._analysis.printable import printable
from .._errors import ConfigError
from .._progress import ProgressBar
from .._request import MessagesRequest, Request
from .._runs.suitefile import read_request
from .._sampler import sample_many
from . import _common


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "sample", help="send one request N times and report how the outputs vary",
        description="The API key is read from $OPENAI_API_KEY, never from the command line.")
    _common.add_endpoint_flags(parser)
    _common.add_request_flags(parser, prompt_required=False)
    parser.add_argument("--request", metavar="BODY.json",
                        help="the request as one API body (OpenAI chat/completions/"
                             "responses or Anthropic messages, e.g. with system prompts, "
                             "logit_bias, seed, logprobs); --model, --api and --stream "
                             "override it, the other request flags are ignored")
    parser.add_argument("-n", type=int, default=30, help="number of requests (default 30)")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--out", metavar="FILE",
                        help="JSONL run file: samples are appended as they finish, and "
                             "running the same command again resumes")
    parser.add_argument("--allow-endpoint-change", action="store_true",
                        help="resume a run file written against another base URL")
    _common.add_shard_flags(parser, "indices")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--bootstrap", type=int, default=0, metavar="N",
                        help="add bootstrap intervals from N resamples (seeded)")


def _request(args: argparse.Namespace) -> Request:
    if args.request is not None:
        return read_request(args.request, api=args.api, model=args.model,
                            stream=True if args.stream else None)
    for flag in ("model", "prompt"):
        if getattr(args, flag) is None:
            raise ConfigError(f"--{flag}", "required (or give the whole body with --request)")
    return _common.request(args)


async def run(args: argparse.Namespace) -> int:
    request = _request(args)
    endpoint = _common.endpoint(args, anthropic=isinstance(request, MessagesRequest))
    with ProgressBar() as bar:
        result = await sample_many(
            request, args.n, endpoint=endpoint,
            concurrency=args.concurrency, rate_limit=_common.rate_limit(args),
            retry=_common.retry(args), output=args.out, progress=bar,
            allow_endpoint_change=args.allow_endpoint_change, shard=_common.shard(args))
    if result.stopped_early is not None:
        print(f"llmvariance: {result.stopped_early}", file=sys.stderr)
        return 1
    report = result.report
    if args.bootstrap:
        report = analyze(result.samples, bootstrap=args.bootstrap)
    if args.json:
        print(report.model_dump_json(indent=2))
    else:
        print(f"{printable(result.endpoint)}  model={printable(request.model)}  n={args.n}  "
              f"concurrency={args.concurrency}")
        print(report.to_text())
    return 0
