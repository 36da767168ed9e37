"""``llmvariance matrix``: the batch-effect experiment on each configuration of an engine."""

from __future__ import annotations

import argparse
import functools
import shlex
from pathlib import Path
from typing import Any

from .._errors import ConfigError
from .._matrix import MatrixRow, parse_config, server_matrix
from .._runs.shard import Shard, shard_of
from ..engines import LlamaCppServer, resolve_model
from . import _common
from ._common import CouldNotMeasure, ExitCode
from ._console import Console
from .batch_effect import split

PROMPT = ("Write a unique, surprising, extremely randomized story with highly unpredictable "
          "changes of events.")


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "matrix", help="start an engine in each configuration and run the batch effect on it",
        description="Example: llmvariance matrix --engine llama.cpp --model "
                    "smollm2-135m-instruct-q4_1 --config parallel=1 --config "
                    "parallel=8,kv_unified -n 30")
    parser.add_argument("--engine", choices=["llama.cpp"], default="llama.cpp")
    parser.add_argument("--model", dest="gguf", required=True,
                        help="a GGUF file, or a model cached by `python3 dev.py engines`")
    parser.add_argument("--config", action="append", required=True, metavar="SETTINGS",
                        help="engine settings, e.g. parallel=8,kv_unified,ctx_size=4096 "
                             "(repeat for each configuration)")
    parser.add_argument("--binary", help="the llama-server to run (default: $LLAMA_SERVER, "
                                         "PATH, then the cache)")
    parser.add_argument("--ctx-size", type=int, default=8192,
                        help="context size unless a configuration sets ctx_size (default 8192)")
    parser.add_argument("--extra-args", default="",
                        help="more llama-server arguments, as one shell-quoted string")
    _common.add_request_flags(parser, model=False, prompt_required=False)
    parser.set_defaults(prompt=PROMPT)
    parser.add_argument("-n", type=int, default=30, help="requests per condition (default 30)")
    parser.add_argument("--conditions", default="sequential,burst,loaded")
    parser.add_argument("--blocks", type=int,
                        help="blocks of the design per configuration (default 5)")
    parser.add_argument("--alpha", type=float, default=0.05,
                        help="significance level, Holm-corrected across conditions and "
                             "configurations (default 0.05)")
    parser.add_argument("--control", metavar="CONDITION",
                        help="the condition the others are tested against (default "
                             "sequential)")
    parser.add_argument("--speed", default="1,8", metavar="CONCURRENCIES",
                        help="concurrencies to measure throughput and latency at, per "
                             "configuration (default 1,8; empty: none)")
    parser.add_argument("--early-stop", action="store_true",
                        help="test after every block and stop once the verdict is decided "
                             "(a group-sequential boundary keeps the false-positive rate at "
                             "--alpha); 'no variation' still takes all n")
    parser.add_argument("--out", metavar="FILE.json",
                        help="written after each configuration; a rerun skips those done")
    parser.add_argument("--shard", metavar="k/K",
                        help="run only configurations j with j mod K == k (0-based); each "
                             "shard writes its own --out, and `llmvariance merge` joins them")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="no progress on stderr (errors still print)")


async def run(args: argparse.Namespace) -> int:
    console = Console("matrix", quiet=args.quiet)
    model = resolve_model(args.gguf)
    server = functools.partial(_server, model, args)
    for config in args.config:  # every path and setting is checked before anything starts
        server(**parse_config(config))
    request = _common.request(args, model=Path(model).stem)
    try:
        speed = [int(k) for k in split(args.speed)]
    except ValueError:
        raise ConfigError("speed", f"must be comma-separated integers, got {args.speed!r}"
                          ) from None
    started = 0

    def starting(**settings: Any) -> LlamaCppServer:
        nonlocal started
        started += 1
        shown = ",".join(f"{k}={v}" for k, v in settings.items()) or "defaults"
        console.note(f"configuration {started}/{len(args.config)}: starting llama-server "
                     f"({shown}), then the batch effect ({args.n} per condition)")
        return server(**settings)

    def announce(row: MatrixRow) -> None:
        counts = ", ".join(f"{c} {r.unique_count}/{r.n_ok}" for c, r in row.conditions.items())
        console.note(f"done: {row.config}: {counts}: {row.verdict_kind}")

    result = await server_matrix(request, args.n, args.config, server=starting,
                                 conditions=split(args.conditions), blocks=args.blocks,
                                 alpha=args.alpha, control=args.control, speed=speed,
                                 output=args.out, on_row=announce, shard=_shard(args),
                                 early_stop=args.early_stop)
    if result.rows and all(r.verdict_kind == "could_not_measure" for r in result.rows):
        raise CouldNotMeasure("no configuration could be measured: "
                              + "; ".join(f"{r.config}: {r.verdict}" for r in result.rows))
    if args.json:
        print(result.model_dump_json(indent=2))
    else:
        print(f"{args.engine}  model={model.name}  n={args.n} per condition, "
              f"temperature {args.temperature}, {args.max_tokens} tokens")
        print(result.to_text())
    return ExitCode.MEASURED


def _shard(args: argparse.Namespace) -> Shard | None:
    found = shard_of(args.shard, "--shard")
    if found is not None and not args.out:
        raise ConfigError("--shard", "needs --out: each shard writes its own matrix file, "
                          "which `llmvariance merge` joins")
    return found


def _server(model: Path, args: argparse.Namespace, **settings: Any) -> LlamaCppServer:
    settings.setdefault("ctx_size", args.ctx_size)
    extra = [*shlex.split(args.extra_args), *settings.pop("extra_args", ())]
    return LlamaCppServer(model, binary=args.binary, extra_args=extra, **settings)
