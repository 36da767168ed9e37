"""``llmvariance demo``: the batch effect, shown on the built-in simulated server."""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Sequence

from ._analysis.compare import p_text
from ._analysis.report import around, split_points
from ._client.endpoint import Endpoint
from ._experiment import BatchEffectResult, Trial, batch_effect
from ._request import ChatRequest
from ._sample import Sample

__all__ = ["run_demo"]

PROMPT = ("Write a unique, surprising, extremely randomized story with highly unpredictable "
          "changes of events.")


def _cell(result: BatchEffectResult, condition: str) -> str:
    report = result.conditions[condition]
    first = "-" if report.common_prefix_tokens is None else f"token {report.common_prefix_tokens}"
    d = "n/a" if report.disagreement_rate is None else f"{report.disagreement_rate:.3f}"
    p = ("control" if condition == result.control else
         p_text(result.adjusted_pvalues[condition]).removeprefix("p = ").replace(" ", "")
         if condition in result.adjusted_pvalues else "-")
    return f"{report.unique_count:>3}/{report.n_ok:<4} {d:>6} {p:>8}  {first:<10}"


def render(results: dict[str, BatchEffectResult]) -> str:
    """The side-by-side table, the verdicts and the moe outputs that split."""
    names = list(results)
    first = next(iter(results.values()))
    conditions = list(first.conditions)
    width = len(_cell(first, conditions[0]))
    lines = [
        "condition        " + "".join(f"{name:<{width + 3}}" for name in names),
        "                 " + "".join(f"{'distinct':<9}{'D':>6} {'p (Holm)':>8}  "
                                      f"{'diverges':<10}   " for _ in names),
    ]
    for condition in conditions:
        cells = "".join(_cell(results[name], condition) + "   " for name in names)
        lines.append(f"{condition:<17}{cells}")
    lines.append("")
    for name in names:
        lines.extend(textwrap.wrap(f"{name}: {results[name].verdict_kind}: "
                                   f"{results[name].verdict}", width=100,
                                   subsequent_indent="  "))
        for finding in results[name].findings:
            lines.extend(textwrap.wrap(f"finding: {finding}", width=100,
                                       initial_indent="  ", subsequent_indent="    "))
        agreement = results[name].logprobs
        if agreement is not None:
            lines.append(f"  logprobs: {agreement.describe()}")
    for name, result in results.items():
        split = [(c, r) for c, r in result.conditions.items() if r.unique_count > 1]
        if not split:
            continue
        condition, report = max(split, key=lambda item: item[1].unique_count)
        lines.append("")
        lines.append(f"{name}, {condition}: the most common outputs, each from where it "
                     "leaves the ones above it ('|' marks the split)")
        top = report.top_outputs[:3]
        lines.append(f"  x{top[0].count:<3} {top[0].text[:80]!r}…")
        for output, (at_mode, nearest, at) in zip(top[1:], split_points(
                [o.text for o in top]), strict=True):
            where = f"char {at_mode}" + (f", #{nearest + 1} at {at}" if nearest else "")
            lines.append(f"  x{output.count:<3} {where}: {around(output.text, at, 30, 50)}")
    return "\n".join(lines)


async def run_demo(models: Sequence[str] = ("moe", "dense"), *, n: int = 30,
                   max_tokens: int = 48, step_time_s: float = 0.002,
                   progress: Callable[[str], object] | None = None) -> str:
    """Start the simulator, run ``batch_effect`` on each model, return the printout;
    ``progress`` hears a line per model and per cell (a condition in a block)."""
    from .testing import SimServer

    results: dict[str, BatchEffectResult] = {}
    async with SimServer(step_time_s=step_time_s) as base_url:
        endpoint = Endpoint(base_url=base_url, api_key=None)
        for model in models:
            request = ChatRequest(model=model, messages=[{"role": "user", "content": PROMPT}],
                                  max_tokens=max_tokens, temperature=0.0,
                                  logit_bias={"100257": -100})
            if progress is not None:
                progress(f"{model}: the batch effect, {n} requests per condition")

            def cell(trial: Trial, samples: list[Sample], model: str = model) -> None:
                if progress is not None:
                    distinct = len({s.text for s in samples if s.error is None})
                    progress(f"  {model}: block {(trial.block or 0) + 1} {trial.condition}: "
                             f"{len(samples)} samples, {distinct} distinct")

            results[model] = await batch_effect(request, n, endpoint=endpoint, sweep=(2, 8),
                                                on_trial=cell)
    header = (f"{n} identical chat requests per condition, temperature 0, {max_tokens} tokens, "
              f"against the built-in simulator\n(continuous batching, "
              f"{step_time_s * 1000:g} ms per decode step; `moe` has per-step expert "
              "capacity, `dense` is batch-invariant)\n"
              f"Design: {next(iter(results.values())).design}. D is the probability that two "
              "requests disagree; p tests each condition against `sequential` (exact test on "
              "differing from the calibration output, Holm-adjusted).\n")
    return header + "\n" + render(results)
