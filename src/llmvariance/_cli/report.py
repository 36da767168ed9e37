"""``llmvariance report``: the variance report of one or more run files, merged."""

from __future__ import annotations

import argparse
from typing import Any

from .._collect import VarianceCollector
from .._runfile import read_run


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "report", help="the variance report of one or more run files",
        description="Reports on JSONL run files written by `sample --out` or "
                    "sample_many(output=...); several files are merged. Files are read one "
                    "record at a time, so their size does not matter.")
    parser.add_argument("files", nargs="+", metavar="FILE")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--group-by", choices=["fingerprint", "endpoint", "condition"],
                        help="also report each group separately")
    parser.add_argument("--bootstrap", type=int, default=0, metavar="N",
                        help="add bootstrap intervals from N resamples (seeded)")


async def run(args: argparse.Namespace) -> int:
    collector = VarianceCollector()
    for path in args.files:
        collector.update(read_run(path).iter_samples())
    report = collector.report(bootstrap=args.bootstrap,
                              group_by=[args.group_by] if args.group_by else [])
    if args.json:
        print(report.model_dump_json(indent=2))
    else:
        print(f"{len(args.files)} run file(s)")
        print(report.to_text())
    return 0
