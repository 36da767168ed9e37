"""The statistics: reference values, SciPy as the referee, and the pieces of the verdict."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
from scipy import stats as sp

import llmvariance as lv
from llmvariance._analysis import estimates as est
from llmvariance._analysis import stats

REFERENCE_COUNTS = [18, 3, 2, 1, 1, 1, 1, 1, 1, 1]


def texts(counts: list[int]) -> list[str]:
    return [f"output {k}" for k, c in enumerate(counts) for _ in range(c)]


def test_reference_counts_give_the_design_documents_estimates() -> None:
    report = lv.analyze(texts(REFERENCE_COUNTS))
    assert report.disagreement_rate == pytest.approx(0.639, abs=5e-4)
    assert report.coverage == pytest.approx(0.767, abs=5e-4)  # 1 - 7/30
    assert report.chao1 == pytest.approx(20.5)  # 10 + 7*6 / (2*(1+1))
    assert est.disagreement_rate(REFERENCE_COUNTS) == pytest.approx(
        1 - report.agreement_rate)  # type: ignore[operator]
    ci = report.disagreement_rate_ci
    assert ci is not None and ci.method == "wald-logit" and ci.low < 0.639 < ci.high


def test_nothing_deviating_of_30_is_bounded_at_9_5_percent_never_zero() -> None:
    report = lv.analyze(["same"] * 30)
    assert report.deviation is not None
    assert report.deviation.interval.high == pytest.approx(1 - 0.05 ** (1 / 30))
    assert round(report.deviation.interval.high, 4) == 0.0950
    assert report.deviation.describe() == (
        "0 of 30 differ from the most common output: at most 9.5% (95%)")
    ci = report.disagreement_rate_ci
    # all agree: D = 0, but D can be up to q(2 - q) with q the 9.5 % bound
    assert ci is not None and ci.method == "bracket"
    assert (ci.low, ci.high) == (0.0, pytest.approx(0.0950 * (2 - 0.0950), abs=1e-4))
    assert "deviation         0 of 30 differ" in report.to_text()


def test_wilson_interval_matches_the_textbook_value() -> None:
    low, high, method = est.rate_interval(5, 30)
    assert method == "wilson"
    assert (low, high) == (pytest.approx(0.0734, abs=1e-4), pytest.approx(0.3356, abs=1e-4))
    result = sp.binomtest(5, 30).proportion_ci(method="wilson")
    assert (low, high) == (pytest.approx(result.low), pytest.approx(result.high))


def test_boschloo_on_0_of_30_vs_5_of_30_with_the_arms_as_columns() -> None:
    exact = stats.exact_test(0, 30, 5, 30)
    assert exact.method == "boschloo"
    assert exact.pvalue == pytest.approx(0.0137, abs=1e-4)
    assert exact.statistic == pytest.approx(0.0261, abs=1e-4)  # Fisher's one-sided p
    # The design document's 0.011 is the same table transposed (arms as rows), which
    # treats "deviating" and "same" as the fixed-size samples; the arms are what is fixed.
    transposed = sp.boschloo_exact([[5, 25], [0, 30]], alternative="greater").pvalue
    assert transposed == pytest.approx(0.011, abs=1e-3)


def test_large_tables_fall_back_to_fisher() -> None:
    exact = stats.exact_test(0, 500, 20, 500)
    assert exact.method == "fisher"
    assert exact.pvalue == pytest.approx(
        sp.fisher_exact([[20, 0], [480, 500]], alternative="greater").pvalue)


def test_compare_done_means_figures() -> None:
    c = lv.compare(["x"] * 30, ["x"] * 25 + ["y"] * 5)
    assert c.exact.method == "boschloo" and c.pvalue == pytest.approx(0.0137, abs=1e-4)
    assert c.exact.statistic == pytest.approx(0.0261, abs=1e-4)  # Fisher 0.026
    assert round(c.a.deviation.interval.high, 4) == 0.0950
    assert c.reference == "x" and c.reference_source == "the most common output of a"
    assert c.significant
    assert c.verdict.startswith("b varies more than a: b: D = 0.287")
    assert c.statistic == pytest.approx(2 * 25 * 5 / (30 * 29))  # ΔD, D_a = 0
    # ΔD's permutation p: the 5 y's all land in b, C(30,5)/C(60,5) = 0.026
    assert c.delta_d_test.pvalue == pytest.approx(0.0261, abs=0.005)
    ci = c.confidence_interval()
    assert ci.low > 0 and ci.resamples == 9999 and ci.seed == 0
    assert c.minimum_detectable_rate == pytest.approx(0.214, abs=0.002)
    assert "exact       b deviates more often than a: p = 0.0137 (boschloo" in c.to_text()


def test_compare_is_seeded_and_takes_samples_collectors_and_run_files(tmp_path) -> None:
    a = [lv.Sample(index=i, text="x") for i in range(20)]
    b = [lv.Sample(index=i, text="x" if i % 4 else "y") for i in range(20)]
    first, again = lv.compare(a, b, seed=3), lv.compare(a, b, seed=3)
    assert first == again
    collector = lv.VarianceCollector()
    collector.update(b)
    assert lv.compare(a, collector, seed=3).pvalue == first.pvalue
    with pytest.raises(lv.ConfigError, match=r"^b: needs at least two successful outputs"):
        lv.compare(a, ["x"])
    with pytest.raises(lv.ConfigError, match=r"^a: a report keeps only its 5 most common"):
        lv.compare(lv.analyze([str(i) for i in range(8)]), b)


def test_permutation_test_of_delta_d_agrees_with_scipys_on_one_block() -> None:
    rng = np.random.default_rng(7)
    a = rng.choice(4, size=40, p=[0.85, 0.05, 0.05, 0.05])
    b = rng.choice(6, size=40, p=[0.6, 0.1, 0.1, 0.1, 0.05, 0.05])

    def d(x: np.ndarray, axis: int) -> np.ndarray:
        counts = np.stack([(x == k).sum(axis=axis) for k in range(6)], axis=-1)
        n = x.shape[axis]
        return 1 - (counts * (counts - 1)).sum(axis=-1) / (n * (n - 1))

    reference = sp.permutation_test((b, a), lambda x, y, axis: d(x, axis) - d(y, axis),
                                    vectorized=True, n_resamples=9999, alternative="greater",
                                    rng=1)
    ours, _ = stats.permutation_tests({None: Counter(a.tolist())}, {None: Counter(b.tolist())},
                                      resamples=9999, seed=1)
    assert ours.statistic == pytest.approx(reference.statistic)
    assert ours.pvalue == pytest.approx(reference.pvalue, abs=0.01)  # Monte Carlo error
    assert ours.method == "permutation" and ours.resamples == 9999


def test_homogeneity_agrees_with_scipys_permutation_chi_square() -> None:
    a = Counter({"x": 24, "y": 4, "z": 2})
    b = Counter({"x": 15, "y": 9, "z": 6})
    table = np.array([[a[k] for k in "xyz"], [b[k] for k in "xyz"]])
    reference = sp.chi2_contingency(table, correction=False,
                                    method=sp.PermutationMethod(n_resamples=9999, rng=2))
    _, ours = stats.permutation_tests({None: a}, {None: b}, resamples=9999, seed=2)
    assert ours.statistic == pytest.approx(reference.statistic)
    assert ours.pvalue == pytest.approx(reference.pvalue, abs=0.01)


def test_permutations_stay_inside_blocks() -> None:
    # block 0: a and b both give x; block 1: both give y. Within blocks the arms agree, so
    # the stratified test sees nothing; pooling the blocks would not change that here, but
    # shifting b towards the block that varies must not move the null either.
    a = {0: Counter({"x": 10}), 1: Counter({"y": 5, "z": 5})}
    b = {0: Counter({"x": 10}), 1: Counter({"y": 5, "z": 5})}
    delta, homogeneity = stats.permutation_tests(a, b, resamples=999, seed=0)
    assert delta.statistic == 0.0 and delta.pvalue > 0.3
    assert homogeneity.pvalue == 1.0
    assert delta.method == "permutation within 2 blocks"
    # a block's arm sizes are kept: b's one block-1 sample can only swap inside block 1
    pooled = stats._Pooled({0: Counter({"x": 3}), 1: Counter({"y": 1})},
                           {0: Counter({"x": 1}), 1: Counter({"z": 3})})
    draws = pooled.shuffled(200, np.random.default_rng(0))
    block_of = np.array([0, 0, 0, 1, 0, 1, 1, 1])
    assert (draws[:, block_of == 0].sum(axis=1) == 1).all()
    assert (draws[:, block_of == 1].sum(axis=1) == 3).all()


def test_bootstrap_interval_of_delta_d_covers_the_estimate() -> None:
    a = {None: Counter({"x": 28, "y": 2})}
    b = {None: Counter({"x": 18, "y": 6, "z": 6})}
    low, high = stats.bootstrap_delta_d(a, b, resamples=2000, seed=0)
    delta = est.disagreement_rate([18, 6, 6]) - est.disagreement_rate([28, 2])  # type: ignore[operator]
    assert low < delta < high
    assert (low, high) == stats.bootstrap_delta_d(a, b, resamples=2000, seed=0)


def test_fisher_power_is_exact_by_enumeration() -> None:
    # a never deviates, so Fisher rejects exactly when b has >= k deviations for the k with
    # C(30,k)/C(60,k) <= 0.05, i.e. k >= 5: P(Binomial(30, 0.2) >= 5)
    k = next(k for k in range(31) if math.comb(30, k) / math.comb(60, k) <= 0.05)
    assert k == 5
    assert stats.fisher_power(30, 30, 0.0, 0.2) == pytest.approx(sp.binom.sf(k - 1, 30, 0.2))


def test_samples_needed_gives_the_power_it_promises() -> None:
    n = lv.samples_needed(0.0, 0.1)
    assert n == 66  # the README's figure
    assert stats.fisher_power(n, n, 0.0, 0.1) >= 0.8
    assert stats.fisher_power(n - 1, n - 1, 0.0, 0.1) < 0.8
    assert 40 < n < 100  # 66: the arcsine formula's 15 is far off near 0
    assert lv.samples_needed(0.1, 0.4) < lv.samples_needed(0.1, 0.2)
    with pytest.raises(lv.ConfigError, match=r"^p_b: must be larger than p_a"):
        lv.samples_needed(0.2, 0.1)
    with pytest.raises(lv.ConfigError, match=r"^p_a: must be a rate"):
        lv.samples_needed(-0.1, 0.1)


def test_holm_matches_the_textbook_step_down() -> None:
    assert stats.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert stats.holm([0.5, 0.001]) == pytest.approx([0.5, 0.002])
    assert stats.holm([]) == []


def test_benjamini_hochberg_sign_test_and_cmh() -> None:
    assert stats.benjamini_hochberg([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.04, 0.04])
    positive, negative, p = stats.sign_test([0.1, 0.2, 0.0, -0.1, 0.3, 0.4])
    assert (positive, negative) == (4, 1) and p == pytest.approx(6 / 32)
    z, p = stats.cmh_test([(0, 30, 5, 30), (1, 30, 6, 30), (0, 10, 0, 10)])
    assert z > 2 and p < 0.01
    assert stats.cmh_test([(0, 10, 0, 10)]) == (0.0, 1.0)
