"""Metric scale: ``analyze`` on large runs vs a naive per-sample implementation.

Cases: 100k samples of ~1.4 kB drawn from 50 distinct outputs (the common case: few
distinct outputs, many samples), and 10k all-distinct samples of ~1.4 kB. Every sample
is its own string object, as after JSON parsing, so hashing is paid for. Times are
medians of ``--runs`` runs; peak memory is traced (tracemalloc) in a separate run and
excludes the input itself. The naive implementation computes the same core metrics the
obvious way: tokenize every sample, then loop over samples per metric.

    python benchmarks/metrics_scale.py [--runs 3]
"""

from __future__ import annotations

import argparse
import math
import random
import time
import tracemalloc
from collections import Counter
from collections.abc import Callable
from typing import Any

import llmvariance as lv
from llmvariance._analysis.metrics import word_tokens

from _common import median, table, write_json

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


def few_distinct(n: int, distinct: int, rng: random.Random) -> list[str]:
    """``distinct`` outputs sharing a prefix, diverging at different points; Zipf counts."""
    base = text_of(rng, 1400)
    outputs = []
    for _ in range(distinct):
        cut = rng.randrange(200, 1300)
        outputs.append((base[:cut] + " " + text_of(rng, 1400 - cut))[:1400])
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
    mode_text = max(counts, key=lambda t: (counts[t], t))
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


def timed(fn: Callable[[list[str]], dict[str, Any]], texts: list[str], runs: int
          ) -> tuple[float, float, dict[str, Any]]:
    seconds = []
    result: dict[str, Any] = {}
    for _ in range(runs):
        fresh = fresh_copies(texts)  # a string caches its hash: every run pays it anew
        start = time.perf_counter()
        result = fn(fresh)
        seconds.append(time.perf_counter() - start)
    fresh = fresh_copies(texts)
    tracemalloc.start()
    fn(fresh)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return median(seconds), peak / 2**20, result


def agree(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return (a["unique"] == b["unique"] and a["prefix"] == b["prefix"]
            and math.isclose(a["entropy"], b["entropy"], abs_tol=1e-9)
            and math.isclose(a["agreement"], b["agreement"], abs_tol=1e-9)
            and math.isclose(a["divergence_mean"], b["divergence_mean"], abs_tol=1e-9)
            and all(math.isclose(x, y, abs_tol=1e-9)
                    for x, y in zip(a["per_position"], b["per_position"], strict=True))
            and all(math.isclose(x, y, abs_tol=1e-9)
                    for x, y in zip(a["length"], b["length"], strict=True)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    rng = random.Random(2025)
    cases = {
        "100k samples, 50 distinct": few_distinct(100_000, 50, rng),
        "10k samples, all distinct": all_distinct(10_000, rng),
    }
    rows, records = [], []
    for name, texts in cases.items():
        mean_bytes = sum(len(t) for t in texts) / len(texts)
        lib_s, lib_mb, lib_result = timed(library, texts, args.runs)
        naive_s, naive_mb, naive_result = timed(naive, texts, args.runs)
        same = agree(lib_result, naive_result)
        rows.append([name, f"{mean_bytes / 1000:.2f} kB", lib_s, naive_s, naive_s / lib_s,
                     lib_mb, naive_mb, "yes" if same else "NO"])
        records.append({"case": name, "samples": len(texts), "mean_bytes": mean_bytes,
                        "analyze_s": lib_s, "naive_s": naive_s, "speedup": naive_s / lib_s,
                        "analyze_peak_mib": lib_mb, "naive_peak_mib": naive_mb,
                        "results_agree": same})
    print(f"medians of {args.runs} runs; peak = traced allocations beyond the input")
    print(table(["case", "sample size", "analyze s", "naive s", "speedup",
                 "analyze MiB", "naive MiB", "same results"], rows))
    print(f"wrote {write_json('metrics_scale', {'runs': args.runs, 'cases': records})}")


if __name__ == "__main__":
    main()
