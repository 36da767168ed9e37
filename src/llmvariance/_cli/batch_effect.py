"""``llmvariance batch-effect``: does an endpoint's output depend on what it is batched with?"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .._analysis.printable import printable
from .._demo import render
from .._errors import ConfigError
from .._experiment import batch_effect
from . import _common


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "batch-effect", help="the same request N times one at a time, all at once, and "
                             "all at once under load: does batching change the output?",
        description="The API key is read from $OPENAI_API_KEY, never from the command line.")
    _common.add_endpoint_flags(parser)
    _common.add_request_flags(parser)
    parser.add_argument("-n", type=int, default=30, help="requests per condition (default 30)")
    parser.add_argument("--conditions", default="sequential,burst,loaded",
                        help="comma-separated, in order (also concurrency=K for K in --sweep; "
                             "default sequential,burst,loaded)")
    parser.add_argument("--sweep", default="2,8",
                        help="concurrencies for the concurrency=K conditions (default 2,8)")
    parser.add_argument("--background", type=int, default=8,
                        help="background requests in flight during `loaded` (default 8)")
    parser.add_argument("--blocks", type=int,
                        help="blocks of the design: each runs every condition for n/blocks "
                             "samples, in rotating order (default 5; 1: one condition after "
                             "another)")
    parser.add_argument("--alpha", type=float, default=0.05,
                        help="significance level, Holm-corrected across conditions "
                             "(default 0.05)")
    parser.add_argument("--early-stop", action="store_true",
                        help="test after every block and stop once the verdict is decided "
                             "(a group-sequential boundary keeps the false-positive rate at "
                             "--alpha); 'no variation' still takes all n")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--html", metavar="FILE.html",
                        help="also write the result as a self-contained HTML page")


def split(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


async def run(args: argparse.Namespace) -> int:
    try:
        sweep = [int(k) for k in split(args.sweep)]
    except ValueError:
        raise ConfigError("sweep", f"must be comma-separated integers, got {args.sweep!r}"
                          ) from None
    result = await batch_effect(
        _common.request(args), args.n, endpoint=_common.endpoint(args), sweep=sweep,
        conditions=split(args.conditions), background_concurrency=args.background,
        blocks=args.blocks, alpha=args.alpha, rate_limit=_common.rate_limit(args),
        retry=_common.retry(args), early_stop=args.early_stop)
    if args.json:
        print(result.model_dump_json(indent=2, exclude={"samples"}))
    else:
        print(f"{printable(result.endpoint)}  model={printable(args.model)}  n={args.n} "
              "per condition")
        print(render({args.model: result}))
    if args.html:
        from .._render.html import html_report

        html_report(result, args.html)
        print(f"wrote {args.html}", file=sys.stderr)
    return 0
