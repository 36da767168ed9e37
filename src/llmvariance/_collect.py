"""Collectors: consume samples as they arrive, keep one entry per distinct output.

Memory grows with the number of distinct outputs (and the length of the common prefix),
not with N. Two collectors merge into the collector of their union, so runs split across
processes or machines combine exactly.
"""

from __future__ import annotations

import copy
import math
from array import array
from collections import Counter
from collections.abc import Iterable, Sequence

import numpy as np
import numpy.typing as npt

from . import _metrics as m
from ._report import (
    ConfidenceInterval,
    DivergenceStats,
    HistogramBin,
    OutputCount,
    VarianceReport,
)
from ._sample import Sample

__all__ = ["GROUP_DIMENSIONS", "VarianceCollector", "analyze"]

_TOP_OUTPUTS = 5
_NONE = "(none)"
GROUP_DIMENSIONS = ("fingerprint", "endpoint", "condition")


class _Output:
    """One distinct output text: how often, and what its first sample told us."""

    __slots__ = ("count", "margins", "tokens")

    def __init__(self, tokens: list[str] | None, margins: array[float] | None) -> None:
        self.count = 0
        self.tokens = tokens
        self.margins = margins


def _margins(top: Sequence[dict[str, float]]) -> array[float]:
    """Top-1 minus top-2 logprob per position (NaN with fewer than two alternatives)."""
    out = array("d")
    for alternatives in top:
        best = sorted(alternatives.values(), reverse=True)[:2]
        out.append(best[0] - best[1] if len(best) == 2 else math.nan)
    return out


class _Noise:
    """Per-position sums of the chosen token's logprob over samples that share a prefix.

    Sums are of ``x - ref`` (``ref`` = the first sample's logprobs) so the variance of
    values like -2.0000001 vs -2.0000002 survives floating point.
    """

    __slots__ = ("n", "prefix", "ref", "sum", "sumsq")

    def __init__(self, tokens: list[str], logprobs: npt.NDArray[np.float64]) -> None:
        self.prefix = tokens
        self.ref = logprobs
        self.sum = np.zeros_like(logprobs)
        self.sumsq = np.zeros_like(logprobs)
        self.n = 0

    def truncate(self, length: int) -> None:
        if length < len(self.prefix):
            self.prefix = self.prefix[:length]
            self.ref, self.sum, self.sumsq = (a[:length] for a in (self.ref, self.sum,
                                                                  self.sumsq))

    def add(self, logprobs: npt.NDArray[np.float64]) -> None:
        d = logprobs[: len(self.prefix)] - self.ref
        self.sum += d
        self.sumsq += d * d
        self.n += 1

    def merge(self, other: _Noise) -> _Noise:
        length = m.pair_prefix_length(self.prefix, other.prefix)
        a, b = copy.deepcopy(self), copy.deepcopy(other)
        a.truncate(length)
        b.truncate(length)
        shift = b.ref - a.ref  # re-express b's sums relative to a.ref
        a.sum = a.sum + b.sum + b.n * shift
        a.sumsq = a.sumsq + b.sumsq + 2 * shift * b.sum + b.n * shift * shift
        a.n += b.n
        return a

    def std(self) -> npt.NDArray[np.float64]:
        var = (self.sumsq - self.sum * self.sum / self.n) / self.n
        return np.sqrt(np.maximum(var, 0.0))


def _as_logprobs(values: Sequence[float | None]) -> npt.NDArray[np.float64]:
    try:
        return np.asarray(values, dtype=np.float64)
    except TypeError:  # a None (e.g. the first token of an echoed prompt)
        return np.asarray([math.nan if v is None else v for v in values], dtype=np.float64)


class VarianceCollector:
    """Accumulates what a ``VarianceReport`` needs, one sample at a time.

    ``grouped`` (the default) also keeps a collector per ``system_fingerprint``, endpoint
    and condition, created only once a second group of that kind shows up (until then
    the one group is the whole), so ungrouped data pays nothing for it.
    """

    __slots__ = (
        "_failures",
        "_fingerprints",
        "_finish",
        "_groups",
        "_noise",
        "_outputs",
        "_provider_tokens",
        "_single",
    )

    def __init__(self, *, grouped: bool = True) -> None:
        self._outputs: dict[str, _Output] = {}
        self._provider_tokens = True
        self._failures: Counter[str] = Counter()
        self._finish: Counter[str] = Counter()
        self._fingerprints: Counter[str] = Counter()
        self._noise: _Noise | None = None
        # per dimension: the one key seen so far (groups not materialised yet) ...
        self._single: dict[str, str] | None = {} if grouped else None
        # ... or, once two keys were seen, a collector per key
        self._groups: dict[str, dict[str, VarianceCollector]] = {}

    # -- consuming ----------------------------------------------------------------------

    def add(self, sample: Sample) -> None:
        if self._single is not None:
            self._add_to_groups(sample)  # first: it may clone the state before this sample
        self._add(sample)

    def add_text(self, text: str) -> None:
        """Count a plain string output (which carries no provider tokens)."""
        self._provider_tokens = False
        output = self._outputs.get(text)
        if output is None:
            output = self._outputs[text] = _Output(None, None)
        output.count += 1

    def update(self, items: Iterable[str | Sample]) -> None:
        for item in items:
            if isinstance(item, str):
                self.add_text(item)
            else:
                self.add(item)

    def _add(self, sample: Sample) -> None:
        if sample.error is not None:
            self._failures[sample.error.kind] += 1
            return
        text = sample.text or ""
        tokens = sample.tokens
        output = self._outputs.get(text)
        if output is None:
            top = sample.top_logprobs
            output = self._outputs[text] = _Output(
                tokens, _margins(top) if top is not None and tokens is not None else None)
        output.count += 1
        if tokens is None:
            self._provider_tokens = False
        if sample.finish_reason is not None:
            self._finish[sample.finish_reason] += 1
        self._fingerprints[sample.system_fingerprint or _NONE] += 1
        logprobs = sample.token_logprobs
        if tokens is not None and logprobs is not None:
            self._add_noise(tokens, logprobs, output)

    def _add_noise(self, tokens: list[str], logprobs: Sequence[float | None],
                   output: _Output) -> None:
        noise = self._noise
        values = _as_logprobs(logprobs)
        if noise is None:
            self._noise = noise = _Noise(list(tokens), values)
        elif output.count == 1 or (tokens is not output.tokens and tokens != output.tokens):
            # new token sequence: the shared prefix may shrink (O(prefix) in Python, but
            # only once per distinct output)
            noise.truncate(m.pair_prefix_length(noise.prefix, tokens))
        noise.add(values)

    def _add_to_groups(self, sample: Sample) -> None:
        assert self._single is not None
        keys = {"fingerprint": sample.system_fingerprint or _NONE,
                "endpoint": sample.endpoint or _NONE,
                "condition": sample.condition or _NONE}
        for dimension, key in keys.items():
            groups = self._groups.get(dimension)
            if groups is None:
                first = self._single.setdefault(dimension, key)
                if first == key:
                    continue
                # a second key: everything seen before this sample is the first group
                groups = self._groups[dimension] = {first: self._clone_ungrouped()}
            group = groups.get(key)
            if group is None:
                group = groups[key] = VarianceCollector(grouped=False)
            group._add(sample)

    def _clone_ungrouped(self) -> VarianceCollector:
        clone = VarianceCollector(grouped=False)
        clone._outputs = {t: copy.copy(o) for t, o in self._outputs.items()}
        clone._provider_tokens = self._provider_tokens
        clone._failures = self._failures.copy()
        clone._finish = self._finish.copy()
        clone._fingerprints = self._fingerprints.copy()
        clone._noise = copy.deepcopy(self._noise)
        return clone

    # -- combining ----------------------------------------------------------------------

    def _materialised(self, dimension: str) -> dict[str, VarianceCollector]:
        if dimension in self._groups:
            return self._groups[dimension]
        key = (self._single or {}).get(dimension)
        return {} if key is None else {key: self._clone_ungrouped()}

    def merge(self, other: VarianceCollector) -> VarianceCollector:
        """A new collector equal to one that saw both collectors' samples."""
        merged = VarianceCollector(grouped=self._single is not None)
        merged._outputs = {t: copy.copy(o) for t, o in self._outputs.items()}
        for text, theirs in other._outputs.items():
            mine = merged._outputs.get(text)
            if mine is None:
                merged._outputs[text] = copy.copy(theirs)
            else:
                mine.count += theirs.count
        merged._provider_tokens = self._provider_tokens and other._provider_tokens
        merged._failures = self._failures + other._failures
        merged._finish = self._finish + other._finish
        merged._fingerprints = self._fingerprints + other._fingerprints
        if self._noise is None or other._noise is None:
            merged._noise = copy.deepcopy(self._noise or other._noise)
        else:
            merged._noise = self._noise.merge(other._noise)
        if merged._single is not None:
            for dimension in GROUP_DIMENSIONS:
                mine_groups = self._materialised(dimension)
                theirs_groups = other._materialised(dimension)
                keys = set(mine_groups) | set(theirs_groups)
                if len(keys) == 1:
                    merged._single[dimension] = keys.pop()
                elif keys:
                    merged._groups[dimension] = {
                        k: _merge_optional(mine_groups.get(k), theirs_groups.get(k))
                        for k in keys
                    }
        return merged

    # -- reporting ----------------------------------------------------------------------

    def report(self, *, bootstrap: int = 0, seed: int = 0, level: float = 0.95
               ) -> VarianceReport:
        """The report of everything added so far.

        ``bootstrap`` > 0 adds percentile-bootstrap intervals (at ``level``) for the
        entropy and the agreement rate from that many resamples, seeded by ``seed``.
        """
        groups = {dimension: {key: c.report(bootstrap=bootstrap, seed=seed, level=level)
                              for key, c in sorted(keyed.items())}
                  for dimension, keyed in self._groups.items()}
        return self._report(bootstrap, seed, level, groups)

    def _report(self, bootstrap: int, seed: int, level: float,
                groups: dict[str, dict[str, VarianceReport]]) -> VarianceReport:
        outputs = self._outputs
        # A canonical order, so floating-point sums do not depend on arrival order.
        texts = sorted(outputs)
        counts = [outputs[t].count for t in texts]
        n_ok = sum(counts)
        n_failed = sum(self._failures.values())
        unique = len(texts)
        provider = self._provider_tokens and unique > 0 and all(
            outputs[t].tokens is not None for t in texts)
        rows = m.id_rows((outputs[t].tokens or () for t in texts) if provider
                         else (m.word_tokens(t) for t in texts))
        mode_index = min(range(unique), key=lambda i: (-counts[i], texts[i]), default=None)

        prefix_chars = prefix_tokens = None
        div_chars = div_tokens = None
        margin = None
        if unique > 1 and mode_index is not None:
            prefix_chars = m.common_prefix_length(texts)
            prefix_tokens = m.rows_prefix_length(rows)
            others = [i for i in range(unique) if i != mode_index]
            weights = [counts[i] for i in others]
            mode_text, mode_row = texts[mode_index], rows[mode_index]
            div_chars = _divergence(
                [m.pair_prefix_length(texts[i], mode_text) for i in others], weights)
            div_tokens = _divergence(
                [m.row_prefix_length(rows[i], mode_row) for i in others], weights)
            margins = outputs[mode_text].margins
            if provider and margins is not None and prefix_tokens < len(margins):
                value = margins[prefix_tokens]
                margin = None if math.isnan(value) else value

        lengths = [row.size for row in rows]
        length_mean = length_std = None
        if n_ok:
            length_mean = math.fsum(n * c for n, c in zip(lengths, counts, strict=True)) / n_ok
            length_std = math.sqrt(math.fsum(
                c * (n - length_mean) ** 2 for n, c in zip(lengths, counts, strict=True)) / n_ok)

        noise_mean = noise_max = None
        noise = self._noise
        if noise is not None and noise.n >= 2 and len(noise.prefix) > 0:
            std = noise.std()
            std = std[~np.isnan(std)]
            if std.size:
                noise_mean, noise_max = float(std.mean()), float(std.max())

        entropy_ci = agreement_ci = None
        if bootstrap > 0 and n_ok >= 2:
            entropy_ci = _interval(counts, m.entropy_rows, bootstrap, seed, level)
            agreement_ci = _interval(counts, m.agreement_rows, bootstrap, seed, level)

        top = sorted(range(unique), key=lambda i: (-counts[i], texts[i]))[:_TOP_OUTPUTS]
        return VarianceReport(
            n_samples=n_ok + n_failed,
            n_ok=n_ok,
            n_failed=n_failed,
            failures=dict(sorted(self._failures.items())),
            unique_count=unique,
            mode_count=counts[mode_index] if mode_index is not None else 0,
            mode_fraction=counts[mode_index] / n_ok if mode_index is not None else None,
            all_agree=unique == 1,
            agreement_rate=m.agreement_rate(counts),
            entropy_bits=m.entropy_bits(counts),
            entropy_mm_bits=m.entropy_mm_bits(counts),
            normalized_entropy=m.normalized_entropy(counts),
            common_prefix_chars=prefix_chars,
            common_prefix_tokens=prefix_tokens,
            tokenization="provider" if provider else "words",
            divergence_from_mode_chars=div_chars,
            divergence_from_mode_tokens=div_tokens,
            per_position_entropy=m.per_position_entropy(rows, counts),
            length_mean_tokens=length_mean,
            length_std_tokens=length_std,
            logprob_noise_mean=noise_mean,
            logprob_noise_max=noise_max,
            divergence_margin=margin,
            finish_reasons=dict(sorted(self._finish.items())),
            system_fingerprints=dict(sorted(self._fingerprints.items())),
            top_outputs=[OutputCount(text=texts[i], count=counts[i]) for i in top],
            entropy_bits_ci=entropy_ci,
            agreement_rate_ci=agreement_ci,
            by_fingerprint=groups.get("fingerprint", {}),
            by_endpoint=groups.get("endpoint", {}),
            by_condition=groups.get("condition", {}),
        )


def _merge_optional(a: VarianceCollector | None, b: VarianceCollector | None
                    ) -> VarianceCollector:
    if a is not None and b is not None:
        return a.merge(b)
    either = a if a is not None else b
    assert either is not None
    return either._clone_ungrouped()


def _divergence(values: list[int], weights: list[int]) -> DivergenceStats:
    low, median, mean, high = m.weighted_summary(values, weights)
    return DivergenceStats(
        samples=sum(weights), min=low, median=median, mean=mean, max=high,
        histogram=[HistogramBin(lo=a, hi=b, count=c) for a, b, c in m.histogram(values, weights)],
    )


def _interval(counts: list[int], statistic: m.RowStatistic, resamples: int, seed: int,
              level: float) -> ConfidenceInterval:
    low, high = m.bootstrap_interval(counts, statistic, resamples=resamples, seed=seed,
                                     level=level)
    return ConfidenceInterval(low=low, high=high, level=level, resamples=resamples, seed=seed)


def analyze(items: Iterable[str | Sample], *, bootstrap: int = 0, seed: int = 0
            ) -> VarianceReport:
    """The ``VarianceReport`` of outputs a user already has: strings or ``Sample``s.

    ``bootstrap`` > 0 adds seeded 95% bootstrap intervals for entropy and agreement.
    """
    collector = VarianceCollector()
    collector.update(items)
    return collector.report(bootstrap=bootstrap, seed=seed)
