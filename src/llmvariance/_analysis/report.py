"""The variance report: what a run's outputs say about (non-)determinism."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict

from .display import Displayed, fmt
from .metrics import pair_prefix_length
from .printable import printable
from .tree.model import DivergenceTree

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["ConfidenceInterval", "DivergenceStats", "FailureMessage", "HistogramBin",
           "LatencyStats", "LogprobAgreement", "OutputCount", "Proportion", "Row",
           "VarianceReport", "split_points"]

_FROZEN = ConfigDict(frozen=True, extra="forbid")
_FIELDS_SETS: dict[frozenset[str], set[str]] = {}


class Row(BaseModel):
    """A frozen model made many times over (a report per prompt of a 100,000-prompt
    suite, a row per prompt): every instance with the same fields set shares one
    ``model_fields_set``. Pydantic gives each instance a set of its own, 2.2 KB for a
    ``VarianceReport`` — a third of it. Frozen, the set is never changed, and
    ``model_copy`` copies it before an update."""

    model_config = _FROZEN

    def model_post_init(self, context: Any, /) -> None:
        given = self.__pydantic_fields_set__
        shared = _FIELDS_SETS.setdefault(frozenset(given), given)
        object.__setattr__(self, "__pydantic_fields_set__", shared)


class LatencyStats(Row):
    """A summary of per-sample durations, in seconds, over the samples that have one.

    ``min_s`` and ``max_s`` are exact. ``median_s`` and ``p90_s`` interpolate linearly
    between order statistics (as ``numpy.quantile`` does) and come from a log-bucketed
    sketch: within 2% of the exact value for durations between 1 ms and 1 h.
    """

    model_config = _FROZEN

    count: int
    """Samples with a measured duration."""
    min_s: float
    """The shortest duration, seconds (exact)."""
    median_s: float
    """The median duration, seconds (within 2%)."""
    p90_s: float
    """The 90th percentile duration, seconds (within 2%)."""
    max_s: float
    """The longest duration, seconds (exact)."""


class OutputCount(Row):
    """One distinct output, how many samples produced it, and how long they took."""

    model_config = _FROZEN

    text: str
    count: int
    latency: LatencyStats | None = None
    """``Sample.latency_s`` (whole response, seconds) over this output's samples."""
    ttft: LatencyStats | None = None
    """``Sample.ttft_s`` (time to first token, seconds) over this output's streamed samples."""


class FailureMessage(Row):
    """One reason samples failed, in the provider's (or the transport's) words."""

    model_config = _FROZEN

    kind: str
    """``SampleError.kind``: http_status, connection, timeout, ..."""
    status: int | None
    message: str
    """The message, cut to 300 characters; ``(other messages)`` past 64 distinct ones."""
    count: int


class HistogramBin(Row):
    """Samples whose value lies in ``lo..hi`` (both inclusive)."""

    model_config = _FROZEN

    lo: int
    hi: int
    count: int


class DivergenceStats(Row):
    """For each sample that differs from the modal output: its common prefix with the mode.

    ``samples`` counts those samples; the rest summarise the prefix lengths over them.
    """

    model_config = _FROZEN

    samples: int
    min: int
    median: float
    mean: float
    max: int
    histogram: list[HistogramBin]


class ConfidenceInterval(Row):
    """An interval at ``level`` and how it was made: ``method`` is ``percentile bootstrap``
    (then ``resamples`` and ``seed`` say how), ``wilson``, ``exact one-sided``, ``bracket``
    or ``wald-logit`` (``docs/metrics.md`` defines each)."""

    model_config = _FROZEN

    low: float
    high: float
    level: float
    resamples: int | None = None
    seed: int | None = None
    method: str = "percentile bootstrap"

    def __str__(self) -> str:
        return f"[{_short(self.low)}, {_short(self.high)}]"


def _short(value: float) -> str:
    """A rate for text: ``0``, ``0.095``, ``0.64``, ``1``."""
    return "0" if value == 0 else "1" if value == 1 else f"{value:.3g}"


class Proportion(BaseModel):
    """``count`` of ``n`` samples differ from ``reference``: the rate and its interval.

    The interval is Wilson's; with none (or all) differing it is the exact one-sided bound
    ``1 - alpha^(1/n)``: 0 of 30 differ, so the rate is at most 9.5 % at 95 %.
    """

    model_config = _FROZEN

    count: int
    n: int
    rate: float
    interval: ConfidenceInterval
    reference: str
    """What was compared against, e.g. ``the most common output``."""

    def describe(self) -> str:
        """``0 of 30 differ from the most common output: at most 9.5 % (95 %)``."""
        head = f"{self.count} of {self.n} differ from {self.reference}"
        level = f"{self.interval.level:.0%}"
        if self.count == 0:
            return f"{head}: at most {self.interval.high:.1%} ({level})"
        return (f"{head}: {self.rate:.1%} [{self.interval.low:.1%}, "
                f"{self.interval.high:.1%}] ({level})")


class LogprobAgreement(BaseModel):
    """The numbers under the text: do samples that agree in text agree in their logprobs?

    Over the ok samples that returned the chosen tokens' logprobs. *Within outputs*:
    samples with the same text, position by position over their whole length; *in the
    prefix*: every sample over the ``prefix_tokens`` positions they all share. Identical
    means bitwise: the same float, not merely close. Positions are 0-based tokens.
    """

    model_config = _FROZEN

    samples: int
    """Ok samples with logprobs."""
    outputs_compared: int
    """Distinct outputs with at least two such samples."""
    identical_within_outputs: bool | None
    """None when no output had two samples to compare."""
    max_abs_diff_within_outputs: float
    first_diff_within_outputs: int | None
    """The earliest position where two samples of the same text differ in logprob."""
    prefix_tokens: int
    identical_in_prefix: bool | None
    max_abs_diff_in_prefix: float
    first_diff_in_prefix: int | None

    def describe(self) -> str:
        """``texts agree, and the numbers are bitwise identical`` or where they are not."""
        if self.identical_within_outputs is None:
            return ("no two samples share a text, so no logprobs of agreeing texts could be "
                    "compared")
        if self.identical_within_outputs:
            return (f"texts agree, and the numbers are bitwise identical ({self.samples} "
                    f"samples with logprobs, {self.outputs_compared} repeated output"
                    f"{'s' if self.outputs_compared != 1 else ''})")
        return (f"texts agree, but the logprobs already differ from token "
                f"{self.first_diff_within_outputs} (max |Δ| "
                f"{self.max_abs_diff_within_outputs:.1e})")


class VarianceReport(Displayed, Row):
    """How N answers to one identical request differ.

    Metrics are over the ``n_ok`` successful samples (n below); failures are counted by
    error kind in ``failures``. With ``c_k`` the count of distinct output k:

    - ``unique_count`` K: distinct output texts. ``mode_count``: the largest c_k (ties go
      to the lexicographically smallest text); ``mode_fraction`` = mode_count / n.
    - ``all_agree``: K == 1.
    - ``agreement_rate``: probability two different samples agree,
      sum c_k(c_k-1) / (n(n-1)); None when n < 2.
    - ``entropy_bits`` H = -sum p_k log2 p_k, p_k = c_k / n; ``entropy_mm_bits`` adds the
      Miller-Madow correction (K-1) / (2 n ln 2); ``normalized_entropy`` = H / log2 n.
    - ``common_prefix_chars`` / ``common_prefix_tokens``: length of the prefix shared by
      all outputs = 0-based position of the first divergence; None when all agree.
    - ``divergence_from_mode_chars`` / ``_tokens``: over the samples that differ from the
      mode, their common prefix with it; None when all agree.
    - ``per_position_entropy[t]``: entropy of the token at position t over the samples
      longer than t, in bits.
    - ``length_mean_tokens`` / ``length_std_tokens``: completion length (population std).
    - ``logprob_noise_mean`` / ``_max``: inside the common prefix (where every sample has
      the same token), the population std across samples of that token's logprob,
      averaged / maximised over positions. Non-zero means numerical non-determinism even
      where texts agree. None without logprobs.
    - ``divergence_margin``: at the first divergence, top-1 minus top-2 logprob of the
      modal output (needs top_logprobs). Small margins: near-ties flipped by noise.
    - ``disagreement_rate`` D = 1 - agreement_rate: the probability that two requests
      disagree, with ``disagreement_rate_ci`` (closed form: ``docs/metrics.md``);
      ``coverage`` (Good's, 1 - F1/n: the probability the next output is one already seen;
      F1 = outputs seen once); ``chao1`` = S + F1(F1-1)/(2(F2+1)), how many distinct
      outputs exist; ``deviation``: how many differ from the most common output, with a
      Wilson interval, or the exact bound 1 - alpha^(1/n) when none does.
    - ``logprobs``: whether samples with the same text have bitwise identical logprobs.
    - ``latency`` / ``ttft``: ``Sample.latency_s`` (whole response) and ``Sample.ttft_s``
      (time to first token; streamed responses only) in seconds, over the ok samples that
      measured them (a latency of 0, the ``Sample`` default, counts as not measured);
      None when none did. Each entry of ``top_outputs`` has the same summaries over its
      own samples, so one can see whether the diverging outputs were served more slowly.

    ``tokenization`` says whether tokens are the provider's (every sample had them) or
    the word fallback. ``by_fingerprint``, ``by_endpoint``, ``by_condition`` and
    ``by_request`` (a suite's requests, by ``Sample.request_id``) hold the same report per
    group, present when a run has at least two groups of that kind.
    """

    model_config = _FROZEN

    n_samples: int
    n_ok: int
    n_failed: int
    failures: dict[str, int]
    unique_count: int
    mode_count: int
    mode_fraction: float | None
    all_agree: bool
    agreement_rate: float | None
    entropy_bits: float
    entropy_mm_bits: float
    normalized_entropy: float
    common_prefix_chars: int | None
    common_prefix_tokens: int | None
    tokenization: Literal["provider", "words"]
    divergence_from_mode_chars: DivergenceStats | None
    divergence_from_mode_tokens: DivergenceStats | None
    per_position_entropy: list[float]
    length_mean_tokens: float | None
    length_std_tokens: float | None
    logprob_noise_mean: float | None
    logprob_noise_max: float | None
    divergence_margin: float | None
    finish_reasons: dict[str, int]
    system_fingerprints: dict[str, int]
    top_outputs: list[OutputCount]
    """The most common outputs, most frequent first (at most five)."""
    entropy_bits_ci: ConfidenceInterval | None = None
    agreement_rate_ci: ConfidenceInterval | None = None
    latency: LatencyStats | None = None
    """Whole-response latency of the ok samples, seconds; None when none measured it."""
    ttft: LatencyStats | None = None
    """Time to first token of the ok streamed samples, seconds; None when none was streamed."""
    failure_messages: list[FailureMessage] = []
    """The most common reasons samples failed (at most five), most common first."""
    disagreement_rate: float | None = None
    disagreement_rate_ci: ConfidenceInterval | None = None
    coverage: float | None = None
    chao1: float | None = None
    deviation: Proportion | None = None
    """How many samples differ from the most common output (chosen from the same data, so
    a descriptive figure; tests compare against a reference from elsewhere)."""
    logprobs: LogprobAgreement | None = None
    by_fingerprint: dict[str, VarianceReport] = {}
    by_endpoint: dict[str, VarianceReport] = {}
    by_condition: dict[str, VarianceReport] = {}
    by_request: dict[str, VarianceReport] = {}
    tree: DivergenceTree | None = None
    """Where the outputs split, with counts (``lv.divergence_tree`` of the same samples,
    pruned to at most 32 leaves); None only in reports made before it existed."""

    def plot(self, path: str | os.PathLike[str] | None = None, *,
             tree: DivergenceTree | None = None) -> Figure:
        """``lv.plot_report``: the tree (when given), per-position entropy, divergence from
        the mode and distinct outputs by condition as one matplotlib figure, saved as PNG
        or SVG when ``path`` is given. Needs the ``plot`` extra.

        The figures import the models, never the reverse: this method (like ``df.plot`` in
        pandas) imports them only when called, and is the analysis wing's only way back."""
        from .._render.plot import plot_report

        return plot_report(self, path, tree=tree)

    def to_text(self) -> str:
        """A human-readable summary for a terminal."""
        lines = _summary_lines(self)
        for title, groups in (("fingerprint", self.by_fingerprint),
                              ("endpoint", self.by_endpoint),
                              ("condition", self.by_condition),
                              ("request", self.by_request)):
            if groups:
                lines.append(f"by {title}:")
                lines.extend(_group_row(name, r) for name, r in sorted(groups.items()))
        return "\n".join(lines)

    def _summary(self) -> str:
        if not self.n_ok:
            return f"n={self.n_samples} ok=0 (every sample failed)"
        first = ("all agree" if self.common_prefix_tokens is None
                 else f"first divergence at token {self.common_prefix_tokens}")
        return (f"n={self.n_samples} ok={self.n_ok} distinct={self.unique_count} "
                f"D={fmt(self.disagreement_rate)} {first}")

    def __str__(self) -> str:
        return self.to_text()


def _fmt(value: float | None, spec: str = ".3f") -> str:
    return "n/a" if value is None else format(value, spec)


def _ci(ci: ConfidenceInterval | None) -> str:
    return "" if ci is None else f"  [{ci.level:.0%} CI {ci.low:.3f}..{ci.high:.3f}]"


_UNIT = {"provider": "provider tokens", "words": "words"}


def _summary_lines(r: VarianceReport) -> list[str]:
    lines: list[str] = []
    if r.n_samples and not r.n_ok:
        lines.append(f"every sample failed ({r.n_failed} of {r.n_samples}), so there are no "
                     "outputs to compare; the most common reasons:")
        lines.extend(_failure_lines(r))
        lines.append(f"samples           {r.n_samples} (0 ok, {r.n_failed} failed)")
        lines.append(f"failures          {_counts(r.failures)}")
        return lines
    lines += [
        f"samples           {r.n_samples} ({r.n_ok} ok, {r.n_failed} failed)",
        f"distinct outputs  {r.unique_count}" + ("  (all agree)" if r.all_agree else ""),
        f"most common       {r.mode_count} of {r.n_ok} ({_fmt(r.mode_fraction, '.1%')})",
        f"agreement rate    {_fmt(r.agreement_rate)}{_ci(r.agreement_rate_ci)}",
        f"entropy           {r.entropy_bits:.3f} bits (Miller-Madow {r.entropy_mm_bits:.3f}, "
        f"normalized {r.normalized_entropy:.3f}){_ci(r.entropy_bits_ci)}",
    ]
    lines.extend(estimate_lines(r))
    if r.common_prefix_chars is None:
        lines.append("first divergence  none")
    else:
        unit = _UNIT[r.tokenization]
        shared = (f"all outputs agree on the {r.common_prefix_tokens} {unit.split()[-1]} "
                  "before it" if r.common_prefix_tokens else "they differ from the start")
        lines.append(f"first divergence  token {r.common_prefix_tokens} ({unit}), char "
                     f"{r.common_prefix_chars}: {shared}")
    d = r.divergence_from_mode_tokens
    if d is not None:
        lines.append(f"prefix with mode  {d.samples} differing samples share "
                     f"{d.min}/{d.median:g}/{d.mean:.1f}/{d.max} tokens with the mode "
                     "(min/median/mean/max)")
    if r.divergence_margin is not None:
        lines.append(f"divergence margin {r.divergence_margin:.4f} (top-1 minus top-2 logprob "
                     "of the mode there)")
    if r.logprob_noise_mean is not None:
        lines.append(f"logprob noise     mean {r.logprob_noise_mean:.3g}, "
                     f"max {_fmt(r.logprob_noise_max, '.3g')} (std inside the common prefix)")
    if r.length_mean_tokens is not None:
        lines.append(f"length            {r.length_mean_tokens:.1f} ± "
                     f"{_fmt(r.length_std_tokens, '.1f')} {r.tokenization} tokens")
    if r.latency is not None or r.ttft is not None:
        lines.append(f"latency s         {_stats(r.latency, 'none measured')}")
        lines.append(f"ttft s            {_stats(r.ttft, 'none (no streamed samples)')}")
    if r.finish_reasons:
        lines.append(f"finish reasons    {_counts(r.finish_reasons)}")
    if len(r.system_fingerprints) > 0:
        lines.append(f"fingerprints      {_counts(r.system_fingerprints)}")
    if r.failures:
        lines.append(f"failures          {_counts(r.failures)}")
        lines.extend(_failure_lines(r))
    lines.extend(_top_output_lines(r))
    lines.extend(_branch_lines(r))
    return lines


_BRANCH_POINTS = 3
"""How many of the tree's branch points ``print(report)`` shows (depth first, the most
common path first)."""


def _alternative(text: str) -> str:
    if not text:
        return "(ends)"
    short = text[:14].replace("\n", " ")
    return repr(short) + ("…" if len(text) > 14 else "")


def _branch_lines(r: VarianceReport) -> list[str]:
    """The tree's first branch points: where they are, and the alternatives' counts."""
    tree = r.tree
    points = [] if tree is None else tree.branch_points()
    if tree is None or not points:
        return []
    lines = [f"branch points     {len(points)} in the tree; the first "
             f"{min(len(points), _BRANCH_POINTS)} (print(report.tree) for all):"]
    for node in points[:_BRANCH_POINTS]:
        children = tree.children(node)
        shown = ", ".join(f"{c.count} {_alternative(c.text)}" for c in children[:3])
        rest = len(children) - 3 + node.pruned_branches
        more = f", {rest} more" if rest > 0 else ""
        margin = "" if node.margin is None else f", margin {node.margin:.3g}"
        lines.append(f"  token {node.end_token} (char {tree.split_char(node)}), "
                     f"{node.count} samples{margin}: {shown}{more}")
    return lines


def estimate_lines(r: VarianceReport) -> list[str]:
    """D with its interval, coverage and Chao1, the deviation from the mode, the logprobs."""
    lines = []
    if r.disagreement_rate is not None:
        ci = r.disagreement_rate_ci
        interval = "" if ci is None else f" {ci} ({ci.level:.0%}, {ci.method})"
        lines.append(f"disagreement D    {r.disagreement_rate:.3f}{interval}: the probability "
                     "that two requests disagree")
    if r.coverage is not None and r.chao1 is not None:
        lines.append(f"coverage          {r.coverage:.3f} (the next output is one already seen"
                     f" with this probability); Chao1 {r.chao1:.1f} distinct outputs exist")
    if r.deviation is not None:
        lines.append(f"deviation         {r.deviation.describe()}")
    if r.logprobs is not None:
        lines.append(f"logprobs          {r.logprobs.describe()}")
    return lines


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{printable(k)} {v}" for k, v in sorted(counts.items()))


def _failure_lines(r: VarianceReport) -> list[str]:
    lines = []
    for failure in r.failure_messages:
        message = printable(" ".join(failure.message.split()))
        said = (message if message.startswith("HTTP ")
                else f"{printable(failure.kind)}: {message}")
        said = said if len(said) <= 110 else said[:109] + "…"
        lines.append(f"  x{failure.count:<5} {said}")
    return lines


def split_points(texts: Sequence[str]) -> list[tuple[int, int, int]]:
    """For each text after the first (the mode): (where it leaves the mode, the index of
    the earlier text it follows longest, where it leaves that one), in characters."""
    points = []
    for k in range(1, len(texts)):
        shared = [pair_prefix_length(texts[k], texts[j]) for j in range(k)]
        nearest = max(range(k), key=lambda j: (shared[j], -j))
        points.append((shared[0], nearest, shared[nearest]))
    return points


def around(text: str, at: int, before: int = 20, after: int = 32) -> str:
    """``text`` near character ``at``, with ``|`` marking it: "…the dragon |slept in…"."""
    start = max(0, at - before)
    head = ("…" if start else "") + repr(text[start:at] + "|" + text[at:at + after])
    return head + ("…" if at + after < len(text) else "")


def _top_output_lines(r: VarianceReport) -> list[str]:
    outputs = r.top_outputs
    if not outputs:
        return []
    lines = []
    if len(outputs) > 1:
        lines.append("top outputs       each from where it leaves the ones above it "
                     "('|' marks the split)")
    mode = outputs[0]
    preview = repr(mode.text[:70].replace("\n", " ")) + ("…" if len(mode.text) > 70 else "")
    lines.append(f"  #1 x{mode.count:<5} {preview}{_medians(mode)}")
    points = split_points([o.text for o in outputs])
    for rank, (output, (at_mode, nearest, at)) in enumerate(zip(outputs[1:], points,
                                                                 strict=True), 2):
        where = f"leaves the mode at char {at_mode}"
        if nearest:
            where += f", #{nearest + 1} at char {at}"
        lines.append(f"  #{rank} x{output.count:<5} {where}: {around(output.text, at)}"
                     f"{_medians(output)}")
    return lines


def _stats(stats: LatencyStats | None, missing: str) -> str:
    if stats is None:
        return missing
    return (f"median {stats.median_s:.3f}  p90 {stats.p90_s:.3f}  max {stats.max_s:.3f}  "
            f"({stats.count})")


def _medians(output: OutputCount) -> str:
    parts = [f"{name} {stats.median_s:.3f}" for name, stats in
             (("ttft", output.ttft), ("latency", output.latency)) if stats is not None]
    return f"  [median s: {', '.join(parts)}]" if parts else ""


def _group_row(name: str, r: VarianceReport) -> str:
    first = "none" if r.common_prefix_tokens is None else str(r.common_prefix_tokens)
    ci = r.disagreement_rate_ci
    d = "n/a" if r.disagreement_rate is None else f"{r.disagreement_rate:.3f}" + (
        "" if ci is None else f" {ci}")
    return (f"  {printable(name):<24} n={r.n_ok:<6} distinct={r.unique_count:<5} D={d} "
            f"agreement={_fmt(r.agreement_rate)} entropy={r.entropy_bits:.3f} "
            f"first divergence={first}")
