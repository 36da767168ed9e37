"""A 40-prompt x 50-sample suite (2,000 requests) three ways: one process, four processes
(``--shard k/4``, then ``llmvariance merge``) and four Ray tasks (``run_on_ray``), against the
simulator; wall time and the peak of the summed memory (RSS) of every process each way
starts — for Ray its cluster (GCS, raylet, agents, workers) and the driver.

Every way keeps 16 requests in flight in all (one process at 16, each of four shards at 4),
so the simulator sees the same load. Each way runs in a fresh process tree that carries a
marker in its environment; a sampler
sums the RSS of the processes carrying it every 20 ms. The simulator runs outside the
trees and is not counted. Ray is timed twice: the whole (start a local cluster, run,
stop it) and the run alone on a cluster already up. Also: what the ``ray`` extra costs
(its installed size, ``import ray``) and what ``import llmvariance`` costs with and
without it imported (it is not).

    python benchmarks/shard_ray.py [--runs 3] [--model moe] [--json-out PATH]
"""
# ruff: noqa: S603 - every command is this interpreter or llmvariance's own, with our arguments

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from _common import median, table, write_json

PROMPTS, N, K = 40, 50, 4

_SUITE = """
import llmvariance as lv
suite = [(f"q{i}", lv.ChatRequest(model=MODEL, max_tokens=32, messages=[
    {"role": "user", "content": f"Question {i}: tell me about number {i * 7}."}]))
    for i in range(40)]
"""

ONE = _SUITE + """
import sys
lv.sample_suite_sync(suite, 50, endpoint=lv.Endpoint(base_url=sys.argv[1]), concurrency=16,
                     output=sys.argv[2])
"""

RAY = _SUITE + """
import functools, json, sys, time
start = time.perf_counter()
import ray
# four logical CPUs on the 2 cores, so the four tasks (one CPU each) run at once, as the
# four processes do: 16 requests in flight either way
ray.init(num_cpus=4, include_dashboard=False, configure_logging=False, log_to_driver=False,
         _temp_dir=sys.argv[3])
up = time.perf_counter()
study = functools.partial(lv.sample_suite, suite, 50, endpoint=lv.Endpoint(base_url=sys.argv[1]),
                          concurrency=4)
run = lv.run_on_ray(study, shards=4, resources={"num_cpus": 1}, output=sys.argv[2])
done = time.perf_counter()
ray.shutdown()
print(json.dumps({"init_s": up - start, "run_s": done - up,
                  "complete": run.merged.complete}))
"""


class Sampler:
    """The peak over time of the summed RSS of the processes whose environment holds a
    marker."""

    def __init__(self, marker: str) -> None:
        self.marker = marker.encode()
        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            total = 0
            for entry in Path("/proc").iterdir():
                if not entry.name.isdigit():
                    continue
                try:
                    if self.marker not in (entry / "environ").read_bytes():
                        continue
                    for line in (entry / "status").read_text().splitlines():
                        if line.startswith("VmRSS:"):
                            total += int(line.split()[1])
                except OSError:
                    continue
            self.peak_mb = max(self.peak_mb, total / 1024)


def _env(marker: str) -> dict[str, str]:
    return {**os.environ, "LV_BENCH": marker, "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": secrets.token_hex(32), "RAY_USAGE_STATS_ENABLED": "0",
            "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


def one_process(url: str, model: str, work: Path) -> dict[str, Any]:
    marker = secrets.token_hex(8)
    start = time.perf_counter()
    with Sampler(marker) as sampler:
        subprocess.run([sys.executable, "-c", ONE.replace("MODEL", repr(model)), url,
                        str(work / f"one-{marker}.jsonl")], env=_env(marker), check=True)
    return {"seconds": time.perf_counter() - start, "peak_mb": sampler.peak_mb}


def four_processes(url: str, model: str, work: Path) -> dict[str, Any]:
    marker = secrets.token_hex(8)
    suite_file = work / f"suite-{model}.jsonl"
    if not suite_file.exists():
        write = ("\nimport json\nopen(PATH, 'w').write(''.join(json.dumps(r.model_dump("
                 "mode='json', exclude_none=True)) + '\\n' for _, r in suite))")
        subprocess.run([sys.executable, "-c", _SUITE.replace("MODEL", repr(model))
                        + write.replace("PATH", repr(str(suite_file)))], check=True)
    cli = [sys.executable, "-m", "llmvariance"]
    start = time.perf_counter()
    with Sampler(marker) as sampler:
        shards = [subprocess.Popen([*cli, "suite", str(suite_file), "--base-url", url,
                                    "-n", str(N), "--concurrency", "4", "--shard",
                                    f"{k}/{K}", "--out", str(work / f"s{k}-{marker}.jsonl")],
                                   env=_env(marker), stdout=subprocess.DEVNULL)
                  for k in range(K)]
        for proc in shards:
            assert proc.wait() == 0
        subprocess.run([*cli, "merge", *(str(work / f"s{k}-{marker}.jsonl") for k in range(K)),
                        "-o", str(work / f"m-{marker}.jsonl")], env=_env(marker), check=True,
                       stdout=subprocess.DEVNULL)
    return {"seconds": time.perf_counter() - start, "peak_mb": sampler.peak_mb}


def ray_tasks(url: str, model: str, work: Path) -> dict[str, Any]:
    marker = secrets.token_hex(8)
    scratch = tempfile.mkdtemp(prefix="lvb")
    start = time.perf_counter()
    with Sampler(marker) as sampler:
        out = subprocess.run([sys.executable, "-c", RAY.replace("MODEL", repr(model)), url,
                              str(work / f"r-{marker}.jsonl"), scratch], env=_env(marker),
                             check=True, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    shutil.rmtree(scratch, ignore_errors=True)
    inner = json.loads(out.stdout.strip().splitlines()[-1])
    assert inner["complete"]
    return {"seconds": seconds, "peak_mb": sampler.peak_mb, "run_s": inner["run_s"],
            "init_s": inner["init_s"]}


def dependency_cost() -> dict[str, Any]:
    import importlib.util

    spec = importlib.util.find_spec("ray")
    size = 0
    if spec is not None and spec.submodule_search_locations:
        root = Path(next(iter(spec.submodule_search_locations)))
        size = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())

    def timed(code: str) -> float:
        times = []
        for _ in range(5):
            out = subprocess.run([sys.executable, "-c", "import time; s = time.perf_counter(); "
                                  f"{code}; print(time.perf_counter() - s)"],
                                 capture_output=True, text=True, check=True)
            times.append(float(out.stdout.strip().splitlines()[-1]))
        return median(times)

    imported = subprocess.run([sys.executable, "-c", "import sys, llmvariance; "
                               "print('ray' in sys.modules)"], capture_output=True, text=True,
                              check=True).stdout.strip()
    return {"ray_installed_mb": size / 2**20, "import_ray_s": timed("import ray"),
            "import_llmvariance_s": timed("import llmvariance"),
            "llmvariance_imports_ray": imported == "True"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--model", default="moe")
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args()
    server = subprocess.Popen([sys.executable, "-m", "llmvariance", "serve", "--port", "0"],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert server.stdout is not None
    url = server.stdout.readline().strip()
    results: dict[str, list[dict[str, Any]]] = {"one process": [], "four processes": [],
                                                "four Ray tasks": []}
    try:
        with tempfile.TemporaryDirectory() as directory:
            work = Path(directory)
            for _ in range(args.runs):  # interleaved, so load from other work hits all alike
                results["one process"].append(one_process(url, args.model, work))
                results["four processes"].append(four_processes(url, args.model, work))
                results["four Ray tasks"].append(ray_tasks(url, args.model, work))
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=10)
    base = median([r["seconds"] for r in results["one process"]])
    rows = []
    summary: dict[str, Any] = {}
    for name, runs in results.items():
        seconds = median([r["seconds"] for r in runs])
        peak = median([r["peak_mb"] for r in runs])
        run_only = median([r["run_s"] for r in runs]) if "run_s" in runs[0] else None
        rows.append([name, seconds, seconds / base, peak,
                     "-" if run_only is None else run_only])
        summary[name] = {"seconds": seconds, "ratio_vs_one": seconds / base, "peak_mb": peak,
                         "run_only_s": run_only, "runs": runs}
    print(f"{PROMPTS} prompts x {N} samples = {PROMPTS * N} requests, model {args.model}, "
          f"medians of {args.runs} runs")
    print(table(["way", "wall s", "x one process", "peak RSS MB (all processes)",
                 "Ray run alone s"], rows))
    cost = dependency_cost()
    print(f"ray installed: {cost['ray_installed_mb']:.0f} MB; import ray "
          f"{cost['import_ray_s']:.2f} s; import llmvariance {cost['import_llmvariance_s']:.2f}"
          f" s, imports ray: {cost['llmvariance_imports_ray']}")
    write_json("shard_ray", {"prompts": PROMPTS, "n": N, "shards": K, "model": args.model,
                             "runs": args.runs, "results": summary, "dependency": cost},
               args.json_out)


if __name__ == "__main__":
    main()
