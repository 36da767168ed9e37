"""Collectors: consume samples as they arrive, keep one entry per distinct output.

Memory grows with the number of distinct outputs, not with N. Two collectors merge into
the collector of their union, so runs split across processes combine exactly.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from ._metrics import agreement_rate, common_prefix_length, entropy_bits, word_tokens
from ._report import OutputCount, VarianceReport
from ._sample import Sample

__all__ = ["VarianceCollector", "analyze"]

_TOP_OUTPUTS = 5


class VarianceCollector:
    """Accumulates output counts (and each distinct output's tokens) for a report."""

    __slots__ = ("_counts", "_failures", "_provider_tokens", "_tokens")

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}
        self._tokens: dict[str, tuple[str, ...]] = {}
        self._provider_tokens = True
        self._failures: Counter[str] = Counter()

    def add(self, sample: Sample) -> None:
        if sample.error is not None:
            self._failures[sample.error.kind] += 1
            return
        text = sample.text or ""
        if text in self._counts:
            self._counts[text] += 1
            return
        self._counts[text] = 1
        if sample.tokens is None:
            self._provider_tokens = False
        else:
            self._tokens[text] = tuple(sample.tokens)

    def add_text(self, text: str) -> None:
        """Count a plain string output (which carries no provider tokens)."""
        self._provider_tokens = False
        self._counts[text] = self._counts.get(text, 0) + 1

    def update(self, items: Iterable[str | Sample]) -> None:
        for item in items:
            if isinstance(item, str):
                self.add_text(item)
            else:
                self.add(item)

    def merge(self, other: VarianceCollector) -> VarianceCollector:
        """A new collector equal to one that saw both collectors' samples."""
        merged = VarianceCollector()
        merged._counts = dict(self._counts)
        for text, count in other._counts.items():
            merged._counts[text] = merged._counts.get(text, 0) + count
        merged._tokens = {**other._tokens, **self._tokens}
        merged._provider_tokens = self._provider_tokens and other._provider_tokens
        merged._failures = self._failures + other._failures
        return merged

    def report(self) -> VarianceReport:
        counts = list(self._counts.values())
        n_ok = sum(counts)
        n_failed = sum(self._failures.values())
        unique = len(counts)
        mode = max(counts, default=0)
        use_provider = self._provider_tokens and unique > 0
        prefix_chars = prefix_tokens = None
        if unique > 1:
            prefix_chars = common_prefix_length(self._counts)
            if use_provider:
                prefix_tokens = common_prefix_length(self._tokens.values())
            else:
                prefix_tokens = common_prefix_length(word_tokens(t) for t in self._counts)
        top = sorted(self._counts.items(), key=lambda item: -item[1])[:_TOP_OUTPUTS]
        return VarianceReport(
            n_samples=n_ok + n_failed,
            n_ok=n_ok,
            n_failed=n_failed,
            failures=dict(self._failures),
            unique_count=unique,
            mode_count=mode,
            mode_fraction=mode / n_ok if n_ok else None,
            all_agree=unique == 1,
            agreement_rate=agreement_rate(counts),
            entropy_bits=entropy_bits(counts),
            common_prefix_chars=prefix_chars,
            common_prefix_tokens=prefix_tokens,
            tokenization="provider" if use_provider else "words",
            top_outputs=[OutputCount(text=t, count=c) for t, c in top],
        )


def analyze(items: Iterable[str | Sample]) -> VarianceReport:
    """The ``VarianceReport`` of outputs a user already has: strings or ``Sample``s."""
    collector = VarianceCollector()
    collector.update(items)
    return collector.report()
