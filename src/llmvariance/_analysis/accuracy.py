"""Accuracy under reruns: how much rerunning an eval moves its score.

With an expected answer per prompt (``Expected``) and an ``answer=`` extractor, every ok
sample is right or wrong: its answer matches one of its prompt's expected answers when
both are equal after surrounding whitespace is stripped, inner runs of whitespace are
collapsed and case is folded (``" Yes"`` matches ``"yes"``), or with ``match="contains"``
when the answer contains an expected one as whole words (``"The capital is Oslo."``
contains ``"oslo"``; ``"1937"`` does not contain ``"93"``); an output with no answer is
wrong. *Rerun k* is the k-th sample (index k) of every prompt: the score the eval would
have reported had it been run once, that time. A suite samples index 0 of every prompt
before index 1, so each rerun is one pass over the suite.

Over the P prompts that have an expected answer and all N samples ok, with ``x[p, k]`` = 1
when sample k of prompt p is right:

- accuracy of rerun k: ``a_k = sum_p x[p, k] / P``; ``mean``, ``min``, ``max``, ``std`` (over
  the N reruns, ddof 1) and ``spread = max - min``;
- best-possible accuracy: the share of prompts right in *any* of the N reruns (a prompt
  counts if one of its answers is right); worst-possible: right in *all* N;
- flipping prompts: right in some reruns and wrong in others (0 < sum_k x[p, k] < N);
  their share with its Wilson interval (exact one-sided when none flips: 0 of 36 flip, so
  at most 8 % of prompts do);
- intervals by percentile bootstrap over prompts (a prompt's N results resampled
  together, seeded): each resample draws P prompts with replacement. Prompts with the same
  row of results are interchangeable, so a resample is one multinomial draw over the
  distinct rows (at most min(P, 2^N) of them): the cost does not grow with P. When every
  prompt scores alike on every rerun, a resample cannot see a flip that never happened and
  the spread's interval is [0, 0]; the flip share's exact bound says what could still hide.

``compare_accuracy`` pairs two runs prompt by prompt: ``d_p = acc_b(p) - acc_a(p)`` (each
prompt's accuracy over its reruns), the mean difference with a paired bootstrap interval
over prompts, and its two-sided sign-flip permutation test (under the null the two runs of
a prompt are exchangeable, so each ``d_p`` is as likely negated);
beside it McNemar's exact test per rerun (rerun k of a against rerun k of b, Holm-adjusted):
how often an eval run once per side would have called the difference significant.

Memory: one byte per (prompt, rerun) (right, wrong, or not known) and one bool per prompt;
100,000 prompts x 10 reruns is 1 MB.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict

from .._errors import ConfigError
from . import estimates as est
from .report import ConfidenceInterval
from .stats import HypothesisTestResult, holm

__all__ = ["AccuracyComparison", "Expected", "ExpectedValue", "McNemarRow", "RerunAccuracy",
           "RerunGrid", "compare_grids", "normalize_answer", "rerun_accuracy"]

_FROZEN = ConfigDict(frozen=True, extra="forbid")
_CHUNK_CELLS = 2_000_000  # resamples x distinct rows per chunk of the bootstrap
_SHOWN = 10

ExpectedValue = str | int | float | Sequence[str | int | float] | None
"""One prompt's expected answer, or several that are all right."""

UNKNOWN, WRONG, RIGHT = -1, 0, 1


def normalize_answer(text: str) -> str:
    """How answers are compared: whitespace stripped and collapsed, case folded."""
    return " ".join(text.split()).casefold()


def _as_answer(value: object, rid: str) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ConfigError("expected", f"{rid!r}: an expected answer is a string or a number "
                          f"(or a list of them), got {type(value).__name__}")
    text = normalize_answer(str(value))
    if not text:
        raise ConfigError("expected", f"{rid!r}: an expected answer is empty")
    return text


class Expected:
    """Expected answers by prompt id: ``grade(id, answer)`` is True when ``answer``
    matches one of them (``normalize_answer`` on both), False when it does not or is
    None, and None when the prompt has no expected answer.

    ``answers``: a mapping of id to an answer (a string or a number) or a list of answers
    that are all right (``{"q1": "42", "q2": ["yes", "y"]}``); None (a JSON null) means
    the prompt has none.
    """

    __slots__ = ("_answers", "match")

    def __init__(self, answers: Mapping[str, ExpectedValue], *,
                 match: Literal["exact", "contains"] = "exact") -> None:
        if match not in ("exact", "contains"):
            raise ConfigError("match", f"must be 'exact' or 'contains', got {match!r}")
        self.match = match
        if not isinstance(answers, Mapping):
            raise ConfigError("expected", "must be a mapping of prompt id to its expected "
                              f"answer, got {type(answers).__name__}")
        # one str per prompt when there is one answer (most evals): 100,000 prompts keep
        # 100,000 strings, not 100,000 sets
        self._answers: dict[str, str | frozenset[str]] = {}
        for rid, value in answers.items():
            if not isinstance(rid, str) or not rid:
                raise ConfigError("expected", f"ids are non-empty strings, got {rid!r}")
            if value is None:  # null in a JSON file: this prompt has no expected answer
                continue
            if isinstance(value, Sequence) and not isinstance(value, str):
                if not value:
                    raise ConfigError("expected", f"{rid!r}: an empty list of answers")
                found = frozenset(_as_answer(v, rid) for v in value)
                self._answers[rid] = next(iter(found)) if len(found) == 1 else found
            else:
                self._answers[rid] = _as_answer(value, rid)

    @classmethod
    def of(cls, value: Expected | Mapping[str, ExpectedValue]) -> Expected:
        return value if isinstance(value, Expected) else cls(value)

    def __contains__(self, rid: object) -> bool:
        return rid in self._answers

    def __len__(self) -> int:
        return len(self._answers)

    def ids(self) -> list[str]:
        return list(self._answers)

    def answers(self, rid: str) -> list[str]:
        """The expected answers of ``rid`` as compared (normalised); [] when none."""
        found = self._answers.get(rid)
        if found is None:
            return []
        return [found] if isinstance(found, str) else sorted(found)

    def grade(self, rid: str, answer: str | None) -> bool | None:
        expected = self._answers.get(rid)
        if expected is None:
            return None
        if answer is None:
            return False
        given = normalize_answer(answer)
        if self.match == "contains":
            wanted = [expected] if isinstance(expected, str) else expected
            return any(_contains(given, e) for e in wanted)
        return given == expected if isinstance(expected, str) else given in expected

    def __repr__(self) -> str:
        return f"<Expected {len(self._answers)} prompts, {self.match} match>"


def _contains(text: str, answer: str) -> bool:
    """``answer`` in ``text`` as whole words: not inside a longer word or number (``93``
    is not in ``1937`` nor in ``93.5``)."""
    start = text.find(answer)
    while start >= 0:
        end = start + len(answer)
        if not _continues(text, start - 1, -1) and not _continues(text, end, 1):
            return True
        start = text.find(answer, start + 1)
    return False


def _continues(text: str, at: int, step: int) -> bool:
    """Whether the character at ``at`` carries the word on (a letter, a digit, ``_``, or a
    decimal point between digits)."""
    if not 0 <= at < len(text):
        return False
    char = text[at]
    if char.isalnum() or char == "_":
        return True
    beyond = at + step
    return char in ".," and 0 <= beyond < len(text) and text[beyond].isdigit() and (
        0 <= at - step < len(text) and text[at - step].isdigit())


class RerunGrid:
    """Right, wrong or not known for each (prompt, rerun) of a suite: one byte per pair.

    Rows are the prompts in ``ids`` order, columns the sample indices 0..n-1. A cell is
    ``RIGHT`` (1), ``WRONG`` (0) or ``UNKNOWN`` (-1: the sample failed, was not sent, or its
    prompt has no expected answer). ``graded[p]``: prompt p has an expected answer.
    """

    __slots__ = ("_rows", "cells", "graded", "ids", "n")

    def __init__(self, ids: Sequence[str], n: int, expected: Expected) -> None:
        self.ids = list(ids)
        self.n = n
        self._rows = {rid: row for row, rid in enumerate(self.ids)}
        self.cells: npt.NDArray[np.int8] = np.full((len(self.ids), n), UNKNOWN, dtype=np.int8)
        self.graded = np.fromiter((rid in expected for rid in self.ids), dtype=bool,
                                  count=len(self.ids))

    def record(self, rid: str, index: int, correct: bool | None) -> None:
        """Sample ``index`` of ``rid`` was right (True), wrong (False) or failed (None);
        indices past ``n`` and unknown ids are ignored."""
        row = self._rows.get(rid)
        if row is None or not 0 <= index < self.n:
            return
        self.cells[row, index] = UNKNOWN if correct is None else int(correct)

    def correct(self, rid: str) -> int | None:
        """How many of ``rid``'s samples were right; None when it has no expected answer."""
        row = self._rows.get(rid)
        if row is None or not self.graded[row]:
            return None
        return int(np.count_nonzero(self.cells[row] == RIGHT))

    def complete(self) -> npt.NDArray[np.bool_]:
        """Per prompt: all n samples were graded (every one ok)."""
        return np.asarray((self.cells >= 0).all(axis=1) & self.graded, dtype=np.bool_)

    def __repr__(self) -> str:
        return f"<RerunGrid {len(self.ids)} prompts x {self.n} reruns>"


class RerunAccuracy(BaseModel):
    """How the accuracy of an eval moves over N reruns (definitions in the module doc)."""

    model_config = _FROZEN

    reruns: int
    """N: the samples per prompt, each a rerun."""
    prompts: int
    """P: prompts with an expected answer and all N samples ok."""
    ungraded: int
    """Prompts without an expected answer (left out)."""
    incomplete: int
    """Prompts with an expected answer but a failed sample (left out)."""
    per_rerun: list[float]
    """Accuracy of rerun k, for k = 0..N-1."""
    mean: float
    min: float
    max: float
    spread: float
    """max - min over the reruns."""
    std: float | None
    """Standard deviation over the reruns (ddof 1); None with one rerun."""
    best_possible: float
    """Share of prompts right in at least one of the N reruns."""
    worst_possible: float
    """Share of prompts right in all N reruns."""
    flipping: list[str]
    """Prompts right in some reruns and wrong in others, in suite order."""
    flipping_ci: ConfidenceInterval
    """The share of flipping prompts' interval (Wilson; exact one-sided at 0 or P)."""
    correct_counts: list[int]
    """``correct_counts[c]``: prompts right in exactly c of the N reruns."""
    mean_ci: ConfidenceInterval
    spread_ci: ConfidenceInterval
    best_possible_ci: ConfidenceInterval
    worst_possible_ci: ConfidenceInterval

    def to_text(self) -> str:
        return "\n".join(self.lines())

    def lines(self) -> list[str]:
        flips = ", ".join(self.flipping[:_SHOWN]) + (" ..." if len(self.flipping) > _SHOWN
                                                     else "")
        share = len(self.flipping) / self.prompts
        lines = [
            f"accuracy          mean {self.mean:.3f} {self.mean_ci} over {self.reruns} reruns "
            f"of {self.prompts} graded prompts; per rerun min {self.min:.3f}, max "
            f"{self.max:.3f}, spread {self.spread:.3f} {self.spread_ci}",
            f"best possible     {self.best_possible:.3f} {self.best_possible_ci}  (right in "
            f"any of the {self.reruns})",
            f"worst possible    {self.worst_possible:.3f} {self.worst_possible_ci}  (right "
            f"in all {self.reruns})",
            f"flipping          {len(self.flipping)} prompts ({share:.1%} "
            f"{_percent(self.flipping_ci)}): " + (flips or "none"),
        ]
        left = [f"{self.ungraded} without an expected answer"] if self.ungraded else []
        left += [f"{self.incomplete} with failed samples"] if self.incomplete else []
        if left:
            lines.append(f"                  left out: {', '.join(left)}")
        return lines

    def __str__(self) -> str:
        return self.to_text()


def _percent(ci: ConfidenceInterval) -> str:
    return f"[{ci.low:.1%}, {ci.high:.1%}]"


def _interval(values: npt.NDArray[np.float64], level: float, resamples: int, seed: int
              ) -> ConfidenceInterval:
    low, high = np.quantile(values, [(1 - level) / 2, (1 + level) / 2])
    return ConfidenceInterval(low=float(low), high=float(high), level=level,
                              resamples=resamples, seed=seed,
                              method="percentile bootstrap over prompts")


def _draws(counts: npt.NDArray[np.int64], resamples: int, rng: np.random.Generator
           ) -> Iterable[npt.NDArray[np.int64]]:
    """Chunks of resamples: how many times each distinct row was drawn, P draws each."""
    total = int(counts.sum())
    shares = counts / total
    chunk = max(1, _CHUNK_CELLS // max(1, counts.size))
    done = 0
    while done < resamples:
        rows = min(chunk, resamples - done)
        yield rng.multinomial(total, shares, size=rows).astype(np.int64)
        done += rows


def rerun_accuracy(grid: RerunGrid, *, level: float = 0.95, resamples: int = 2000,
                   seed: int = 0) -> RerunAccuracy | None:
    """The accuracy under reruns of ``grid``'s complete, graded prompts (module doc);
    None when there is none."""
    complete = grid.complete()
    x = grid.cells[complete]
    p, n = x.shape
    if p == 0 or n == 0:
        return None
    ConfigError.check_int("resamples", resamples)
    per_rerun = x.sum(axis=0, dtype=np.int64) / p
    right = x.sum(axis=1, dtype=np.int64)
    flipping = [rid for rid, flips in zip(
        (grid.ids[i] for i in np.flatnonzero(complete)), (right > 0) & (right < n), strict=True)
        if flips]
    low, high, method = est.rate_interval(len(flipping), p, level)
    rows, counts = np.unique(x, axis=0, return_counts=True)
    rows = rows.astype(np.int64)
    any_right = rows.max(axis=1)
    all_right = rows.min(axis=1)
    rng = np.random.default_rng(seed)
    means, spreads, bests, worsts = [], [], [], []
    for drawn in _draws(counts.astype(np.int64), resamples, rng):
        by_rerun = drawn @ rows  # resamples x N: prompts right in each rerun
        means.append(by_rerun.sum(axis=1) / (p * n))
        spreads.append((by_rerun.max(axis=1) - by_rerun.min(axis=1)) / p)
        bests.append(drawn @ any_right / p)
        worsts.append(drawn @ all_right / p)
    graded_ids = int(grid.graded.sum())
    return RerunAccuracy(
        reruns=n, prompts=p, ungraded=len(grid.ids) - graded_ids,
        incomplete=graded_ids - p, per_rerun=[float(v) for v in per_rerun],
        mean=float(per_rerun.mean()), min=float(per_rerun.min()), max=float(per_rerun.max()),
        spread=float(per_rerun.max() - per_rerun.min()),
        std=float(per_rerun.std(ddof=1)) if n > 1 else None,
        best_possible=float(np.count_nonzero(right > 0) / p),
        worst_possible=float(np.count_nonzero(right == n) / p),
        flipping=flipping,
        flipping_ci=ConfidenceInterval(low=low, high=high, level=level, method=method),
        correct_counts=np.bincount(right, minlength=n + 1).tolist(),
        mean_ci=_interval(np.concatenate(means), level, resamples, seed),
        spread_ci=_interval(np.concatenate(spreads), level, resamples, seed),
        best_possible_ci=_interval(np.concatenate(bests), level, resamples, seed),
        worst_possible_ci=_interval(np.concatenate(worsts), level, resamples, seed))


# -- two runs ---------------------------------------------------------------------------

class McNemarRow(BaseModel):
    """Rerun k of a against rerun k of b, over the paired prompts."""

    model_config = _FROZEN

    rerun: int
    accuracy_a: float
    accuracy_b: float
    only_a: int
    """Prompts right in a's rerun k and wrong in b's."""
    only_b: int
    pvalue: float
    """McNemar's exact test (two-sided binomial test of only_b in only_a + only_b at 1/2)."""
    adjusted_pvalue: float
    """Holm-adjusted across the reruns."""


class AccuracyComparison(BaseModel):
    """Is b's accuracy different from a's, prompt by prompt? (module doc)"""

    model_config = _FROZEN

    prompts: int
    """Prompts graded and complete in both runs."""
    reruns_a: int
    reruns_b: int
    accuracy_a: float
    """Mean accuracy of a over its reruns, on the paired prompts."""
    accuracy_b: float
    statistic: float
    """accuracy_b - accuracy_a."""
    delta_ci: ConfidenceInterval
    """Paired percentile bootstrap over prompts."""
    permutation: HypothesisTestResult
    """The decision: the two-sided sign-flip permutation test over prompts."""
    pvalue: float
    significant: bool
    alpha: float
    mcnemar: list[McNemarRow]
    """One row per rerun both runs have."""
    changed_prompts: list[str]
    """Prompts whose accuracy over the reruns differs between the runs."""
    verdict: str

    def to_text(self) -> str:
        significant = sum(r.adjusted_pvalue < self.alpha for r in self.mcnemar)
        lines = [self.verdict,
                 f"per rerun   McNemar (exact, Holm): significant in {significant} of "
                 f"{len(self.mcnemar)} reruns"]
        for row in self.mcnemar[:_SHOWN]:
            lines.append(f"  rerun {row.rerun:<3} a {row.accuracy_a:.3f}  b {row.accuracy_b:.3f}"
                         f"  a only {row.only_a:<4} b only {row.only_b:<4} "
                         f"p = {row.adjusted_pvalue:.3g}")
        if len(self.mcnemar) > _SHOWN:
            lines.append(f"  ... and {len(self.mcnemar) - _SHOWN} more reruns")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.to_text()


def _sign_flip(numerators: npt.NDArray[np.int64], scale: float, resamples: int, seed: int
               ) -> tuple[float, float]:
    """(observed mean, two-sided p) of the sign-flip test on integer differences, drawn as
    one binomial per distinct nonzero value (prompts with the same difference are
    interchangeable)."""
    p = numerators.size
    observed = float(numerators.sum()) / p / scale
    values, counts = np.unique(numerators[numerators != 0], return_counts=True)
    if values.size == 0:
        return observed, 1.0
    rng = np.random.default_rng(seed)
    extreme = 0
    threshold = abs(int(numerators.sum()))  # integers: ties are exact
    chunk = max(1, _CHUNK_CELLS // values.size)
    done = 0
    while done < resamples:
        rows = min(chunk, resamples - done)
        positive = rng.binomial(counts[None, :], 0.5, size=(rows, values.size))
        totals = ((2 * positive - counts[None, :]) * values[None, :]).sum(axis=1)
        extreme += int(np.count_nonzero(np.abs(totals) >= threshold))
        done += rows
    return observed, (1 + extreme) / (1 + resamples)


def compare_grids(a: RerunGrid, b: RerunGrid, *, alpha: float = 0.05, level: float = 0.95,
                  resamples: int = 9999, seed: int = 0) -> AccuracyComparison:
    """Two runs' accuracy, paired by prompt id (module doc). Raises ``ConfigError`` when
    no prompt is graded and complete in both."""
    from scipy import stats

    rows_b = {rid: row for row, rid in enumerate(b.ids)}
    done_a, done_b = a.complete(), b.complete()
    pairs = [(row, rows_b[rid]) for row, rid in enumerate(a.ids)
             if done_a[row] and rid in rows_b and done_b[rows_b[rid]]]
    if not pairs:
        raise ConfigError("expected", "no prompt has an expected answer and all its samples "
                          "ok in both runs: nothing to compare")
    index_a = np.asarray([i for i, _ in pairs], dtype=np.int64)
    index_b = np.asarray([j for _, j in pairs], dtype=np.int64)
    x_a = a.cells[index_a].astype(np.int64)
    x_b = b.cells[index_b].astype(np.int64)
    n_a, n_b = a.n, b.n
    right_a, right_b = x_a.sum(axis=1), x_b.sum(axis=1)
    # d_p * n_a * n_b, an integer: prompts with equal differences are interchangeable
    numerators = right_b * n_a - right_a * n_b
    scale = float(n_a * n_b)
    delta, pvalue = _sign_flip(numerators, scale, resamples, seed)
    values, counts = np.unique(numerators, return_counts=True)
    rng = np.random.default_rng(seed)
    boot = np.concatenate([drawn @ values / (len(pairs) * scale)
                           for drawn in _draws(counts.astype(np.int64), resamples, rng)])
    low, high = np.quantile(boot, [(1 - level) / 2, (1 + level) / 2])
    rows: list[dict[str, float | int]] = []
    for k in range(min(n_a, n_b)):
        only_a = int(np.count_nonzero((x_a[:, k] == 1) & (x_b[:, k] == 0)))
        only_b = int(np.count_nonzero((x_a[:, k] == 0) & (x_b[:, k] == 1)))
        p_k = (1.0 if only_a + only_b == 0 else
               float(stats.binomtest(only_b, only_a + only_b, 0.5).pvalue))
        rows.append({"rerun": k, "accuracy_a": float(x_a[:, k].mean()),
                     "accuracy_b": float(x_b[:, k].mean()), "only_a": only_a,
                     "only_b": only_b, "pvalue": min(1.0, p_k)})
    adjusted = holm([float(r["pvalue"]) for r in rows])
    mcnemar = [McNemarRow(**r, adjusted_pvalue=q)
               for r, q in zip(rows, adjusted, strict=True)]
    test = HypothesisTestResult(
        name="the two runs' accuracies differ", statistic=delta, pvalue=pvalue,
        alternative="two-sided", method="sign-flip permutation over prompts",
        resamples=resamples, seed=seed)
    acc_a, acc_b = float(right_a.sum() / (len(pairs) * n_a)), float(
        right_b.sum() / (len(pairs) * n_b))
    changed = [a.ids[i] for i, d in zip(index_a.tolist(), numerators.tolist(), strict=True)
               if d]
    significant = pvalue < alpha
    mc_significant = sum(q < alpha for q in adjusted)
    evidence = (f"accuracy b {acc_b:.3f} vs a {acc_a:.3f} over {len(pairs)} prompts (b - a = "
                f"{delta:+.3f} [{low:+.3f}, {high:+.3f}]), "
                + ("p < 0.001" if pvalue < 0.001 else f"p = {pvalue:.3g}")
                + " (sign-flip permutation over prompts, two-sided); McNemar per rerun "
                f"significant in {mc_significant} of {len(mcnemar)} reruns")
    verdict = (f"b's accuracy {'is higher' if delta > 0 else 'is lower'} than a's: {evidence}"
               if significant else f"no difference in accuracy detected at alpha = "
                                   f"{alpha:g}: {evidence}")
    return AccuracyComparison(
        prompts=len(pairs), reruns_a=n_a, reruns_b=n_b, accuracy_a=acc_a, accuracy_b=acc_b,
        statistic=delta,
        delta_ci=ConfidenceInterval(low=float(low), high=float(high), level=level,
                                    resamples=resamples, seed=seed,
                                    method="paired percentile bootstrap over prompts"),
        permutation=test, pvalue=pvalue, significant=significant, alpha=alpha,
        mcnemar=mcnemar, changed_prompts=changed, verdict=verdict)
