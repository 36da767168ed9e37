"""How reproducible is a model across a suite of prompts: TARr@N and TARa@N on the simulator.

Runs ``examples/suite.jsonl`` (36 short prompts) N times each on the simulator's ``dense``
and ``moe`` models, one at a time and under background load (other users' requests in
flight through the same pool), and prints per model and condition: TARr@N (prompts whose N
outputs all agree), TARa@N (whose N extracted answers agree), the mean distinct count and
the prompts that varied. Then a scale point: 200 prompts x 50 samples (10,000 requests)
with ``keep_samples=False`` in a fresh client process, reporting its peak RSS next to the
same run keeping every sample.

    python benchmarks/suite_study.py [--n 10] [--background 16] [--json-out PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import llmvariance as lv
from llmvariance.testing import SimServer

from _common import table, write_json

SUITE = Path(__file__).resolve().parents[1] / "examples" / "suite.jsonl"
ANSWER = r"-?\d+(?:\.\d+)?|\w+"
"""The first number in the output, else its first word."""

SCALE_CLIENT = """
import json, resource, sys, time, llmvariance as lv
def peak_rss_mb():  # VmHWM: ru_maxrss would include the parent's RSS at fork
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
url, keep = sys.argv[1], sys.argv[2] == "1"
suite = {f"p{i:03d}": lv.ChatRequest(model="moe", max_tokens=8,
                                     messages=[{"role": "user", "content": f"prompt {i}"}])
         for i in range(200)}
start = time.perf_counter()
out = lv.sample_suite_sync(suite, 50, endpoint=lv.Endpoint(base_url=url), concurrency=64,
                           keep_samples=keep, output=sys.argv[3])
print(json.dumps({"seconds": time.perf_counter() - start,
                  "peak_rss_mb": peak_rss_mb(),
                  "requests": sum(e.report.n_samples for e in out.entries),
                  "tar_raw": out.report.tar_raw}))
"""


async def study(url: str, n: int, background: int) -> list[dict[str, Any]]:
    suite = lv.read_suite(SUITE)
    rows = []
    for model in ("dense", "moe"):
        requests = [(rid, r.model_copy(update={"model": model})) for rid, r in suite]
        for condition, width in (("one at a time", 0), ("under load", background)):
            concurrency = 1 if width == 0 else 16
            async with (lv.ClientPool(lv.Endpoint(base_url=url),
                                      concurrency=concurrency + width) as pool,
                        lv.background_load(pool, requests[0][1], width)):
                result = await lv.sample_suite(requests, n, pool=pool,
                                               concurrency=concurrency, answer=ANSWER)
            r = result.report
            rows.append({"model": model, "condition": condition, "n": n,
                         "prompts": r.n_prompts, "tar_raw": r.tar_raw,
                         "tar_answer": r.tar_answer, "distinct_mean": r.distinct_mean,
                         "unparseable": r.unparseable, "varying": r.varying})
            print(f"  {model:5} {condition:13} TARr@{n}={r.tar_raw:.3f} "
                  f"TARa@{n}={r.tar_answer:.3f}", flush=True)
    return rows


def scale(url: str) -> list[dict[str, Any]]:
    points = []
    for keep in (False, True):
        with tempfile.TemporaryDirectory() as scratch:
            out = subprocess.run(  # noqa: S603 - this interpreter, our own script
                [sys.executable, "-c", SCALE_CLIENT, url, "1" if keep else "0",
                 str(Path(scratch) / "suite.jsonl")],
                capture_output=True, text=True, check=True)
        points.append({"keep_samples": keep, **json.loads(out.stdout)})
        print(f"  200 x 50 keep_samples={keep!s:5} {points[-1]['peak_rss_mb']:.1f} MB "
              f"{points[-1]['seconds']:.1f} s", flush=True)
    return points


async def run(args: argparse.Namespace) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    async with SimServer(step_time_s=args.step_time) as url:
        rows = await study(url, args.n, args.background)
        points = await asyncio.to_thread(scale, url)
    return rows, points


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=10)
    parser.add_argument("--background", type=int, default=16)
    parser.add_argument("--step-time", type=float, default=0.0005,
                        help="the simulator's seconds per decoding step")
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args()
    rows, points = asyncio.run(run(args))
    print(table(["model", "condition", "prompts", f"TARr@{args.n}", f"TARa@{args.n}",
                 "mean distinct", "varying prompts"],
                [[r["model"], r["condition"], r["prompts"], r["tar_raw"], r["tar_answer"],
                  r["distinct_mean"], len(r["varying"])] for r in rows]))
    for r in rows:
        if r["varying"]:
            print(f"{r['model']} {r['condition']}: varying: {', '.join(r['varying'])}")
    print(table(["200 prompts x 50", "peak RSS MB", "seconds", "requests"],
                [[f"keep_samples={p['keep_samples']}", p["peak_rss_mb"], p["seconds"],
                  p["requests"]] for p in points]))
    path = write_json("suite_study", {"n": args.n, "background": args.background,
                                      "answer": ANSWER, "rows": rows, "scale": points},
                      args.json_out)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
