"""``llmvariance merge``: the run files of a study's shards → one run file."""

from __future__ import annotations

import argparse
from typing import Any

from .._analysis.printable import printable
from .._runs.merge import merge_runs


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "merge", help="join the run files of a study's shards (--shard k/K) into one",
        description="Refuses files of different studies, requests or endpoints (naming the "
                    "difference) and a study with a shard missing; reports pairs missing "
                    "or recorded twice. The merged file is the run file one process would "
                    "have written: report it, or resume it with the same command without "
                    "--shard. A matrix's shards (`matrix --shard k/K --out F.json`) are "
                    "merged the same way, Holm across all configurations applied once.")
    parser.add_argument("files", nargs="+", metavar="FILE")
    parser.add_argument("-o", "--output", required=True, metavar="RUN.jsonl",
                        help="the merged run file to write")
    add_merge_flags(parser)


def add_merge_flags(parser: argparse.ArgumentParser) -> None:
    """``--allow-missing`` and ``--allow-endpoint-change``: what a merge may let through."""
    parser.add_argument("--allow-missing", action="store_true",
                        help="merge even when a shard's file is missing (the merged file "
                             "resumes the rest)")
    parser.add_argument("--allow-endpoint-change", action="store_true",
                        help="merge shards sent to different base URLs (regions, replicas)")


async def run(args: argparse.Namespace) -> int:
    if all(str(f).endswith(".json") for f in args.files):  # a matrix's shards
        from .._matrix import merge_matrices

        matrix = merge_matrices(args.files, args.output)
        print(f"merged {len(args.files)} matrix files: {len(matrix.rows)} configurations")
        print(f"wrote {printable(args.output)}")
        return 0
    merged = merge_runs(args.files, args.output, allow_missing=args.allow_missing,
                        allow_endpoint_change=args.allow_endpoint_change)
    print(printable(merged.describe(), lines=True))
    print(f"wrote {printable(args.output)}")
    return 0 if merged.complete else 1
