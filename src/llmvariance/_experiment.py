"""The batch-effect experiment: does an endpoint's output depend on what it is batched with?

A designed experiment. The same request is sent under named conditions:

- ``sequential`` (the control): one at a time, so each request has the server (nearly)
  to itself *from this client*;
- ``burst``: a block's requests all at once, so they share batches with each other;
- ``loaded``: the same while background requests with other prompts keep the server busy,
  so they share batches with strangers;
- ``concurrency=K`` for each K of the sweep: K in flight at a time.

Design: a *calibration* request goes first; its output is the reference the deviations
are counted from, and it counts in no condition. Then ``blocks`` blocks, each running every
condition for n/blocks samples, the order rotating from block to block; every sample
records its block and condition. A backend that changes during the run then changes every
condition alike instead of posing as a condition effect (with ``blocks=1`` the conditions
run one after another, as before). A block's burst is n/blocks wide, so batches are
smaller than with one block.

The verdict comes from ``compare`` of each condition against the control (the exact
one-sided test on deviating from the reference), at ``alpha`` with Holm's correction across
conditions. Conditions are small objects in a registry (``register_condition``), so new ones
plug in without touching the design.
"""

from __future__ import annotations

import contextlib
import os
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import anyio
from pydantic import BaseModel, ConfigDict

from ._analysis.collect import VarianceCollector
from ._analysis.compare import Comparison, compare_cells, counts_of, p_text
from ._analysis.display import Displayed, fmt
from ._analysis.estimates import rate_interval
from ._analysis.report import LogprobAgreement, VarianceReport
from ._analysis.sequential import EarlyStop, SequentialTest, adjusted_pvalues, exact_pvalue
from ._analysis.stats import holm
from ._client.endpoint import Endpoint, endpoint_or_default
from ._client.pool import ClientPool, PreparedCall
from ._client.ratelimit import RateLimit
from ._client.retry import RetryPolicy
from ._client.transport import Timeouts, Transport
from ._errors import ConfigError
from ._kept import KeptSamples
from ._request import (
    ChatMessage,
    ChatRequest,
    Message,
    MessagesRequest,
    Request,
    ResponsesRequest,
)
from ._runs.runfile import RunContents, RunFile
from ._runs.shard import ShardSpec, shard_of
from ._sample import Sample
from ._version import __version__
from .engines.info import ServerInfo

__all__ = ["BatchEffectResult", "Condition", "Trial", "VerdictKind", "analyze_conditions",
           "background_load", "batch_effect", "condition_named", "interim_pvalues", "judge",
           "register_condition"]

VerdictKind = Literal["batch_dependent", "varies_alone", "no_variation_observed",
                      "inconclusive", "could_not_measure"]

_BACKGROUND_TOPICS = ("a harbour at dawn", "how bridges carry load", "a recipe for bread",
                      "the history of clocks", "a chess opening", "migrating birds",
                      "a city under snow", "how tides work")
_CONTROL = "sequential"
_BATCHING = frozenset({"burst", "loaded", "concurrency", "batch", "batch_mixed",
                       "shared_prefix", "mixed_lengths", "seeded_burst", "seeded_loaded"})
"""Conditions whose only difference from the control is what a request is batched with."""


# -- conditions -----------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Trial:
    """One cell of the design: a condition's requests in one block."""

    pool: ClientPool
    request: Request
    condition: str
    block: int | None
    indices: range
    """The sample indices of this cell (unique within the condition)."""
    background: int
    """Background requests a condition that loads the server keeps in flight."""

    def call(self) -> PreparedCall:
        return self.pool.prepare(self.request, self.condition, block=self.block)

    async def send(self, width: int) -> list[Sample]:
        """Send this cell's requests with at most ``width`` in flight; samples in index order."""
        call = self.call()
        found: list[Sample | None] = [None] * len(self.indices)
        limiter = anyio.CapacityLimiter(max(1, width))

        async def one(position: int, index: int) -> None:
            async with limiter:
                found[position] = await self.pool.send(call, index)

        async with anyio.create_task_group() as tg:
            for position, index in enumerate(self.indices):
                tg.start_soon(one, position, index)
        return [s for s in found if s is not None]


class Condition(ABC):
    """A way of sending a cell's requests. ``name`` labels its samples; the ``control``
    condition is what the others are compared against."""

    name: str
    control: bool = False
    family: str = ""
    """Conditions of different families (temperature 0, ``seeded``) cannot be compared,
    so one experiment takes conditions of one family."""

    @abstractmethod
    async def run(self, trial: Trial) -> list[Sample]:
        """Send ``trial``'s requests; return one sample per index."""

    def adapt(self, request: Request) -> Request:
        """The request as this condition sends it (the calibration request is the
        control's)."""
        return request

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


class Sequential(Condition):
    """One at a time: each request has the server to itself, as far as this client goes."""

    name = "sequential"
    control = True

    async def run(self, trial: Trial) -> list[Sample]:
        return await trial.send(1)


class Burst(Condition):
    """All of the cell at once: they share batches with each other."""

    name = "burst"

    async def run(self, trial: Trial) -> list[Sample]:
        return await trial.send(len(trial.indices))


class Loaded(Condition):
    """The burst, while background requests with other prompts keep the server busy."""

    name = "loaded"

    async def run(self, trial: Trial) -> list[Sample]:
        async with background_load(trial.pool, trial.request, trial.background):
            return await trial.send(len(trial.indices))


class Concurrency(Condition):
    """At most ``k`` in flight at a time."""

    def __init__(self, k: int) -> None:
        self.k = k
        self.name = f"concurrency={k}"

    async def run(self, trial: Trial) -> list[Sample]:
        return await trial.send(self.k)


_REGISTRY: dict[str, Callable[[str], Condition | None]] = {
    "sequential": lambda _: Sequential(),
    "burst": lambda _: Burst(),
    "loaded": lambda _: Loaded(),
    "concurrency": lambda arg: Concurrency(int(arg)) if arg.isdigit() and int(arg) >= 1
    else None,
}


def register_condition(name: str, factory: Callable[[str], Condition | None]) -> None:
    """Make ``name`` (and ``name=ARG``) a condition: ``factory(ARG)`` builds it ("" for a bare
    name) or returns None for an ARG it refuses."""
    _REGISTRY[name] = factory


def condition_named(text: str) -> Condition | None:
    """The registered condition ``text`` names (``burst``, ``concurrency=4``), or None."""
    name, _, arg = text.partition("=")
    factory = _REGISTRY.get(name.strip())
    return None if factory is None else factory(arg.strip())


# -- the result -----------------------------------------------------------------------------

class BatchEffectResult(Displayed, BaseModel):
    """Per-condition reports of one batch-effect experiment, the tests, and what they mean."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    request: Request
    endpoint: str
    conditions: dict[str, VarianceReport]
    """Each condition's report, in the order the conditions were named."""
    server: ServerInfo | None = None
    """What the server said it is and how it is configured (``engines.server_info``)."""
    samples: dict[str, KeptSamples]
    """Each condition's samples in index order (each reads as a list of ``Sample``;
    ``Sample.block`` says when each ran)."""
    verdict: str
    """A plain-language conclusion with the effect and the evidence."""
    verdict_kind: VerdictKind
    n: int = 0
    """Samples per condition asked for."""
    blocks: int = 1
    alpha: float = 0.05
    control: str = _CONTROL
    calibration: Sample | None = None
    """The first request's sample (in no condition)."""
    reference: str | None = None
    """The output deviations are counted from."""
    reference_source: str = ""
    comparisons: dict[str, Comparison] = {}
    """Each other condition against the control."""
    adjusted_pvalues: dict[str, float] = {}
    """The comparisons' p-values after Holm's correction across conditions."""
    findings: list[str] = []
    """What else the run showed: a cold first request, drift between blocks, failures."""
    logprobs: LogprobAgreement | None = None
    """The numbers under the text, over every sample of every condition."""
    design: str = ""
    early_stop: EarlyStop | None = None
    """With ``early_stop=True``: each look, its boundary, and the requests sent, planned and
    saved; ``adjusted_pvalues`` are then Holm-adjusted repeated p-values."""

    @property
    def pvalue(self) -> float | None:
        """The smallest Holm-adjusted p-value (None without comparisons)."""
        return min(self.adjusted_pvalues.values(), default=None)

    def to_text(self) -> str:
        """The verdict, the per-condition table with D and p-values, the findings."""
        lines = [f"verdict: {self.verdict_kind}: {self.verdict}", ""]
        width = max([16, *(len(name) + 1 for name in self.conditions)])
        lines.append(f"{'condition':<{width}} {'distinct':>9}  {'D [95% CI]':<22} "
                     f"{'deviating':>10}  p (Holm)")
        for name, report in self.conditions.items():
            d = "n/a" if report.disagreement_rate is None else (
                f"{report.disagreement_rate:.3f} {report.disagreement_rate_ci or ''}")
            comparison = self.comparisons.get(name)
            deviating = ("" if comparison is None else
                         f"{comparison.b.deviation.count}/{comparison.b.n}")
            if comparison is None and name == self.control and self.comparisons:
                first = next(iter(self.comparisons.values()))
                deviating = f"{first.a.deviation.count}/{first.a.n}"
            p = ("control" if name == self.control else
                 p_text(self.adjusted_pvalues[name]) if name in self.adjusted_pvalues else "-")
            lines.append(f"{name:<{width}} {f'{report.unique_count}/{report.n_ok}':>9}  {d:<22} "
                         f"{deviating:>10}  {p}")
        if self.reference is not None:
            preview = self.reference[:60].replace("\n", " ")
            lines.append(f"reference: {self.reference_source}: {preview!r}"
                         + ("…" if len(self.reference) > 60 else ""))
        if self.design:
            lines.append(f"design: {self.design}")
        lines.extend(f"finding: {f}" for f in self.findings)
        if self.logprobs is not None:
            lines.append(f"logprobs: {self.logprobs.describe()}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.to_text()

    def _summary(self) -> str:
        return (f"{self.request.model}@{self.endpoint} n={self.n} "
                f"conditions={','.join(self.conditions)} {self.verdict_kind} "
                f"p={fmt(self.pvalue)}")


# -- the analysis (pure) --------------------------------------------------------------------

def _cells(samples: Sequence[Sample]) -> dict[int | None, Counter[str]]:
    cells: dict[int | None, Counter[str]] = {}
    for s in samples:
        if s.error is None:
            cells.setdefault(s.block, Counter())[s.text or ""] += 1
    return cells


def _reference(calibration: Sample | None,
               cells: Mapping[str, Mapping[int | None, Mapping[str, int]]]
               ) -> tuple[str | None, str, list[str]]:
    """(reference output, where it came from, findings about the calibration)."""
    pooled: Counter[str] = Counter()
    for arm in cells.values():
        pooled.update(counts_of(arm))
    if not pooled:
        return None, "", []
    mode = min(pooled.items(), key=lambda kv: (-kv[1], kv[0]))[0]
    if calibration is None:
        return mode, "the most common output over all conditions", []
    if calibration.error is not None:
        return mode, "the most common output over all conditions", [
            f"the calibration request failed ({calibration.error.kind}), so deviations are "
            "counted from the most common output over all conditions"]
    text = calibration.text or ""
    if text not in pooled:
        return mode, "the most common output over all conditions", [
            f"the calibration (first) request's output never occurred again in "
            f"{sum(pooled.values())} later requests: a cold first request (empty caches, "
            "a fresh server) differs from warm ones here, so deviations are counted from the "
            "most common output over all conditions instead"]
    return text, "the calibration output", []


def _drift(samples: Mapping[str, Sequence[Sample]]) -> list[str]:
    """A finding when the most common output changed from block to block."""
    per_block: dict[int, Counter[str]] = {}
    for arm in samples.values():
        for s in arm:
            if s.error is None and s.block is not None:
                per_block.setdefault(s.block, Counter())[s.text or ""] += 1
    if len(per_block) < 2:
        return []
    modes = {b: min(c.items(), key=lambda kv: (-kv[1], kv[0]))[0]
             for b, c in sorted(per_block.items())}
    if len(set(modes.values())) == 1:
        return []
    changes = [b for b in list(modes)[1:] if modes[b] != modes[b - 1]]
    return [f"the most common output changed between blocks (at block "
            f"{', '.join(str(b) for b in changes)} of 0..{max(modes)}): the backend or its "
            "state drifted during the run; every condition ran in every block, so the drift "
            "reached them alike"]


def analyze_conditions(
    request: Request, endpoint: str, samples: Mapping[str, Sequence[Sample]], *,
    calibration: Sample | None = None, control: str = _CONTROL, n: int = 0, blocks: int = 1,
    alpha: float = 0.05, seed: int = 0, resamples: int = 9999, design: str = "",
    endpoint_is_local: bool = False, early_stop: EarlyStop | None = None,
) -> BatchEffectResult:
    """The result of a batch-effect experiment from its samples: a pure function, so an
    interim analysis after each block is the same call on the samples so far.

    With ``early_stop`` (a group-sequential run's record) the p-values are adjusted as
    repeated p-values at its last look (``sequential.adjusted_pvalues``) before Holm, so
    "significant" means "crossed the boundary"; the record becomes a finding."""
    fields = _evaluate(samples, calibration, control, alpha, seed, resamples,
                       endpoint_is_local, early_stop)
    return BatchEffectResult(
        request=request, endpoint=endpoint,
        samples={name: KeptSamples.of(arm) for name, arm in samples.items()}, n=n, blocks=blocks,
        alpha=alpha, control=control, calibration=calibration, design=design,
        early_stop=early_stop, **fields)


def interim_pvalues(samples: Mapping[str, Sequence[Sample]], calibration: Sample | None,
                    control: str = _CONTROL) -> dict[str, float]:
    """Each condition's exact one-sided p-value against the control, as the full analysis
    computes it (same reference, same counts) but without the resampled tests: what an
    interim look of a group-sequential run needs. Conditions (or a control) with fewer
    than two successful samples get none."""
    cells = {name: _cells(arm) for name, arm in samples.items()}
    reference, _, _ = _reference(calibration, cells)
    counted = {name: counts_of(c) for name, c in cells.items()}
    usable = {name: c for name, c in counted.items() if c.total() >= 2}
    if control not in usable or reference is None:
        return {}
    base = usable[control]
    n_a = base.total()
    return {name: exact_pvalue(n_a - base[reference], n_a, c.total() - c[reference], c.total())
            for name, c in usable.items() if name != control}


def _evaluate(samples: Mapping[str, Sequence[Sample]], calibration: Sample | None,
              control: str, alpha: float, seed: int, resamples: int, local: bool,
              early_stop: EarlyStop | None = None) -> dict[str, Any]:
    reports: dict[str, VarianceReport] = {}
    everything = VarianceCollector(grouped=False)
    for name, arm in samples.items():
        collector = VarianceCollector()
        collector.update(arm)
        everything.update(arm)
        reports[name] = collector.report()
    if calibration is not None:
        everything.add(calibration)
    cells = {name: _cells(arm) for name, arm in samples.items()}
    reference, source, findings = _reference(calibration, cells)
    findings += _drift(samples)
    comparisons: dict[str, Comparison] = {}
    usable = {name: c for name, c in cells.items() if counts_of(c).total() >= 2}
    if control in usable and reference is not None:
        for name, counted in usable.items():
            if name != control:
                comparisons[name] = compare_cells(
                    usable[control], counted, reference=reference, reference_source=source,
                    alpha=alpha, seed=seed, resamples=resamples, names=(control, name))
    adjusted = dict(zip(comparisons, holm([c.pvalue for c in comparisons.values()]),
                        strict=True))
    if early_stop is not None:
        adjusted = adjusted_pvalues(
            {name: c.pvalue for name, c in comparisons.items()},
            early_stop.fractions[: max(1, len(early_stop.looks))],
            spending=early_stop.spending, hypotheses=early_stop.hypotheses)
        findings.append(early_stop.describe())
    failed = sum(r.n_failed for r in reports.values())
    if failed:
        kinds: Counter[str] = Counter()
        for r in reports.values():
            kinds.update(r.failures)
        findings.append(f"{failed} of {sum(r.n_samples for r in reports.values())} samples "
                        f"failed ({', '.join(f'{k} {v}' for k, v in sorted(kinds.items()))}) "
                        "and are left out of every figure")
    fingerprints = {fp for r in reports.values() for fp in r.system_fingerprints
                    if r.n_ok}
    if len(fingerprints) > 1:
        findings.append(f"the backend fingerprint changed during the run ({len(fingerprints)} "
                        "values), so some variation may come from different backends")
    unmeasured = [name for name in reports if name != control and name not in comparisons]
    if comparisons and unmeasured:
        findings.append("not in the verdict, too few successful samples to compare: " + ", ".join(
            f"{name} ({reports[name].n_ok} of {reports[name].n_samples} succeeded)"
            for name in unmeasured))
    kind, verdict = _decide(reports, comparisons, adjusted, control, alpha, local)
    return {"conditions": reports, "verdict": verdict, "verdict_kind": kind,
            "reference": reference, "reference_source": source, "comparisons": comparisons,
            "adjusted_pvalues": adjusted, "findings": findings,
            "logprobs": everything.report().logprobs}


def _evidence(name: str, c: Comparison, p: float) -> str:
    shifted = (", another output" if c.modes_differ and c.statistic <= 0 else "")
    return (f"{name}{shifted}: {c.b.d_text()} vs {c.a.name} {c.a.d_text()}; {c.b.deviation.count}/"
            f"{c.b.n} vs {c.a.deviation.count}/{c.a.n} differ from {c.reference_source}, "
            f"{p_text(p)} (Holm-adjusted, {c.exact.method})")


def _decide(reports: Mapping[str, VarianceReport], comparisons: Mapping[str, Comparison],
            adjusted: Mapping[str, float], control: str, alpha: float, local: bool
            ) -> tuple[VerdictKind, str]:
    base = reports.get(control)
    if base is None or base.n_ok < 2:
        why = ("every sample failed" if reports and all(r.n_ok == 0 for r in reports.values())
               else f"the control condition ({control}) needs at least two successful "
                    "samples to compare against")
        return "could_not_measure", f"could not measure: {why}"
    if not comparisons:
        return "could_not_measure", ("could not measure: no other condition had two "
                                     "successful samples to compare with the control")
    significant = [name for name in comparisons if adjusted[name] < alpha]
    control_varies = not base.all_agree
    control_d = next(iter(comparisons.values())).a.d_text()
    if significant:
        batching = all(name.partition("=")[0] in _BATCHING for name in significant)
        text = (("outputs depend on how requests are batched: " if batching else
                 "outputs depend on how requests are sent (the server's state, its caches, "
                 "its batches): ")
                + "; ".join(_evidence(name, comparisons[name], adjusted[name])
                            for name in significant))
        if control_varies:
            text += (f". The {control} arm varies too ({control_d}), so not all of the "
                     "variation comes from batching")
        return "batch_dependent", text
    best = min(comparisons, key=lambda name: adjusted[name])
    if control_varies:
        text = (f"outputs vary even one request at a time ({control}: {control_d}), and the "
                f"batched conditions do not vary detectably more (closest: "
                f"{_evidence(best, comparisons[best], adjusted[best])})")
        if not local:
            text += (". Against a server others use, 'one at a time from this client' may "
                     "still be batched with other users' traffic, so batching is not ruled out")
        return "varies_alone", text
    everything = [r for r in reports.values() if r.n_ok]
    missing = [name for name in reports if name != control and name not in comparisons]
    # A condition whose samples failed was not observed at all: the bound says nothing about it.
    measured = (f" measured (not {', '.join(missing)}: too few successful samples)"
                if missing else "")
    modes = {r.top_outputs[0].text for r in everything if r.top_outputs}
    if all(r.all_agree for r in everything) and len(modes) == 1:
        total = sum(r.n_ok for r in everything)
        _, pooled_bound, _ = rate_interval(0, total, 1 - alpha)
        per = min(r.n_ok for r in everything)
        _, per_bound, _ = rate_interval(0, per, 1 - alpha)
        return "no_variation_observed", (
            f"no variation observed: all {total} outputs are identical, in every condition"
            f"{measured}. "
            f"So at most {pooled_bound:.1%} of requests differ ({1 - alpha:.0%} one-sided, "
            f"0 of {total}), and at most {per_bound:.1%} in any one condition (0 of {per}): "
            "consistent with deterministic, batch-invariant inference up to that bound")
    comparison = comparisons[best]
    text = (f"inconclusive at alpha = {alpha:g}: some outputs differ but not significantly "
            f"({_evidence(best, comparison, adjusted[best])})")
    if comparison.minimum_detectable_rate is not None:
        text += (f". At n = {comparison.b.n} per condition the exact test detects a deviation "
                 f"rate of {comparison.minimum_detectable_rate:.1%} with 80 % power")
    if comparison.samples_needed is not None:
        text += (f"; to decide {comparison.b.deviation.rate:.1%} vs "
                 f"{comparison.a.deviation.rate:.1%} would take about "
                 f"{comparison.samples_needed} samples per condition")
    return "inconclusive", text


def _report_cells(report: VarianceReport) -> list[Sample]:
    """Stand-in samples for a report: its top outputs, the rest as distinct singletons (the
    most any other output can count)."""
    samples = [Sample(index=0, text=o.text) for o in report.top_outputs for _ in range(o.count)]
    rest = report.n_ok - len(samples)
    samples += [Sample(index=0, text=f"\x00other output {i}") for i in range(rest)]
    return samples


def judge(conditions: Mapping[str, VarianceReport | Sequence[Sample]], *,
          alpha: float = 0.05, control: str = _CONTROL, seed: int = 0,
          resamples: int = 9999) -> tuple[VerdictKind, str]:
    """The verdict on a batch-effect experiment's conditions (``control`` is compared with
    each other one): ``(kind, text)``. Given reports, which keep only their five most
    common outputs, the rest count as distinct outputs of their own."""
    samples = {name: (_report_cells(v) if isinstance(v, VarianceReport) else list(v))
               for name, v in conditions.items()}
    fields = _evaluate(samples, None, control, alpha, seed, resamples, local=False)
    return fields["verdict_kind"], fields["verdict"]


# -- running it -----------------------------------------------------------------------------

def background_text(i: int) -> str:
    """The ``i``-th background prompt: another topic than the measured one."""
    return f"Background request {i}: write about {_BACKGROUND_TOPICS[i % len(_BACKGROUND_TOPICS)]}."


def background_request(request: Request, i: int) -> Request:
    """``request`` (same model and settings) with the ``i``-th background prompt."""
    text = background_text(i)
    if isinstance(request, ChatRequest):
        return request.model_copy(
            update={"messages": [ChatMessage(role="user", content=text)]})
    if isinstance(request, MessagesRequest):
        return request.model_copy(update={"messages": [Message(role="user", content=text)]})
    if isinstance(request, ResponsesRequest):
        return request.model_copy(update={"input": text})
    return request.model_copy(update={"prompt": text})


def _cell_sizes(n: int, blocks: int) -> list[int]:
    """n split into ``blocks`` sizes that differ by at most one, larger first."""
    return [n // blocks + (1 if b < n % blocks else 0) for b in range(blocks)]


def _resolve(names: Sequence[str] | None, sweep: Sequence[int], n: int,
             control: str | None = None) -> tuple[list[Condition], Condition]:
    default = ["sequential", "burst", "loaded", *(f"concurrency={k}" for k in sweep if 1 < k < n)]
    chosen = list(names) if names is not None else default
    resolved = [(name, condition_named(name)) for name in chosen]
    unknown = [name for name, c in resolved if c is None]
    if unknown:
        raise ConfigError("conditions", f"unknown {unknown}; choose from {default} "
                          "(or another registered condition)")
    conditions = [c for _, c in resolved if c is not None]
    names_seen = [c.name for c in conditions]
    if len(set(names_seen)) != len(names_seen):
        raise ConfigError("conditions", f"a condition is repeated: {names_seen}")
    families = {c.family for c in conditions}
    if len(families) > 1:
        shown = ", ".join(sorted(f or "as requested" for f in families))
        raise ConfigError("conditions", f"{names_seen} mix families ({shown}): seeded "
                          "conditions form an experiment of their own")
    if control is not None:
        named = next((c for c in conditions if c.name == control), None)
        if named is None:
            raise ConfigError("control", f"{control!r} is not one of the conditions "
                              f"{names_seen}")
        return conditions, named
    return conditions, next((c for c in conditions if c.control), conditions[0])


async def batch_effect(
    request: Request,
    n: int = 30,
    *,
    endpoint: Endpoint | None = None,
    sweep: Sequence[int] = (2, 8),
    background_concurrency: int = 8,
    conditions: Sequence[str] | None = None,
    blocks: int | None = None,
    alpha: float = 0.05,
    calibration: bool = True,
    control: str | None = None,
    server_info: bool | None = None,
    seed: int = 0,
    resamples: int = 9999,
    on_block: Callable[[int, BatchEffectResult], Any] | None = None,
    on_trial: Callable[[Trial, list[Sample]], Any] | None = None,
    early_stop: bool = False,
    stop_when: Callable[[Mapping[str, Sequence[Sample]]], bool] | None = None,
    rate_limit: RateLimit | None = None,
    retry: RetryPolicy | None = None,
    timeouts: Timeouts | None = None,
    transport: Transport | None = None,
    output: str | os.PathLike[str] | None = None,
    shard: ShardSpec | None = None,
) -> BatchEffectResult:
    """Run the batch-effect experiment: ``request`` ``n`` times under each condition.

    ``conditions`` picks them (default: ``sequential``, ``burst``, ``loaded``, then
    ``concurrency=K`` for K in ``sweep`` below n); ``sequential`` is the control. First one
    calibration request (``calibration=False`` skips it: deviations are then counted from
    the most common output over all conditions); then ``blocks`` blocks (default 5, or n
    when n < 5; at most n), each
    running every condition for about n/blocks samples in an order that rotates from block
    to block. The verdict tests each condition against the control at ``alpha`` with Holm's
    correction; permutations and bootstraps take ``resamples`` draws seeded by ``seed``.
    ``on_block(block, interim_result)`` is called after each block with the analysis so
    far; ``on_trial(trial, samples)`` after each cell (a condition in a block), for
    progress. Against a paid API this sends about ``n * len(conditions) + 1`` requests plus the
    background traffic of ``loaded``.

    ``control`` names the condition the others are tested against (default: the first
    that is a control, ``sequential``; e.g. ``control="cold"`` tests warm conditions
    against cold caches); the calibration request is sent as the control sends its
    requests. ``server_info`` asks the server for its configuration first
    (``engines.server_info``; default: for a server on this machine) and keeps it in
    ``result.server``.

    ``output`` names a run file: each cell's samples are appended as it finishes (samples
    keyed by condition and index; the header holds the design). Calling again with the
    same arguments resumes it a block at a time: the blocks it holds whole are kept, a
    block cut short is run again whole (a burst re-sent in part would be a narrower
    burst). ``shard=(k, K)`` runs only blocks b with b mod K == k, each whole with every
    condition in its rotating order, and the calibration request in shard 0, with 1/K of
    ``rate_limit``; ``lv.merge_runs`` joins the K run files, and calling ``batch_effect``
    with the merged file as ``output`` gives the one-process result without sending
    anything. Shards sent at the same time to one server share it, as other clients
    would: the control condition is "one at a time from this shard".

    ``early_stop=True`` tests after every block and stops as soon as a condition crosses a
    group-sequential boundary (O'Brien-Fleming-type alpha spending with Holm across the
    conditions, ``_analysis/sequential.py``), so the false-positive rate over all the looks
    stays at ``alpha``. A large batch effect is then decided after a block or two; "no
    variation observed" (or any verdict but ``batch_dependent``) still takes all n.
    ``result.early_stop`` records each look and the requests sent, planned and saved.
    ``stop_when(samples)`` is a caller's own rule, asked after each block with every
    condition's samples so far: True ends the run there (``check`` stops this way once
    its verdict can no longer change).
    """
    ConfigError.check_int("n", n, 2, " to compare outputs")
    if not isinstance(sweep, Sequence):
        raise ConfigError("sweep", f"must be a sequence of integers >= 1, got {sweep!r}")
    for k in sweep:
        ConfigError.check_int("sweep", k)
    ConfigError.check_int("background_concurrency", background_concurrency)
    if blocks is None:
        blocks = min(5, n)
    ConfigError.check_int("blocks", blocks)
    if blocks > n:
        raise ConfigError("blocks", f"must be at most n={n} (each block needs a sample of "
                          f"every condition), got {blocks}")
    if not 0.0 < alpha < 1.0:
        raise ConfigError("alpha", f"must be between 0 and 1, got {alpha!r}")
    ConfigError.check_int("resamples", resamples)
    chosen, control_condition = _resolve(conditions, sweep, n, control)
    control = control_condition.name
    endpoint = endpoint_or_default(endpoint)
    local = endpoint.base_url.startswith(("http://127.", "http://localhost", "http://[::1]"))
    sizes = _cell_sizes(n, blocks)
    design = (f"{blocks} blocks, each running every condition for {min(sizes)}"
              + (f"-{max(sizes)}" if max(sizes) != min(sizes) else "")
              + " samples, the order rotating; a block's burst is that wide, so batches are "
                "smaller than one burst of n" if blocks > 1 else
              "one block: each condition ran all its samples before the next started, so a "
              "change of backend during the run would look like a condition effect")
    samples: dict[str, list[Sample]] = {c.name: [] for c in chosen}
    calibration_sample: Sample | None = None
    server: ServerInfo | None = None
    part = shard_of(shard)
    if part is not None:
        if early_stop:
            raise ConfigError("early_stop", "cannot be combined with shard: a shard sees only "
                              "its own blocks, and a look needs every block so far")
        if part.count > blocks:
            raise ConfigError("shard", f"{part.count} shards of {blocks} blocks: a shard runs "
                              f"whole blocks, so use at most {blocks} shards, or more blocks")
        rate_limit = part.rate_limit(rate_limit)
    owned = [b for b in range(blocks) if part is None or b % part.count == part.index]
    layout = {"arms": ["calibration", *(c.name for c in chosen)], "n": n, "blocks": blocks,
              "sizes": sizes, "calibration": calibration,
              "background_concurrency": background_concurrency}
    run_file: RunFile | None = None
    kept: set[int] = set()
    if output is not None:
        ConfigError.check_type("output", output, str, os.PathLike)
        run_file, existing = RunFile.open(output, request, n, endpoint, __version__,
                                          shard=part, design=layout, partition="blocks")
        if existing is not None:
            try:
                kept, calibration_sample = _resume_blocks(existing, sizes, samples)
            except BaseException:
                run_file.close()
                raise
    monitor = (SequentialTest([sum(sizes[: b + 1]) / n for b in range(blocks)],
                              hypotheses=[c.name for c in chosen if c.name != control],
                              alpha=alpha) if early_stop else None)

    def sent() -> int:
        """Requests sent so far: each is a sample (maybe a failure); background not counted."""
        return (calibration_sample is not None) + sum(len(arm) for arm in samples.values())

    def record(attempts: int | None = None) -> EarlyStop | None:
        return None if monitor is None else monitor.summary(
            planned_requests=n * len(chosen) + int(calibration), sent_requests=sent(),
            attempts=attempts)

    def decided(block: int) -> bool:
        """The look after ``block``, on the blocks up to it (a resumed run's kept blocks are
        looked at again, so it stops where the first run would have)."""
        assert monitor is not None
        upto = {name: [s for s in arm if s.block is None or s.block <= block]
                for name, arm in samples.items()}
        return monitor.look(interim_pvalues(upto, calibration_sample, control),
                            requests=sent()).stop

    def analysis(upto: int, early: EarlyStop | None = None) -> BatchEffectResult:
        result = analyze_conditions(
            request, endpoint.label, samples, calibration=calibration_sample, control=control,
            n=n, blocks=upto, alpha=alpha, seed=seed, resamples=resamples, design=design,
            endpoint_is_local=local, early_stop=early)
        return result if server is None else result.model_copy(update={"server": server})

    done = blocks
    attempts: int | None = None
    try:
        async with ClientPool(endpoint, concurrency=n + background_concurrency,
                              rate_limit=rate_limit, retry=retry, timeouts=timeouts,
                              transport=transport) as pool:
            if server_info if server_info is not None else local:
                from .engines.info import server_info as probe

                server = await probe(pool)
            if calibration and calibration_sample is None and (part is None
                                                               or part.index == 0):
                calibration_sample = await pool.send(
                    pool.prepare(control_condition.adapt(request), "calibration"), 0)
                if run_file is not None:
                    run_file.write(calibration_sample)
            start = 0
            for block, size in enumerate(sizes):
                indices = range(start, start + size)
                start += size
                if block not in owned:
                    continue
                if block not in kept:
                    order = chosen[block % len(chosen):] + chosen[: block % len(chosen)]
                    for condition in order:
                        trial = Trial(pool, request, condition.name, block, indices,
                                      background_concurrency)
                        cell = await condition.run(trial)
                        if run_file is not None:
                            for sample in cell:
                                run_file.write(sample)
                        samples[condition.name].extend(cell)
                        if on_trial is not None:
                            on_trial(trial, cell)
                if (monitor is not None and decided(block)) or (
                        stop_when is not None and stop_when(samples)):
                    done = block + 1
                    break  # decided: the blocks left are never sent
                if on_block is not None and block != owned[-1] and block not in kept:
                    on_block(block, analysis(block + 1, record()))
            attempts = pool.stats.attempts
    finally:
        if run_file is not None:
            run_file.close()
    for arm in samples.values():
        arm.sort(key=lambda s: s.index)
    return analysis(done, record(attempts))


def _resume_blocks(existing: RunContents, sizes: Sequence[int],
                   samples: dict[str, list[Sample]]) -> tuple[set[int], Sample | None]:
    """The blocks a run file holds whole (every condition's samples of the block), their
    samples put into ``samples``, and its calibration sample (None: not there yet)."""
    block_of = [b for b, size in enumerate(sizes) for _ in range(size)]
    cells: dict[tuple[str, int], list[Sample]] = {}
    calibration: Sample | None = None
    for sample in existing.iter_samples():
        if sample.condition == "calibration":
            calibration = sample
        elif sample.condition in samples and sample.index < len(block_of):
            cells.setdefault((sample.condition, block_of[sample.index]), []).append(sample)
    whole = {b for b, size in enumerate(sizes)
             if all(len(cells.get((name, b), ())) == size for name in samples)}
    for (name, block), cell in cells.items():
        if block in whole:
            samples[name].extend(cell)
    return whole, calibration


@contextlib.asynccontextmanager
async def background_load(pool: ClientPool, request: Request | None, width: int, *,
                          calls: Sequence[PreparedCall] | None = None
                          ) -> AsyncIterator[None]:
    """Keep ``width`` requests with other prompts (same model and settings as ``request``)
    in flight through ``pool`` for as long as the block runs, as other users would
    (``calls``: these prepared requests instead, one worker each).

    The block starts once they are in flight (or after 2 s, should a rate limit hold them
    back); their samples are discarded.
    """
    if calls is None:
        assert request is not None
        calls = [pool.prepare(background_request(request, i), "background")
                 for i in range(width)]
    width = len(calls)
    if width == 0:
        yield
        return

    async def keep_busy(call: PreparedCall) -> None:
        while True:
            await pool.send(call, index=0)

    async with anyio.create_task_group() as tg:
        for call in calls:
            tg.start_soon(keep_busy, call)
        with anyio.move_on_after(2.0):
            while pool.in_flight < width:  # noqa: ASYNC110 - bounded poll of a counter
                await anyio.sleep(0.001)
        yield
        tg.cancel_scope.cancel()
