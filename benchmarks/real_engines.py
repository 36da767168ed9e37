"""The batch effect on a real engine: llama.cpp's llama-server on two real GGUF models.

For each model: the server-configuration matrix (each configuration started, the same
temperature-0 request sent N times one at a time, all at once, and all at once under
background load, the server stopped), then the 2023 seed protocol
(benchmarks/seed_experiment.py --base-url, that model's end-of-text token blocked)
against a llama-server with 8 slots sharing one KV cache, with and without background load.

    python3 dev.py engines                      # once: build llama-server, fetch the models
    .venv/bin/python benchmarks/real_engines.py [--n 30] [--models smollm2,gemma3]

Prints the tables and writes benchmarks/results/real_engines.json.

``--study conditions`` runs the engine-conditions study instead: for each model, llama.cpp's
flags (slots, unified KV cache, prompt cache, flash attention, micro-batch size,
continuous batching) as a server matrix whose conditions are ``cold`` (the control: the
reference is a request with the prompt cache off), one at a time, one at a time after a
request with another prompt (``history``), a burst, an exact batch of 8 (``batch=8``),
background prompts that share the measured prompt (``shared_prefix``) and background
prompts of very different lengths (``mixed_lengths``); each configuration's throughput and
latency at concurrency 1 and 8; then seeded sampling alone, in a burst and under load, and
threads 1 against 2. It writes benchmarks/results/real_engines_conditions.json; it takes
about an hour on two shared cores, so run it in the background:

    nohup .venv/bin/python benchmarks/real_engines.py --study conditions > study.log 2>&1 &
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import platform
import sys
import tempfile
from pathlib import Path
from typing import Any

import llmvariance as lv
from llmvariance.engines import LlamaCppServer, model_path
from llmvariance.engines._setup import cache_dir

from _common import table, write_json

HERE = Path(__file__).resolve().parent
PROMPT = ("Write a unique, surprising, extremely randomized story with highly unpredictable "
          "changes of events.")
CONFIGS = ["parallel=1", "parallel=8", "parallel=8,kv_unified"]
# api: SmolLM2 is an instruction model (chat); this Gemma 3 270M file is the base model with
# no chat template, so it is asked for a completion. eos: the token that ends its turn.
MODELS = {
    "smollm2": {"file": "smollm2-135m-instruct-q4_1", "api": "chat", "eos": 2},
    "gemma3": {"file": "gemma3-270m-q4_k_m", "api": "completion", "eos": 1},
}


def request(name: str, max_tokens: int) -> lv.ChatRequest | lv.CompletionRequest:
    # logprobs on: the report says whether agreeing texts agree bit for bit in them too
    if MODELS[name]["api"] == "chat":
        return lv.ChatRequest(model=name, messages=[{"role": "user", "content": PROMPT}],
                              max_tokens=max_tokens, temperature=0.0, logprobs=True)
    return lv.CompletionRequest(model=name, prompt=PROMPT, max_tokens=max_tokens,
                                temperature=0.0, logprobs=1)


async def matrix(name: str, args: argparse.Namespace) -> lv.MatrixResult:
    server = functools.partial(LlamaCppServer, model_path(str(MODELS[name]["file"])),
                               ctx_size=args.ctx_size)
    return await lv.server_matrix(
        request(name, args.max_tokens), args.n, CONFIGS, server=server, blocks=args.blocks,
        output=args.scratch / f"matrix-{name}.json",
        on_row=lambda row: print(f"  {name} {row.config}: " + ", ".join(
            f"{c} {r.unique_count}/{r.n_ok}" for c, r in row.conditions.items()), flush=True))


async def seed_protocol(name: str, args: argparse.Namespace, background: int
                        ) -> dict[str, Any]:
    spec = MODELS[name]
    out = args.scratch / f"seed-{name}-{background}.json"
    async with LlamaCppServer(model_path(str(spec["file"])), parallel=8, kv_unified=True,
                              ctx_size=args.ctx_size) as url:
        flag = "--models" if spec["api"] == "chat" else "--completion-models"
        process = await asyncio.create_subprocess_exec(
            sys.executable, str(HERE / "seed_experiment.py"), "--base-url", url, flag, name,
            "--n", str(args.n), "--eos-token-id", str(spec["eos"]),
            "--background", str(background), "--json-out", str(out))
        if await process.wait() != 0:
            raise SystemExit(f"seed_experiment.py failed for {name}")
    figures: dict[str, Any] = json.loads(out.read_text())
    return figures


def cell(row: lv.MatrixRow, condition: str) -> str:
    report = row.conditions[condition]
    d = "n/a" if report.disagreement_rate is None else (
        f"{report.disagreement_rate:.2f} {report.disagreement_rate_ci or ''}")
    p = row.adjusted_pvalues.get(condition)
    shown = "" if p is None else (", p<0.001" if p < 0.001 else f", p={p:.2g}")
    return f"{report.unique_count}/{report.n_ok}, D {d}{shown}"


def numbers(agreement: lv.LogprobAgreement | None) -> str:
    if agreement is None or agreement.identical_within_outputs is None:
        return "-"
    if agreement.identical_within_outputs:
        return "bitwise identical"
    return (f"differ from token {agreement.first_diff_within_outputs} "
            f"(max |Δ| {agreement.max_abs_diff_within_outputs:.1e})")


def engine_version() -> str:
    record = json.loads((cache_dir() / "engine.json").read_text())
    return str(record.get("version", "unknown")).removeprefix("version: ")


STUDY_CONFIGS = ["threads=1", "parallel=1", "parallel=8,kv_unified", "parallel=8",
                 "cache_prompt=false", "flash_attn=off", "ubatch_size=32",
                 "cont_batching=false"]
"""``threads=1`` is llama.cpp's defaults on this machine (4 slots, unified KV cache, prompt
cache on, flash attention auto), with the thread count ``LlamaCppServer`` picks anyway."""
STUDY_CONDITIONS = {
    # the control is cold; history goes through the other API for the chat model (the
    # issue's observation), through the same one for the base model (it has no chat template)
    "smollm2": ["cold", "sequential", "history=completions", "burst", "batch=8",
                "shared_prefix", "mixed_lengths=400"],
    "gemma3": ["cold", "sequential", "history", "burst", "batch=8", "shared_prefix",
               "mixed_lengths=400"],
}


async def study_matrix(name: str, args: argparse.Namespace) -> lv.MatrixResult:
    server = functools.partial(LlamaCppServer, model_path(str(MODELS[name]["file"])),
                               ctx_size=args.ctx_size)
    return await lv.server_matrix(
        request(name, args.max_tokens), args.n, STUDY_CONFIGS, server=server,
        conditions=STUDY_CONDITIONS[name], control="cold", blocks=args.blocks,
        speed=(1, 8), output=args.scratch / f"study-{name}.json",
        on_row=lambda row: print(f"  {name} {row.config}: " + ", ".join(
            f"{c} {r.unique_count}/{r.n_ok}" for c, r in row.conditions.items())
            + "; " + "; ".join(s.describe() for s in row.speed), flush=True))


async def study_extras(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Seeded sampling on the defaults, and threads 1 against 2 (speed and a burst)."""
    file = model_path(str(MODELS[name]["file"]))
    async with LlamaCppServer(file, ctx_size=args.ctx_size) as url:
        seeded = await lv.batch_effect(
            request(name, args.max_tokens), args.n, endpoint=lv.Endpoint(base_url=url),
            conditions=["seeded", "seeded_burst", "seeded_loaded"], blocks=args.blocks)
    server = functools.partial(LlamaCppServer, file, ctx_size=args.ctx_size)
    threads = await lv.server_matrix(
        request(name, args.max_tokens), 4, ["threads=1", "threads=2"], server=server,
        conditions=["sequential", "burst"], blocks=1, speed=(1, 8), speed_requests=8)
    return {"seeded": seeded, "threads": threads}


def study_cell(row: lv.MatrixRow, condition: str) -> str:
    report = row.conditions[condition]
    ci = report.disagreement_rate_ci
    interval = "" if ci is None else f" [{ci.low:.2f}, {ci.high:.2f}]"
    d = "n/a" if report.disagreement_rate is None else f"{report.disagreement_rate:.2f}{interval}"
    p = row.adjusted_pvalues.get(condition)
    shown = "" if p is None else (" p<0.001" if p < 0.001 else f" p={p:.2g}")
    return f"{report.unique_count}/{report.n_ok} D {d}{shown}"


def run_study(args: argparse.Namespace, names: list[str]) -> None:
    import time

    started = time.monotonic()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as scratch:
        args.scratch = Path(scratch)
        for name in names:
            print(f"{name}: flags x conditions", flush=True)
            grid = asyncio.run(study_matrix(name, args))
            print(f"{name}: seeded sampling, threads", flush=True)
            extras = asyncio.run(study_extras(name, args))
            results[name] = {"matrix": grid, **extras}
    wall = time.monotonic() - started
    print()
    print(f"llama.cpp {engine_version()}, {platform.machine()}, {os.cpu_count()} cores "
          f"(shared), n={args.n} per condition, {args.blocks} blocks, {args.max_tokens} "
          f"tokens, temperature 0; control: cold (prompt cache off); wall {wall / 60:.0f} min")
    for name, result in results.items():
        grid = result["matrix"]
        print(f"\n{MODELS[name]['file']} ({MODELS[name]['api']}): each cell distinct/n, D [95% "
              "CI], p of the exact test against cold (Holm within the row)")
        for row in grid.rows:
            print(f"  {row.config}: {row.verdict_kind} (matrix p "
                  f"{'-' if row.matrix_pvalue is None else f'{row.matrix_pvalue:.2g}'})")
            for c in row.conditions:
                print(f"    {c:<20} {study_cell(row, c)}")
        print(grid.price_table())
        print(f"  seeded: {result['seeded'].verdict_kind}: " + ", ".join(
            f"{c} {r.unique_count}/{r.n_ok}" for c, r in result["seeded"].conditions.items()))
        print(result["threads"].price_table())
    path = write_json("real_engines_conditions", {
        "engine": engine_version(), "n": args.n, "blocks": args.blocks,
        "max_tokens": args.max_tokens, "ctx_size": args.ctx_size, "prompt": PROMPT,
        "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
        "wall_s": round(wall, 1),
        "models": {name: {
            "file": MODELS[name]["file"], "api": MODELS[name]["api"],
            "matrix": result["matrix"].model_dump(mode="json"),
            "seeded": result["seeded"].model_dump(mode="json", exclude={"samples"}),
            "threads": result["threads"].model_dump(mode="json")}
            for name, result in results.items()},
    }, args.json_out)
    print(f"wrote {path}")


def markdown(path: Path) -> str:
    """The study's README table from its JSON: a row per model and configuration, a cell
    per condition (distinct/n, D, Holm-adjusted p against cold), then the price."""
    data = json.loads(path.read_text())
    lines = []
    for model in data["models"].values():
        grid = lv.MatrixResult.model_validate(model["matrix"])
        conditions = grid.conditions
        lines += ["", f"**{model['file']}** ({model['api']}; control: cold)", "",
                  "| flags | " + " | ".join(conditions) + " | tok/s @1 | tok/s @8 | "
                  "latency @8 median / p90 s |",
                  "|---" * (len(conditions) + 4) + "|"]
        for row in grid.rows:
            one, eight = row.speed_at(1), row.speed_at(8)
            latency = "-" if eight is None or eight.latency_median_s is None else (
                f"{eight.latency_median_s:.2f} / {eight.latency_p90_s:.2f}")
            lines.append(f"| `{row.config}` | " + " | ".join(
                study_cell(row, c) for c in conditions)
                + f" | {'-' if one is None else f'{one.tokens_per_s:.0f}'}"
                + f" | {'-' if eight is None else f'{eight.tokens_per_s:.0f}'} | {latency} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--study", choices=["batch", "conditions"], default="batch",
                        help="batch: issue 20's matrix and the seed protocol; conditions: "
                             "the engine conditions by llama.cpp flag, with throughput")
    parser.add_argument("--n", type=int, default=30)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--ctx-size", type=int, default=8192)
    parser.add_argument("--blocks", type=int, default=5)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--json-out", type=Path)
    parser.add_argument("--markdown", type=Path, metavar="STUDY.json",
                        help="print the conditions study's README table from its JSON")
    args = parser.parse_args()
    if args.markdown is not None:
        print(markdown(args.markdown))
        return
    names = [m.strip() for m in args.models.split(",") if m.strip()]
    if args.study == "conditions":
        run_study(args, names)
        return
    with tempfile.TemporaryDirectory() as scratch:
        args.scratch = Path(scratch)
        results: dict[str, Any] = {}
        for name in names:
            print(f"{name}: configuration matrix", flush=True)
            grid = asyncio.run(matrix(name, args))
            print(f"{name}: seed protocol", flush=True)
            seeds = {bg: asyncio.run(seed_protocol(name, args, bg)) for bg in (0, 8)}
            results[name] = {"matrix": grid, "seed": seeds}

    print()
    print(f"llama.cpp {engine_version()}, {platform.machine()}, n={args.n}, "
          f"{args.max_tokens} tokens, temperature 0")
    rows = []
    for name, result in results.items():
        for row in result["matrix"].rows:
            rows.append([MODELS[name]["file"], row.config,
                         *(cell(row, c) for c in row.conditions), row.verdict_kind,
                         numbers(row.logprobs)])
    print(f"each cell: distinct/n, D [95% CI], p of the exact test against one at a time "
          f"(Holm within the row); {args.blocks} blocks, a calibration request first")
    print(table(["model", "server flags", "one at a time", "all at once", "under load",
                 "verdict", "agreeing texts' logprobs"], rows))
    for name, result in results.items():
        for row in result["matrix"].rows:
            for finding in row.findings:
                print(f"{MODELS[name]['file']} {row.config}: {finding}")
    print()
    seed_rows = []
    for name, result in results.items():
        for background, figures in result["seed"].items():
            report = figures["models"][0]["report"]
            first = report["common_prefix_tokens"]
            seed_rows.append([MODELS[name]["file"], MODELS[name]["api"], MODELS[name]["eos"],
                              background, f"{report['unique_count']}/{report['n_ok']}",
                              f"{report['coverage']:.3f}", f"{report['chao1']:.1f}",
                              report["mode_count"], "-" if first is None else first])
    print("seed protocol (30 sequential requests, 1 s apart) on --parallel 8 --kv-unified")
    print(table(["model", "api", "blocked eos", "background", "distinct", "coverage",
                 "Chao1", "mode",
                 "first divergence (word)"], seed_rows))
    path = write_json("real_engines", {
        "engine": engine_version(), "n": args.n, "max_tokens": args.max_tokens,
        "ctx_size": args.ctx_size, "prompt": PROMPT,
        "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
        "models": {name: {
            "file": MODELS[name]["file"], "api": MODELS[name]["api"],
            "eos_token_id": MODELS[name]["eos"],
            "matrix": result["matrix"].model_dump(mode="json"),
            "seed": {str(bg): figures for bg, figures in result["seed"].items()}}
            for name, result in results.items()},
    }, args.json_out)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
