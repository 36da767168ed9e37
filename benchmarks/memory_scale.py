"""Peak memory and wall time as N grows, with and without keeping the samples.

A loopback server in its own process answers every request with one fixed chat body; each
(N, keep_samples) point runs in a fresh client process, which reports its own peak RSS
(``VmHWM``; ``ru_maxrss`` would include the parent's RSS at fork) and wall time, writing
a run file as a real study would. The baseline for the ratio column is the same client at
the smallest N.

    python benchmarks/memory_scale.py [--sizes 10000,100000,1000000] [--concurrency 64]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

from pool_overhead import serve

from _common import table, write_json

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    server = multiprocessing.Process(target=serve, args=(sock,), daemon=True)
    server.start()
    records = []
    try:
        for keep in (False, True):
            for n in sizes:
                with tempfile.TemporaryDirectory() as scratch:
                    out = subprocess.run(  # noqa: S603 - this interpreter, our own script
                        [sys.executable, "-c", CLIENT, url, str(n), "1" if keep else "0",
                         str(Path(scratch) / "run.jsonl"), str(args.concurrency)],
                        capture_output=True, text=True, check=True)
                record = {"n": n, "keep_samples": keep, **json.loads(out.stdout)}
                records.append(record)
                print(f"  n={n:>9,} keep_samples={keep!s:<5} {record['peak_rss_mb']:8.1f} MB "
                      f"{record['seconds']:7.1f} s", flush=True)
    finally:
        server.terminate()
        server.join()
    base = {keep: next(r for r in records if r["keep_samples"] == keep)["peak_rss_mb"]
            for keep in (False, True)}
    rows = [[f"{r['n']:,}", r["keep_samples"], r["peak_rss_mb"],
             r["peak_rss_mb"] / base[r["keep_samples"]], r["seconds"],
             r["n"] / r["seconds"]] for r in records]
    print(table(["n", "keep_samples", "peak RSS MB", "RSS vs smallest n", "seconds",
                 "samples/s"], rows))
    path = write_json("memory_scale", {"concurrency": args.concurrency, "points": records},
                      args.json_out)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
