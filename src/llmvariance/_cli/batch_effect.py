"""``llmvariance batch-effect``: does an endpoint's output depend on what it is batched with?"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path
from typing import Any

from .._analysis.collect import VarianceCollector
from .._analysis.printable import printable
from .._demo import render
from .._errors import ConfigError
from .._experiment import BatchEffectResult, Trial, batch_effect
from .._experiment import _resolve as resolve_conditions
from .._runs.runfile import RunFile
from .._sample import Sample
from .._sampler import _EarlyStop
from .._version import __version__
from . import _common
from ._common import CouldNotMeasure, ExitCode
from ._console import Console
from ._flow import add_out_dir_flag, check_reachable, failed_line, provenance, totals
from ._flow import write_out_dir as write_folder
from ._totals import Tally, add_cost_flags, dry_run_text


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "batch-effect", help="the same request N times one at a time, all at once, and "
                             "all at once under load: does batching change the output?",
        description="The API key is read from $OPENAI_API_KEY, never from the command line.")
    _common.add_endpoint_flags(parser)
    _common.add_request_flags(parser)
    _common.add_sampling_flags(parser)
    parser.add_argument("-n", type=int, default=30, help="requests per condition (default 30)")
    parser.add_argument("--conditions", default="sequential,burst,loaded",
                        help="comma-separated, in order (also concurrency=K for K in --sweep, "
                             "and history, cold, shared_prefix, mixed_lengths, batch=K, "
                             "batch_mixed=K, seeded, seeded_burst, seeded_loaded; default "
                             "sequential,burst,loaded)")
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
    parser.add_argument("--control", metavar="CONDITION",
                        help="the condition the others are tested against (default "
                             "sequential; e.g. cold, to test warm conditions against cold "
                             "caches)")
    parser.add_argument("--out", metavar="FILE",
                        help="JSONL run file: each cell's samples are appended as it "
                             "finishes; running the same command again resumes it a block "
                             "at a time")
    _common.add_shard_flags(parser, "blocks (each whole, every condition)")
    parser.add_argument("--early-stop", action="store_true",
                        help="test after every block and stop once the verdict is decided "
                             "(a group-sequential boundary keeps the false-positive rate at "
                             "--alpha); 'no variation' still takes all n")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--html", metavar="FILE.html",
                        help="also write the result as a self-contained HTML page")
    add_out_dir_flag(parser, "one run file per condition (CONDITION.jsonl, and "
                             "calibration.jsonl, for `llmvariance report`)")
    add_cost_flags(parser)


def split(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


async def run(args: argparse.Namespace) -> int:
    console = Console("batch-effect", quiet=args.quiet)
    try:
        sweep = [int(k) for k in split(args.sweep)]
    except ValueError:
        raise ConfigError("sweep", f"must be comma-separated integers, got {args.sweep!r}"
                          ) from None
    request = _common.with_sampling_flags(args, _common.request(args))
    conditions = split(args.conditions)
    ConfigError.check_int("n", args.n, 2, " to compare outputs")
    resolve_conditions(conditions, sweep, args.n)  # an unknown one is named before anything
    limits, policy = _common.rate_limit(args), _common.retry(args)
    endpoint = _common.endpoint(args)
    folder = args.out_dir
    if folder is not None:
        taken = _run_files(folder)
        if taken:
            raise ConfigError("--out-dir", f"{folder} already holds run files ("
                              f"{', '.join(taken)}); only --out FILE resumes: choose another "
                              "folder")
    if args.dry_run:
        parts = [("calibration", request, 1), *((c, request, args.n) for c in conditions)]
        extra = (f" (+ {args.background} background requests kept in flight during each "
                 "`loaded` cell: how many depends on the server's speed)"
                 if "loaded" in conditions else "")
        print(dry_run_text(parts, rpm=args.rpm, tpm=args.tpm, extra=extra))
        return ExitCode.MEASURED
    await check_reachable(args, console, endpoint, [request])
    blocks = args.blocks or min(5, args.n)
    # sample's early stop, over the cells in the order they ran: when the first samples all
    # failed with one error waiting cannot fix, the other cells would only record it again
    early = _EarlyStop(args.n * len(conditions))

    def cell(trial: Trial, samples: list[Sample]) -> None:
        ok = [s for s in samples if s.error is None]
        distinct = len({s.text for s in ok})
        console.note(f"block {trial.block + 1 if trial.block is not None else 1}/{blocks} "
                     f"{trial.condition}: {len(ok)}/{len(samples)} ok, {distinct} distinct")
        for sample in samples:
            early.saw(sample)
        if early.reason is not None:
            raise CouldNotMeasure(printable(early.reason))

    console.note(f"batch-effect: 1 calibration request, then {blocks} blocks x "
                 f"{len(conditions)} conditions ({args.n} samples per condition)")
    tally = Tally()
    result = await batch_effect(
        request, args.n, endpoint=endpoint, sweep=sweep,
        conditions=conditions, background_concurrency=args.background,
        blocks=args.blocks, alpha=args.alpha, control=args.control, rate_limit=limits,
        retry=policy, on_trial=cell, output=args.out, shard=_common.shard(args),
        early_stop=args.early_stop)
    for arm in result.samples.values():
        tally.add(arm)
    if result.calibration is not None:
        tally(result.calibration)
    totals(console, args, tally, "background requests not counted"
           if "loaded" in conditions else "")
    if folder is not None:
        _keep(result, folder, endpoint)
    if result.verdict_kind == "could_not_measure":
        raise CouldNotMeasure(_why(result))
    if args.json:
        print(result.model_dump_json(indent=2, exclude={"samples"}))
    else:
        print(f"{printable(result.endpoint)}  model={printable(args.model)}  n={args.n} "
              "per condition")
        print(render({args.model: result}))
    if args.html:
        from .._render.html import html_report

        html_report(result, args.html)
        console.note(f"wrote {args.html}")
    if args.out_dir:
        from .._render.html import html_report

        write_folder(console, args.out_dir, {
            "provenance": provenance(request, endpoint, files=_run_files(args.out_dir)),
            "result": result.model_dump(mode="json", exclude={"samples"})},
            lambda path: html_report(result, path))
    if args.out:
        console.note(f"wrote the run file {args.out}")
    return ExitCode.MEASURED


def _run_files(folder: str) -> list[str]:
    path = Path(folder)
    return sorted(str(p) for p in path.glob("*.jsonl")) if path.is_dir() else []


def _why(result: BatchEffectResult) -> str:
    """The one line of a run that could not measure: the most common failure when every
    sample failed, else the verdict."""
    merged = VarianceCollector()
    for arm in result.samples.values():
        merged.update(arm)
    if result.calibration is not None:
        merged.add(result.calibration)
    report = merged.report()
    line = failed_line(report)
    if line is not None:
        return line
    kinds: Counter[str] = Counter()
    for r in result.conditions.values():
        kinds.update(r.failures)
    return result.verdict + (f" ({sum(kinds.values())} samples failed)" if kinds else "")


def _keep(result: BatchEffectResult, folder: str, endpoint: Any) -> None:
    """One run file per condition (and the calibration), as ``sample --out`` writes them."""
    arms: dict[str, list[Sample]] = {name: list(arm) for name, arm in result.samples.items()}
    if result.calibration is not None:
        arms = {"calibration": [result.calibration], **arms}
    for name, samples in arms.items():
        run_file, _ = RunFile.open(Path(folder) / f"{name}.jsonl", result.request,
                                   len(samples), endpoint, __version__)
        try:
            for sample in samples:
                run_file.write(sample)
        finally:
            run_file.close()
