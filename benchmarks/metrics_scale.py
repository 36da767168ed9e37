"""Metric scale: ``analyze`` (the whole report, its divergence tree included) on large runs.

Cases: the two targets — 100k all-distinct samples of ~1.4 kB (temperature > 0) and 1M
samples of ~1 kB drawn from 1,000 distinct outputs — each under 1 s; and 100k samples
from 50 distinct outputs and 10k all-distinct ones. Every sample is its own string
object, as after JSON parsing, so hashing is paid for. Times are medians of ``--runs``
runs. Two baselines are measured in the same run on the same inputs: ``Counter`` (the
floor: only counting the distinct outputs, no metric) and a naive implementation that
computes the same core metrics the obvious way (tokenize every sample, loop over samples
per metric; once, and not on the 1M case, where it would take minutes). Its results must
agree with ``analyze``'s. With ``--baseline REV``, ``analyze`` as it was at that git
revision (its ``src/`` from ``git archive``) is timed too, in a fresh process per run on
the same inputs, alternating with the current version's runs (not on the 1M case). Peak
memory is traced (tracemalloc) in a separate run and excludes the input itself. The
machine's load average is printed with the table.

    python benchmarks/metrics_scale.py [--runs 5] [--baseline 4907b14]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pickle
import random
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import llmvariance as lv
from llmvariance._analysis.metrics import word_tokens

from _common import baseline_src, median, table, write_json

WORDS = ("the a river forest quietly storm lantern captain secret ancient whispered found "
         "between golden under tower garden bridge morning clock mirror letter dragon fox "
         "owl suddenly never always frozen burning invisible curious wild gentle").split()


def text_of(rng: random.Random, n_chars: int) -> str:
    words: list[str] = []
    size = 0
    while size < n_chars:
        word = rng.choice(WORDS)
        words.append(word)
        size += len(word) + 1
    return " ".join(words)


def few_distinct(n: int, distinct: int, rng: random.Random, size: int = 1400) -> list[str]:
    """``distinct`` outputs sharing a prefix, diverging at different points; Zipf counts."""
    base = text_of(rng, size)
    outputs: list[str] = []
    while len(outputs) < distinct:
        cut = rng.randrange(size // 7, size * 13 // 14)
        text = (base[:cut] + " " + text_of(rng, size - cut))[:size]
        if text not in outputs:
            outputs.append(text)
    weights = [1 / (k + 1) for k in range(distinct)]
    picks = rng.choices(outputs, weights=weights, k=n)
    return fresh_copies(picks)


def fresh_copies(texts: list[str]) -> list[str]:
    """New string objects with the same contents, as JSON parsing would produce."""
    return [t.encode().decode() for t in texts]


def all_distinct(n: int, rng: random.Random) -> list[str]:
    return [text_of(rng, 1400) for _ in range(n)]


def naive(texts: list[str]) -> dict[str, Any]:
    """The straightforward implementation: all samples kept and tokenized."""
    counts = Counter(texts)
    n = len(texts)
    entropy = -sum(c / n * math.log2(c / n) for c in counts.values())
    agreement = sum(c * (c - 1) for c in counts.values()) / (n * (n - 1))
    tokens = [word_tokens(t) for t in texts]
    mode_text = min(counts, key=lambda t: (-counts[t], t))  # ties: the smallest text
    mode = word_tokens(mode_text)

    def lcp(a: list[str], b: list[str]) -> int:
        i = 0
        while i < min(len(a), len(b)) and a[i] == b[i]:
            i += 1
        return i

    prefix = min(lcp(tokens[0], t) for t in tokens)
    divergence = [lcp(t, mode) for t, text in zip(tokens, texts, strict=True)
                  if text != mode_text]
    longest = max(len(t) for t in tokens)
    per_position = []
    for pos in range(longest):
        at = Counter(t[pos] for t in tokens if len(t) > pos)
        total = sum(at.values())
        per_position.append(-sum(c / total * math.log2(c / total) for c in at.values()))
    lengths = [len(t) for t in tokens]
    mean = sum(lengths) / n
    std = math.sqrt(sum((x - mean) ** 2 for x in lengths) / n)
    return {"unique": len(counts), "entropy": entropy, "agreement": agreement,
            "prefix": prefix, "divergence_mean": sum(divergence) / max(1, len(divergence)),
            "per_position": per_position, "length": (mean, std)}


def library(texts: list[str]) -> dict[str, Any]:
    r = lv.analyze(texts)
    return {"unique": r.unique_count, "entropy": r.entropy_bits,
            "agreement": r.agreement_rate, "prefix": r.common_prefix_tokens,
            "divergence_mean": r.divergence_from_mode_tokens.mean
            if r.divergence_from_mode_tokens else 0.0,
            "per_position": r.per_position_entropy,
            "length": (r.length_mean_tokens, r.length_std_tokens)}


def counted(texts: list[str]) -> dict[str, Any]:
    """The floor: only the distinct outputs and their counts."""
    return {"unique": len(Counter(texts))}


BASELINE_RUN = """
import json, pickle, sys, time
sys.path.insert(0, sys.argv[2])
from metrics_scale import fresh_copies, library
with open(sys.argv[1], "rb") as f:
    fresh = fresh_copies(pickle.load(f))
start, start_cpu = time.perf_counter(), time.process_time()
library(fresh)
print(json.dumps([time.perf_counter() - start, time.process_time() - start_cpu]))
"""


def baseline_run(src: Path, inputs: Path) -> tuple[float, float]:
    """Wall and CPU seconds of one ``library`` call with the library at ``src``."""
    done = subprocess.run(  # noqa: S603 - this interpreter, our own script
        [sys.executable, "-c", BASELINE_RUN, str(inputs), str(Path(__file__).parent)],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(src)},
        check=True, timeout=600)
    wall, cpu = json.loads(done.stdout)
    return float(wall), float(cpu)


def timed(fn: Callable[[list[str]], dict[str, Any]], texts: list[str], runs: int,
          trace: bool = True, between: Callable[[], None] | None = None
          ) -> tuple[float, float, float, dict[str, Any]]:
    """Median wall seconds, median CPU seconds of this process (all its threads: on a
    shared machine the fairer measure), traced peak MiB, and the result; ``between`` is
    called after each run (the baseline's run, alternating)."""
    seconds, cpu = [], []
    result: dict[str, Any] = {}
    for _ in range(runs):
        fresh = fresh_copies(texts)  # a string caches its hash: every run pays it anew
        start, start_cpu = time.perf_counter(), time.process_time()
        result = fn(fresh)
        seconds.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
        del fresh
        if between is not None:
            between()
    peak = math.nan
    if trace:
        fresh = fresh_copies(texts)
        tracemalloc.start()
        fn(fresh)
        peak = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
    return median(seconds), median(cpu), peak, result


def agree(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return (a["unique"] == b["unique"] and a["prefix"] == b["prefix"]
            and math.isclose(a["entropy"], b["entropy"], abs_tol=1e-9)
            and math.isclose(a["agreement"], b["agreement"], abs_tol=1e-9)
            and math.isclose(a["divergence_mean"], b["divergence_mean"], abs_tol=1e-9)
            and all(math.isclose(x, y, abs_tol=1e-9)
                    for x, y in zip(a["per_position"], b["per_position"], strict=True))
            and all(math.isclose(x, y, abs_tol=1e-9)
                    for x, y in zip(a["length"], b["length"], strict=True)))


CASES: list[tuple[str, float | None, bool, Callable[[random.Random], list[str]]]] = [
    # name, target seconds, run the naive baseline, inputs
    ("100k samples, all distinct", 1.0, True, lambda rng: all_distinct(100_000, rng)),
    ("1M samples x 1 kB, 1,000 distinct", 1.0, False,
     lambda rng: few_distinct(1_000_000, 1000, rng, size=1000)),
    ("100k samples, 50 distinct", None, True, lambda rng: few_distinct(100_000, 50, rng)),
    ("10k samples, all distinct", None, True, lambda rng: all_distinct(10_000, rng)),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--baseline", help="git revision to time analyze at, too")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        old = baseline_src(args.baseline, scratch) if args.baseline else None
        rows, records = measure(args.runs, old, scratch)
    load = os.getloadavg()
    print(f"medians of {args.runs} runs (naive: one run); peak = traced allocations beyond "
          f"the input; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on "
          f"{os.cpu_count()} cores; baseline: {args.baseline if old else 'none'}")
    print(table(["case", "sample size", "distinct", "analyze s", "analyze CPU s", "Counter s",
                 "analyze / Counter", "baseline s", "baseline CPU s", "analyze / baseline",
                 "naive s", "analyze MiB", "same results", "target"], rows))
    path = write_json("metrics_scale", {"runs": args.runs, "load_average": load,
                                        "baseline": args.baseline if old else None,
                                        "cases": records})
    print(f"wrote {path}")


def measure(runs: int, old: Path | None, scratch: Path
            ) -> tuple[list[list[Any]], list[dict[str, Any]]]:
    rng = random.Random(2025)
    rows, records = [], []
    for name, target, with_naive, make in CASES:
        texts = make(rng)
        mean_bytes = sum(len(t) for t in texts) / len(texts)
        base: list[tuple[float, float]] = []
        between = None
        if old is not None and with_naive:
            inputs = scratch / "inputs.pickle"
            inputs.write_bytes(pickle.dumps(texts))

            def between(src: Path = old, path: Path = inputs,
                        into: list[tuple[float, float]] = base) -> None:
                into.append(baseline_run(src, path))

        lib_s, lib_cpu, lib_mb, lib_result = timed(library, texts, runs, between=between)
        floor_s, floor_cpu, _, floor_result = timed(counted, texts, runs, trace=False)
        assert floor_result["unique"] == lib_result["unique"]
        base_s = median([b[0] for b in base]) if base else math.nan
        base_cpu = median([b[1] for b in base]) if base else math.nan
        naive_s = math.nan
        same = "(not run)"
        if with_naive:
            naive_s, _, _, naive_result = timed(naive, texts, 1, trace=False)
            same = "yes" if agree(lib_result, naive_result) else "NO"
        met = "" if target is None else ("yes" if lib_s < target else "NO")
        rows.append([name, f"{mean_bytes / 1000:.2f} kB", lib_result["unique"], lib_s,
                     lib_cpu, floor_s, lib_s / floor_s, base_s, base_cpu, lib_s / base_s,
                     naive_s, lib_mb, same, "" if target is None else f"< {target:g} s: {met}"])
        records.append({"case": name, "samples": len(texts), "mean_bytes": mean_bytes,
                        "distinct": lib_result["unique"], "analyze_s": lib_s,
                        "analyze_cpu_s": lib_cpu, "counter_s": floor_s,
                        "counter_cpu_s": floor_cpu, "analyze_vs_counter": lib_s / floor_s,
                        "baseline_s": base_s if base else None,
                        "baseline_cpu_s": base_cpu if base else None,
                        "analyze_vs_baseline": lib_s / base_s if base else None,
                        "naive_s": None if math.isnan(naive_s) else naive_s,
                        "analyze_peak_mib": lib_mb, "results_agree": same,
                        "target_s": target, "target_met": met or None})
        print(f"  {name}: analyze {lib_s:.3f} s ({lib_cpu:.3f} s CPU), Counter {floor_s:.3f} s"
              f" ({floor_cpu:.3f} s CPU)"
              + (f", baseline {base_s:.3f} s ({base_cpu:.3f} s CPU)" if base else "")
              + f"; load {os.getloadavg()[0]:.2f}", flush=True)
    return rows, records


if __name__ == "__main__":
    main()
