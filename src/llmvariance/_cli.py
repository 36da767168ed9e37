"""The ``llmvariance`` command: ``sample`` an endpoint, ``serve`` the simulator."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import Sequence

import anyio
from pydantic import ValidationError

from ._collect import VarianceCollector, analyze
from ._endpoint import Endpoint
from ._errors import ConfigError
from ._progress import ProgressBar
from ._ratelimit import RateLimit
from ._request import ChatRequest, CompletionRequest, Request
from ._retry import RetryPolicy
from ._runfile import read_run
from ._sampler import sample_many


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llmvariance",
        description="Measure how much a model's output varies across identical requests.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    sample = commands.add_parser(
        "sample", help="send one request N times and report how the outputs vary",
        description="The API key is read from $OPENAI_API_KEY, never from the command line.",
    )
    sample.add_argument("--base-url", help="default: $OPENAI_BASE_URL or OpenAI's API")
    sample.add_argument("--model", required=True)
    sample.add_argument("--prompt", required=True)
    sample.add_argument("-n", type=int, default=30, help="number of requests (default 30)")
    sample.add_argument("--max-tokens", type=int, default=128)
    sample.add_argument("--temperature", type=float, default=0.0)
    sample.add_argument("--concurrency", type=int, default=8)
    sample.add_argument("--rpm", type=float, help="client-side limit, requests per minute")
    sample.add_argument("--tpm", type=float, help="client-side limit, tokens per minute")
    sample.add_argument("--max-attempts", type=int, default=6,
                        help="tries per request, the first included (default 6)")
    sample.add_argument("--completion", action="store_true",
                        help="use the legacy /completions API instead of chat")
    sample.add_argument("--out", metavar="FILE",
                        help="JSONL run file: samples are appended as they finish, and "
                             "running the same command again resumes")
    sample.add_argument("--allow-endpoint-change", action="store_true",
                        help="resume a run file written against another base URL")
    sample.add_argument("--json", action="store_true", help="print the report as JSON")
    sample.add_argument("--bootstrap", type=int, default=0, metavar="N",
                        help="add bootstrap intervals from N resamples (seeded)")

    report = commands.add_parser(
        "report", help="the variance report of one or more run files",
        description="Reports on JSONL run files written by `sample --out` or "
                    "sample_many(output=...); several files are merged.")
    report.add_argument("files", nargs="+", metavar="FILE")
    report.add_argument("--json", action="store_true", help="print the report as JSON")
    report.add_argument("--group-by", choices=["fingerprint", "endpoint", "condition"],
                        help="also report each group separately")
    report.add_argument("--bootstrap", type=int, default=0, metavar="N",
                        help="add bootstrap intervals from N resamples (seeded)")

    demo = commands.add_parser(
        "demo", help="show the batch effect on the built-in simulator (no API key needed)")
    demo.add_argument("-n", type=int, default=30, help="requests per condition (default 30)")
    demo.add_argument("--max-tokens", type=int, default=48)
    demo.add_argument("--models", default="moe,dense",
                      help="simulated models, comma-separated (moe, dense, dense-nbi)")

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
    faults.add_argument("--latency", type=float, default=0.0, help="seconds added per request")
    faults.add_argument("--seed", type=int, help="seed for the fault dice")
    return parser


def _request(args: argparse.Namespace) -> Request:
    if args.completion:
        return CompletionRequest(model=args.model, prompt=args.prompt,
                                 max_tokens=args.max_tokens, temperature=args.temperature)
    return ChatRequest(model=args.model, messages=[{"role": "user", "content": args.prompt}],
                       max_tokens=args.max_tokens, temperature=args.temperature)


async def _sample(args: argparse.Namespace) -> int:
    endpoint = Endpoint(base_url=args.base_url) if args.base_url else Endpoint()
    rate_limit = None
    if args.rpm is not None or args.tpm is not None:
        rate_limit = RateLimit(requests_per_minute=args.rpm, tokens_per_minute=args.tpm)
    with ProgressBar() as bar:
        result = await sample_many(_request(args), args.n, endpoint=endpoint,
                                   concurrency=args.concurrency, rate_limit=rate_limit,
                                   retry=RetryPolicy(max_attempts=args.max_attempts),
                                   output=args.out, progress=bar,
                                   allow_endpoint_change=args.allow_endpoint_change)
    report = result.report
    if args.bootstrap:
        report = analyze(result.samples, bootstrap=args.bootstrap)
    if args.json:
        print(report.model_dump_json(indent=2))
    else:
        print(f"{result.endpoint}  model={args.model}  n={args.n}  "
              f"concurrency={args.concurrency}")
        print(report.to_text())
    return 0


async def _serve(args: argparse.Namespace) -> int:
    from .testing import DenseModel, DenseNBIModel, Faults, MoEModel, SimServer

    faults = Faults(
        requests_per_minute=args.rpm, tokens_per_minute=args.tpm, window_s=args.window,
        rate_limit_headers=not args.no_rate_limit_headers, p_500=args.p_500,
        p_502=args.p_502, p_503=args.p_503, p_drop=args.p_drop, p_malformed=args.p_malformed,
        p_cut=args.p_cut, latency_s=args.latency, seed=args.seed,
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
    async with server as base_url:
        print(base_url, flush=True)
        print(f"models: {', '.join(server.engines)}; Ctrl-C stops", file=sys.stderr, flush=True)
        await stop.wait()
    if server.faults.injected:
        print(f"faults injected: {server.faults.injected}", file=sys.stderr)
    return 0


async def _report(args: argparse.Namespace) -> int:
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


async def _demo(args: argparse.Namespace) -> int:
    from ._demo import run_demo

    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = sorted(set(models) - {"moe", "dense", "dense-nbi"})
    if unknown:
        raise ConfigError("models", f"unknown simulated models {unknown}")
    print(await run_demo(models, n=args.n, max_tokens=args.max_tokens))
    return 0


def _describe(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        field = ".".join(str(p) for p in error["loc"]) or exc.title
        parts.append(f"{field}: {error['msg']}")
    return "; ".join(parts)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    command = {"sample": _sample, "serve": _serve, "demo": _demo, "report": _report}[
        args.command]
    try:
        return anyio.run(command, args, backend="asyncio")
    except (ConfigError, ValidationError) as exc:
        message = _describe(exc) if isinstance(exc, ValidationError) else str(exc)
        print(f"llmvariance {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
