"""Accuracy under reruns: how much does rerunning an eval move its score?

Three parts:

1. **The simulator**, ``examples/suite.jsonl`` (36 prompts) N times each on ``dense`` and
   ``moe``, one at a time and under background load. The simulator's models answer in
   made-up words, so the true answers (``examples/suite_answers.json``) score 0 on every
   rerun; each model is graded instead against the answers it gives when each prompt is
   sent alone, one request at a time: the answer key a batch-invariant deployment
   reproduces. Two answer extractors: the first word (the README's regex) and the first
   three words (an answer that takes more tokens to state). Then moe alone against moe
   under load, paired by prompt (``compare_accuracy``).
2. **A real model** (``--real``, needs ``python3 dev.py engines``): SmolLM2-135M-Instruct
   on llama.cpp against the true answers, an answer counting as right when the reply
   contains it as whole words (``match="contains"``: this small model answers in
   sentences), on ``--parallel 1`` one at a time and on ``--parallel 8 --kv-unified``
   under background load.
3. **Memory** (``--scale``): 100,000 prompts x 2 on the mock transport, with and without
   expected answers, each in a fresh process (peak RSS, seconds; medians of ``--runs``).

    python benchmarks/rerun_accuracy.py [--n 10] [--real] [--scale] [--json-out PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import llmvariance as lv
from llmvariance.testing import SimServer

from _common import median, table, write_json

ROOT = Path(__file__).resolve().parents[1]
SUITE = ROOT / "examples" / "suite.jsonl"
ANSWERS = ROOT / "examples" / "suite_answers.json"
EXTRACTORS = {"first word": r"-?\d+(?:\.\d+)?|\w+",
              "first three words": r"^\s*(\S+(?:\s+\S+){0,2})"}


def row(label: dict[str, Any], result: lv.SuiteResult) -> dict[str, Any]:
    acc = result.report.accuracy
    assert acc is not None
    return {**label, "prompts": acc.prompts, "reruns": acc.reruns,
            "tar_answer": result.report.tar_answer, "per_rerun": acc.per_rerun,
            "mean": acc.mean, "mean_ci": [acc.mean_ci.low, acc.mean_ci.high],
            "min": acc.min, "max": acc.max, "spread": acc.spread,
            "spread_ci": [acc.spread_ci.low, acc.spread_ci.high],
            "best": acc.best_possible, "worst": acc.worst_possible,
            "flipping": acc.flipping, "correct_counts": acc.correct_counts}


async def key_alone(pool: lv.ClientPool, suite: list[lv.SuiteRequest], answer: str
                    ) -> dict[str, str | None]:
    """Each prompt's answer when it is sent alone: the model's own answer key."""
    alone = await lv.sample_suite(suite, 1, pool=pool, concurrency=1, answer=answer)
    key: dict[str, str | None] = {}
    for prompt in alone.report.prompts:
        top = prompt.answers.top if prompt.answers is not None else []
        key[prompt.id] = top[0].answer if top else None
    return key


async def simulator(n: int, background: int, step_time: float) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    paired: list[dict[str, Any]] = []
    async with SimServer(step_time_s=step_time) as url:
        endpoint = lv.Endpoint(base_url=url)
        for model in ("dense", "moe"):
            suite = [lv.SuiteRequest(rid, r) for rid, r in lv.read_suite(SUITE, model=model)]
            for name, answer in EXTRACTORS.items():
                async with lv.ClientPool(endpoint, concurrency=1) as pool:
                    key = await key_alone(pool, suite, answer)
                results = {}
                for condition, width in (("one at a time", 0), ("under load", background)):
                    concurrency = 1 if width == 0 else 32
                    async with (lv.ClientPool(endpoint, concurrency=concurrency + width) as pool,
                                lv.background_load(pool, suite[0].request, width)):
                        results[condition] = await lv.sample_suite(
                            suite, n, pool=pool, concurrency=concurrency, answer=answer,
                            expected=key)
                    rows.append(row({"model": model, "condition": condition, "answer": name},
                                    results[condition]))
                    print(f"  {model:5} {condition:13} {name:17} mean "
                          f"{rows[-1]['mean']:.3f} spread {rows[-1]['spread']:.3f} "
                          f"flipping {len(rows[-1]['flipping'])}", flush=True)
                c = lv.compare_accuracy(results["one at a time"], results["under load"])
                paired.append({"model": model, "answer": name, "delta": c.statistic,
                               "delta_ci": [c.delta_ci.low, c.delta_ci.high],
                               "pvalue": c.pvalue, "verdict": c.verdict,
                               "mcnemar_significant": sum(
                                   r.adjusted_pvalue < 0.05 for r in c.mcnemar),
                               "reruns": len(c.mcnemar)})
    return {"rows": rows, "paired": paired}


async def real(n: int, background: int) -> dict[str, Any]:
    from llmvariance.engines import LlamaCppServer, model_path

    expected = lv.Expected(lv.read_expected(ANSWERS), match="contains")
    suite = [lv.SuiteRequest(rid, r) for rid, r in lv.read_suite(SUITE, model="smollm2")]
    rows: list[dict[str, Any]] = []
    results = {}
    for config, parallel, unified, width in (("--parallel 1, one at a time", 1, False, 0),
                                             ("--parallel 8 --kv-unified, under load", 8,
                                              True, background)):
        async with LlamaCppServer(model_path("smollm2-135m-instruct-q4_1"), parallel=parallel,
                                  kv_unified=unified) as url:
            concurrency = 1 if width == 0 else 8
            async with (lv.ClientPool(lv.Endpoint(base_url=url),
                                      concurrency=concurrency + width) as pool,
                        lv.background_load(pool, suite[0].request, width)):
                results[config] = await lv.sample_suite(
                    suite, n, pool=pool, concurrency=concurrency, answer=r"(?s)\S.*",
                    expected=expected)
        rows.append(row({"model": "SmolLM2-135M-Instruct Q4_1", "condition": config,
                         "answer": "reply contains it"}, results[config]))
        print(f"  {config:40} mean {rows[-1]['mean']:.3f} spread {rows[-1]['spread']:.3f} "
              f"flipping {len(rows[-1]['flipping'])}", flush=True)
    first, second = results.values()
    c = lv.compare_accuracy(first, second)
    return {"rows": rows, "paired": [{"delta": c.statistic, "pvalue": c.pvalue,
                                      "verdict": c.verdict}]}


SCALE_CLIENT = r"""
import json, sys, time
import llmvariance as lv

def peak_rss_mb():  # VmHWM: ru_maxrss would include the parent's RSS at fork
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024

def echo(request):
    text = orjson.loads(request.body or b"{}")["messages"][-1]["content"]
    return lv.HTTPResponse(200, orjson.dumps({"choices": [
        {"message": {"content": text}, "finish_reason": "stop"}]}))

prompts, n, graded = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "1"
suite = {f"p{i:06d}": lv.ChatRequest(model="m", max_tokens=8,
                                     messages=[{"role": "user", "content": f"prompt {i}"}])
         for i in range(prompts)}
expected = {rid: ("prompt" if i % 3 else "wrong") for i, rid in enumerate(suite)}
start = time.perf_counter()
result = lv.sample_suite_sync(suite, n, endpoint=lv.Endpoint(base_url="http://127.0.0.1:9/v1",
                              api_key=None), transport=lv.MockTransport(echo), concurrency=64,
                              keep_samples=False, answer=r"\w+",
                              expected=expected if graded else None)
acc = result.report.accuracy
print(json.dumps({"seconds": time.perf_counter() - start, "peak_rss_mb": peak_rss_mb(),
                  "accuracy": None if acc is None else acc.mean}))
"""


def scale(prompts: int, n: int, runs: int) -> list[dict[str, Any]]:
    found: dict[bool, list[dict[str, Any]]] = {False: [], True: []}
    for _ in range(runs):
        for graded in (False, True):  # alternating, so load from other work hits both
            out = subprocess.run(  # noqa: S603 - this interpreter, our own script
                [sys.executable, "-c", SCALE_CLIENT, str(prompts), str(n),
                 "1" if graded else "0"], capture_output=True, text=True, check=True)
            found[graded].append(json.loads(out.stdout))
    points = []
    for graded, measured in found.items():
        points.append({"expected": graded,
                       "seconds": median([m["seconds"] for m in measured]),
                       "peak_rss_mb": median([m["peak_rss_mb"] for m in measured]),
                       "accuracy": measured[0]["accuracy"], "runs": measured})
    base = points[0]
    for point in points:
        point["seconds_ratio"] = point["seconds"] / base["seconds"]
        point["rss_ratio"] = point["peak_rss_mb"] / base["peak_rss_mb"]
    return points


def print_rows(rows: list[dict[str, Any]]) -> None:
    print(table(["model", "condition", "answer", "prompts", "mean", "min", "max", "spread",
                 "best possible", "worst possible", "flipping"],
                [[r["model"], r["condition"], r["answer"], r["prompts"], r["mean"], r["min"],
                  r["max"], r["spread"], r["best"], r["worst"], len(r["flipping"])]
                 for r in rows]))
    for r in rows:
        if r["flipping"]:
            print(f"{r['model']} {r['condition']} ({r['answer']}): flipping: "
                  f"{', '.join(r['flipping'])}")
            print(f"    per rerun: {', '.join(f'{v:.3f}' for v in r['per_rerun'])}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=10)
    parser.add_argument("--background", type=int, default=16)
    parser.add_argument("--step-time", type=float, default=0.002,
                        help="the simulator's seconds per decoding step")
    parser.add_argument("--real", action="store_true", help="also SmolLM2 on llama.cpp")
    parser.add_argument("--scale", action="store_true",
                        help="also the memory of 100,000 prompts x 2 with expected answers")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args()
    payload: dict[str, Any] = {"n": args.n, "background": args.background,
                               "extractors": EXTRACTORS}
    print("simulator (graded against each model's own answers sent alone)")
    payload["simulator"] = asyncio.run(simulator(args.n, args.background, args.step_time))
    print_rows(payload["simulator"]["rows"])
    for p in payload["simulator"]["paired"]:
        print(f"{p['model']} ({p['answer']}) one at a time vs under load: {p['verdict']}")
    if args.real:
        print("real: SmolLM2 on llama.cpp, graded against examples/suite_answers.json")
        payload["real"] = asyncio.run(real(args.n, 8))
        print_rows(payload["real"]["rows"])
        print(f"real one at a time vs under load: {payload['real']['paired'][0]['verdict']}")
    if args.scale:
        points = scale(100_000, 2, args.runs)
        payload["scale"] = points
        print(table(["100,000 prompts x 2", "seconds", "x", "peak RSS MB", "x"],
                    [[f"expected={p['expected']}", p["seconds"], p["seconds_ratio"],
                      p["peak_rss_mb"], p["rss_ratio"]] for p in points]))
    path = write_json("rerun_accuracy", payload, args.json_out)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
