"""``llmvariance serve``: run the simulated OpenAI-compatible server."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from typing import Any

from .._errors import ConfigError


def add_parser(commands: Any) -> None:
    serve = commands.add_parser("serve", help="run the simulated OpenAI-compatible server")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    serve.add_argument("--step-time", type=float, default=0.0,
                       help="seconds per decode step (default 0)")
    serve.add_argument("--max-batch", type=int, default=256,
                       help="most sequences decoded per step (default 256)")
    moe = serve.add_argument_group("the moe model")
    moe.add_argument("--experts", type=int, default=8, help="E (default 8)")
    moe.add_argument("--top-k", type=int, default=2, help="experts per token (default 2)")
    moe.add_argument("--capacity-factor", type=float, default=1.0,
                     help="expert capacity = ceil(factor * B * k / E) (default 1.0)")
    faults = serve.add_argument_group("fault injection")
    faults.add_argument("--rpm", type=float, help="requests per minute before 429")
    faults.add_argument("--tpm", type=float, help="tokens per minute before 429")
    faults.add_argument("--window", type=float, default=1.0,
                        help="seconds over which limits are enforced (default 1)")
    faults.add_argument("--no-rate-limit-headers", action="store_true",
                        help="send only retry-after(-ms) with a 429, no x-ratelimit-*")
    for code in ("500", "502", "503"):
        faults.add_argument(f"--p-{code}", type=float, default=0.0,
                            help=f"probability of answering {code}")
    faults.add_argument("--p-drop", type=float, default=0.0,
                        help="probability of closing the connection without an answer")
    faults.add_argument("--p-malformed", type=float, default=0.0,
                        help="probability of a 200 whose body is not valid JSON")
    faults.add_argument("--p-cut", type=float, default=0.0,
                        help="probability of a 200 whose body stops halfway")
    faults.add_argument("--p-stream-cut", type=float, default=0.0,
                        help="probability that a stream's connection drops halfway")
    faults.add_argument("--p-stream-error", type=float, default=0.0,
                        help="probability of an error event halfway through a stream")
    faults.add_argument("--latency", type=float, default=0.0, help="seconds added per request")
    faults.add_argument("--seed", type=int, help="seed for the fault dice")


async def run(args: argparse.Namespace) -> int:
    from ..testing import DenseModel, DenseNBIModel, Faults, MoEModel, SimServer

    faults = Faults(
        requests_per_minute=args.rpm, tokens_per_minute=args.tpm, window_s=args.window,
        rate_limit_headers=not args.no_rate_limit_headers, p_500=args.p_500,
        p_502=args.p_502, p_503=args.p_503, p_drop=args.p_drop, p_malformed=args.p_malformed,
        p_cut=args.p_cut, p_stream_cut=args.p_stream_cut,
        p_stream_error=args.p_stream_error, latency_s=args.latency, seed=args.seed,
    )
    try:
        moe = MoEModel(experts=args.experts, top_k=args.top_k,
                       capacity_factor=args.capacity_factor)
    except ValueError as exc:
        raise ConfigError("top_k", str(exc).removeprefix("top_k: ")) from None
    server = SimServer(host=args.host, port=args.port, step_time_s=args.step_time,
                       max_batch=args.max_batch, faults=faults,
                       models=[DenseModel(), moe, DenseNBIModel()])
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    async with contextlib.AsyncExitStack() as stack:
        try:
            base_url = await stack.enter_async_context(server)
        except OSError as exc:
            raise ConfigError("--port", f"cannot listen on {args.host}:{args.port}: "
                              f"{exc.strerror or exc} (another server there? --port 0 picks "
                              "a free port)") from None
        print(base_url, flush=True)
        print(f"models: {', '.join(server.engines)}; Ctrl-C stops", file=sys.stderr, flush=True)
        await stop.wait()
    if server.faults.injected:
        print(f"faults injected: {server.faults.injected}", file=sys.stderr)
    return 0
