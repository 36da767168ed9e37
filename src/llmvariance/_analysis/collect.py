"""Collectors: consume samples as they arrive, keep one entry per distinct output.

Memory grows with the number of distinct outputs (and the length of the common prefix),
not with N: each output's latencies live in fixed-size sketches. Two collectors merge
into the collector of their union, so runs split across processes or machines combine
exactly.
"""

from __future__ import annotations

import copy
import math
from collections import Counter
from collections.abc import Iterable, Sequence

import numpy as np
import numpy.typing as npt

from .._sample import Sample
from . import estimates as est
from . import metrics as m
from .failures import FailureMessages
from .latency import LatencySketch
from .outputs import DistinctOutputs, MarginSums
from .report import (
    ConfidenceInterval,
    LatencyStats,
    LogprobAgreement,
    OutputCount,
    Proportion,
    VarianceReport,
)
from .tree.build import DEFAULT_MAX_LEAVES
from .tree.margins import fixed_margins
from .tree.model import DivergenceTree

__all__ = ["GROUP_DIMENSIONS", "VarianceCollector", "analyze"]

_TOP_OUTPUTS = 5
_NONE = "(none)"
GROUP_DIMENSIONS = ("fingerprint", "endpoint", "condition", "request")
_ALL_NONE = dict.fromkeys(GROUP_DIMENSIONS, _NONE)

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


class _PositionStats:
    """Per-position count, sum and sum of squares of values (NaN = missing).

    Sums are of ``x - ref`` (``ref`` = the first values seen) so a variance like that of
    -2.0000001 vs -2.0000002 survives floating point.
    """

    __slots__ = ("count", "ref", "sum", "sumsq")

    def __init__(self, values: FloatArray) -> None:
        self.ref = np.nan_to_num(values)
        self.count = np.zeros(values.size)
        self.sum = np.zeros(values.size)
        self.sumsq = np.zeros(values.size)

    def truncate(self, length: int) -> None:
        if length < self.ref.size:
            self.ref, self.count, self.sum, self.sumsq = (
                a[:length] for a in (self.ref, self.count, self.sum, self.sumsq))

    def add(self, values: FloatArray) -> None:
        k = min(values.size, self.ref.size)
        d = values[:k] - self.ref[:k]
        valid = ~np.isnan(d)
        d = np.where(valid, d, 0.0)
        self.count[:k] += valid
        self.sum[:k] += d
        self.sumsq[:k] += d * d

    def merged(self, other: _PositionStats) -> _PositionStats:
        k = min(self.ref.size, other.ref.size)
        out = copy.deepcopy(self)
        out.truncate(k)
        shift = other.ref[:k] - out.ref  # re-express other's sums relative to out.ref
        s, q, c = other.sum[:k], other.sumsq[:k], other.count[:k]
        out.sumsq = out.sumsq + q + 2 * shift * s + c * shift * shift
        out.sum = out.sum + s + c * shift
        out.count = out.count + c
        return out

    def std(self) -> FloatArray:
        """Population std per position; NaN where fewer than two values were seen."""
        with np.errstate(invalid="ignore", divide="ignore"):
            var = (self.sumsq - self.sum * self.sum / self.count) / self.count
        return np.where(self.count >= 2, np.sqrt(np.maximum(var, 0.0)), np.nan)


class _Range:
    """Per-position smallest and largest value over the samples added (NaN: missing), and
    how many samples: whether they are bitwise equal, and by how much they are not."""

    __slots__ = ("high", "low", "samples")

    def __init__(self, values: FloatArray) -> None:
        self.low = values.copy()
        self.high = values.copy()
        self.samples = 1

    def add(self, values: FloatArray) -> None:
        k = min(values.size, self.low.size)
        self.low = np.fmin(self.low[:k], values[:k])
        self.high = np.fmax(self.high[:k], values[:k])
        self.samples += 1

    def merged(self, other: _Range) -> _Range:
        out = _Range(self.low)
        out.high = self.high.copy()
        out.samples = self.samples - 1
        out.add(other.low)
        out.add(other.high)
        out.samples = self.samples + other.samples
        return out


class _Output:
    """One distinct output text: its count, tokens (the smallest tokenization seen) and,
    where the server sent token ids, ``keys`` (the ids, which tokens are compared by: two
    different tokens may render alike); the summed fixed-point top-2 margins and the range
    of the chosen logprobs of the samples with that tokenization; sketches of their latency
    and time to first token (None until one is measured)."""

    __slots__ = ("count", "keys", "latency", "logprobs", "margins", "tokens", "ttft")

    def __init__(self, tokens: list[str] | None, keys: list[str] | None = None) -> None:
        self.count = 0
        self.tokens = tokens
        self.keys = keys
        self.margins: MarginSums | None = None
        self.logprobs: _Range | None = None
        self.latency: LatencySketch | None = None
        self.ttft: LatencySketch | None = None

    def add_margins(self, fixed: IntArray) -> None:
        valid = fixed >= 0
        if self.margins is None:
            self.margins = (np.zeros(fixed.size, dtype=np.int64),
                            np.zeros(fixed.size, dtype=np.int64))
        total, samples = self.margins
        total += np.where(valid, fixed, 0)
        samples += valid

    @property
    def identity(self) -> list[str] | None:
        """What the output's tokens are compared by: their ids when known, else their text."""
        return self.keys if self.keys is not None else self.tokens

    def add_margin_sums(self, sums: MarginSums | None) -> None:
        if sums is not None:
            self.margins = ((sums[0].copy(), sums[1].copy()) if self.margins is None
                            else (self.margins[0] + sums[0], self.margins[1] + sums[1]))


def _as_floats(values: Sequence[float | None]) -> FloatArray:
    try:
        return np.asarray(values, dtype=np.float64)
    except TypeError:  # a None (e.g. the first token of an echoed prompt)
        return np.asarray([math.nan if v is None else v for v in values], dtype=np.float64)


_NO_FAILURES: Counter[str] = Counter()
"""Every collector's failures until its first: never changed (``_add`` replaces it)."""
_NO_MESSAGES = FailureMessages()


class VarianceCollector:
    """Accumulates what a ``VarianceReport`` needs, one sample at a time.

    ``grouped`` (the default) also keeps a collector per ``system_fingerprint``, endpoint
    and condition, created only once a second group of that kind shows up (until then
    the one group is the whole), so ungrouped data pays nothing for it.
    """

    __slots__ = ("_failures", "_fingerprints", "_finish", "_groups", "_messages", "_noise",
                 "_outputs", "_prefix", "_provider_tokens", "_single")

    def __init__(self, *, grouped: bool = True) -> None:
        self._outputs: dict[str, _Output] = {}
        self._provider_tokens = True
        # shared and empty until the first failure (``_add`` makes its own): a suite holds
        # a collector per prompt, and most never see a failure
        self._failures: Counter[str] = _NO_FAILURES
        self._messages = _NO_MESSAGES
        self._finish: Counter[str] = Counter()
        self._fingerprints: Counter[str] = Counter()
        self._prefix: list[str] | None = None
        """Provider tokens shared by every ok sample so far."""
        self._noise: _PositionStats | None = None
        """Chosen-token logprobs over the positions of ``_prefix``."""
        # per dimension: the one key seen so far (groups not materialised yet) ...
        self._single: dict[str, str] | None = {} if grouped else None
        # ... or, once two keys were seen, a collector per key
        self._groups: dict[str, dict[str, VarianceCollector]] = {}

    # -- consuming ----------------------------------------------------------------------

    def add(self, sample: Sample) -> None:
        if self._single is not None:
            self._add_to_groups(sample, _keys(sample))  # first: may clone the state so far
        self._add(sample)

    def add_text(self, text: str) -> None:
        """Count a plain string output (no provider tokens, no group keys)."""
        single = self._single
        # skipped while every item so far was a plain string: grouping would be a no-op
        if single is not None and (self._groups or single != _ALL_NONE):
            self._add_to_groups(text, _ALL_NONE)
        self._add_text(text)

    def update(self, items: Iterable[str | Sample]) -> None:
        if isinstance(items, list | tuple) and self._add_texts(items):
            return
        for item in items:
            if isinstance(item, str):
                self.add_text(item)
            else:
                self.add(item)

    def _add_texts(self, items: list[str | Sample] | tuple[str | Sample, ...]) -> bool:
        """Count a batch of plain strings at C speed (``Counter``); False, having done
        nothing, unless every item is a string and no group key has been seen."""
        single = self._single
        if single is not None and (self._groups or single not in ({}, _ALL_NONE)):
            return False
        if set(map(type, items)) != {str}:
            return False
        if single is not None:
            single.update(_ALL_NONE)
        outputs = self._outputs
        texts: Counter[str] = Counter(items)  # type: ignore[arg-type]  # all str, checked
        for text, count in texts.items():
            output = outputs.get(text)
            if output is None:
                output = outputs[text] = _Output(None)
            output.count += count
        self._provider_tokens = False
        self._fingerprints[_NONE] += len(items)
        return True

    def _add_text(self, text: str) -> None:
        self._provider_tokens = False
        output = self._outputs.get(text)
        if output is None:
            output = self._outputs[text] = _Output(None)
        output.count += 1
        self._fingerprints[_NONE] += 1

    def _add(self, sample: Sample) -> None:
        if sample.error is not None:
            if self._failures is _NO_FAILURES:
                self._failures, self._messages = Counter(), FailureMessages()
            self._failures[sample.error.kind] += 1
            self._messages.add(sample.error)
            return
        text = sample.text or ""
        tokens = sample.tokens
        keys = None
        if tokens is not None and sample.token_ids is not None:
            keys = [f"#{i}" for i in sample.token_ids]
        identity = keys if keys is not None else tokens
        output = self._outputs.get(text)
        new_tokens = output is None
        own_tokens = True  # the sample has the output's tokens (its margins count)
        if output is None:
            output = self._outputs[text] = _Output(tokens, keys)
        elif identity is not None and identity != output.identity:
            # The same text tokenized differently: keep the smallest, whatever the order,
            # and the margins and logprobs of its samples only (positions mean nothing
            # across tokenizations).
            current = output.identity
            if current is None or identity < current:
                output.tokens, output.keys = tokens, keys
                output.margins = None
                output.logprobs = None
            else:
                own_tokens = False
            new_tokens = True
        output.count += 1
        # 0.0 is the Sample default (not measured); comparisons also drop NaN and inf
        if 0.0 < sample.latency_s < math.inf:
            if output.latency is None:
                output.latency = LatencySketch()
            output.latency.add(sample.latency_s)
        ttft = sample.ttft_s
        if ttft is not None and 0.0 <= ttft < math.inf:
            if output.ttft is None:
                output.ttft = LatencySketch()
            output.ttft.add(ttft)
        if sample.finish_reason is not None:
            self._finish[sample.finish_reason] += 1
        self._fingerprints[sample.system_fingerprint or _NONE] += 1
        if tokens is None:
            self._provider_tokens = False
            return
        if new_tokens:  # O(prefix) in Python, but once per distinct token sequence
            assert identity is not None
            self._shrink_prefix(identity)
        prefix = len(self._prefix or ())
        if sample.token_logprobs is not None:
            chosen = _as_floats(sample.token_logprobs)
            if own_tokens:
                if output.logprobs is None:
                    output.logprobs = _Range(chosen)
                else:
                    output.logprobs.add(chosen)
            values = chosen[:prefix]
            if self._noise is None:
                self._noise = _PositionStats(values)
            self._noise.add(values)
        if sample.top_logprobs is not None and own_tokens:
            # every position: the tree's branch points lie anywhere along the output
            output.add_margins(fixed_margins(sample.top_logprobs))

    def _shrink_prefix(self, tokens: list[str]) -> None:
        if self._prefix is None:
            self._prefix = list(tokens)
            return
        length = m.pair_prefix_length(self._prefix, tokens)
        if length < len(self._prefix):
            del self._prefix[length:]
            if self._noise is not None:
                self._noise.truncate(length)

    def _add_to_groups(self, item: str | Sample, keys: dict[str, str]) -> None:
        assert self._single is not None
        for dimension, key in keys.items():
            groups = self._groups.get(dimension)
            if groups is None:
                first = self._single.setdefault(dimension, key)
                if first == key:
                    continue
                # a second key: everything seen before this item is the first group
                groups = self._groups[dimension] = {first: self._clone_for(dimension)}
            group = groups.get(key)
            if group is None:
                group = groups[key] = VarianceCollector(grouped=False)
            if isinstance(item, str):
                group._add_text(item)
            else:
                group._add(item)

    def _clone_for(self, dimension: str) -> VarianceCollector:
        """This collector as the one group of ``dimension`` seen so far."""
        clone = self._clone_ungrouped()
        if dimension == "fingerprint":
            clone._failures = Counter()  # failures join no fingerprint group
            clone._messages = FailureMessages()
        return clone

    def _clone_ungrouped(self) -> VarianceCollector:
        clone = VarianceCollector(grouped=False)
        clone._outputs = {t: _copy_output(o) for t, o in self._outputs.items()}
        clone._provider_tokens = self._provider_tokens
        clone._failures = self._failures.copy()
        clone._messages = self._messages.copy()
        clone._finish = self._finish.copy()
        clone._fingerprints = self._fingerprints.copy()
        clone._prefix = None if self._prefix is None else list(self._prefix)
        clone._noise = copy.deepcopy(self._noise)
        return clone

    def output_counts(self) -> dict[str, int]:
        """How many ok samples gave each distinct output (the counts every metric uses)."""
        return {text: output.count for text, output in self._outputs.items()}

    def tokens_of(self, text: str) -> list[str] | None:
        """The provider's tokens of a distinct output (the smallest tokenization seen);
        None when its samples carried none or it was never seen."""
        output = self._outputs.get(text)
        return None if output is None or output.tokens is None else list(output.tokens)

    # -- combining ----------------------------------------------------------------------

    def _materialised(self, dimension: str) -> dict[str, VarianceCollector]:
        if dimension in self._groups:
            return self._groups[dimension]
        key = (self._single or {}).get(dimension)
        return {} if key is None else {key: self._clone_for(dimension)}

    def merge(self, other: VarianceCollector) -> VarianceCollector:
        """A new collector equal to one that saw both collectors' samples."""
        if (self._single is None) != (other._single is None):
            raise ValueError("cannot merge a grouped collector with an ungrouped one")
        merged = VarianceCollector(grouped=self._single is not None)
        merged._outputs = {t: _copy_output(o) for t, o in self._outputs.items()}
        for text, theirs in other._outputs.items():
            mine = merged._outputs.get(text)
            if mine is None:
                merged._outputs[text] = _copy_output(theirs)
                continue
            mine.count += theirs.count
            ours, their_identity = mine.identity, theirs.identity
            if their_identity is not None and (ours is None or their_identity < ours):
                mine.tokens, mine.keys = theirs.tokens, theirs.keys
                mine.margins = None
                mine.add_margin_sums(theirs.margins)
                mine.logprobs = copy.deepcopy(theirs.logprobs)
            elif their_identity == ours:
                mine.add_margin_sums(theirs.margins)
                if theirs.logprobs is not None:
                    mine.logprobs = (copy.deepcopy(theirs.logprobs) if mine.logprobs is None
                                     else mine.logprobs.merged(theirs.logprobs))
            mine.latency = _combined((mine.latency, theirs.latency))
            mine.ttft = _combined((mine.ttft, theirs.ttft))
        merged._provider_tokens = self._provider_tokens and other._provider_tokens
        merged._failures = self._failures + other._failures
        merged._messages = self._messages.merged(other._messages)
        merged._finish = self._finish + other._finish
        merged._fingerprints = self._fingerprints + other._fingerprints
        if self._prefix is None or other._prefix is None:
            merged._prefix = list(self._prefix or other._prefix or []) if (
                self._prefix is not None or other._prefix is not None) else None
        else:
            length = m.pair_prefix_length(self._prefix, other._prefix)
            merged._prefix = self._prefix[:length]
        if self._noise is None or other._noise is None:
            merged._noise = copy.deepcopy(self._noise or other._noise)
        else:
            merged._noise = self._noise.merged(other._noise)
        if merged._noise is not None and merged._prefix is not None:
            merged._noise.truncate(len(merged._prefix))
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

    def report(self, *, bootstrap: int = 0, seed: int = 0, level: float = 0.95,
               group_by: Iterable[str] = (), tree: bool = True) -> VarianceReport:
        """The report of everything added so far.

        ``bootstrap`` > 0 adds percentile-bootstrap intervals (at ``level``) for the
        entropy and the agreement rate from that many resamples, seeded by ``seed``.
        Dimensions named in ``group_by`` get their per-group reports even when there is
        only one group (otherwise a dimension needs two). ``tree=False`` leaves out the
        divergence tree (``report.tree`` is None), for callers that need only numbers;
        the per-request reports of ``by_request`` never carry one (a suite may have
        100,000 requests: each entry's own report has it).
        """
        keyed_by = {dimension: self._materialised(dimension)
                    for dimension in {*self._groups, *group_by}}
        groups = {dimension: {key: c.report(bootstrap=bootstrap, seed=seed, level=level,
                                            tree=tree and dimension != "request")
                              for key, c in sorted(keyed.items())}
                  for dimension, keyed in keyed_by.items()}
        return self._report(bootstrap, seed, level, groups, tree)

    def _report(self, bootstrap: int, seed: int, level: float,
                groups: dict[str, dict[str, VarianceReport]], tree: bool) -> VarianceReport:
        distinct = self._distinct()
        texts, counts = distinct.texts, distinct.counts
        outputs = self._outputs
        n_ok = sum(counts)
        n_failed = sum(self._failures.values())
        unique = len(texts)
        provider = distinct.provider
        # texts are sorted, so the first of the largest counts is the smallest text
        by_count = np.argsort(-np.asarray(counts, dtype=np.int64), kind="stable")
        mode_index = int(by_count[0]) if unique else None
        shape = distinct.metrics(mode_index)

        noise_mean = noise_max = None
        if provider and self._noise is not None:
            std = self._noise.std()
            std = std[~np.isnan(std)]
            if std.size:
                noise_mean, noise_max = float(std.mean()), float(std.max())

        entropy_ci = agreement_ci = None
        if bootstrap > 0 and n_ok >= 2:
            entropy_ci = _interval(counts, m.entropy_rows, bootstrap, seed, level)
            agreement_ci = _interval(counts, m.agreement_rows, bootstrap, seed, level)

        top = by_count[:_TOP_OUTPUTS].tolist()
        d_ci = est.disagreement_interval(counts, level)
        deviation = None
        if n_ok and mode_index is not None:
            differ = n_ok - counts[mode_index]
            low, high, method = est.rate_interval(differ, n_ok, level)
            deviation = Proportion(
                count=differ, n=n_ok, rate=differ / n_ok, reference="the most common output",
                interval=ConfidenceInterval(low=low, high=high, level=level, method=method))
        return VarianceReport(
            n_samples=n_ok + n_failed,
            n_ok=n_ok,
            n_failed=n_failed,
            failures=dict(sorted(self._failures.items())),
            failure_messages=self._messages.top(),
            unique_count=unique,
            mode_count=counts[mode_index] if mode_index is not None else 0,
            mode_fraction=counts[mode_index] / n_ok if mode_index is not None else None,
            all_agree=unique == 1,
            agreement_rate=m.agreement_rate(counts),
            entropy_bits=m.entropy_bits(counts),
            entropy_mm_bits=m.entropy_mm_bits(counts),
            normalized_entropy=m.normalized_entropy(counts),
            common_prefix_chars=shape.common_prefix_chars,
            common_prefix_tokens=shape.common_prefix_tokens,
            tokenization="provider" if provider else "words",
            divergence_from_mode_chars=shape.divergence_from_mode_chars,
            divergence_from_mode_tokens=shape.divergence_from_mode_tokens,
            per_position_entropy=shape.per_position_entropy,
            length_mean_tokens=shape.length_mean_tokens,
            length_std_tokens=shape.length_std_tokens,
            logprob_noise_mean=noise_mean,
            logprob_noise_max=noise_max,
            divergence_margin=shape.divergence_margin,
            finish_reasons=dict(sorted(self._finish.items())),
            system_fingerprints=dict(sorted(self._fingerprints.items())),
            top_outputs=[OutputCount(text=texts[i], count=counts[i],
                                     latency=_latency_stats(outputs[texts[i]].latency),
                                     ttft=_latency_stats(outputs[texts[i]].ttft))
                         for i in top],
            entropy_bits_ci=entropy_ci,
            agreement_rate_ci=agreement_ci,
            disagreement_rate=est.disagreement_rate(counts),
            disagreement_rate_ci=None if d_ci is None else ConfidenceInterval(
                low=d_ci[0], high=d_ci[1], level=level, method=d_ci[2]),
            coverage=est.good_coverage(counts),
            chao1=est.chao1(counts),
            deviation=deviation,
            logprobs=_logprob_agreement([outputs[t] for t in texts],
                                        shape.common_prefix_tokens
                                        if shape.common_prefix_tokens is not None
                                        else int(distinct.rows.lengths[0]) if texts else 0),
            latency=_latency_stats(_combined(distinct.latencies)),
            ttft=_latency_stats(_combined(distinct.ttfts)),
            by_fingerprint=groups.get("fingerprint", {}),
            by_endpoint=groups.get("endpoint", {}),
            by_condition=groups.get("condition", {}),
            by_request=groups.get("request", {}),
            tree=distinct.tree(None, DEFAULT_MAX_LEAVES) if tree else None,
        )

    def _distinct(self) -> DistinctOutputs:
        """The distinct outputs in a canonical order (sorted texts), so that floating-point
        sums do not depend on arrival order."""
        outputs = self._outputs
        texts = sorted(outputs)
        entries = [outputs[t] for t in texts]
        provider = self._provider_tokens and bool(entries) and all(
            e.tokens is not None for e in entries)
        if provider:
            distinct = DistinctOutputs(texts, [e.count for e in entries], provider,
                                       [e.tokens for e in entries],
                                       [e.margins for e in entries],
                                       [e.identity for e in entries])
        else:  # words: tokens, margins and ids are not read (100,000 outputs: ~30 ms)
            none: list[None] = [None] * len(entries)
            distinct = DistinctOutputs(texts, [e.count for e in entries], provider, none,
                                       none)
        distinct.latencies = [e.latency for e in entries if e.latency is not None]
        distinct.ttfts = [e.ttft for e in entries if e.ttft is not None]
        return distinct

    @property
    def n_ok(self) -> int:
        """Ok samples (and plain strings) added so far."""
        return sum(o.count for o in self._outputs.values())

    @property
    def distinct(self) -> int:
        """Distinct outputs added so far."""
        return len(self._outputs)

    def tree(self, *, min_count: int | None = None,
             max_leaves: int = DEFAULT_MAX_LEAVES) -> DivergenceTree:
        """The divergence tree of the ok samples so far (see ``DivergenceTreeCollector``)."""
        return self._distinct().tree(min_count, max_leaves)


def _keys(sample: Sample) -> dict[str, str]:
    keys = {"endpoint": sample.endpoint or _NONE, "condition": sample.condition or _NONE,
            "request": sample.request_id or _NONE}
    if sample.error is None:  # a failure has no fingerprint: it joins no fingerprint group
        keys["fingerprint"] = sample.system_fingerprint or _NONE
    return keys


def _copy_output(output: _Output) -> _Output:
    clone = _Output(output.tokens, output.keys)
    clone.count = output.count
    clone.add_margin_sums(output.margins)
    clone.logprobs = copy.deepcopy(output.logprobs)
    clone.latency = _combined((output.latency,))
    clone.ttft = _combined((output.ttft,))
    return clone


def _combined(sketches: Iterable[LatencySketch | None]) -> LatencySketch | None:
    """A new sketch of all the given sketches' values; None when none is given."""
    total: LatencySketch | None = None
    for sketch in sketches:
        if sketch is not None:
            if total is None:
                total = sketch.copy()
            else:
                total.merge(sketch)
    return total


def _first_diff(low: FloatArray, high: FloatArray) -> tuple[int | None, float]:
    """(first position where low != high, largest high - low); NaN positions are skipped."""
    gap = np.where(np.isnan(low) | np.isnan(high), 0.0, high - low)
    differ = np.flatnonzero(gap != 0)
    return (int(differ[0]) if differ.size else None), float(gap.max(initial=0.0))


def _logprob_agreement(outputs: list[_Output], prefix: int) -> LogprobAgreement | None:
    """Bitwise comparison of chosen-token logprobs within each output and in the prefix
    every output shares (of ``prefix`` tokens); None when no sample had logprobs."""
    ranges = [o.logprobs for o in outputs if o.logprobs is not None]
    if not ranges:
        return None
    repeated = [r for r in ranges if r.samples >= 2]
    first_within: int | None = None
    max_within = 0.0
    for r in repeated:
        first, gap = _first_diff(r.low, r.high)
        max_within = max(max_within, gap)
        if first is not None and (first_within is None or first < first_within):
            first_within = first
    shared = min([prefix, *(r.low.size for r in ranges)])
    low = np.fmin.reduce([r.low[:shared] for r in ranges])
    high = np.fmax.reduce([r.high[:shared] for r in ranges])
    first_prefix, max_prefix = _first_diff(low, high)
    samples = sum(r.samples for r in ranges)
    return LogprobAgreement(
        samples=samples, outputs_compared=len(repeated),
        identical_within_outputs=(first_within is None) if repeated else None,
        max_abs_diff_within_outputs=max_within, first_diff_within_outputs=first_within,
        prefix_tokens=shared, identical_in_prefix=(first_prefix is None) if samples >= 2
        else None, max_abs_diff_in_prefix=max_prefix, first_diff_in_prefix=first_prefix)


def _latency_stats(sketch: LatencySketch | None) -> LatencyStats | None:
    if sketch is None:
        return None
    return LatencyStats(count=sketch.count, min_s=sketch.min, median_s=sketch.quantile(0.5),
                        p90_s=sketch.quantile(0.9), max_s=sketch.max)


def _merge_optional(a: VarianceCollector | None, b: VarianceCollector | None
                    ) -> VarianceCollector:
    if a is not None and b is not None:
        return a.merge(b)
    either = a if a is not None else b
    assert either is not None
    return either._clone_ungrouped()


def _interval(counts: Sequence[int], statistic: m.RowStatistic, resamples: int, seed: int,
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
