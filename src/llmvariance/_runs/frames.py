"""Samples as a pandas DataFrame: one row per sample, typed columns (the ``pandas`` extra).

Text columns are pandas' ``string`` dtype, counts that may be missing ``Int64``, times
``float64`` (NaN when not measured), ``ok`` a ``bool``. ``tokens=True`` adds the tokens
and their logprobs as list columns.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from .._sample import Sample

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["COLUMNS", "samples_frame"]

INSTALL_HINT = "DataFrames need pandas: pip install pandas"

COLUMNS: dict[str, str] = {
    "index": "int64", "ok": "bool", "text": "string", "n_tokens": "Int64",
    "finish_reason": "string", "system_fingerprint": "string", "model": "string",
    "endpoint": "string", "condition": "string", "block": "Int64", "latency_s": "float64",
    "ttft_s": "float64", "itl_mean_s": "float64", "itl_max_s": "float64",
    "attempts": "int64", "prompt_tokens": "Int64", "completion_tokens": "Int64",
    "total_tokens": "Int64", "cache_read_tokens": "Int64", "cache_write_tokens": "Int64",
    "response_id": "string", "error_kind": "string", "error_status": "Int64",
    "error_message": "string",
}
"""Column name → pandas dtype, in order."""

_USAGE = ("prompt_tokens", "completion_tokens", "total_tokens", "cache_read_tokens",
          "cache_write_tokens")


def _row(sample: Sample) -> list[Any]:
    usage, error = sample.usage, sample.error
    return [
        sample.index, error is None, sample.text,
        None if sample.tokens is None else len(sample.tokens), sample.finish_reason,
        sample.system_fingerprint, sample.model, sample.endpoint, sample.condition,
        sample.block, sample.latency_s, sample.ttft_s, sample.itl_mean_s, sample.itl_max_s,
        sample.attempts, *(None if usage is None else getattr(usage, name) for name in _USAGE),
        sample.response_id, None if error is None else error.kind,
        None if error is None else error.status, None if error is None else error.message,
    ]


def samples_frame(samples: Iterable[Sample], *, tokens: bool = False,
                  sort: bool = False) -> pd.DataFrame:
    """One row per sample with the columns of ``COLUMNS`` (and ``tokens``,
    ``token_logprobs`` when ``tokens``), sorted by index when ``sort``."""
    try:
        import pandas as pd
    except ImportError as exc:
        raise ImportError(INSTALL_HINT) from exc
    columns: list[list[Any]] = [[] for _ in COLUMNS]
    extra: tuple[list[Any], list[Any]] = ([], [])
    for sample in samples:
        for column, value in zip(columns, _row(sample), strict=True):
            column.append(value)
        if tokens:
            extra[0].append(sample.tokens)
            extra[1].append(sample.token_logprobs)
    data: dict[str, Any] = dict(zip(COLUMNS, columns, strict=True))
    if tokens:
        data["tokens"], data["token_logprobs"] = extra
    frame = pd.DataFrame(data).astype(COLUMNS)
    if sort:
        frame = frame.sort_values("index", ignore_index=True)
    return frame
