"""Building the divergence tree from samples: a mergeable collector of distinct outputs.

``DivergenceTreeCollector`` keeps what the report's collector keeps per distinct output
(its tokens, its count, and per position the summed top-1 minus top-2 logprob margin of
its samples, in fixed point), so its memory grows with the distinct outputs, not with N,
two collectors merge exactly, and its tree is the one on every ``VarianceReport``.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..._errors import ConfigError
from ..._sample import Sample
from .build import DEFAULT_MAX_LEAVES
from .model import DivergenceTree

__all__ = ["DEFAULT_MAX_LEAVES", "DivergenceTreeCollector", "divergence_tree"]


class DivergenceTreeCollector:
    """Consumes samples (or plain strings) one at a time; ``tree()`` draws their tree.

    Keeps one entry per distinct output, so memory grows with the distinct outputs and
    their length, not with N; ``a.merge(b)`` equals a collector that saw both, exactly.
    Failed samples are not part of the tree.
    """

    __slots__ = ("_outputs",)

    def __init__(self) -> None:
        # imported here: the report's collector imports this package, and a module that
        # imports the report first would otherwise close the circle half-initialised
        from ..collect import VarianceCollector

        self._outputs = VarianceCollector(grouped=False)

    def __repr__(self) -> str:
        outputs = self._outputs
        return f"<DivergenceTreeCollector samples={outputs.n_ok} distinct={outputs.distinct}>"

    def add(self, sample: Sample) -> None:
        self._outputs.add(sample)

    def add_text(self, text: str) -> None:
        """Count a plain string output (no provider tokens)."""
        self._outputs.add_text(text)

    def update(self, items: Iterable[str | Sample]) -> None:
        self._outputs.update(items)

    def merge(self, other: DivergenceTreeCollector) -> DivergenceTreeCollector:
        """A new collector equal to one that saw both collectors' samples."""
        merged = DivergenceTreeCollector()
        merged._outputs = self._outputs.merge(other._outputs)
        return merged

    def tree(self, *, min_count: int | None = None,
             max_leaves: int = DEFAULT_MAX_LEAVES) -> DivergenceTree:
        """The tree of everything added so far.

        Alternatives with fewer than ``min_count`` samples are pruned; without it, the
        smallest ``min_count`` that leaves at most ``max_leaves`` leaves is used (every
        leaf then holds at least ``min_count`` samples, so the tree has at most
        ``n / min_count`` leaves however many samples and distinct outputs there are).
        """
        if min_count is not None:
            ConfigError.check_int("min_count", min_count)
        ConfigError.check_int("max_leaves", max_leaves)
        return self._outputs.tree(min_count=min_count, max_leaves=max_leaves)


def divergence_tree(items: Iterable[str | Sample], *, min_count: int | None = None,
                    max_leaves: int = DEFAULT_MAX_LEAVES) -> DivergenceTree:
    """The divergence tree of outputs a user has: ``Sample``s or plain strings.

    Tokens are the provider's when every ok sample has them, else words. See
    ``DivergenceTreeCollector.tree`` for ``min_count`` and ``max_leaves``; with the
    defaults it equals ``lv.analyze(items).tree``.
    """
    collector = DivergenceTreeCollector()
    collector.update(items)
    return collector.tree(min_count=min_count, max_leaves=max_leaves)
