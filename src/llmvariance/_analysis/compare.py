"""``compare``: are two sets of outputs differently variable? ``Comparison`` says how sure.

Each arm gets the per-condition estimates (D with its interval, coverage, Chao1) and its
deviation from one *reference* output (given; else the most common output of ``a``, and
the comparison says so). Then, all one-sided in the direction "b varies more":

- the exact test (Boschloo; Fisher's when the table is large) on deviating/same by arm:
  **the decision**, ``Comparison.pvalue``;
- ΔD = D_b - D_a with a bootstrap interval and a permutation test (labels permuted within
  blocks when the samples carry ``Sample.block``);
- a permutation test of homogeneity ("the distributions differ"), and whether the modes
  differ;
- the smallest deviation rate of b the exact test detects with 80 % power at these n, and
  (when b deviated more but not significantly) the n per arm that would detect what was
  seen.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict

from .._errors import ConfigError
from .._sample import Sample
from . import estimates as est
from . import stats
from .collect import VarianceCollector
from .display import Displayed, fmt
from .report import ConfidenceInterval, LogprobAgreement, Proportion, VarianceReport
from .stats import HypothesisTestResult

__all__ = ["ArmSummary", "Comparison", "arm_cells", "compare", "compare_cells", "p_text",
           "run_files"]

_FROZEN = ConfigDict(frozen=True, extra="forbid")
_PREVIEW = 60


class ArmSummary(BaseModel):
    """One arm of a comparison: its estimates and its deviation from the reference."""

    model_config = _FROZEN

    name: str
    n: int
    """Ok samples."""
    distinct: int
    disagreement_rate: float | None
    disagreement_rate_ci: ConfidenceInterval | None
    coverage: float | None
    chao1: float | None
    deviation: Proportion
    """How many differ from the comparison's reference."""
    mode: str
    mode_count: int
    blocks: int
    """Blocks the samples came in (0 when they carry none)."""

    def d_text(self) -> str:
        """``D = 0.64 [0.43, 0.8]``."""
        if self.disagreement_rate is None:
            return "D n/a"
        ci = self.disagreement_rate_ci
        return f"D = {self.disagreement_rate:.3g}" + ("" if ci is None else f" {ci}")


class Comparison(Displayed, BaseModel):
    """Is arm b more variable than arm a? In the style of ``scipy.stats`` results:
    ``statistic`` is ΔD = D_b - D_a, ``pvalue`` the exact test's, and
    ``confidence_interval()`` ΔD's bootstrap interval. ``verdict`` says it in words."""

    model_config = _FROZEN

    a: ArmSummary
    b: ArmSummary
    reference: str
    """The output deviations are counted from."""
    reference_source: str
    """Where it came from, e.g. ``the most common output of a``."""
    alpha: float
    statistic: float
    """ΔD = D_b - D_a."""
    delta_d_ci: ConfidenceInterval
    delta_d_test: HypothesisTestResult
    exact: HypothesisTestResult
    homogeneity: HypothesisTestResult
    modes_differ: bool
    pvalue: float
    """The decision: the exact one-sided test's p-value."""
    significant: bool
    """``pvalue < alpha``."""
    minimum_detectable_rate: float | None
    """The smallest deviation rate of b the exact test detects with 80 % power at these n,
    given a's observed rate; None if none would."""
    samples_needed: int | None
    """When b deviated more but not significantly: samples per arm that would detect the
    observed rates with 80 % power."""
    logprobs: LogprobAgreement | None = None
    """Over both arms' samples, when they carried logprobs."""
    verdict: str

    def confidence_interval(self) -> ConfidenceInterval:
        """ΔD's bootstrap interval (``scipy.stats`` results have this method too)."""
        return self.delta_d_ci

    def to_text(self) -> str:
        """The verdict, then each test on a line of its own."""
        a, b = self.a, self.b
        lines = [self.verdict, "",
                 f"reference   {self.reference_source}: {_preview(self.reference)}"]
        for arm in (a, b):
            lines.append(f"{arm.name:<11} n={arm.n}, {arm.distinct} distinct, {arm.d_text()},"
                         f" coverage {_num(arm.coverage)}, Chao1 {_num(arm.chao1, '.1f')}; "
                         f"{arm.deviation.describe()}")
        lines += [
            f"exact       {b.name} deviates more often than {a.name}: {p_text(self.exact)} "
            f"({self.exact.method}, one-sided)",
            f"ΔD          {self.statistic:+.3f} {self.delta_d_ci} ({self.delta_d_ci.level:.0%} "
            f"bootstrap); {p_text(self.delta_d_test)} ({self.delta_d_test.method}, "
            f"{self.delta_d_test.resamples} resamples, one-sided)",
            f"homogeneity the distributions differ: {p_text(self.homogeneity)}"
            + ("; the most common outputs differ" if self.modes_differ else ""),
        ]
        if self.minimum_detectable_rate is not None:
            lines.append(f"power       at these n the exact test detects a deviation rate of "
                         f"{self.minimum_detectable_rate:.1%} in {b.name} with 80 % power")
        if self.logprobs is not None:
            lines.append(f"logprobs    {self.logprobs.describe()}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.to_text()

    def _summary(self) -> str:
        return (f"{self.a.name} n={self.a.n} vs {self.b.name} n={self.b.n} "
                f"delta_D={self.statistic:+.3f} p={fmt(self.pvalue)} "
                f"{'significant' if self.significant else 'not significant'}")


def _num(value: float | None, spec: str = ".3f") -> str:
    return "n/a" if value is None else format(value, spec)


def _preview(text: str) -> str:
    return repr(text[:_PREVIEW]) + ("…" if len(text) > _PREVIEW else "")


def p_text(result: HypothesisTestResult | float) -> str:
    """``p = 0.014`` or ``p < 0.001``."""
    p = result if isinstance(result, float) else result.pvalue
    return "p < 0.001" if p < 0.001 else f"p = {p:.3g}"


# -- what an arm can be -----------------------------------------------------------------

ArmInput = Any
"""Strings, ``Sample``s, a ``VarianceCollector``, a ``SampleSet``, a run file (path or
``lv.read_run(...)``), a list of run files as paths (a study's shards, merged as
``lv.read_runs`` merges them), a mapping of output to count (a ``Counter``), or a
``VarianceReport`` whose top outputs are all its
outputs."""


def run_files(source: object) -> Iterable[Sample] | None:
    """The samples of ``source`` when it is run files given as paths — one path, or a list
    of ``os.PathLike`` (a study's shards: merged, refused as ``merge_runs`` refuses them);
    None otherwise. A list of ``str`` stays a list of outputs."""
    if isinstance(source, str | os.PathLike):
        from .._runs.runfile import read_run  # files are read only when one is given

        return read_run(source).iter_samples()
    if (isinstance(source, list | tuple) and source
            and all(isinstance(p, os.PathLike) for p in source)):
        from .._runs.merge import read_runs

        return read_runs(list(source)).iter_samples()
    return None


def arm_cells(source: ArmInput, field: str = "a"
              ) -> tuple[dict[int | None, Counter[str]], list[Sample]]:
    """(outputs counted per block, the ok samples that carry logprobs) of one arm."""
    cells: dict[int | None, Counter[str]] = {}
    with_logprobs: list[Sample] = []
    items: Iterable[Any]
    if isinstance(source, VarianceCollector):
        cells[None] = Counter(source.output_counts())
        return cells, with_logprobs
    if isinstance(source, Mapping):  # output -> count (e.g. a Counter)
        cells[None] = Counter({output: int(count) for output, count in source.items()})
        return cells, with_logprobs
    if isinstance(source, VarianceReport):
        if sum(o.count for o in source.top_outputs) != source.n_ok:
            raise ConfigError(field, f"a report keeps only its {len(source.top_outputs)} most "
                              f"common outputs, not all {source.unique_count}: pass the "
                              "samples, a collector or the run file")
        cells[None] = Counter({o.text: o.count for o in source.top_outputs})
        return cells, with_logprobs
    if (files := run_files(source)) is not None:
        items = files
    elif hasattr(source, "iter_samples"):
        items = source.iter_samples()
    elif hasattr(source, "samples") and not isinstance(source, Sequence):
        items = source.samples
    elif isinstance(source, Iterable):
        items = source
    else:
        raise ConfigError(field, "must be texts, Samples, a VarianceCollector, a SampleSet, "
                          f"a run file or a VarianceReport; got {type(source).__name__}")
    for item in items:
        if isinstance(item, str):
            cells.setdefault(None, Counter())[item] += 1
        elif isinstance(item, Sample):
            if item.error is not None:
                continue
            cells.setdefault(item.block, Counter())[item.text or ""] += 1
            if item.token_logprobs is not None:
                with_logprobs.append(item)
        else:
            raise ConfigError(field, f"holds a {type(item).__name__}; expected str or Sample")
    return cells, with_logprobs


def _summary(name: str, cells: Mapping[int | None, Mapping[str, int]], reference: str,
             reference_source: str, level: float) -> ArmSummary:
    total: Counter[str] = Counter()
    for cell in cells.values():
        total.update(cell)
    counts = list(total.values())
    n = sum(counts)
    mode, mode_count = min(total.items(), key=lambda kv: (-kv[1], kv[0]))
    differ = n - total.get(reference, 0)
    low, high, method = est.rate_interval(differ, n, level)
    d_ci = est.disagreement_interval(counts, level)
    return ArmSummary(
        name=name, n=n, distinct=len(total), disagreement_rate=est.disagreement_rate(counts),
        disagreement_rate_ci=None if d_ci is None else ConfidenceInterval(
            low=d_ci[0], high=d_ci[1], level=level, method=d_ci[2]),
        coverage=est.good_coverage(counts), chao1=est.chao1(counts),
        deviation=Proportion(count=differ, n=n, rate=differ / n, reference=reference_source,
                             interval=ConfidenceInterval(low=low, high=high, level=level,
                                                         method=method)),
        mode=mode, mode_count=mode_count,
        blocks=sum(1 for block in cells if block is not None))


def compare(a: ArmInput, b: ArmInput, *, reference: str | None = None, alpha: float = 0.05,
            seed: int = 0, resamples: int = 9999, names: tuple[str, str] = ("a", "b"),
            level: float = 0.95) -> Comparison:
    """Are the outputs of ``b`` more variable than those of ``a``?

    ``a`` and ``b``: texts, ``Sample``s (failures are left out), ``VarianceCollector``s, a
    ``SampleSet``, run files (a path, ``lv.read_run(path)``, or a list of paths: a
    study's shards, merged as ``lv.read_runs`` merges them) or complete
    ``VarianceReport``s. ``reference`` is the output deviations are counted from (default:
    the most common output of ``a``, which the result says). Permutation and bootstrap use
    ``resamples`` draws seeded by ``seed``; ``level`` is the intervals' coverage.

    >>> c = lv.compare(["x"] * 30, ["x"] * 25 + ["y"] * 5)
    >>> c.significant, round(c.pvalue, 4), round(c.a.deviation.interval.high, 4)
    (True, 0.0137, 0.095)
    """
    if not 0.0 < alpha < 1.0:
        raise ConfigError("alpha", f"must be between 0 and 1, got {alpha!r}")
    ConfigError.check_int("resamples", resamples)
    ConfigError.check_int("seed", seed, 0)
    cells_a, lp_a = arm_cells(a, "a")
    cells_b, lp_b = arm_cells(b, "b")
    return compare_cells(cells_a, cells_b, reference=reference, alpha=alpha, seed=seed,
                         resamples=resamples, names=names, level=level,
                         logprob_samples=lp_a + lp_b)


def compare_cells(a: Mapping[int | None, Mapping[str, int]],
                  b: Mapping[int | None, Mapping[str, int]], *, reference: str | None = None,
                  reference_source: str | None = None, alpha: float = 0.05, seed: int = 0,
                  resamples: int = 9999, names: tuple[str, str] = ("a", "b"),
                  level: float = 0.95, logprob_samples: Sequence[Sample] = ()) -> Comparison:
    """``compare`` on arms already counted per block: the pure function behind it."""
    for field, arm in (("a", a), ("b", b)):
        if sum(sum(c.values()) for c in arm.values()) < 2:
            raise ConfigError(field, "needs at least two successful outputs to compare")
    name_a, name_b = names
    if reference is None:
        pooled_a: Counter[str] = Counter()
        for counts in a.values():
            pooled_a.update(counts)
        reference = min(pooled_a.items(), key=lambda kv: (-kv[1], kv[0]))[0]
        reference_source = reference_source or f"the most common output of {name_a}"
    source = reference_source or "the given reference"
    arm_a = _summary(name_a, a, reference, source, level)
    arm_b = _summary(name_b, b, reference, source, level)
    exact = stats.exact_test(arm_a.deviation.count, arm_a.n, arm_b.deviation.count, arm_b.n)
    cells_a: stats.Cells = a
    cells_b: stats.Cells = b
    delta_test, homogeneity = stats.permutation_tests(cells_a, cells_b, resamples=resamples,
                                                      seed=seed)
    low, high = stats.bootstrap_delta_d(cells_a, cells_b, resamples=resamples, seed=seed,
                                        level=level)
    p_a, p_b = arm_a.deviation.rate, arm_b.deviation.rate
    mde = (stats.minimum_detectable_rate(arm_a.n, arm_b.n, p_a, alpha=alpha)
           if p_a < 1.0 else None)
    significant = exact.pvalue < alpha
    needed = None
    if not significant and p_b > p_a:
        try:
            needed = stats.samples_needed(p_a, p_b, alpha=alpha)
        except ConfigError:  # too small a difference to ever detect
            needed = None
    logprobs = None
    if logprob_samples:
        collector = VarianceCollector(grouped=False)
        collector.update(logprob_samples)
        logprobs = collector.report().logprobs
    comparison = Comparison(
        a=arm_a, b=arm_b, reference=reference, reference_source=source, alpha=alpha,
        statistic=delta_test.statistic,
        delta_d_ci=ConfidenceInterval(low=low, high=high, level=level, resamples=resamples,
                                      seed=seed),
        delta_d_test=delta_test, exact=exact, homogeneity=homogeneity,
        modes_differ=arm_a.mode != arm_b.mode, pvalue=exact.pvalue, significant=significant,
        minimum_detectable_rate=mde, samples_needed=needed, logprobs=logprobs, verdict="")
    return comparison.model_copy(update={"verdict": _verdict(comparison)})


def _verdict(c: Comparison) -> str:
    a, b = c.a, c.b
    evidence = (f"{b.name}: {b.d_text()} vs {a.name}: {a.d_text()}; deviating from "
                f"{c.reference_source}: {b.deviation.count}/{b.n} vs "
                f"{a.deviation.count}/{a.n}, {p_text(c.exact)} ({c.exact.method})")
    if c.significant and c.statistic > 0:
        return f"{b.name} varies more than {a.name}: {evidence}"
    if c.significant:
        return (f"{b.name} gives other outputs than {a.name}"
                + (" (the most common outputs differ)" if c.modes_differ else "")
                + f", though it does not vary more: {evidence}")
    head = (f"no difference detected at alpha = {c.alpha:g}: {evidence}")
    if c.minimum_detectable_rate is not None:
        head += (f". At these n a deviation rate of {c.minimum_detectable_rate:.1%} in "
                 f"{b.name} would be detected with 80 % power")
    if c.samples_needed is not None:
        head += (f"; to detect {b.deviation.rate:.1%} vs {a.deviation.rate:.1%} would take "
                 f"about {c.samples_needed} samples per arm")
    return head


def counts_of(arm: Mapping[int | None, Mapping[str, int]]) -> Counter[str]:
    """An arm's outputs counted over all its blocks."""
    total: Counter[str] = Counter()
    for counts in arm.values():
        total.update(counts)
    return total
