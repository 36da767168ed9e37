"""``llmvariance matrix``: the batch-effect experiment on each configuration of an engine."""

from __future__ import annotations

import argparse
import functools
import shlex
import sys
from pathlib import Path
from typing import Any

from .._matrix import MatrixRow, parse_config, server_matrix
from ..engines import LlamaCppServer, resolve_model
from . import _common
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
    parser.add_argument("--early-stop", action="store_true",
                        help="test after every block and stop once the verdict is decided "
                             "(a group-sequential boundary keeps the false-positive rate at "
                             "--alpha); 'no variation' still takes all n")
    parser.add_argument("--out", metavar="FILE.json",
                        help="written after each configuration; a rerun skips those done")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


async def run(args: argparse.Namespace) -> int:
    model = resolve_model(args.gguf)
    server = functools.partial(_server, model, args)
    for config in args.config:  # every path and setting is checked before anything starts
        server(**parse_config(config))
    request = _common.request(args, model=Path(model).stem)

    def announce(row: MatrixRow) -> None:
        counts = ", ".join(f"{c} {r.unique_count}/{r.n_ok}" for c, r in row.conditions.items())
        print(f"done: {row.config}: {counts}", file=sys.stderr, flush=True)

    result = await server_matrix(request, args.n, args.config, server=server,
                                 conditions=split(args.conditions), blocks=args.blocks,
                                 alpha=args.alpha, output=args.out, on_row=announce,
                                 early_stop=args.early_stop)
    if args.json:
        print(result.model_dump_json(indent=2))
    else:
        print(f"{args.engine}  model={model.name}  n={args.n} per condition, "
              f"temperature {args.temperature}, {args.max_tokens} tokens")
        print(result.to_text())
    return 0


def _server(model: Path, args: argparse.Namespace, **settings: Any) -> LlamaCppServer:
    settings.setdefault("ctx_size", args.ctx_size)
    extra = [*shlex.split(args.extra_args), *settings.pop("extra_args", ())]
    return LlamaCppServer(model, binary=args.binary, extra_args=extra, **settings)
