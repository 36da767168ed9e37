"""How many requests does a verdict cost, with and without early stopping, and does
stopping early keep the false-positive rate at alpha?

Synthetic part (no network): the designed experiment of ``batch_effect`` — a calibration
request, then a control (``sequential``) and two conditions (``burst``, ``loaded``), n
each, in 5 blocks — many seeded times per scenario. Each repetition draws every block's
outputs (the reference, or a deviation, at the scenario's rate per condition), builds the
samples, and after every block computes the p-values exactly as ``batch_effect`` does
(``interim_pvalues``: the exact test against the control, the calibration output as the
reference). From the same looks:

  fixed    Holm at the last look only (the full design, ``early_stop=False``);
  OBF      ``lv.SequentialTest``: O'Brien-Fleming-type spending, Holm with boundaries,
           stop at the first look that rejects (``early_stop=True``);
  Pocock   the same with Pocock-type spending (spends more early, less at the end);
  naive    stop at the first look whose Holm-adjusted p < alpha, no boundary (invalid:
           the contrast).

Printed per scenario and n: how often each rejects (the false-positive rate under a null,
the power under an effect) with a 95 % Wilson interval, and the mean requests sent as a
ratio of the full design's.

Simulator part: ``batch_effect(..., early_stop=True/False)`` against the built-in server,
``moe`` (batch-dependent) and ``dense`` (deterministic), n = 30, default conditions
sequential, burst, loaded; ``--runs`` runs each, medians of requests the server saw
(background load included), requests in the design, and wall time.

    .venv/bin/python benchmarks/verdict_cost.py [--reps 1000] [--runs 3]

Writes benchmarks/results/verdict_cost.json.
"""

from __future__ import annotations

import argparse
import math
import os
import time
from dataclasses import dataclass
from typing import Any

import anyio
import numpy as np

import llmvariance as lv
from llmvariance._analysis.sequential import boundary, exact_pvalue
from llmvariance._analysis.stats import holm
from llmvariance._experiment import interim_pvalues
from llmvariance.testing import SimServer

from _common import median, table, write_json

ALPHA = 0.05
BLOCKS = 5
CONDITIONS = ("sequential", "burst", "loaded")
STRATEGIES = ("fixed", "OBF", "Pocock", "naive")
PROMPT = ("Write a unique, surprising, extremely randomized story with highly unpredictable "
          "changes of events.")


@dataclass(frozen=True)
class Scenario:
    name: str
    rates: tuple[float, float, float]
    """Deviation rate of sequential, burst, loaded."""

    @property
    def null(self) -> bool:
        return len(set(self.rates)) == 1


SCENARIOS = (
    Scenario("null 0%", (0.0, 0.0, 0.0)),
    Scenario("null 10%", (0.1, 0.1, 0.1)),
    Scenario("null 30%", (0.3, 0.3, 0.3)),
    Scenario("0 -> 10%", (0.0, 0.1, 0.1)),
    Scenario("0 -> 20%", (0.0, 0.2, 0.2)),
    Scenario("0 -> 50%", (0.0, 0.5, 0.5)),
    Scenario("10 -> 40%", (0.1, 0.4, 0.4)),
    Scenario("moe-like 0 -> 80%", (0.0, 0.8, 0.9)),
)


def wilson(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def simulate(scenario: Scenario, n: int, reps: int, seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    sizes = [n // BLOCKS + (1 if b < n % BLOCKS else 0) for b in range(BLOCKS)]
    fractions = [sum(sizes[: b + 1]) / n for b in range(BLOCKS)]
    planned = 1 + len(CONDITIONS) * n
    calibration = lv.Sample(index=0, text="ref")
    rejected = dict.fromkeys(STRATEGIES, 0)
    requests: dict[str, list[int]] = {s: [] for s in STRATEGIES}
    stop_look = {s: [0] * BLOCKS for s in ("OBF", "Pocock", "naive")}
    for _ in range(reps):
        samples: dict[str, list[lv.Sample]] = {c: [] for c in CONDITIONS}
        looks: list[dict[str, float]] = []
        for block, size in enumerate(sizes):
            for condition, rate in zip(CONDITIONS, scenario.rates, strict=True):
                deviate = rng.random(size) < rate
                samples[condition] += [
                    lv.Sample.model_construct(index=0, text="dev" if d else "ref", block=block,
                                              error=None) for d in deviate]
            looks.append(interim_pvalues(samples, calibration))
        sent = [1 + len(CONDITIONS) * sum(sizes[: k + 1]) for k in range(BLOCKS)]
        final = looks[-1]
        rejected["fixed"] += min(holm(list(final.values())), default=1.0) < ALPHA
        requests["fixed"].append(planned)
        for name, spending in (("OBF", "obrien-fleming"), ("Pocock", "pocock")):
            test = lv.SequentialTest(fractions, hypotheses=["burst", "loaded"], alpha=ALPHA,
                                     spending=spending)  # type: ignore[arg-type]
            for k, pvalues in enumerate(looks):
                if test.look(pvalues, requests=sent[k]).stop:
                    break
            decided = test.decided
            rejected[name] += decided
            requests[name].append(sent[len(test.looks) - 1])
            stop_look[name][len(test.looks) - 1] += 1
        first = next((k for k, pvalues in enumerate(looks)
                      if min(holm(list(pvalues.values())), default=1.0) < ALPHA), None)
        rejected["naive"] += first is not None
        k = BLOCKS - 1 if first is None else first
        requests["naive"].append(sent[k])
        stop_look["naive"][k] += 1
    out: dict[str, Any] = {"scenario": scenario.name, "rates": scenario.rates, "n": n,
                           "reps": reps, "planned_requests": planned, "null": scenario.null}
    for s in STRATEGIES:
        low, high = wilson(rejected[s], reps)
        out[s] = {"reject_rate": rejected[s] / reps, "wilson95": [low, high],
                  "se": math.sqrt(max(rejected[s] / reps * (1 - rejected[s] / reps), 1e-12)
                                  / reps),
                  "mean_requests": float(np.mean(requests[s])),
                  "median_requests": float(np.median(requests[s])),
                  "requests_ratio": float(np.mean(requests[s])) / planned}
        if s in stop_look:
            out[s]["stopped_at_look"] = stop_look[s]
    return out


def canonical(reps: int, seed: int) -> dict[str, Any]:
    """The same boundaries on the statistic they are derived for (normal partial sums at 5
    equal looks, one hypothesis): there the false-positive rate is alpha to within Monte
    Carlo error, and testing at alpha at every look inflates it most."""
    from statistics import NormalDist

    rng = np.random.default_rng(seed)
    t = np.arange(1, BLOCKS + 1) / BLOCKS
    z = np.cumsum(rng.standard_normal((reps, BLOCKS)) * np.sqrt(np.diff(t, prepend=0.0)),
                  axis=1) / np.sqrt(t)
    looks = list(t)
    cuts = {"fixed": np.r_[np.full(BLOCKS - 1, np.inf), NormalDist().inv_cdf(1 - ALPHA)],
            "OBF": np.asarray(boundary(looks, ALPHA)),
            "Pocock": np.asarray(boundary(looks, ALPHA, "pocock")),
            "naive": np.full(BLOCKS, NormalDist().inv_cdf(1 - ALPHA))}
    out: dict[str, Any] = {"reps": reps}
    for name, c in cuts.items():
        k = int(np.count_nonzero((z >= c).any(axis=1)))
        out[name] = {"reject_rate": k / reps, "wilson95": list(wilson(k, reps))}
    return out


# -- the simulator -------------------------------------------------------------------------

async def sim_runs(runs: int, n: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for run in range(runs):
        for model in ("moe", "dense"):
            for early in (False, True):  # alternate, so load drifts alike on both
                server = SimServer(step_time_s=0.001)
                async with server as url:
                    request = lv.ChatRequest(model=model, max_tokens=48,
                                             messages=[{"role": "user", "content": PROMPT}],
                                             logit_bias={"100257": -100})
                    start = time.perf_counter()
                    result = await lv.batch_effect(request, n,
                                                   endpoint=lv.Endpoint(base_url=url),
                                                   conditions=list(CONDITIONS),
                                                   early_stop=early)
                    wall = time.perf_counter() - start
                sent = (result.calibration is not None) + sum(
                    len(a) for a in result.samples.values())
                rows.append({"run": run, "model": model, "early_stop": early,
                             "verdict": result.verdict_kind, "design_requests": sent,
                             "planned_requests": 1 + len(CONDITIONS) * n,
                             "server_requests": server.stats.requests, "wall_s": wall,
                             "looks": None if result.early_stop is None
                             else len(result.early_stop.looks)})
    return rows


def summarise_sim(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for model in ("moe", "dense"):
        base = [r for r in rows if r["model"] == model and not r["early_stop"]]
        for early in (False, True):
            mine = [r for r in rows if r["model"] == model and r["early_stop"] == early]
            out.append({
                "model": model, "early_stop": early,
                "verdicts": sorted({r["verdict"] for r in mine}),
                "design_requests": median([r["design_requests"] for r in mine]),
                "design_ratio": median([r["design_requests"] for r in mine])
                / median([r["design_requests"] for r in base]),
                "server_requests": median([r["server_requests"] for r in mine]),
                "server_ratio": median([r["server_requests"] for r in mine])
                / median([r["server_requests"] for r in base]),
                "wall_s": median([r["wall_s"] for r in mine]),
                "wall_ratio": median([r["wall_s"] for r in mine])
                / median([r["wall_s"] for r in base]),
                "looks": sorted({r["looks"] for r in mine if r["looks"] is not None}),
            })
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=1000)
    parser.add_argument("--n", default="30,60")
    parser.add_argument("--runs", type=int, default=3, help="simulator runs per cell")
    parser.add_argument("--sim-n", type=int, default=30)
    args = parser.parse_args()
    started = time.perf_counter()
    synthetic = []
    for n in (int(v) for v in args.n.split(",")):
        for i, scenario in enumerate(SCENARIOS):
            synthetic.append(simulate(scenario, n, args.reps, seed=1000 * n + i))
    synthetic_s = time.perf_counter() - started
    rows = []
    for r in synthetic:
        cells: list[Any] = [r["scenario"], r["n"]]
        for s in STRATEGIES:
            low, high = r[s]["wilson95"]
            cells.append(f"{r[s]['reject_rate']:.3f} [{low:.3f}, {high:.3f}]")
        cells += [r[s]["requests_ratio"] for s in ("OBF", "Pocock", "naive")]
        cells.append("yes" if not r["null"] else
                     "yes" if r["OBF"]["reject_rate"] <= ALPHA + 2 * r["OBF"]["se"] else "NO")
        rows.append(cells)
    print(f"synthetic: {args.reps} seeded repetitions per row, alpha = {ALPHA}, "
          f"{BLOCKS} blocks, 3 conditions ({synthetic_s:.0f} s, "
          f"{exact_pvalue.cache_info().currsize} distinct exact tests)")
    print("reject rate [95% Wilson]: the false-positive rate for null rows, power otherwise; "
          "requests as a ratio of the full design's (mean)")
    print(table(["scenario", "n", "fixed", "OBF (early_stop)", "Pocock", "naive (no boundary)",
                 "OBF req", "Pocock req", "naive req", "null: OBF <= a+2SE"], rows))
    normal = canonical(200_000, seed=7)
    print("\nthe canonical normal statistic (200,000 seeded repetitions, 5 looks, one "
          "hypothesis): reject rate under the null [95% Wilson]")
    print(table(["fixed", "OBF", "Pocock", "naive"],
                [[f"{normal[s]['reject_rate']:.4f} [{normal[s]['wilson95'][0]:.4f}, "
                  f"{normal[s]['wilson95'][1]:.4f}]" for s in ("fixed", "OBF", "Pocock",
                                                               "naive")]]))
    sim = asyncio_sim(args.runs, args.sim_n)
    summary = summarise_sim(sim)
    print()
    print(f"simulator: n = {args.sim_n}, conditions {', '.join(CONDITIONS)}, medians of "
          f"{args.runs} runs, load average {os.getloadavg()[0]:.2f}")
    print(table(["model", "early_stop", "verdict", "design requests", "ratio",
                 "server requests (+ background)", "ratio", "wall s", "ratio", "looks"],
                [[s["model"], s["early_stop"], ",".join(s["verdicts"]), s["design_requests"],
                  s["design_ratio"], s["server_requests"], s["server_ratio"], s["wall_s"],
                  s["wall_ratio"], ",".join(map(str, s["looks"]))] for s in summary]))
    path = write_json("verdict_cost", {
        "alpha": ALPHA, "blocks": BLOCKS, "conditions": CONDITIONS, "reps": args.reps,
        "synthetic": synthetic, "synthetic_seconds": synthetic_s, "canonical": normal,
        "simulator": {"n": args.sim_n, "runs": sim, "summary": summary},
        "load_average": os.getloadavg()})
    print(f"\nwrote {path}")


def asyncio_sim(runs: int, n: int) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = anyio.run(sim_runs, runs, n)
    return result


if __name__ == "__main__":
    main()
