"""The 2023 seed experiment ("Non-determinism in GPT-4 is caused by Sparse MoE").

Protocol: for each model, C=30 completions, max_tokens=128, temperature 0, end-of-text
blocked with logit_bias ({"100257": -100} for chat models, {"50256": -100} for
completion models), the prompt below, sent sequentially with a 1 s pause. The original
table counts distinct outputs per model (gpt-4: 12/11/12 of 30, gpt-3.5-turbo 4/4/3,
text-davinci-003 3/2/4, davinci 1).

Against ``--base-url`` (key from $OPENAI_API_KEY) it runs the protocol as is. By default
it starts the built-in simulator and keeps it busy with background requests (other
prompts to the same model, ``--background`` at a time, via ``lv.background_load``), as a
hosted API is busy with other users: the sequential requests still share batches with
strangers.

    python benchmarks/seed_experiment.py                      # simulator, moe/dense-nbi/dense
    python benchmarks/seed_experiment.py --base-url URL --models gpt-4o,gpt-4o-mini
    python benchmarks/seed_experiment.py --base-url URL --models smollm2 --eos-token-id 2

``--eos-token-id`` blocks that model's end-of-text token instead of OpenAI's (100257 for
chat, 50256 for completions), as the protocol means for other tokenizers. ``--json-out``
writes the figures elsewhere than ``benchmarks/results/seed_experiment.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from pathlib import Path
from typing import Any

import anyio

import llmvariance as lv
from llmvariance.testing import SimServer

from _common import table, write_json

PROMPT = ("Write a unique, surprising, extremely randomized story with highly unpredictable "
          "changes of events.")
CHAT_EOS_BIAS = {"100257": -100.0}
COMPLETION_EOS_BIAS = {"50256": -100.0}


def request_for(model: str, api: str, max_tokens: int, eos_token_id: int | None = None
                ) -> lv.ChatRequest | lv.CompletionRequest:
    bias = {str(eos_token_id): -100.0} if eos_token_id is not None else None
    if api == "chat":
        return lv.ChatRequest(model=model, messages=[{"role": "user", "content": PROMPT}],
                              max_tokens=max_tokens, temperature=0.0,
                              logit_bias=bias or CHAT_EOS_BIAS)
    return lv.CompletionRequest(model=model, prompt=PROMPT, max_tokens=max_tokens,
                                temperature=0.0, logit_bias=bias or COMPLETION_EOS_BIAS)


async def run_model(pool: lv.ClientPool, model: str, api: str, args: argparse.Namespace
                    ) -> dict[str, Any]:
    request = request_for(model, api, args.max_tokens, args.eos_token_id)
    call = pool.prepare(request, f"seed:{api}")
    collector = lv.VarianceCollector()
    start = time.monotonic()
    async with lv.background_load(pool, request, args.background):
        for i in range(args.n):
            if i:
                await anyio.sleep(args.pause)
            collector.add(await pool.send(call, i))
    report = collector.report()
    return {"model": model, "api": api, "seconds": time.monotonic() - start,
            "report": report}


async def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    models = [(m, "chat") for m in args.models] + [(m, "completions")
                                                   for m in args.completion_models]
    async with contextlib.AsyncExitStack() as stack:
        if args.base_url:
            endpoint = lv.Endpoint(base_url=args.base_url)
        else:
            url = await stack.enter_async_context(SimServer(step_time_s=args.step_time))
            endpoint = lv.Endpoint(base_url=url, api_key=None)
        pool = await stack.enter_async_context(
            lv.ClientPool(endpoint, concurrency=1 + args.background))
        return [await run_model(pool, model, api, args) for model, api in models]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base-url", help="an OpenAI-compatible API; default: the simulator")
    parser.add_argument("--models", help="chat models, comma-separated")
    parser.add_argument("--completion-models", help="completion models, comma-separated")
    parser.add_argument("--n", type=int, default=30, help="completions per model (C)")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--pause", type=float, default=1.0, help="seconds between requests")
    parser.add_argument("--background", type=int,
                        help="background requests in flight (default 8 on the simulator, "
                             "0 against --base-url)")
    parser.add_argument("--step-time", type=float, default=0.002,
                        help="simulator seconds per decode step")
    parser.add_argument("--eos-token-id", type=int,
                        help="the model's end-of-text token id to block (default: OpenAI's)")
    parser.add_argument("--json-out", type=Path,
                        help="where to write the figures (default: benchmarks/results/)")
    args = parser.parse_args()
    split = lambda value: [m.strip() for m in value.split(",") if m.strip()]  # noqa: E731
    if args.base_url:
        args.models = split(args.models or "")
        args.completion_models = split(args.completion_models or "")
        if not args.models and not args.completion_models:
            parser.error("--models or --completion-models is required with --base-url")
        args.background = args.background or 0
    else:
        args.models = split(args.models or "moe,dense-nbi,dense")
        args.completion_models = split(args.completion_models or "moe,dense")
        args.background = 8 if args.background is None else args.background

    results = asyncio.run(run(args))
    print("Num_Sequences\tModel_Name")
    for r in results:
        print(f"{r['report'].unique_count}\t{r['model']}")
    print()
    rows = []
    for r in results:
        rep: lv.VarianceReport = r["report"]
        first = "-" if rep.common_prefix_tokens is None else rep.common_prefix_tokens
        d = "n/a" if rep.disagreement_rate is None else (
            f"{rep.disagreement_rate:.3f} {rep.disagreement_rate_ci or ''}")
        rows.append([r["model"], r["api"], f"{rep.unique_count}/{rep.n_ok}",
                     "n/a" if rep.coverage is None else rep.coverage,
                     "n/a" if rep.chao1 is None else f"{rep.chao1:.1f}", rep.mode_count,
                     first, d, rep.entropy_bits, rep.n_failed])
    print(table(["model", "api", "distinct", "coverage", "Chao1", "mode",
                 "first divergence (token)", "D [95% CI]", "entropy bits", "failed"], rows))
    target = args.base_url or "simulator"
    path = write_json("seed_experiment", {
        "target": target if args.base_url else "built-in simulator",
        "protocol": {"n": args.n, "max_tokens": args.max_tokens, "pause_s": args.pause,
                     "background": args.background, "prompt": PROMPT,
                     "eos_token_id": args.eos_token_id},
        "models": [{"model": r["model"], "api": r["api"], "seconds": r["seconds"],
                    "report": r["report"].model_dump(exclude={"by_fingerprint",
                                                              "by_endpoint",
                                                              "by_condition"})}
                   for r in results],
    }, args.json_out)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
