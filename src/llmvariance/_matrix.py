"""The server-configuration matrix: the batch-effect experiment on each configuration.

For each configuration (``parallel=1``, ``parallel=8,kv_unified``, ...) the engine is
started, ``batch_effect`` runs its conditions against it, and the engine is stopped:
one table of configuration by condition, and a verdict per configuration. Each row's
p-value (the smallest of its conditions', Holm-adjusted within the row) is adjusted again
by Holm across the configurations, and a row that is batch-dependent within itself but not
after that says so. With ``output=`` the result is written after every configuration, and a
rerun with the same request skips the configurations already there.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, ValidationError

from ._analysis.compare import Comparison, p_text
from ._analysis.report import LogprobAgreement, VarianceReport
from ._analysis.sequential import EarlyStop
from ._analysis.stats import holm
from ._client.endpoint import Endpoint
from ._client.retry import RetryPolicy
from ._client.transport import Timeouts
from ._errors import ConfigError
from ._experiment import VerdictKind, batch_effect
from ._request import Request

__all__ = ["MatrixResult", "MatrixRow", "parse_config", "server_matrix"]

ServerFactory = Callable[..., contextlib.AbstractAsyncContextManager[str]]
"""Called with a configuration's settings as keywords; yields the server's base URL."""


class MatrixRow(BaseModel):
    """One configuration: its settings, each condition's report, and the verdict."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    config: str
    settings: dict[str, Any]
    conditions: dict[str, VarianceReport]
    verdict: str
    verdict_kind: VerdictKind
    comparisons: dict[str, Comparison] = {}
    """Each condition against the control, as in ``BatchEffectResult``."""
    adjusted_pvalues: dict[str, float] = {}
    """Holm-adjusted across this row's conditions."""
    findings: list[str] = []
    pvalue: float | None = None
    """The smallest of ``adjusted_pvalues``: the evidence that this configuration is
    batch-dependent."""
    matrix_pvalue: float | None = None
    """``pvalue`` adjusted again by Holm across the matrix's configurations."""
    logprobs: LogprobAgreement | None = None
    """The numbers under the text over the row's samples, when logprobs were asked for."""
    early_stop: EarlyStop | None = None
    """With ``early_stop=True``: the row's looks and the requests it saved (its p-values are
    then repeated p-values, valid for Holm across configurations as they are)."""


class MatrixResult(BaseModel):
    """Every configuration's row, in the order they ran."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    request: Request
    n: int
    conditions: list[str]
    rows: list[MatrixRow]

    def to_text(self) -> str:
        """The table (configuration by condition) and each configuration's verdict."""
        width = max([len("configuration"), *(len(r.config) for r in self.rows)])
        lines = [f"{'configuration':<{width}}  {'condition':<12} {'distinct':>9} "
                 f"{'D [95% CI]':<22} {'p (Holm)':>10}  first divergence"]
        for row in self.rows:
            for i, (name, report) in enumerate(row.conditions.items()):
                first = ("-" if report.common_prefix_tokens is None
                         else f"token {report.common_prefix_tokens} ({report.tokenization})")
                d = ("n/a" if report.disagreement_rate is None else
                     f"{report.disagreement_rate:.3f} {report.disagreement_rate_ci or ''}")
                p = (p_text(row.adjusted_pvalues[name]) if name in row.adjusted_pvalues
                     else "-")
                failed = f"  ({report.n_failed} failed)" if report.n_failed else ""
                label = row.config if i == 0 else ""
                lines.append(f"{label:<{width}}  {name:<12} "
                             f"{f'{report.unique_count}/{report.n_ok}':>9} {d:<22} {p:>10}  "
                             f"{first}{failed}")
        lines.append("")
        for row in self.rows:
            lines.append(f"{row.config}: {row.verdict_kind}: {row.verdict}")
            lines.extend(f"  finding: {f}" for f in row.findings)
            if row.logprobs is not None:
                lines.append(f"  logprobs: {row.logprobs.describe()}")
        return "\n".join(lines)


def parse_config(text: str) -> dict[str, Any]:
    """``"parallel=8,kv_unified"`` → ``{"parallel": 8, "kv_unified": True}``.

    A bare name is True; values read as int, float, true/false, else text.
    """
    settings: dict[str, Any] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        key, sep, raw = part.partition("=")
        key = key.strip()
        if not key.isidentifier():
            raise ConfigError("config", f"{part!r} in {text!r} is not name or name=value")
        settings[key] = _value(raw.strip()) if sep else True
    if not settings:
        raise ConfigError("config", f"{text!r} names no setting")
    return settings


def _value(raw: str) -> Any:
    if raw.lower() in ("true", "false"):
        return raw.lower() == "true"
    for kind in (int, float):
        with contextlib.suppress(ValueError):
            return kind(raw)
    return raw


def _label(settings: Mapping[str, Any]) -> str:
    return ",".join(k if v is True else f"{k}={v}" for k, v in settings.items())


async def server_matrix(
    request: Request,
    n: int,
    configs: Sequence[str | Mapping[str, Any]],
    *,
    server: ServerFactory,
    conditions: Sequence[str] = ("sequential", "burst", "loaded"),
    background_concurrency: int = 8,
    blocks: int | None = None,
    alpha: float = 0.05,
    seed: int = 0,
    retry: RetryPolicy | None = None,
    timeouts: Timeouts | None = None,
    output: str | os.PathLike[str] | None = None,
    on_row: Callable[[MatrixRow], Any] | None = None,
    early_stop: bool = False,
) -> MatrixResult:
    """Run ``batch_effect(request, n, conditions=..., blocks=..., alpha=...)`` on each server
    configuration, then adjust the rows' p-values by Holm across configurations.

    ``server(**settings)`` starts the engine for one configuration and yields its base URL
    (e.g. ``functools.partial(LlamaCppServer, "model.gguf")``); ``configs`` are settings
    dicts or strings like ``"parallel=8,kv_unified"``. ``output`` (JSON) is rewritten
    after each configuration, so an interrupted matrix keeps what it finished, and a
    rerun with the same request, n and conditions skips the configurations it has.
    ``on_row`` is called with each row as soon as it is done. ``early_stop=True`` stops each
    configuration's experiment as soon as its verdict is decided (``batch_effect``'s
    ``early_stop``); rows a rerun finds in ``output`` are kept as they were run.
    """
    ConfigError.check_int("n", n, 2, " to compare outputs")
    if not configs:
        raise ConfigError("configs", "name at least one server configuration")
    settings_list = [parse_config(c) if isinstance(c, str) else dict(c) for c in configs]
    labels = [_label(s) for s in settings_list]
    if len(set(labels)) != len(labels):
        raise ConfigError("configs", f"a configuration is repeated: {labels}")
    path = Path(output) if output is not None else None
    done = _finished_rows(path, request, n, list(conditions)) if path else {}
    if path is not None:  # a path that cannot be written fails before any server starts
        _write_atomically(path, MatrixResult(
            request=request, n=n, conditions=list(conditions),
            rows=[done[label] for label in labels if label in done]))
    rows: list[MatrixRow] = []
    for label, settings in zip(labels, settings_list, strict=True):
        row = done.get(label)
        if row is None:
            async with server(**settings) as base_url:
                result = await batch_effect(
                    request, n, endpoint=Endpoint(base_url=base_url, api_key=None,
                                                  name=label),
                    conditions=list(conditions), background_concurrency=background_concurrency,
                    blocks=blocks, alpha=alpha, seed=seed, retry=retry, timeouts=timeouts,
                    early_stop=early_stop)
            row = MatrixRow(config=label, settings=settings, conditions=result.conditions,
                            verdict=result.verdict, verdict_kind=result.verdict_kind,
                            comparisons=result.comparisons,
                            adjusted_pvalues=result.adjusted_pvalues,
                            findings=result.findings, pvalue=result.pvalue,
                            logprobs=result.logprobs, early_stop=result.early_stop)
        rows.append(row)
        result_so_far = MatrixResult(request=request, n=n, conditions=list(conditions),
                                     rows=rows)
        if path is not None:
            _write_atomically(path, result_so_far)
        if on_row is not None:
            on_row(row)
    final = MatrixResult(request=request, n=n, conditions=list(conditions),
                         rows=across_configurations(rows, alpha))
    if path is not None:
        _write_atomically(path, final)
    return final


def across_configurations(rows: Sequence[MatrixRow], alpha: float) -> list[MatrixRow]:
    """The rows with ``matrix_pvalue`` set (Holm across the rows that have a p-value); a row
    batch-dependent within itself but not across the matrix becomes ``inconclusive``."""
    tested = [i for i, row in enumerate(rows) if row.pvalue is not None]
    adjusted = holm([rows[i].pvalue for i in tested])  # type: ignore[misc]
    out = list(rows)
    for i, p in zip(tested, adjusted, strict=True):
        row = rows[i]
        update: dict[str, Any] = {"matrix_pvalue": p}
        if row.verdict_kind == "batch_dependent" and p >= alpha:
            update["verdict_kind"] = "inconclusive"
            update["verdict"] = (f"{row.verdict}; but not after Holm's correction across the "
                                 f"{len(tested)} configurations ({p_text(p)})")
        out[i] = row.model_copy(update=update)
    return out


def _finished_rows(path: Path, request: Request, n: int, conditions: list[str]
                   ) -> dict[str, MatrixRow]:
    """The rows of an earlier run of the same matrix at ``path``; a different one is refused."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ConfigError("output", f"cannot read {path}: {exc.strerror}") from None
    try:
        earlier = MatrixResult.model_validate_json(data)
    except ValidationError:
        raise ConfigError("output", f"{path} is not a matrix result; choose another path"
                          ) from None
    if earlier.request != request or earlier.n != n or earlier.conditions != conditions:
        raise ConfigError("output", f"{path} holds a matrix of another request, n or "
                          "conditions; choose another path")
    return {row.config: row for row in earlier.rows}


def _write_atomically(path: Path, result: MatrixResult) -> None:
    partial = path.with_name(path.name + ".partial")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial.write_bytes(orjson.dumps(result.model_dump(mode="json"),
                                         option=orjson.OPT_INDENT_2))
        partial.replace(path)
    except OSError as exc:
        raise ConfigError("output", f"cannot write {path}: {exc.strerror}") from None
