"""The ``--expected FILE`` and ``--match`` flags that ``suite``, ``report`` and ``compare``
share: expected answers, and how an answer is held to them."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

from .._analysis.accuracy import Expected
from .._errors import ConfigError
from .._runs.expected import read_expected

__all__ = ["add_expected_flags", "expected"]


def add_expected_flags(group: Any, default_note: str = "") -> None:
    group.add_argument("--expected", metavar="FILE",
                       help="expected answers: a JSON object of id to answer (e.g. "
                            "examples/suite_answers.json) or JSON lines with an \"expected\" "
                            "field; with --answer, each sample is right or wrong and the "
                            "report adds the accuracy under reruns" + default_note)
    group.add_argument("--match", choices=["exact", "contains"], default="exact",
                       help="an answer is right when it equals an expected one (default), "
                            "or contains it as whole words; case and whitespace aside")


def expected(args: argparse.Namespace, answer: object,
             own: Mapping[str, Any] | None = None) -> Expected | None:
    """The expected answers of ``--expected`` (else ``own``, a suite file's own, when an
    answer extractor is given), held to ``--match``; None without any."""
    if args.expected is not None and answer is None:
        raise ConfigError("--expected", "needs --answer (or --answer-pointer) to find each "
                          "output's answer")
    if args.expected is not None:
        return Expected(read_expected(args.expected), match=args.match)
    if own and answer is not None:
        return Expected(own, match=args.match)
    return None
