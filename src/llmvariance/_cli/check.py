"""``llmvariance check``: a determinism gate for CI.

Exit status: 0 when the expectation holds, 1 when it is violated (variation beyond the
bound, or the most common output is not the baseline's; the evidence in one line), 2 on
bad usage, 3 when it could not be measured (the first request failed, or too many did).
The numbers are ``_check.EXIT_CODES`` (2 is ``main``'s for a ``ConfigError``).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .._check import EXIT_CODES, check
from .._errors import ConfigError
from .._request import MessagesRequest, Request
from .._runs.suitefile import read_request
from . import _common


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "check", help="a determinism gate for CI: exit 1 when outputs vary beyond a bound",
        description="Sends one request N times under each condition and checks that the "
                    "outputs agree: exit 0 when they do (within --max-disagreement / "
                    "--max-rate-bound, and equal to --baseline's most common output), 1 "
                    "when not, 2 on bad usage, 3 when it could not measure. The API key is "
                    "read from $OPENAI_API_KEY, never from the command line.")
    _common.add_endpoint_flags(parser)
    _common.add_request_flags(parser, prompt_required=False)
    parser.add_argument("--request", metavar="BODY.json",
                        help="the request as one API body; --model, --api and --stream "
                             "override it")
    parser.add_argument("-n", type=int, default=30,
                        help="requests per condition (default 30)")
    parser.add_argument("--conditions", default="sequential,burst",
                        help="comma-separated: sequential, burst, loaded, concurrency=K or a "
                             "registered condition (default sequential,burst)")
    parser.add_argument("--max-disagreement", type=float, metavar="D",
                        help="the largest observed disagreement rate allowed in each "
                             "condition and over all of them (default 0: every output "
                             "identical, unless --max-rate-bound is given)")
    parser.add_argument("--max-rate-bound", type=float, metavar="RATE",
                        help="demand proof: the exact upper confidence bound on the share of "
                             "requests that differ from the reference must be at most RATE "
                             "(needs n >= ln(1-confidence)/ln(1-RATE): 59 for 0.05)")
    parser.add_argument("--confidence", type=float, default=0.95,
                        help="of --max-rate-bound's bound (default 0.95)")
    parser.add_argument("--baseline", metavar="RUN.jsonl",
                        help="a run file of the same request (e.g. an earlier check --out): "
                             "its most common output must still be the most common one")
    parser.add_argument("--allow-different", action="store_true",
                        help="accept a baseline run with another request (another model)")
    parser.add_argument("--max-failure-rate", type=float, default=0.1,
                        help="above this share of failed requests in a condition the check "
                             "could not measure (exit 3; default 0.1)")
    parser.add_argument("--blocks", type=int,
                        help="interleave the conditions in this many blocks (default 1: a "
                             "burst is n wide; 5 with --early-stop)")
    parser.add_argument("--early-stop", action="store_true",
                        help="stop after the first block at which the check has already "
                             "failed whatever the rest answer (a pass still sends all n)")
    parser.add_argument("--background", type=int, default=8,
                        help="background requests of the loaded condition (default 8)")
    parser.add_argument("--junit", metavar="REPORT.xml",
                        help="write the result as JUnit XML, a test case per condition")
    parser.add_argument("--out", metavar="RUN.jsonl",
                        help="write every sample to a run file (replacing it): the "
                             "baseline of a later check")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


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
    result = await check(
        request, args.n, endpoint=endpoint,
        conditions=[c for c in args.conditions.split(",") if c.strip()],
        max_disagreement=args.max_disagreement, max_rate_bound=args.max_rate_bound,
        confidence=args.confidence, baseline=args.baseline,
        allow_different=args.allow_different, max_failure_rate=args.max_failure_rate,
        blocks=args.blocks, early_stop=args.early_stop,
        background_concurrency=args.background, output=args.out,
        rate_limit=_common.rate_limit(args), retry=_common.retry(args))
    if args.junit:
        result.to_junit(args.junit)
    if args.json:
        print(result.model_dump_json(indent=2))
    else:
        print(result.to_text())
    sys.stdout.flush()
    # the one line a CI log shows last
    print(f"llmvariance check: {result.outcome.replace('_', ' ')}: {result.evidence}",
          file=sys.stderr)
    return EXIT_CODES[result.outcome]
