"""The server-configuration matrix: the batch-effect experiment on each configuration.

For each configuration (``parallel=1``, ``parallel=8,kv_unified``, ...) the engine is
started, ``batch_effect`` runs its conditions against it, and the engine is stopped:
one table of configuration by condition, and a verdict per configuration. Each row's
p-value (the smallest of its conditions', Holm-adjusted within the row) is adjusted again
by Holm across the configurations, and a row that is batch-dependent within itself but not
after that says so. With ``output=`` the result is written after every configuration, and a
rerun with the same request skips the configurations already there.

``shard=(k, K)`` runs configuration j only when j mod K == k (each whole, its engine
started and stopped by the shard) and writes the rows as they are, without the correction
across configurations; ``merge_matrices`` joins the K files and applies it once, over
every configuration, as one process would have.
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
from ._analysis.display import Displayed
from ._analysis.printable import printable
from ._analysis.report import LogprobAgreement, VarianceReport
from ._analysis.sequential import EarlyStop
from ._analysis.stats import holm
from ._client.endpoint import Endpoint
from ._client.retry import RetryPolicy
from ._client.transport import Timeouts
from ._errors import ConfigError
from ._experiment import VerdictKind, batch_effect
from ._request import Request
from ._runs.shard import ShardSpec, shard_of
from ._speed import Speed, measure_speed
from .engines.info import ServerInfo

__all__ = ["MatrixResult", "MatrixRow", "merge_matrices", "parse_config", "server_matrix"]

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
    server: ServerInfo | None = None
    """What the server said it is (``/props`` and ``/slots`` on llama.cpp) and the command
    line that started it."""
    speed: list[Speed] = []
    """Throughput and latency of the request at each concurrency measured (the price of
    this configuration's determinism, or of its lack)."""

    @property
    def max_disagreement(self) -> float | None:
        """The largest D of the row's conditions (None when none could be computed)."""
        values = [r.disagreement_rate for r in self.conditions.values()
                  if r.disagreement_rate is not None]
        return max(values, default=None)

    def speed_at(self, concurrency: int) -> Speed | None:
        return next((s for s in self.speed if s.concurrency == concurrency), None)


class MatrixResult(Displayed, BaseModel):
    """Every configuration's row, in the order they ran."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    request: Request
    n: int
    conditions: list[str]
    rows: list[MatrixRow]
    configs: list[str] | None = None
    """Every configuration of the matrix, in order (a shard's rows are some of them)."""
    alpha: float = 0.05
    shard: dict[str, Any] | None = None
    """A shard's file: ``{"index": k, "count": K, "partition": "configurations"}``; its
    rows are not yet corrected across configurations."""

    def _summary(self) -> str:
        verdicts = ", ".join(f"{r.config}: {r.verdict_kind}" for r in self.rows[:4])
        more = f", +{len(self.rows) - 4} more" if len(self.rows) > 4 else ""
        return (f"{self.request.model} n={self.n} configurations={len(self.rows)} "
                f"({verdicts}{more})")

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
        if any(row.speed for row in self.rows):
            lines.extend([self.price_table(), ""])
        for row in self.rows:
            lines.append(f"{row.config}: {row.verdict_kind}: {row.verdict}")
            if row.server is not None:
                lines.append(f"  server: {printable(row.server.summary())}")
            lines.extend(f"  finding: {f}" for f in row.findings)
            if row.logprobs is not None:
                lines.append(f"  logprobs: {row.logprobs.describe()}")
        return "\n".join(lines)


    def price_table(self) -> str:
        """Per configuration: its largest D, whether any condition varied significantly,
        and its throughput and latency, with the throughput as a share of the fastest."""
        levels = sorted({s.concurrency for row in self.rows for s in row.speed})
        fastest = {c: max((row.speed_at(c).tokens_per_s for row in self.rows  # type: ignore[union-attr]
                           if row.speed_at(c) is not None), default=0.0) for c in levels}
        width = max([len("configuration"), *(len(r.config) for r in self.rows)])
        head = f"{'configuration':<{width}}  {'max D':>6}  {'varies':<7}"
        for c in levels:
            head += f"  {f'tok/s @{c}':>10} {'vs best':>7}  {'median/p90 s @' + str(c):>18}"
        lines = ["the price of determinism (throughput measured in this run):", head]
        for row in self.rows:
            d = row.max_disagreement
            varies = ("yes" if row.verdict_kind in ("batch_dependent", "varies_alone")
                      else "no" if row.verdict_kind == "no_variation_observed" else "?")
            line = f"{row.config:<{width}}  {'-' if d is None else f'{d:.3f}':>6}  {varies:<7}"
            for c in levels:
                speed = row.speed_at(c)
                if speed is None:
                    line += f"  {'-':>10} {'-':>7}  {'-':>18}"
                    continue
                share = speed.tokens_per_s / fastest[c] - 1 if fastest[c] else 0.0
                median = "-" if speed.latency_median_s is None else f"{speed.latency_median_s:.2f}"
                p90 = "-" if speed.latency_p90_s is None else f"{speed.latency_p90_s:.2f}"
                line += (f"  {speed.tokens_per_s:>10.1f} {share:>+7.0%}  "
                         f"{median + ' / ' + p90:>18}")
            lines.append(line)
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
    control: str | None = None,
    speed: Sequence[int] = (1, 8),
    speed_requests: int | None = None,
    seed: int = 0,
    retry: RetryPolicy | None = None,
    timeouts: Timeouts | None = None,
    output: str | os.PathLike[str] | None = None,
    on_row: Callable[[MatrixRow], Any] | None = None,
    shard: ShardSpec | None = None,
    early_stop: bool = False,
) -> MatrixResult:
    """Run ``batch_effect(request, n, conditions=..., blocks=..., alpha=...)`` on each server
    configuration, then adjust the rows' p-values by Holm across configurations.

    ``server(**settings)`` starts the engine for one configuration and yields its base URL
    (e.g. ``functools.partial(LlamaCppServer, "model.gguf")``); ``configs`` are settings
    dicts or strings like ``"parallel=8,kv_unified"``. ``output`` (JSON) is rewritten
    after each configuration, so an interrupted matrix keeps what it finished, and a
    rerun with the same request, n and conditions skips the configurations it has.
    ``on_row`` is called with each row as soon as it is done. ``shard=(k, K)`` runs the
    configurations j with j mod K == k and leaves the rows uncorrected across
    configurations (``merge_matrices`` joins the shards' ``output`` files).

    Every row also records the server's configuration (``engines.server_info``, and the
    command line when the server factory has a ``command`` attribute, as
    ``LlamaCppServer`` has) and, for each concurrency of ``speed``, the throughput and
    latency of ``speed_requests`` copies of the request (default twice the concurrency,
    at least 4; ``speed=()`` skips it): the price of each configuration.

    ``early_stop=True`` stops each
    configuration's experiment as soon as its verdict is decided (``batch_effect``'s
    ``early_stop``); rows a rerun finds in ``output`` are kept as they were run.
    """
    ConfigError.check_int("n", n, 2, " to compare outputs")
    for level in speed:
        ConfigError.check_int("speed", level)
    if not configs:
        raise ConfigError("configs", "name at least one server configuration")
    settings_list = [parse_config(c) if isinstance(c, str) else dict(c) for c in configs]
    labels = [_label(s) for s in settings_list]
    if len(set(labels)) != len(labels):
        raise ConfigError("configs", f"a configuration is repeated: {labels}")
    part = shard_of(shard)
    if part is not None and part.count > len(labels):
        raise ConfigError("shard", f"{part.count} shards of {len(labels)} configurations: a "
                          f"shard runs whole configurations, so use at most {len(labels)}")
    record = None if part is None else part.record("configurations")
    frame = {"request": request, "n": n, "conditions": list(conditions), "configs": labels,
             "alpha": alpha, "shard": record}
    path = Path(output) if output is not None else None
    done = _finished_rows(path, request, n, list(conditions), record) if path else {}
    if path is not None:  # a path that cannot be written fails before any server starts
        _write_atomically(path, MatrixResult(
            **frame, rows=[done[label] for label in labels if label in done]))
    rows: list[MatrixRow] = []
    for j, (label, settings) in enumerate(zip(labels, settings_list, strict=True)):
        if part is not None and j % part.count != part.index:
            continue
        row = done.get(label)
        if row is None:
            started = server(**settings)
            async with started as base_url:
                endpoint = Endpoint(base_url=base_url, api_key=None, name=label)
                result = await batch_effect(
                    request, n, endpoint=endpoint, conditions=list(conditions),
                    background_concurrency=background_concurrency, blocks=blocks,
                    alpha=alpha, control=control, server_info=True, seed=seed, retry=retry,
                    timeouts=timeouts, early_stop=early_stop)
                speeds = [await measure_speed(request, endpoint=endpoint, concurrency=level,
                                              requests=speed_requests, retry=retry,
                                              timeouts=timeouts) for level in speed]
            info = result.server
            command = getattr(started, "command", None)
            if info is not None and command:
                info = info.model_copy(update={"command": [str(a) for a in command]})
            row = MatrixRow(config=label, settings=settings, conditions=result.conditions,
                            verdict=result.verdict, verdict_kind=result.verdict_kind,
                            comparisons=result.comparisons,
                            adjusted_pvalues=result.adjusted_pvalues,
                            findings=result.findings, pvalue=result.pvalue,
                            logprobs=result.logprobs, server=info, speed=speeds,
                            early_stop=result.early_stop)
        rows.append(row)
        result_so_far = MatrixResult(**frame, rows=rows)
        if path is not None:
            _write_atomically(path, result_so_far)
        if on_row is not None:
            on_row(row)
    final = MatrixResult(**frame, rows=rows if part is not None
                         else across_configurations(rows, alpha))
    if path is not None:
        _write_atomically(path, final)
    return final


def merge_matrices(paths: Sequence[str | os.PathLike[str]],
                   output: str | os.PathLike[str] | None = None) -> MatrixResult:
    """Join the ``output`` files of a matrix's shards (``server_matrix(..., shard=(k, K))``)
    into the matrix one process would have made: the rows in configuration order, then
    Holm across all of them. Refuses files of different matrices and a missing shard (or
    configuration), naming it; a configuration in two files is taken from the later one.
    Writes the result to ``output`` when given (a rerun of the matrix with it skips every
    configuration)."""
    if isinstance(paths, str | os.PathLike) or not paths:
        raise ConfigError("files", "name the matrix files to merge (a list of paths)")
    parts: list[tuple[Path, MatrixResult]] = []
    for raw in paths:
        path = Path(raw)
        try:
            parts.append((path, MatrixResult.model_validate_json(path.read_bytes())))
        except OSError as exc:
            raise ConfigError("files", f"cannot read {path}: {exc.strerror}") from None
        except ValidationError:
            raise ConfigError("files", f"{path} is not a matrix result") from None
    first_path, first = parts[0]
    for path, part in parts[1:]:
        for field in ("request", "n", "conditions", "configs", "alpha"):
            if getattr(part, field) != getattr(first, field):
                raise ConfigError("files", f"{first_path.name} and {path.name} are not of "
                                  f"one matrix: their {field} differ")
        if (part.shard or {}).get("count") != (first.shard or {}).get("count"):
            raise ConfigError("files", f"{first_path.name} and {path.name} are shards of "
                              "different partitions")
    labels = first.configs or [row.config for _, p in parts for row in p.rows]
    count = (first.shard or {}).get("count", 1)
    present = {(p.shard or {}).get("index", 0) for _, p in parts}
    missing = sorted(set(range(count)) - present)
    if missing:
        raise ConfigError("files", "missing " + "; ".join(
            f"shard {k}/{count} ({', '.join(labels[k::count])})" for k in missing))
    found = {row.config: row for _, p in parts for row in p.rows}
    absent = [label for label in labels if label not in found]
    if absent:
        raise ConfigError("files", f"no row for configuration {', '.join(absent)} (a shard "
                          "stopped before it finished?); rerun its shard with the same output")
    merged = MatrixResult(request=first.request, n=first.n, conditions=first.conditions,
                          configs=labels, alpha=first.alpha,
                          rows=across_configurations([found[label] for label in labels],
                                                     first.alpha))
    if output is not None:
        _write_atomically(Path(output), merged)
    return merged


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


def _finished_rows(path: Path, request: Request, n: int, conditions: list[str],
                   shard: dict[str, Any] | None = None) -> dict[str, MatrixRow]:
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
    if earlier.shard != shard:
        def name(record: dict[str, Any] | None) -> str:
            return ("the whole matrix" if record is None
                    else f"shard {record.get('index')}/{record.get('count')}")
        raise ConfigError("output", f"{path} holds {name(earlier.shard)}, not {name(shard)}; "
                          "resume it with the same shard= (merge_matrices joins shards)")
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
