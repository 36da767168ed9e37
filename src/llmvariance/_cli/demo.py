"""``llmvariance demo``: the batch effect on the built-in simulator (no API key needed)."""

from __future__ import annotations

import argparse
from typing import Any

from .._errors import ConfigError
from ._common import ExitCode
from ._console import Console


def add_parser(commands: Any) -> None:
    demo = commands.add_parser(
        "demo", help="show the batch effect on the built-in simulator (no API key needed)")
    demo.add_argument("-n", type=int, default=30, help="requests per condition (default 30)")
    demo.add_argument("--max-tokens", type=int, default=48)
    demo.add_argument("--models", default="moe,dense",
                      help="simulated models, comma-separated (moe, dense, dense-nbi)")
    demo.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")


async def run(args: argparse.Namespace) -> int:
    from .._demo import run_demo

    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = sorted(set(models) - {"moe", "dense", "dense-nbi"})
    if unknown:
        raise ConfigError("models", f"unknown simulated models {unknown}")
    console = Console("demo", quiet=args.quiet)
    print(await run_demo(models, n=args.n, max_tokens=args.max_tokens,
                         progress=console.note))
    return ExitCode.MEASURED
