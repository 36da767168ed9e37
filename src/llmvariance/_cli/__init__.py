"""The ``llmvariance`` command: one module per subcommand, each ``add_parser`` + ``run``.

Exit statuses are ``_common.ExitCode``: 0 measured, 1 an expectation failed, 2 usage,
3 could not measure, 130 interrupted; stdout holds the result, stderr everything else.
"""

from __future__ import annotations

import argparse
import difflib
import os
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from pydantic import ValidationError

from .._errors import EngineError
from .._loop import run as run_loop
from .._version import __version__
from . import batch_effect, check, compare, demo, matrix, merge, report, sample, serve, suite
from ._common import EXIT_CODES_HELP, ExitCode, describe, exit_code_for
from ._console import Console

__all__ = ["main"]

COMMANDS = {"sample": sample, "suite": suite, "batch-effect": batch_effect, "matrix": matrix,
            "report": report, "demo": demo, "serve": serve, "compare": compare,
            "check": check, "merge": merge}


def _no_default(value: object) -> bool:
    """None, False or suppressed: nothing worth showing (0 and 0.0 are shown)."""
    return value is None or value is False or value == argparse.SUPPRESS


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Every flag's default in its help (unless the help already says it)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if ("default" in text.lower() or _no_default(default) or action.nargs == 0
                or not action.option_strings):
            return text
        return f"{text} (default: %(default)s)" if text else "default: %(default)s"


class _Parser(argparse.ArgumentParser):
    """Every (sub)command's parser: defaults shown, the exit statuses in the epilog, and an
    unknown flag named with its closest match, under the usage of the command it was
    given to."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _Formatter)
        kwargs.setdefault("epilog", EXIT_CODES_HELP)
        super().__init__(*args, **kwargs)

    def unknown(self, extras: list[str]) -> NoReturn:
        known = [s for a in self._actions for s in a.option_strings]
        hints = []
        for extra in extras:
            flag = extra.split("=", 1)[0]
            close = difflib.get_close_matches(flag, known, n=1) if flag.startswith("-") else []
            hints.append(f"{extra} (did you mean {close[0]}?)" if close else extra)
        self.error(f"unrecognized arguments: {' '.join(hints)}")


def _parser() -> tuple[_Parser, dict[str, _Parser]]:
    parser = _Parser(
        prog="llmvariance",
        description="Measure how much a model's output varies across identical requests.")
    parser.add_argument("--version", action="version", version=f"llmvariance {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for module in COMMANDS.values():
        module.add_parser(commands)
    for sub in commands.choices.values():
        for action in sub._actions:  # a flag without help still shows its default
            if (action.help is None and action.option_strings and action.nargs != 0
                    and not _no_default(action.default)):
                action.help = "(default: %(default)s)"
    return parser, dict(commands.choices)


def main(argv: Sequence[str] | None = None) -> int:
    parser, subparsers = _parser()
    args, extras = parser.parse_known_args(argv)
    if extras:
        subparsers[args.command].unknown(extras)
    console = Console(args.command, quiet=getattr(args, "quiet", False))
    try:
        code: int = run_loop(COMMANDS[args.command].run, args)
    except KeyboardInterrupt:
        console.error(_interrupted(args))
        return ExitCode.INTERRUPTED
    except BrokenPipeError:
        # the reader (`| head`) has what it wanted; Python must not complain at exit either
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        console.note(f"llmvariance {args.command}: stdout was closed early (broken pipe); "
                     "the output is cut short")
        return ExitCode.MEASURED
    except Exception as exc:
        status = exit_code_for(exc)
        if status is None:
            raise
        message = describe(exc) if isinstance(exc, ValidationError) else str(exc)
        # a server's log tail or a file's contents may be in it: no raw control bytes
        console.error(message, one_line=not isinstance(exc, EngineError))
        return status
    return code


def _interrupted(args: argparse.Namespace) -> str:
    """What Ctrl-C left: the samples the run file holds, and how to go on."""
    path = getattr(args, "run_file", None)
    if args.command == "matrix" and getattr(args, "out", None):
        return (f"interrupted: the configurations done are in {args.out}; rerun the same "
                "command to skip them")
    if not path or not os.path.isfile(path):
        hint = (" (--out FILE keeps samples, and a rerun resumes)"
                if args.command in ("sample", "suite") else "")
        return f"interrupted: nothing was saved{hint}"
    from .._runs.runfile import read_run

    try:
        held = len(read_run(path))
    except Exception:  # a damaged file must not hide the interruption
        return f"interrupted: samples are in {path}; rerun the same command to resume"
    return (f"interrupted: {held:,} samples saved in {path}; rerun the same command to "
            "resume")
