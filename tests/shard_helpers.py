"""What the shard tests share: a suite, and "equal" for runs made at different times.

Two runs of the same study never agree on how long each request took, nor on the ids a
server makes up per response; everything else — every output, count, statistic, tree node
and column — must be equal. ``without_timing`` drops exactly those fields.
"""

from __future__ import annotations

from typing import Any

import llmvariance as lv

TIMING = frozenset({"latency", "ttft", "latency_s", "ttft_s", "itl_mean_s", "itl_max_s",
                    "response_id", "fetched_at"})
"""Fields that differ between two runs of one study: durations, per-response ids and when
the server was asked what it is."""


def without_timing(value: Any) -> Any:
    """``value`` (a model dump) with every ``TIMING`` key removed, at any depth."""
    if isinstance(value, dict):
        return {k: without_timing(v) for k, v in value.items() if k not in TIMING}
    if isinstance(value, list):
        return [without_timing(v) for v in value]
    return value


def suite(prompts: int, model: str = "dense", max_tokens: int = 8
          ) -> list[tuple[str, lv.ChatRequest]]:
    return [(f"q{i}", lv.ChatRequest(model=model, max_tokens=max_tokens, messages=[
        {"role": "user", "content": f"Question {i}: tell me about number {i * 7}."}]))
        for i in range(prompts)]


def frame_rows(frame: Any) -> list[tuple[Any, ...]]:
    """A DataFrame's rows without timing columns, in a fixed order (sorted)."""
    import pandas as pd

    kept = frame[[c for c in frame.columns if c not in TIMING]]
    rows = [tuple(None if pd.isna(v) else v for v in row)
            for row in kept.astype(object).itertuples(index=False)]
    return sorted(rows, key=repr)
