"""The tests behind the verdict hold their level and have the power they should, on
synthetic arms with known truth (benchmarks/verdict_calibration.py, scaled down)."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import verdict_calibration as vc

ALPHA = vc.ALPHA
REPS = 400
RESAMPLES = 999  # a Monte Carlo permutation p-value is a valid test at any resample count


def within_level(rate: float) -> bool:
    return rate <= ALPHA + 2 * math.sqrt(ALPHA * (1 - ALPHA) / REPS)


@pytest.mark.parametrize("scenario", ["null 10%", "null two variants"])
def test_no_test_rejects_more_often_than_alpha_under_the_null(scenario: str) -> None:
    result = vc.simulate(scenario, 30, REPS, RESAMPLES)
    assert all(within_level(rate) for rate in result["rejection_rate"].values()), result


@pytest.mark.parametrize(("scenario", "low"), [("0 -> 20%", 0.6), ("10 -> 40%", 0.75),
                                               ("two variants 0 -> 20%", 0.6)])
def test_power_against_known_effects_matches_the_exact_computation(scenario: str,
                                                                   low: float) -> None:
    result = vc.simulate(scenario, 30, REPS, RESAMPLES)
    rates, se = result["rejection_rate"], result["standard_error"]
    # the simulated Fisher rate is the exactly enumerated power, up to Monte Carlo error
    assert abs(rates["fisher"] - result["fisher_exact_power"]) <= 3 * se["fisher"] + 1e-9
    # Boschloo's test is uniformly more powerful than Fisher's, and decides the verdict
    assert rates["boschloo"] >= rates["fisher"]
    assert rates["boschloo"] >= low


def test_d_intervals_cover_the_true_d() -> None:
    for scenario in ("null 10%", "10 -> 40%", "two variants 0 -> 20%"):
        result = vc.simulate(scenario, 30, 200, 99)
        assert result["d_interval_coverage"] >= 0.93, (scenario, result)
