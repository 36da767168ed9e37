"""Are the verdict's statistics right? Synthetic arms from known distributions, no network.

For each scenario two arms of n outputs are drawn, many seeded times, and every test of
``lv.compare`` is run on them as ``batch_effect`` runs it: deviations are counted from a
known reference (the calibration output, ``x``), the permutation tests take 9,999
resamples. Printed per scenario and n: how often each test rejects at alpha = 0.05 (the
false-positive rate under a null, the power under an effect), with its standard error;
the exact power of Fisher's test by enumeration beside the simulated one; and how often
the 95 % intervals of D cover the true D.

Scenarios (deviations are fresh, distinct outputs unless "two variants"):
  null 0 % / null 10 % / null two variants: both arms from the same distribution;
  0 -> 10 %, 0 -> 20 %, 10 -> 40 %: b deviates more;
  two variants: a never deviates, b gives one of two recurring alternatives, 10 % each.

    .venv/bin/python benchmarks/verdict_calibration.py [--reps 1000] [--resamples 9999]

Writes benchmarks/results/verdict_calibration.json.
"""

from __future__ import annotations

import argparse
import math
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

from llmvariance._analysis import estimates as est
from llmvariance._analysis import stats

from _common import table, write_json

ALPHA = 0.05
TESTS = ("boschloo", "fisher", "delta_d", "homogeneity")


@dataclass(frozen=True)
class Arm:
    """x with probability 1 - sum(variants) - fresh; each named variant; else a fresh output."""

    variants: tuple[float, ...] = ()
    fresh: float = 0.0

    @property
    def deviation(self) -> float:
        return self.fresh + sum(self.variants)

    def true_d(self) -> float:
        # fresh outputs never repeat: they add nothing to sum p^2
        p = [1 - self.deviation, *self.variants]
        return 1 - sum(q * q for q in p)

    def draw(self, n: int, rng: np.random.Generator) -> tuple[int, ...]:
        """(count of x, count of each variant, fresh outputs)."""
        probs = [1 - self.deviation, *self.variants, self.fresh]
        return tuple(int(c) for c in rng.multinomial(n, probs))


SCENARIOS: dict[str, tuple[Arm, Arm]] = {
    "null 0%": (Arm(), Arm()),
    "null 10%": (Arm(fresh=0.1), Arm(fresh=0.1)),
    "null two variants": (Arm(variants=(0.1, 0.1)), Arm(variants=(0.1, 0.1))),
    "0 -> 10%": (Arm(), Arm(fresh=0.1)),
    "0 -> 20%": (Arm(), Arm(fresh=0.2)),
    "10 -> 40%": (Arm(fresh=0.1), Arm(fresh=0.4)),
    "two variants 0 -> 20%": (Arm(), Arm(variants=(0.1, 0.1))),
}


def cells(draw: tuple[int, ...], arm: str) -> dict[int | None, Counter[str]]:
    """One arm's counts: x, the variants, and fresh outputs each its own."""
    *named, fresh = draw
    counts: Counter[str] = Counter()
    for k, c in enumerate(named):
        if c:
            counts["x" if k == 0 else f"v{k}"] = c
    for i in range(fresh):
        counts[f"{arm}-fresh-{i}"] = 1
    return {None: counts}


def simulate(name: str, n: int, reps: int, resamples: int, seed: int = 0) -> dict[str, Any]:
    """Rejection rates of every test, exact Fisher power, D-interval coverage."""
    arm_a, arm_b = SCENARIOS[name]
    rng = np.random.default_rng([seed, n, *name.encode()])
    rejected = dict.fromkeys(TESTS, 0)
    covered = 0
    cache: dict[tuple[tuple[int, ...], tuple[int, ...]], dict[str, bool]] = {}
    for _ in range(reps):
        draw_a, draw_b = arm_a.draw(n, rng), arm_b.draw(n, rng)
        key = (draw_a, draw_b)
        outcome = cache.get(key)
        if outcome is None:
            outcome = cache[key] = _tests(draw_a, draw_b, n, resamples)
        for test in TESTS:
            rejected[test] += outcome[test]
        for draw, arm in ((draw_a, arm_a), (draw_b, arm_b)):
            counts = [c for c in draw[:-1] if c] + [1] * draw[-1]
            interval = est.disagreement_interval(counts)
            assert interval is not None
            covered += interval[0] - 1e-12 <= arm.true_d() <= interval[1] + 1e-12
    rates = {test: rejected[test] / reps for test in TESTS}
    return {
        "scenario": name, "n": n, "reps": reps, "resamples": resamples,
        "true_deviation": [arm_a.deviation, arm_b.deviation],
        "true_d": [arm_a.true_d(), arm_b.true_d()],
        "rejection_rate": rates,
        "standard_error": {t: math.sqrt(max(r * (1 - r), 1e-12) / reps)
                           for t, r in rates.items()},
        "fisher_exact_power": stats.fisher_power(n, n, arm_a.deviation, arm_b.deviation,
                                                 ALPHA),
        "d_interval_coverage": covered / (2 * reps),
        "distinct_tables": len(cache),
    }


def _tests(draw_a: tuple[int, ...], draw_b: tuple[int, ...], n: int, resamples: int
           ) -> dict[str, bool]:
    dev_a, dev_b = n - draw_a[0], n - draw_b[0]
    exact = stats.exact_test(dev_a, n, dev_b, n)
    cells_a, cells_b = cells(draw_a, "a"), cells(draw_b, "b")
    delta, homogeneity = stats.permutation_tests(cells_a, cells_b, resamples=resamples,
                                                 seed=0)
    return {"boschloo": exact.pvalue < ALPHA, "fisher": exact.statistic < ALPHA,
            "delta_d": delta.pvalue < ALPHA, "homogeneity": homogeneity.pvalue < ALPHA}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=1000)
    parser.add_argument("--resamples", type=int, default=9999)
    parser.add_argument("--n", default="30,100")
    args = parser.parse_args()
    sizes = [int(v) for v in args.n.split(",")]
    start = time.monotonic()
    results = [simulate(name, n, args.reps, args.resamples)
               for name in SCENARIOS for n in sizes]
    rows = []
    for r in results:
        rates, se = r["rejection_rate"], r["standard_error"]
        rows.append([r["scenario"], r["n"],
                     *(f"{rates[t]:.3f} ±{se[t]:.3f}" for t in TESTS),
                     f"{r['fisher_exact_power']:.3f}", f"{r['d_interval_coverage']:.3f}"])
    print(f"{args.reps} seeded repetitions per row, alpha = {ALPHA}, permutation tests with "
          f"{args.resamples} resamples; rates ± one standard error")
    print(table(["scenario", "n", "exact (Boschloo)", "Fisher", "ΔD permutation",
                 "homogeneity", "Fisher exact power", "D 95% CI coverage"], rows))
    print(f"null rows: every test must stay at or below {ALPHA} + 2 SE; Boschloo decides.")
    path = write_json("verdict_calibration", {
        "alpha": ALPHA, "reps": args.reps, "resamples": args.resamples,
        "seconds": time.monotonic() - start, "results": results})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
