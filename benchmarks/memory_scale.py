"""Peak memory and wall time as N grows, with and without keeping the samples.

A loopback server in its own process answers every request with a chat body: one fixed
answer (``identical``: temperature 0 at its best; the answer of ``pool_overhead.py``), or
a different 128-word answer with its own response id every time (``distinct``: the worst
case for kept texts). Each (outputs, N, keep_samples) point runs in a fresh client
process, which reports its own peak RSS (``VmHWM``; ``ru_maxrss`` would include the
parent's RSS at fork) and wall time, writing a run file as a real study would. The
ratio column is against the same client at the smallest N; "KB per kept sample" is
(peak with keep_samples - peak without) / N at the same N and outputs.

Then, in this process, what a kept sample with logprobs costs per token: 1,000 samples of
128 tokens with 5 top alternatives each, as ``Sample`` objects in a list and in
``KeptSamples`` (traced allocations).

    python benchmarks/memory_scale.py [--sizes 10000,100000,1000000]
        [--distinct-sizes 100000] [--concurrency 64]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from pool_overhead import serve

from _common import table, write_json

WORDS = ("the a river forest quietly storm lantern captain secret ancient whispered found "
         "between golden under tower garden bridge morning clock mirror letter").split()


def serve_distinct(sock: socket.socket) -> None:
    """Every answer different: 128 words after a counter, and a response id of its own."""
    count = 0

    async def handle(request: web.Request) -> web.Response:
        nonlocal count
        await request.read()
        count += 1
        words = [WORDS[(count * 7 + k * k) % len(WORDS)] for k in range(127)]
        return web.Response(content_type="application/json", body=orjson.dumps({
            "id": f"chatcmpl-{count:029d}", "object": "chat.completion", "created": 0,
            "model": "m", "system_fingerprint": "fp_bench",
            "choices": [{"index": 0, "message": {"role": "assistant",
                                                 "content": f"{count} " + " ".join(words)},
                         "finish_reason": "length"}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 128, "total_tokens": 138}}))

    app = web.Application()
    app.router.add_post("/v1/chat/completions", handle)
    web.run_app(app, sock=sock, print=None, access_log=None)


def logprob_cost(n: int = 1000, tokens: int = 128, k: int = 5) -> dict[str, float]:
    """Bytes per token of kept samples with logprobs: a list of Samples vs KeptSamples."""
    import tracemalloc

    import llmvariance as lv

    def sample(i: int) -> lv.Sample:
        toks = [f" {WORDS[(i + t) % len(WORDS)]}" for t in range(tokens)]
        return lv.Sample.model_validate_json(orjson.dumps({
            "index": i, "text": "".join(toks), "tokens": toks,
            "token_logprobs": [-0.01 * ((i + t) % 97) for t in range(tokens)],
            "top_logprobs": [{f" {WORDS[(i + t + a) % len(WORDS)]}{a}": -0.1 * a - 1e-4 * i
                              for a in range(k)} for t in range(tokens)]}))

    tracemalloc.start()
    as_list = [sample(i) for i in range(n)]
    list_bytes = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    del as_list
    tracemalloc.start()
    kept = lv.KeptSamples(n)
    for i in range(n):
        kept.put(i, sample(i))
    kept_bytes = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert kept[3] == sample(3)
    return {"samples": n, "tokens": tokens, "alternatives": k,
            "list_bytes_per_token": list_bytes / (n * tokens),
            "kept_bytes_per_token": kept_bytes / (n * tokens)}

CLIENT = """
import json, resource, sys, time, llmvariance as lv
def peak_rss_mb():  # VmHWM: ru_maxrss would include the parent's RSS at fork
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
url, n, keep, out = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1", sys.argv[4]
concurrency = int(sys.argv[5])
req = lv.ChatRequest(model="m", messages=[{"role": "user", "content": "hi"}])
start = time.perf_counter()
result = lv.sample_many_sync(req, n, endpoint=lv.Endpoint(base_url=url, api_key=None),
                             concurrency=concurrency, output=out, keep_samples=keep)
seconds = time.perf_counter() - start
assert result.report.n_samples == n, result.report.n_samples
print(json.dumps({"seconds": seconds, "peak_rss_mb": peak_rss_mb(),
                  "n_ok": result.report.n_ok}))
"""


def run_points(outputs: str, server_main: Callable[[socket.socket], None], sizes: list[int],
               concurrency: int) -> list[dict[str, Any]]:
    """Every (keep_samples, n) point against a fresh server answering ``outputs``."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    server = multiprocessing.Process(target=server_main, args=(sock,), daemon=True)
    server.start()
    records = []
    try:
        for keep in (False, True):
            for n in sizes:
                with tempfile.TemporaryDirectory() as scratch:
                    out = subprocess.run(  # noqa: S603 - this interpreter, our own script
                        [sys.executable, "-c", CLIENT, url, str(n), "1" if keep else "0",
                         str(Path(scratch) / "run.jsonl"), str(concurrency)],
                        capture_output=True, text=True, check=True)
                record = {"outputs": outputs, "n": n, "keep_samples": keep,
                          **json.loads(out.stdout)}
                records.append(record)
                print(f"  {outputs:<9} n={n:>9,} keep_samples={keep!s:<5} "
                      f"{record['peak_rss_mb']:8.1f} MB {record['seconds']:7.1f} s", flush=True)
    finally:
        server.terminate()
        server.join()
    return records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--distinct-sizes", default="100000",
                        help="sizes for distinct answers (kept and not); empty for none")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    distinct_sizes = [int(s) for s in args.distinct_sizes.split(",") if s]
    records = []
    for outputs, server_main, points in (("identical", serve, sizes),
                                         ("distinct", serve_distinct, distinct_sizes)):
        if points:
            records += run_points(outputs, server_main, points, args.concurrency)
    base = {(o, keep): next(r for r in records
                            if r["outputs"] == o and r["keep_samples"] == keep)["peak_rss_mb"]
            for o in {r["outputs"] for r in records} for keep in (False, True)}
    rows = []
    for r in records:
        lean = next((x for x in records if x["outputs"] == r["outputs"] and x["n"] == r["n"]
                     and not x["keep_samples"]), None)
        per_sample = ("" if not r["keep_samples"] or lean is None else
                      (r["peak_rss_mb"] - lean["peak_rss_mb"]) * 1024 * 1024 / r["n"] / 1000)
        r["kb_per_kept_sample"] = per_sample or None
        rows.append([r["outputs"], f"{r['n']:,}", r["keep_samples"], r["peak_rss_mb"],
                     r["peak_rss_mb"] / base[(r["outputs"], r["keep_samples"])], per_sample,
                     r["seconds"], r["n"] / r["seconds"]])
    print(table(["outputs", "n", "keep_samples", "peak RSS MB", "RSS vs smallest n",
                 "KB per kept sample", "seconds", "samples/s"], rows))
    logprobs = logprob_cost()
    print(f"with logprobs ({logprobs['tokens']} tokens, {logprobs['alternatives']} "
          f"alternatives each, {logprobs['samples']} samples): "
          f"{logprobs['kept_bytes_per_token']:.0f} bytes per token kept "
          f"(a list of Sample: {logprobs['list_bytes_per_token']:.0f})")
    path = write_json("memory_scale", {"concurrency": args.concurrency, "points": records,
                                       "logprobs": logprobs,
                                       "load_average": os.getloadavg()}, args.json_out)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
