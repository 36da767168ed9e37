"""``compare_suites``: is one suite run more variable than another, prompt by prompt?

Two runs of the same prompts (alone vs under load, two models, two days) are compared per
prompt and over the suite:

- per prompt: ΔD = D_b - D_a and the exact one-sided test (Boschloo; Fisher's for large
  tables) of b deviating from a's most common output more often than a; the p-values
  are adjusted by Benjamini-Hochberg across prompts (false discovery rate), and the
  prompts below ``alpha`` after it are named;
- over the suite, stratified by prompt (no prompt's size or variability swamps another's):
  the sign test on the per-prompt ΔD (one-sided: b more variable), and the
  Cochran-Mantel-Haenszel test on the per-prompt deviating/same tables;
- TARr@N of each run with its Wilson interval over prompts.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict

from .._errors import ConfigError
from .._sample import Sample
from . import estimates as est
from . import stats
from .compare import arm_cells, counts_of, p_text, run_files
from .display import Displayed, fmt
from .report import ConfidenceInterval, Row
from .stats import HypothesisTestResult
from .suitereport import tar_interval

__all__ = ["PromptComparison", "SuiteComparison", "compare_suites"]

_FROZEN = ConfigDict(frozen=True, extra="forbid")
_exact = functools.lru_cache(maxsize=1 << 16)(stats.exact_test)
"""Prompts with the same N share their tables: at N = 10 there are at most 121, so a suite
of 100,000 prompts runs Boschloo's test (milliseconds each) a hundred times, not 100,000."""


class PromptComparison(Row):
    """One prompt of a suite comparison (a ``Row``: 100,000 prompts share one fields set)."""

    model_config = _FROZEN

    id: str
    n_a: int
    n_b: int
    d_a: float | None
    d_b: float | None
    delta_d: float | None
    """D_b - D_a; None when an arm has fewer than two outputs."""
    deviating_a: int
    deviating_b: int
    """Outputs differing from a's most common output, in each run."""
    pvalue: float
    """The exact one-sided test for this prompt."""
    adjusted_pvalue: float
    """Benjamini-Hochberg across the prompts."""
    significant: bool


class SuiteComparison(Displayed, BaseModel):
    """Per prompt and over the suite: is run b more variable than run a?"""

    model_config = _FROZEN

    alpha: float
    n_prompts: int
    """Prompts in both runs with at least one output in each."""
    only_in_a: list[str]
    only_in_b: list[str]
    tar_raw_a: float | None
    tar_raw_a_ci: ConfidenceInterval | None
    tar_raw_b: float | None
    tar_raw_b_ci: ConfidenceInterval | None
    sign_test: HypothesisTestResult
    cmh: HypothesisTestResult
    prompts: list[PromptComparison]
    """Most significant first."""
    verdict: str

    @property
    def significant_prompts(self) -> list[str]:
        """Ids of the prompts whose own comparison holds after Benjamini-Hochberg."""
        return [p.id for p in self.prompts if p.significant]

    def to_text(self) -> str:
        lines = [self.verdict, "",
                 f"TARr        a {_tar(self.tar_raw_a, self.tar_raw_a_ci)}, "
                 f"b {_tar(self.tar_raw_b, self.tar_raw_b_ci)} (all outputs of a prompt agree)",
                 f"sign test   {self.sign_test.method}: {p_text(self.sign_test)}",
                 f"CMH         {self.cmh.method}: z = {self.cmh.statistic:.2f}, "
                 f"{p_text(self.cmh)}"]
        shown = self.prompts[:10]
        if shown:
            lines.append(f"{'prompt':<24} {'D a':>6} {'D b':>6} {'dev a':>6} {'dev b':>6} "
                         "p (BH)")
        for p in shown:
            lines.append(f"{p.id[:24]:<24} {_d(p.d_a):>6} {_d(p.d_b):>6} "
                         f"{f'{p.deviating_a}/{p.n_a}':>6} {f'{p.deviating_b}/{p.n_b}':>6} "
                         f"{p_text(p.adjusted_pvalue)}" + ("  *" if p.significant else ""))
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.to_text()

    def _summary(self) -> str:
        return (f"prompts={self.n_prompts} TARr a={fmt(self.tar_raw_a)} "
                f"b={fmt(self.tar_raw_b)} sign_p={fmt(self.sign_test.pvalue)} "
                f"significant_prompts={len(self.significant_prompts)}")


def _d(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _tar(value: float | None, ci: ConfidenceInterval | None) -> str:
    return "n/a" if value is None else f"{value:.3f}" + ("" if ci is None else f" {ci}")


def _runs(source: Any, field: str) -> dict[str, Any]:
    """prompt id -> that prompt's outputs, from a mapping, a SuiteResult or a suite run file."""
    if isinstance(source, Mapping):
        return dict(source)
    entries = getattr(source, "entries", None)
    if entries is not None:
        return {e.id: (e.samples if e.samples else e.report) for e in entries}
    items: Iterable[Sample]
    if (files := run_files(source)) is not None:  # a path, or a list of shards' paths
        items = files
    elif hasattr(source, "iter_samples"):
        items = source.iter_samples()
    else:
        raise ConfigError(field, "must be a mapping of prompt id to outputs, a SuiteResult or "
                          f"a suite run file; got {type(source).__name__}")
    grouped: dict[str, list[Sample]] = {}
    for sample in items:
        grouped.setdefault(sample.request_id or "", []).append(sample)
    return grouped


def compare_suites(a: Any, b: Any, *, alpha: float = 0.05) -> SuiteComparison:
    """Compare two runs of a suite: ``a`` and ``b`` are mappings of prompt id to outputs
    (texts, Samples, collectors, complete reports), ``SuiteResult``s or suite run files
    (a path, or a list of paths: a study's shards, merged as ``lv.read_runs`` merges them)."""
    if not 0.0 < alpha < 1.0:
        raise ConfigError("alpha", f"must be between 0 and 1, got {alpha!r}")
    runs_a, runs_b = _runs(a, "a"), _runs(b, "b")
    common = [k for k in runs_a if k in runs_b]
    rows: list[dict[str, Any]] = []
    tables: list[tuple[int, int, int, int]] = []
    agree_a = agree_b = 0
    for prompt in common:
        counts_a = counts_of(arm_cells(runs_a[prompt], f"a[{prompt}]")[0])
        counts_b = counts_of(arm_cells(runs_b[prompt], f"b[{prompt}]")[0])
        n_a, n_b = counts_a.total(), counts_b.total()
        if not n_a or not n_b:
            continue
        agree_a += len(counts_a) == 1
        agree_b += len(counts_b) == 1
        reference = min(counts_a.items(), key=lambda kv: (-kv[1], kv[0]))[0]
        dev_a, dev_b = n_a - counts_a[reference], n_b - counts_b.get(reference, 0)
        d_a = est.disagreement_rate(list(counts_a.values()))
        d_b = est.disagreement_rate(list(counts_b.values()))
        exact = _exact(dev_a, n_a, dev_b, n_b)
        tables.append((dev_a, n_a, dev_b, n_b))
        rows.append({"id": prompt, "n_a": n_a, "n_b": n_b, "d_a": d_a, "d_b": d_b,
                     "delta_d": None if d_a is None or d_b is None else d_b - d_a,
                     "deviating_a": dev_a, "deviating_b": dev_b, "pvalue": exact.pvalue})
    adjusted = stats.benjamini_hochberg([r["pvalue"] for r in rows])
    prompts = sorted((PromptComparison(**r, adjusted_pvalue=q, significant=q < alpha)
                      for r, q in zip(rows, adjusted, strict=True)),
                     key=lambda p: (p.adjusted_pvalue, p.id))
    deltas = [p.delta_d for p in prompts if p.delta_d is not None]
    positive, negative, p_sign = stats.sign_test(deltas)
    sign = HypothesisTestResult(
        name="b more variable than a, prompt by prompt", statistic=float(positive),
        pvalue=p_sign, alternative="greater",
        method=f"sign test on ΔD: {positive} prompts up, {negative} down, "
               f"{len(deltas) - positive - negative} tied")
    z, p_cmh = stats.cmh_test(tables)
    cmh = HypothesisTestResult(name="b deviates more often than a, stratified by prompt",
                               statistic=z, pvalue=p_cmh, alternative="greater",
                               method="Cochran-Mantel-Haenszel")
    n = len(prompts)
    verdict = _verdict(alpha, n, sign, cmh, [p.id for p in prompts if p.significant])
    return SuiteComparison(
        alpha=alpha, n_prompts=n, only_in_a=[k for k in runs_a if k not in runs_b],
        only_in_b=[k for k in runs_b if k not in runs_a],
        tar_raw_a=agree_a / n if n else None, tar_raw_a_ci=tar_interval(agree_a, n),
        tar_raw_b=agree_b / n if n else None, tar_raw_b_ci=tar_interval(agree_b, n),
        sign_test=sign, cmh=cmh, prompts=prompts, verdict=verdict)


def _verdict(alpha: float, n: int, sign: HypothesisTestResult, cmh: HypothesisTestResult,
             significant: list[str]) -> str:
    named = (f"; prompts significant on their own after Benjamini-Hochberg: "
             f"{', '.join(significant[:10])}" + (" ..." if len(significant) > 10 else "")
             if significant else "; no prompt is significant on its own after "
                                 "Benjamini-Hochberg")
    # the decision is the CMH test (pre-specified); the sign test is shown beside it
    if cmh.pvalue < alpha:
        return (f"b is more variable than a over the {n} prompts: Cochran-Mantel-Haenszel "
                f"{p_text(cmh)} (sign test on ΔD {p_text(sign)}){named}")
    return (f"no difference detected over the {n} prompts at alpha = {alpha:g}: "
            f"Cochran-Mantel-Haenszel {p_text(cmh)} (sign test on ΔD {p_text(sign)}){named}")

