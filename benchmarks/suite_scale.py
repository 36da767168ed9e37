"""A 100,000-prompt suite: time, peak memory and run-file header size, before and after.

Writes a suite file of ``--prompts`` chat requests, then in a fresh client process per
run reads it with ``read_suite`` and sends every request ``--n`` times with
``sample_suite(keep_samples=False, output=..., answer=r"\\d+")`` on the mock transport
(no network: what is measured is the library). Each run reports seconds (reading the
suite, sampling it), peak RSS (VmHWM) and the run file's header line. The same runs are
made with the library as it was at ``--baseline`` (a git revision, its ``src/`` taken
with ``git archive``), alternating, and the table gives medians and after/before ratios.

A second table: the cost of an ``answer=`` regex per output, Python's ``re`` against the
``regex`` module with the per-output time limit llmvariance uses (``REGEX_TIMEOUT_S``).

    python benchmarks/suite_scale.py [--prompts 100000] [--n 2] [--runs 3]
                                     [--baseline d98f4ed] [--json-out PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import timeit
from pathlib import Path
from typing import Any

import orjson
import regex

from _common import baseline_src, median, table, write_json

ROOT = Path(__file__).resolve().parents[1]

CLIENT = r"""
import json, os, sys, time
import orjson
import llmvariance as lv

def peak_rss_mb():  # VmHWM: ru_maxrss would include the parent's RSS at fork
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024

def echo(request):
    body = orjson.loads(request.body or b"{}")
    text = body["messages"][-1]["content"]
    return lv.HTTPResponse(200, orjson.dumps({"model": body["model"], "choices": [
        {"message": {"content": text}, "finish_reason": "stop"}]}))

suite_file, n, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
start = time.perf_counter()
suite = lv.read_suite(suite_file)
read = time.perf_counter()
result = lv.sample_suite_sync(suite, n, endpoint=lv.Endpoint(base_url="http://127.0.0.1:9/v1",
                              api_key=None), transport=lv.MockTransport(echo), concurrency=64,
                              keep_samples=False, output=out, answer=r"\d+")
done = time.perf_counter()
with open(out, "rb") as handle:
    header = len(handle.readline())
print(json.dumps({"read_s": read - start, "sample_s": done - read, "peak_rss_mb": peak_rss_mb(),
                  "header_bytes": header, "file_bytes": os.path.getsize(out),
                  "tar_raw": result.report.tar_raw, "prompts": result.report.n_prompts}))
"""


def write_suite(path: Path, prompts: int) -> None:
    with path.open("wb") as handle:
        for i in range(prompts):
            handle.write(orjson.dumps({
                "custom_id": f"p{i:06d}", "method": "POST", "url": "/v1/chat/completions",
                "body": {"model": "m", "max_tokens": 8,
                         "messages": [{"role": "user", "content": f"prompt {i}"}]}}) + b"\n")


def one_run(src: Path, suite_file: Path, n: int, scratch: Path) -> dict[str, Any]:
    out = scratch / "run.jsonl"
    out.unlink(missing_ok=True)
    env = {**os.environ, "PYTHONPATH": str(src)}
    done = subprocess.run(  # noqa: S603 - this interpreter, our own script
        [sys.executable, "-c", CLIENT, str(suite_file), str(n), str(out)],
        capture_output=True, text=True, env=env, check=True, timeout=3600)
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def extraction_costs(repeats: int = 7) -> list[dict[str, Any]]:
    """Microseconds per output of one regex search, re vs regex with a time limit."""
    from llmvariance._analysis.answers import REGEX_TIMEOUT_S

    texts = [f"Let me think. The answer is {i * 7}, since {i} sevens make {i * 7}."
             for i in range(2000)]
    rows = []
    for pattern in (r"\d+", r"answer is (-?\d+)", r"-?\d+(?:\.\d+)?|\w+"):
        plain, limited = re.compile(pattern), regex.compile(pattern)

        def with_re(p: re.Pattern[str] = plain) -> None:
            for text in texts:
                p.search(text)

        def with_regex(p: regex.Pattern[str] = limited) -> None:
            for text in texts:
                p.search(text, timeout=REGEX_TIMEOUT_S)

        per = {name: median(timeit.repeat(f, number=5, repeat=repeats)) / 5 / len(texts) * 1e6
               for name, f in (("re", with_re), ("regex", with_regex))}
        rows.append({"pattern": pattern, "re_us": per["re"], "regex_timeout_us": per["regex"]})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prompts", type=int, default=100_000)
    parser.add_argument("--n", type=int, default=2)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--baseline", default="d98f4ed",
                        help="git revision to compare with (default: the commit before the "
                             "issue-21 fixes)")
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        suite_file = scratch / "suite.jsonl"
        write_suite(suite_file, args.prompts)
        versions = {"after": ROOT / "src"}
        old = baseline_src(args.baseline, scratch)
        if old is not None:
            versions = {"before": old, **versions}
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in versions}
        for run in range(args.runs):
            for name, src in versions.items():  # alternating: both see the same machine
                runs[name].append(one_run(src, suite_file, args.n, scratch))
                last = runs[name][-1]
                print(f"  run {run + 1} {name:6} {last['sample_s']:7.1f} s "
                      f"{last['peak_rss_mb']:7.0f} MB header {last['header_bytes']:,} B",
                      flush=True)
    keys = ("read_s", "sample_s", "peak_rss_mb", "header_bytes", "file_bytes")
    medians = {name: {k: median([r[k] for r in rs]) for k in keys} for name, rs in runs.items()}
    rows = [[name, *(medians[name][k] for k in keys)] for name in medians]
    if "before" in medians:
        rows.append(["after/before", *(medians["after"][k] / medians["before"][k]
                                       for k in keys)])
    load = os.getloadavg()
    print(f"\n{args.prompts:,} prompts x {args.n} on the mock transport, keep_samples=False "
          f"(medians of {args.runs} runs; load average {load[0]:.2f} {load[1]:.2f} "
          f"{load[2]:.2f} on {os.cpu_count()} cores)")
    print(table(["version", "read_suite s", "sample_suite s", "peak RSS MB",
                 "header bytes", "file bytes"], rows))
    costs = extraction_costs()
    print("\nanswer regex per output (medians), microseconds")
    print(table(["pattern", "re", "regex with timeout"],
                [[c["pattern"], c["re_us"], c["regex_timeout_us"]] for c in costs]))
    path = write_json("suite_scale", {"prompts": args.prompts, "n": args.n, "runs": runs,
                                      "medians": medians, "baseline": args.baseline,
                                      "load_average": load,
                                      "extraction_us": costs}, args.json_out)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
