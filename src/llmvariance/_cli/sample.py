"""``llmvariance sample``: send one request N times and report how the outputs vary."""

from __future__ import annotations

import argparse
from typing import Any

from .._analysis.collect import analyze
from .._analysis.printable import printable
from .._errors import ConfigError
from .._progress import ProgressBar
from .._request import MessagesRequest, Request
from .._runs.runfile import read_run
from .._runs.suitefile import read_request
from .._sampler import sample_many
from . import _common
from ._common import ExitCode
from ._console import Console
from ._flow import (
    add_out_dir_flag,
    check_reachable,
    out_dir_run_file,
    provenance,
    raise_if_failed,
    resume_note,
    totals,
    write_out_dir,
)
from ._totals import Tally, add_cost_flags, dry_run_text


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "sample", help="send one request N times and report how the outputs vary",
        description="The API key is read from $OPENAI_API_KEY, never from the command line.")
    _common.add_endpoint_flags(parser)
    _common.add_request_flags(parser, prompt_required=False)
    _common.add_sampling_flags(parser)
    parser.add_argument("--request", metavar="BODY.json",
                        help="the request as one API body (OpenAI chat/completions/"
                             "responses or Anthropic messages, e.g. with system prompts, "
                             "logit_bias, seed, logprobs); --model, --api, --stream and "
                             "the request options below override it; --prompt, "
                             "--max-tokens and --temperature are ignored")
    parser.add_argument("-n", type=int, default=30, help="number of requests (default 30)")
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight")
    parser.add_argument("--out", metavar="FILE",
                        help="JSONL run file: samples are appended as they finish, and "
                             "running the same command again resumes")
    parser.add_argument("--allow-endpoint-change", action="store_true",
                        help="resume a run file written against another base URL")
    parser.add_argument("--server-info", action="store_true",
                        help="ask the server for its configuration first (llama.cpp's /props "
                             "and /slots; SGLang, vLLM) and record it in the run file")
    _common.add_shard_flags(parser, "indices")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--bootstrap", type=int, default=0, metavar="N",
                        help="add bootstrap intervals from N resamples (seeded)")
    add_out_dir_flag(parser)
    add_cost_flags(parser)


def _request(args: argparse.Namespace) -> Request:
    if args.request is not None:
        request = read_request(args.request, api=args.api, model=args.model,
                               stream=True if args.stream else None)
    else:
        for flag in ("model", "prompt"):
            if getattr(args, flag) is None:
                raise ConfigError(f"--{flag}",
                                  "required (or give the whole body with --request)")
        request = _common.request(args)
    return _common.with_sampling_flags(args, request)


async def run(args: argparse.Namespace) -> int:
    console = Console("sample", quiet=args.quiet)
    request = _request(args)
    ConfigError.check_int("n", args.n)
    ConfigError.check_int("concurrency", args.concurrency)
    limits, policy = _common.rate_limit(args), _common.retry(args)
    endpoint = _common.endpoint(args, anthropic=isinstance(request, MessagesRequest))
    args.run_file = out_dir_run_file(args)
    if args.dry_run:
        print(dry_run_text([("request", request, args.n)], rpm=args.rpm, tpm=args.tpm))
        return ExitCode.MEASURED
    await check_reachable(args, console, endpoint, [request])
    resume_note(console, args.run_file, args.n)
    tally = Tally()
    with ProgressBar(enabled=console.interactive) as bar:
        result = await sample_many(
            request, args.n, endpoint=endpoint,
            concurrency=args.concurrency, rate_limit=limits,
            retry=policy, output=args.run_file, progress=bar, on_sample=tally,
            allow_endpoint_change=args.allow_endpoint_change, server_info=args.server_info,
            shard=_common.shard(args))
    totals(console, args, tally)
    raise_if_failed(result.report, result.stopped_early)
    report = result.report
    if args.bootstrap:
        report = analyze(result.samples, bootstrap=args.bootstrap)
    if args.json:
        print(report.model_dump_json(indent=2))
    else:
        print(f"{printable(result.endpoint)}  model={printable(request.model)}  n={args.n}  "
              f"concurrency={args.concurrency}")
        if result.server is not None:
            print(f"server: {printable(result.server.summary())}")
        print(report.to_text())
    if args.out_dir:
        from .._render.html import html_report

        runs = [read_run(args.run_file)] if args.run_file else []
        write_out_dir(console, args.out_dir, {
            "provenance": provenance(request, endpoint, files=[args.run_file]),
            "report": report.model_dump(mode="json")},
            lambda path: html_report(report, path, runs=runs))
    return ExitCode.MEASURED
