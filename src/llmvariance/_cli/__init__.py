"""The ``llmvariance`` command: one module per subcommand, each ``add_parser`` + ``run``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from pydantic import ValidationError

from .._analysis.printable import printable
from .._errors import ConfigError, EngineError
from .._loop import run as run_loop
from . import batch_effect, demo, matrix, merge, report, sample, serve, suite
from ._common import describe

__all__ = ["main"]

COMMANDS = {"sample": sample, "suite": suite, "batch-effect": batch_effect, "matrix": matrix,
            "report": report, "demo": demo, "serve": serve, "merge": merge}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llmvariance",
        description="Measure how much a model's output varies across identical requests.")
    commands = parser.add_subparsers(dest="command", required=True)
    for module in COMMANDS.values():
        module.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        code: int = run_loop(COMMANDS[args.command].run, args)
    except (ConfigError, ValidationError, EngineError) as exc:
        message = describe(exc) if isinstance(exc, ValidationError) else str(exc)
        # a server's log tail or a file's contents may be in it: no raw control bytes
        print(f"llmvariance {args.command}: error: {printable(message, lines=True)}",
              file=sys.stderr)
        return 2 if not isinstance(exc, EngineError) else 1
    except KeyboardInterrupt:
        return 130
    return code
