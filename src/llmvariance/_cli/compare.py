"""``llmvariance compare A.jsonl B.jsonl``: did it change between two runs?

Exit status, as ``diff``'s: 0 when no change was detected, 1 when the runs differ (the
verdict says how), 2 on bad usage (a file that is not a run file, runs of different
requests without ``--allow-different``).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .._analysis.answers import AnswerSpec, JsonPointer
from .._analysis.runcompare import compare_runs
from ._expected import add_expected_flags, expected

EXIT_SAME, EXIT_CHANGED = 0, 1


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "compare", help="did it change? two runs of the same request or suite, side by side",
        description="Compares two run files of the same request (or two suite run files of "
                    "the same suite): whether the most common output changed and where, "
                    "whether B is more or less variable (D, intervals, p-values), whether "
                    "the distributions differ, the models, fingerprints and server "
                    "configurations of each side, and where texts agree whether their "
                    "logprobs do. Exit 0: no change detected; 1: changed; 2: bad usage.")
    parser.add_argument("a", metavar="A", help="a run file (the reference)")
    parser.add_argument("b", metavar="B", help="a run file of the same request or suite")
    parser.add_argument("--allow-different", action="store_true",
                        help="compare runs of different requests (two models, two prompts)")
    parser.add_argument("--alpha", type=float, default=0.05,
                        help="significance level (default 0.05)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the resampling tests")
    parser.add_argument("--json", action="store_true", help="print the comparison as JSON")
    parser.add_argument("--html", metavar="OUT", help="write a self-contained HTML page")
    suite = parser.add_argument_group("suite run files: accuracy under reruns")
    answers = suite.add_mutually_exclusive_group()
    answers.add_argument("--answer", metavar="REGEX",
                         help="the answer in each output (first group of the first match, "
                              "or the whole match); write --answer=REGEX when it starts "
                              "with -")
    answers.add_argument("--answer-pointer", metavar="POINTER",
                         help="the answer as a JSON pointer (e.g. /answer) into JSON outputs")
    suite.add_argument("--normalize", action="store_true",
                       help="compare answers' texts with whitespace stripped and collapsed")
    add_expected_flags(suite)


async def run(args: argparse.Namespace) -> int:
    answer: AnswerSpec | None = args.answer
    if args.answer_pointer is not None:
        answer = JsonPointer(args.answer_pointer)
    result = compare_runs(args.a, args.b, allow_different=args.allow_different,
                          alpha=args.alpha, seed=args.seed, answer=answer,
                          expected=expected(args, answer), normalize=args.normalize)
    wrote = None
    if args.html:
        from .._render.compare_html import comparison_page

        comparison_page(result, args.html)
        wrote = f"wrote {args.html}"
    if args.json:
        print(result.model_dump_json(indent=2))
    else:
        print(result.to_text())
    sys.stdout.flush()
    if wrote:
        print(wrote, file=sys.stderr)
    return EXIT_CHANGED if result.changed else EXIT_SAME
