"""The variance report: what a run's outputs say about (non-)determinism."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

__all__ = ["OutputCount", "VarianceReport"]


class OutputCount(BaseModel):
    """One distinct output and how many samples produced it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    text: str
    count: int


class VarianceReport(BaseModel):
    """How N answers to one identical request differ.

    Metrics are over the ``n_ok`` successful samples; ``n_failed`` are counted by error
    kind in ``failures``. Definitions (``c_k`` = count of distinct output k, n = n_ok):

    - ``unique_count``: number of distinct output texts; ``mode_count``: the largest c_k;
      ``mode_fraction`` = mode_count / n.
    - ``all_agree``: unique_count == 1.
    - ``agreement_rate``: probability two different samples agree,
      sum c_k(c_k-1) / (n(n-1)); None when n < 2.
    - ``entropy_bits``: -sum p_k log2 p_k with p_k = c_k / n.
    - ``common_prefix_chars`` / ``common_prefix_tokens``: length of the prefix shared by
      all outputs, i.e. the 0-based position of the first divergence; None when all agree.
      Tokens are the provider's when every sample has them, else words
      (``tokenization`` says which).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

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
    common_prefix_chars: int | None
    common_prefix_tokens: int | None
    tokenization: Literal["provider", "words"]
    top_outputs: list[OutputCount]
    """The most common outputs, most frequent first (at most five)."""

    def to_text(self) -> str:
        """A human-readable summary for a terminal."""
        def fmt(value: float | None, spec: str = ".3f") -> str:
            return "n/a" if value is None else format(value, spec)

        lines = [
            f"samples          {self.n_samples} ({self.n_ok} ok, {self.n_failed} failed)",
            f"distinct outputs {self.unique_count}"
            + ("  (all agree)" if self.all_agree else ""),
            f"most common      {self.mode_count} of {self.n_ok} ({fmt(self.mode_fraction, '.1%')})",
            f"agreement rate   {fmt(self.agreement_rate)}",
            f"entropy          {self.entropy_bits:.3f} bits",
            "first divergence "
            + ("none" if self.common_prefix_chars is None else
               f"char {self.common_prefix_chars}, {self.tokenization} token "
               f"{self.common_prefix_tokens} (0-based)"),
        ]
        if self.failures:
            kinds = ", ".join(f"{kind} {count}" for kind, count in sorted(self.failures.items()))
            lines.append(f"failures         {kinds}")
        for rank, output in enumerate(self.top_outputs, 1):
            preview = output.text[:70].replace("\n", " ")
            ellipsis = "..." if len(output.text) > 70 else ""
            lines.append(f"  #{rank} x{output.count:<5} {preview!r}{ellipsis}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.to_text()
