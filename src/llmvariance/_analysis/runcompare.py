"""``compare_runs``: did it change? Two runs of the same request, or of the same suite.

The same request last week and today, on two engine versions, on two providers, streamed
and not. Each side is a run file (``sample_many(output=...)``, ``llmvariance sample
--out``), ``lv.read_run(path)``, or a ``SampleSet``; for suites a suite's run file or a
``SuiteResult``.

First the requests are checked: two runs of different requests are refused, naming the
first difference (``model: 'dense' in a, 'moe' in b``), unless ``allow_different``.
Whether a request is streamed is not a difference (a streamed answer should equal the
plain one). Then, for one request:

- **the most common output**: whether it changed and where the two modes first differ
  (0-based token, the provider's tokens when both modes carry them, else words), and how
  often b still gives a's;
- **variability**: D of each side with its interval, ΔD = D_b - D_a with its bootstrap
  interval, and the permutation test of ΔD in each direction (b more variable, b less);
- **the distributions differ**: the permutation test of homogeneity over outputs;
- the exact test of ``compare`` (b deviates from a's most common output more often) and
  the power, in ``comparison``;
- **who answered**: the models and fingerprints the samples name, the server
  configuration the run file's header recorded (``"server"``, when it was asked for), the
  endpoint, when and with which library version each run was made;
- **the numbers under the text**: where the texts agree across the runs, whether their
  chosen-token logprobs are bitwise identical, or from which token they differ.

The runs *changed* when, after Holm's correction over the two, the variability test
(two-sided: twice the smaller one-sided p) or the homogeneity test is below ``alpha``.

For suites, prompt by prompt (``compare_suites``: each prompt's exact test,
Benjamini-Hochberg, the Cochran-Mantel-Haenszel test stratified by prompt, the sign test on
ΔD), plus the prompts whose most common output changed and those that vary in one run
only; with expected answers and an ``answer=`` extractor, the two runs' accuracy paired by
prompt (``compare_accuracy``). Samples are read a record at a time and each prompt keeps a
16-byte digest per distinct output, so a suite of 100,000 prompts stays small.
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from collections.abc import Iterator, Mapping
from typing import Any, Literal, TypeVar

import orjson
from pydantic import BaseModel, ConfigDict

from .._errors import ConfigError
from .._sample import Sample
from . import stats
from .accuracy import AccuracyComparison, Expected, ExpectedValue, RerunGrid, compare_grids
from .answers import AnswerSpec
from .answers import Comparison as AnswerComparison
from .collect import VarianceCollector
from .compare import Comparison, compare_cells, p_text
from .metrics import pair_prefix_length, word_tokens
from .printable import printable
from .report import LogprobAgreement
from .stats import HypothesisTestResult
from .suitecompare import SuiteComparison, compare_suites

__all__ = ["ModeChange", "RunComparison", "RunSide", "SuiteRunComparison", "compare_accuracy",
           "compare_runs"]

_FROZEN = ConfigDict(frozen=True, extra="forbid")
_IGNORED = frozenset({"stream"})
"""Request fields that do not make two requests different: how the answer travels."""
_IGNORED_EXTRA = frozenset({"stream_options"})
_SERVER_NOISE = frozenset({"fetched_at", "base_url", "slots"})
"""Server configuration keys that differ between any two runs (a time, a port, per-slot
counters): left out of the differences."""
_PREVIEW = 60
_SHOWN = 10
T = TypeVar("T", str, bytes)


class RunSide(BaseModel):
    """One side of a comparison: where it came from and who answered."""

    model_config = _FROZEN

    name: str
    path: str | None
    started_at: str | None
    library_version: str | None
    endpoint: str | None
    """The base URL the run file recorded (never a key)."""
    server: dict[str, Any] | None
    """The server's configuration the run file's header recorded, when it was asked for."""
    models: dict[str, int]
    """``Sample.model`` over the ok samples: the model that says it answered."""
    fingerprints: dict[str, int]
    """``Sample.system_fingerprint`` over the ok samples (``(none)`` when not sent)."""
    n_samples: int
    n_ok: int
    n_failed: int
    prompts: int | None = None
    """A suite's prompts; None for one request."""


class ModeChange(BaseModel):
    """Whether the most common output changed, and where the two first differ."""

    model_config = _FROZEN

    changed: bool
    mode_a: str
    mode_b: str
    count_a: int
    """How often a gave its most common output."""
    count_b: int
    a_in_b: int
    """How often b gave a's most common output."""
    first_token: int | None
    """0-based position of the first token where the two modes differ (None: the same)."""
    first_char: int | None
    token_a: str | None
    """The tokens at that position (None past an output's end)."""
    token_b: str | None
    tokenization: Literal["provider", "words"]

    def describe(self) -> str:
        if not self.changed:
            return (f"the most common output is the same ({self.count_a} times in a, "
                    f"{self.count_b} in b)")
        unit = "token" if self.tokenization == "provider" else "word"
        return (f"the most common output changed at {unit} {self.first_token} "
                f"({_token(self.token_a)} in a, {_token(self.token_b)} in b); b gave a's "
                f"{self.a_in_b} times")


def _token(token: str | None) -> str:
    return "the end" if token is None else printable(repr(token))


class RunComparison(BaseModel):
    """Two runs of one request: did it change? (module doc)"""

    model_config = _FROZEN

    kind: Literal["run"] = "run"
    a: RunSide
    b: RunSide
    request_differences: list[str]
    """Request fields that differ (empty unless ``allow_different``)."""
    server_differences: list[str]
    """Server configuration keys that differ, ``key: a → b`` (empty without both)."""
    alpha: float
    mode: ModeChange
    comparison: Comparison
    """``compare`` of a against b, deviations counted from a's most common output."""
    more_variable: HypothesisTestResult
    """The permutation test of ΔD > 0."""
    less_variable: HypothesisTestResult
    """The permutation test of ΔD < 0 (its statistic is D_a - D_b)."""
    distributions_differ: HypothesisTestResult
    logprobs: LogprobAgreement | None
    """Over both runs' samples: texts that agree, across and within the runs."""
    logprobs_a: LogprobAgreement | None
    logprobs_b: LogprobAgreement | None
    changed: bool
    verdict: str

    def to_text(self) -> str:
        """The verdict, the two sides in columns, each test on a line."""
        a, b, c = self.a, self.b, self.comparison
        rows = [("file", a.path or "-", b.path or "-"),
                ("started", a.started_at or "-", b.started_at or "-"),
                ("samples", f"{a.n_samples} ({a.n_ok} ok)", f"{b.n_samples} ({b.n_ok} ok)"),
                ("distinct", str(c.a.distinct), str(c.b.distinct)),
                ("D [95% CI]", _d(c.a.disagreement_rate, c.a.disagreement_rate_ci),
                 _d(c.b.disagreement_rate, c.b.disagreement_rate_ci)),
                ("mode", f"{self.mode.count_a}x {_preview(self.mode.mode_a)}",
                 f"{self.mode.count_b}x {_preview(self.mode.mode_b)}"),
                ("model", _counts(a.models), _counts(b.models)),
                ("fingerprint", _counts(a.fingerprints), _counts(b.fingerprints)),
                ("server", _server(a.server), _server(b.server)),
                ("endpoint", a.endpoint or "-", b.endpoint or "-")]
        lines = [f"verdict: {self.verdict}", "", *_columns(rows)]
        if self.request_differences:
            lines.append(f"request     differs (allowed): {', '.join(self.request_differences)}")
        lines += [f"server      {d}" for d in self.server_differences[:_SHOWN]]
        lines += [
            "",
            f"mode        {self.mode.describe()}",
            f"b more var. {p_text(self.more_variable)} (ΔD = {self.more_variable.statistic:+.3f}"
            f" {c.delta_d_ci}; {self.more_variable.method}, {self.more_variable.resamples} "
            "resamples, one-sided)",
            f"b less var. {p_text(self.less_variable)} (the other side)",
            f"differ      the distributions differ: {p_text(self.distributions_differ)} "
            "(permutation test of homogeneity)",
            f"exact       b deviates from a's most common output more often: {p_text(c.exact)}"
            f" ({c.exact.method}, one-sided)",
        ]
        if c.minimum_detectable_rate is not None:
            lines.append(f"power       at these n a deviation rate of "
                         f"{c.minimum_detectable_rate:.1%} in b is detected with 80 % power")
        lines.append(f"logprobs    {_logprob_text(self)}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.to_text()


class SuiteRunComparison(BaseModel):
    """Two runs of one suite, prompt by prompt (module doc)."""

    model_config = _FROZEN

    kind: Literal["suite"] = "suite"
    a: RunSide
    b: RunSide
    request_differences: list[str]
    server_differences: list[str]
    alpha: float
    suite: SuiteComparison
    """Per prompt (Benjamini-Hochberg) and over the suite (CMH, sign test)."""
    modes_changed: list[str]
    """Prompts whose most common output differs between the runs, in a's order."""
    varies_only_in_a: list[str]
    varies_only_in_b: list[str]
    """Prompts whose outputs vary in b and all agree in a: what b's conditions did."""
    accuracy: AccuracyComparison | None
    """With expected answers: the two runs' accuracy, paired by prompt."""
    changed: bool
    verdict: str

    def to_text(self) -> str:
        a, b = self.a, self.b
        rows = [("file", a.path or "-", b.path or "-"),
                ("started", a.started_at or "-", b.started_at or "-"),
                ("prompts", str(a.prompts), str(b.prompts)),
                ("samples", f"{a.n_samples} ({a.n_ok} ok)", f"{b.n_samples} ({b.n_ok} ok)"),
                ("model", _counts(a.models), _counts(b.models)),
                ("fingerprint", _counts(a.fingerprints), _counts(b.fingerprints)),
                ("server", _server(a.server), _server(b.server)),
                ("endpoint", a.endpoint or "-", b.endpoint or "-")]
        lines = [f"verdict: {self.verdict}", "", *_columns(rows)]
        if self.request_differences:
            lines.append(f"requests    differ (allowed): {'; '.join(self.request_differences)}")
        lines += [f"server      {d}" for d in self.server_differences[:_SHOWN]]
        lines += ["", f"mode        {len(self.modes_changed)} prompts' most common output "
                      f"changed{_named(self.modes_changed)}",
                  f"vary        in b only: {len(self.varies_only_in_b)}"
                  f"{_named(self.varies_only_in_b)}; in a only: "
                  f"{len(self.varies_only_in_a)}{_named(self.varies_only_in_a)}",
                  "", self.suite.to_text()]
        if self.accuracy is not None:
            lines += ["", self.accuracy.to_text()]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.to_text()


def _named(ids: list[str]) -> str:
    if not ids:
        return ""
    return ": " + ", ".join(printable(i) for i in ids[:_SHOWN]) + (
        " ..." if len(ids) > _SHOWN else "")


def _columns(rows: list[tuple[str, str, str]]) -> list[str]:
    width = max(24, *(len(printable(r[1])[:48]) for r in rows))
    out = [f"{'':<12}{'a':<{width + 2}}b"]
    for label, left, right in rows:
        out.append(f"{label:<12}{printable(left)[:48]:<{width + 2}}{printable(right)[:48]}")
    return out


def _d(value: float | None, ci: object) -> str:
    return "n/a" if value is None else f"{value:.3f} {ci or ''}".strip()


def _preview(text: str) -> str:
    return repr(text[:30]) + ("…" if len(text) > 30 else "")


def _counts(counts: Mapping[str, int]) -> str:
    if not counts:
        return "-"
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    shown = ", ".join(f"{k} x{v}" for k, v in ranked[:2])
    return shown + (f" (+{len(ranked) - 2} more)" if len(ranked) > 2 else "")


def _server(server: Mapping[str, Any] | None) -> str:
    if not server:
        return "(not recorded)"
    parts = [str(server.get("engine", "?"))]
    for key in ("build", "total_slots"):
        if server.get(key) is not None:
            parts.append(f"{key}={server[key]}")
    return " ".join(parts)


def _logprob_text(c: RunComparison) -> str:
    merged, la, lb = c.logprobs, c.logprobs_a, c.logprobs_b
    if merged is None:
        return "not returned"
    if merged.identical_within_outputs is None:
        return "no text occurs twice, so no logprobs of agreeing texts could be compared"
    if merged.identical_within_outputs:
        return ("where texts agree (within and across the runs), the logprobs are bitwise "
                f"identical ({merged.samples} samples with logprobs)")
    within = [x for x in (la, lb) if x is not None and x.identical_within_outputs is False]
    if not within and c.mode.a_in_b:
        return (f"the texts agree across the runs but their logprobs changed from token "
                f"{merged.first_diff_within_outputs} (max |Δ| "
                f"{merged.max_abs_diff_within_outputs:.1e}): the same words, computed "
                "differently")
    return merged.describe()


# -- reading a side ---------------------------------------------------------------------

class _Side:
    """A run file, ``read_run`` contents, a ``SampleSet`` or a ``SuiteResult``, read the
    same way."""

    def __init__(self, source: Any, name: str) -> None:
        self.name = name
        self.path: str | None = None
        self.header: dict[str, Any] = {}
        self._contents: Any = None
        self._result: Any = None
        if isinstance(source, str | os.PathLike):
            from .._runs.runfile import read_run  # files are read only when one is given

            source = read_run(source)
        if hasattr(source, "header") and hasattr(source, "iter_samples"):
            self._contents = source
            self.header = dict(source.header)
            self.path = str(source.path)
            self.suite_ids: list[str] | None = source.suite_ids
        elif hasattr(source, "entries"):
            self._result = source
            self.suite_ids = [e.id for e in source.entries]
            if source.entries and not any(len(e.samples) for e in source.entries):
                raise ConfigError(name, "this SuiteResult kept no samples "
                                  "(keep_samples=False): compare its run file instead")
        elif hasattr(source, "request") and hasattr(source, "samples"):
            self._result = source
            self.suite_ids = None
            if not len(source.samples) and source.report.n_samples:
                raise ConfigError(name, "this SampleSet kept no samples (keep_samples=False): "
                                  "compare its run file instead")
        else:
            raise ConfigError(name, "must be a run file (a path or lv.read_run(path)), a "
                              f"SampleSet or a SuiteResult; got {type(source).__name__}")

    def request(self) -> dict[str, Any]:
        if self._contents is not None:
            found = self.header.get("request")
            return found if isinstance(found, dict) else {}
        from .._runs.runfile import _request_record

        return _request_record(self._result.request)

    def requests(self) -> Iterator[tuple[str, dict[str, Any]]]:
        if self._contents is not None:
            yield from self._contents.request_records()
            return
        from .._runs.runfile import _request_record

        for entry in self._result.entries:
            yield entry.id, _request_record(entry.request)

    def samples(self) -> Iterator[Sample]:
        if self._contents is not None:
            yield from self._contents.iter_samples()
        elif self.suite_ids is not None:
            for entry in self._result.entries:
                yield from entry.samples
        else:
            yield from self._result.samples

    def side(self, tally: _Tally) -> RunSide:
        endpoint = self.header.get("endpoint")
        url = endpoint.get("base_url") if isinstance(endpoint, dict) else None
        if url is None and self._result is not None:
            url = self._result.endpoint
        server = self.header.get("server")
        return RunSide(
            name=self.name, path=self.path, started_at=_str(self.header.get("started_at")),
            library_version=_str(self.header.get("library_version")),
            endpoint=url if isinstance(url, str) else None,
            server=server if isinstance(server, dict) else None, models=dict(tally.models),
            fingerprints=dict(tally.fingerprints), n_samples=tally.ok + tally.failed,
            n_ok=tally.ok, n_failed=tally.failed,
            prompts=None if self.suite_ids is None else len(self.suite_ids))


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None


class _Tally:
    """What both kinds of comparison count over a side's samples."""

    __slots__ = ("failed", "fingerprints", "models", "ok")

    def __init__(self) -> None:
        self.models: Counter[str] = Counter()
        self.fingerprints: Counter[str] = Counter()
        self.ok = self.failed = 0

    def add(self, sample: Sample) -> bool:
        if sample.error is not None:
            self.failed += 1
            return False
        self.ok += 1
        self.models[sample.model or "(none)"] += 1
        self.fingerprints[sample.system_fingerprint or "(none)"] += 1
        return True


# -- requests ---------------------------------------------------------------------------

def _identity(fields: Mapping[str, Any]) -> dict[str, Any]:
    """A request's fields that decide what is asked (not how the answer travels)."""
    kept = {k: v for k, v in fields.items() if k not in _IGNORED and v is not None}
    extra = kept.get("extra")
    if isinstance(extra, dict):
        extra = {k: v for k, v in extra.items() if k not in _IGNORED_EXTRA}
        if extra:
            kept["extra"] = extra
        else:
            kept.pop("extra")
    return kept


def _value(value: object) -> str:
    text = orjson.dumps(value).decode() if not isinstance(value, str) else repr(value)
    return printable(text[:_PREVIEW] + ("…" if len(text) > _PREVIEW else ""))


def _field_differences(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    left, right = _identity(a), _identity(b)
    keys = list(left) + [k for k in right if k not in left]
    return [f"{k}: {_value(left.get(k))} in a, {_value(right.get(k))} in b"
            for k in keys if left.get(k) != right.get(k)]


def _suite_differences(a: _Side, b: _Side) -> list[str]:
    """The differences between two suites' requests, the first first (at most ``_SHOWN``)."""
    digests = [s.header.get("suite") for s in (a, b)]
    if all(isinstance(d, dict) and d.get("digest") for d in digests) and (
            digests[0]["digest"] == digests[1]["digest"]):  # type: ignore[index]
        return []
    stored: dict[str, bytes] = {}
    for rid, fields in a.requests():
        stored[rid] = orjson.dumps(_identity(fields), option=orjson.OPT_SORT_KEYS)
    found: list[str] = []
    seen: set[str] = set()
    for rid, fields in b.requests():
        seen.add(rid)
        mine = stored.get(rid)
        if mine is None:
            found.append(f"prompt {printable(repr(rid))} is only in b")
        elif mine != orjson.dumps(_identity(fields), option=orjson.OPT_SORT_KEYS):
            fields_a = dict(next(f for r, f in a.requests() if r == rid))
            found.append(f"prompt {printable(repr(rid))}: "
                         + "; ".join(_field_differences(fields_a, fields)[:2]))
        if len(found) >= _SHOWN:
            return found
    found += [f"prompt {printable(repr(rid))} is only in a" for rid in stored
              if rid not in seen][:_SHOWN - len(found)]
    return found


def _refuse(differences: list[str], what: str) -> None:
    raise ConfigError("b", f"the runs are of different {what}: {differences[0]}"
                      + (f" (and {len(differences) - 1} more)" if len(differences) > 1 else "")
                      + "; compare them anyway with allow_different=True (--allow-different)")


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, inner in value.items():
            if not prefix and key in _SERVER_NOISE:
                continue
            out.update(_flatten(inner, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: value}


def _server_differences(a: dict[str, Any] | None, b: dict[str, Any] | None) -> list[str]:
    if not a or not b:
        return []
    left, right = _flatten(a), _flatten(b)
    keys = list(left) + [k for k in right if k not in left]
    return [f"{printable(k)}: {_value(left.get(k))} → {_value(right.get(k))}" for k in keys
            if left.get(k) != right.get(k)]


# -- one request ------------------------------------------------------------------------

def _mode(counts: Mapping[T, int]) -> tuple[T, int]:
    """The most common output; ties go to the smallest."""
    return min(counts.items(), key=lambda kv: (-kv[1], kv[0]))


def _mode_change(a: VarianceCollector, b: VarianceCollector, counts_a: Counter[str],
                 counts_b: Counter[str]) -> ModeChange:
    (mode_a, count_a), (mode_b, count_b) = _mode(counts_a), _mode(counts_b)
    tokens_a, tokens_b = a.tokens_of(mode_a), b.tokens_of(mode_b)
    provider = tokens_a is not None and tokens_b is not None
    if tokens_a is None or tokens_b is None:
        tokens_a, tokens_b = word_tokens(mode_a), word_tokens(mode_b)
    changed = mode_a != mode_b
    first = pair_prefix_length(tokens_a, tokens_b) if changed else None
    chars = pair_prefix_length(mode_a, mode_b) if changed else None
    return ModeChange(
        changed=changed, mode_a=mode_a, mode_b=mode_b, count_a=count_a, count_b=count_b,
        a_in_b=counts_b.get(mode_a, 0), first_token=first, first_char=chars,
        token_a=None if first is None or first >= len(tokens_a) else tokens_a[first],
        token_b=None if first is None or first >= len(tokens_b) else tokens_b[first],
        tokenization="provider" if provider else "words")


def _compare_one(a: _Side, b: _Side, differences: list[str], alpha: float, seed: int,
                 resamples: int) -> RunComparison:
    collectors, tallies = [], []
    for side in (a, b):
        collector, tally = VarianceCollector(grouped=False), _Tally()
        for sample in side.samples():
            tally.add(sample)
            collector.add(sample)
        collectors.append(collector)
        tallies.append(tally)
    counts_a = Counter(collectors[0].output_counts())
    counts_b = Counter(collectors[1].output_counts())
    for side, counts in ((a, counts_a), (b, counts_b)):
        if counts.total() < 2:
            raise ConfigError(side.name, f"{side.path or side.name} has "
                              f"{counts.total()} successful output(s); comparing needs at "
                              "least two")
    comparison = compare_cells({None: counts_a}, {None: counts_b}, alpha=alpha, seed=seed,
                               resamples=resamples)
    reverse, _ = stats.permutation_tests({None: counts_b}, {None: counts_a},
                                         resamples=resamples, seed=seed)
    less = reverse.model_copy(update={"name": "ΔD < 0"})
    merged = collectors[0].merge(collectors[1])
    mode = _mode_change(collectors[0], collectors[1], counts_a, counts_b)
    report_a, report_b = collectors[0].report(tree=False), collectors[1].report(tree=False)
    side_a, side_b = a.side(tallies[0]), b.side(tallies[1])
    result = RunComparison(
        a=side_a, b=side_b, request_differences=differences,
        server_differences=_server_differences(side_a.server, side_b.server), alpha=alpha,
        mode=mode, comparison=comparison, more_variable=comparison.delta_d_test,
        less_variable=less, distributions_differ=comparison.homogeneity,
        logprobs=merged.report(tree=False).logprobs, logprobs_a=report_a.logprobs,
        logprobs_b=report_b.logprobs, changed=False, verdict="")
    changed, verdict = _verdict(result)
    return result.model_copy(update={"changed": changed, "verdict": verdict})


def _verdict(c: RunComparison) -> tuple[bool, str]:
    more, less = c.more_variable.pvalue, c.less_variable.pvalue
    variability = min(1.0, 2 * min(more, less))
    p_var, p_dist = stats.holm([variability, c.distributions_differ.pvalue])
    arms = c.comparison
    d = f"D {_d(arms.b.disagreement_rate, None)} vs {_d(arms.a.disagreement_rate, None)}"
    parts = [c.mode.describe()]
    if p_var < c.alpha:
        direction = "more" if c.more_variable.statistic > 0 else "less"
        parts.append(f"b varies {direction} than a: {d} (ΔD {c.more_variable.statistic:+.3f} "
                     f"{arms.delta_d_ci}), {p_text(p_var)}")
    else:
        parts.append(f"variability unchanged: {d}, {p_text(p_var)}")
    parts.append(f"the distributions {'differ' if p_dist < c.alpha else 'do not differ'}: "
                 f"{p_text(p_dist)}")
    changed = p_var < c.alpha or p_dist < c.alpha
    tail = " (permutation tests, Holm over the two)"
    if changed:
        return True, "changed: " + "; ".join(parts) + tail
    head = f"no change detected at alpha = {c.alpha:g}: " + "; ".join(parts) + tail
    if arms.minimum_detectable_rate is not None:
        head += (f". At these n a deviation rate of {arms.minimum_detectable_rate:.1%} in b "
                 "would be detected with 80 % power")
    return False, head


# -- suites -----------------------------------------------------------------------------

def _digest(text: str) -> bytes:
    return hashlib.blake2b(text.encode(), digest_size=16).digest()


class _SuiteTally:
    """Per prompt: a count per distinct output (by 16-byte digest); maybe each sample
    graded."""

    def __init__(self, side: _Side, grading: Expected | None,
                 answers: AnswerComparison | None) -> None:
        assert side.suite_ids is not None
        self.counts: dict[str, Counter[bytes]] = {rid: Counter() for rid in side.suite_ids}
        self.tally = _Tally()
        n = int(side.header.get("n") or 0)
        self.grid: RerunGrid | None = None
        if grading is not None and answers is not None:
            if side._result is not None:
                n = side._result.n
            elif side._contents is not None:
                n = side._contents.max_n
            self.grid = RerunGrid(side.suite_ids, n, grading)
        for sample in side.samples():
            rid = sample.request_id or ""
            if self.tally.add(sample):
                text = sample.text or ""
                counter = self.counts.get(rid)
                if counter is not None:
                    counter[_digest(text)] += 1
                if self.grid is not None and answers is not None:
                    answer = answers.extract(answers.key(text))[0]
                    self.grid.record(rid, sample.index, grading.grade(rid, answer)
                                     if grading is not None else None)
            elif self.grid is not None:
                self.grid.record(rid, sample.index, None)


def _compare_suites(a: _Side, b: _Side, differences: list[str], alpha: float,
                    expected: Expected | None, answer: AnswerSpec | None, normalize: bool,
                    seed: int, resamples: int) -> SuiteRunComparison:
    answers = AnswerComparison(answer, normalize=normalize) if answer is not None else None
    if expected is not None and answers is None:
        raise ConfigError("expected", "needs answer= (a regex, a JsonPointer or a function) "
                          "to tell each output's answer")
    tally_a = _SuiteTally(a, expected, answers)
    tally_b = _SuiteTally(b, expected, answers)
    suite = compare_suites(tally_a.counts, tally_b.counts, alpha=alpha)
    common = [rid for rid in tally_a.counts if rid in tally_b.counts]
    changed_modes, only_a, only_b = [], [], []
    for rid in common:
        ca, cb = tally_a.counts[rid], tally_b.counts[rid]
        if not ca or not cb:
            continue
        if _mode(ca)[0] != _mode(cb)[0]:
            changed_modes.append(rid)
        if len(ca) > 1 and len(cb) == 1:
            only_a.append(rid)
        elif len(cb) > 1 and len(ca) == 1:
            only_b.append(rid)
    accuracy = None
    if tally_a.grid is not None and tally_b.grid is not None:
        accuracy = compare_grids(tally_a.grid, tally_b.grid, alpha=alpha, seed=seed,
                                 resamples=resamples)
    side_a, side_b = a.side(tally_a.tally), b.side(tally_b.tally)
    changed = suite.cmh.pvalue < alpha or bool(accuracy is not None and accuracy.significant)
    n = suite.n_prompts
    parts = [
        (f"b departs from a's most common outputs more often than a does over the {n} "
         if suite.cmh.pvalue < alpha else
         f"b does not depart from a's most common outputs detectably more often over the {n} ")
        + f"prompts (Cochran-Mantel-Haenszel {p_text(suite.cmh)})",
        f"{len(changed_modes)} prompts' most common output changed",
        f"{len(only_b)} vary in b only, {len(only_a)} in a only (sign test on ΔD "
        f"{p_text(suite.sign_test)})"]
    significant = suite.significant_prompts
    if significant:
        parts.append(f"significant on their own after Benjamini-Hochberg: "
                     f"{', '.join(printable(i) for i in significant[:_SHOWN])}"
                     + (" ..." if len(significant) > _SHOWN else ""))
    if accuracy is not None:
        parts.append(accuracy.verdict)
    head = "changed: " if changed else f"no change detected at alpha = {alpha:g}: "
    verdict = head + "; ".join(parts)
    return SuiteRunComparison(
        a=side_a, b=side_b, request_differences=differences,
        server_differences=_server_differences(side_a.server, side_b.server), alpha=alpha,
        suite=suite, modes_changed=changed_modes, varies_only_in_a=only_a,
        varies_only_in_b=only_b, accuracy=accuracy, changed=changed, verdict=verdict)


# -- the entry points -------------------------------------------------------------------

def compare_runs(a: Any, b: Any, *, allow_different: bool = False, alpha: float = 0.05,
                 answer: AnswerSpec | None = None,
                 expected: Mapping[str, ExpectedValue] | Expected | str | os.PathLike[str]
                 | None = None,
                 normalize: bool = False, seed: int = 0, resamples: int = 9999
                 ) -> RunComparison | SuiteRunComparison:
    """Did it change? Two runs of the same request, or of the same suite (module doc).

    ``a`` and ``b``: run files (paths or ``lv.read_run(path)``), ``SampleSet``s or
    ``SuiteResult``s. Runs of different requests are refused (``ConfigError`` naming the
    first difference) unless ``allow_different``. For suites, ``expected`` (prompt id →
    answer, or a file of them) with ``answer`` adds the paired comparison of accuracy.
    Tests use ``resamples`` permutations seeded by ``seed``, at ``alpha``.
    """
    if not 0.0 < alpha < 1.0:
        raise ConfigError("alpha", f"must be between 0 and 1, got {alpha!r}")
    ConfigError.check_int("resamples", resamples)
    side_a, side_b = _Side(a, "a"), _Side(b, "b")
    if (side_a.suite_ids is None) != (side_b.suite_ids is None):
        raise ConfigError("b", "one run is a suite's and the other one request's: compare "
                          "two runs of the same kind")
    if side_a.suite_ids is None:
        differences = _field_differences(side_a.request(), side_b.request())
        if differences and not allow_different:
            _refuse(differences, "requests")
        if expected is not None:
            raise ConfigError("expected", "expected answers are for suites")
        return _compare_one(side_a, side_b, differences, alpha, seed, resamples)
    differences = _suite_differences(side_a, side_b)
    if differences and not allow_different:
        _refuse(differences, "suites")
    grading = _expected(expected)
    return _compare_suites(side_a, side_b, differences, alpha, grading, answer, normalize,
                           seed, resamples)


def _expected(expected: Mapping[str, ExpectedValue] | Expected | str | os.PathLike[str]
              | None) -> Expected | None:
    if expected is None:
        return None
    if isinstance(expected, str | os.PathLike):
        from .._runs.expected import read_expected

        return Expected(read_expected(expected))
    return Expected.of(expected)


def compare_accuracy(a: Any, b: Any, *, answer: AnswerSpec | None = None,
                     expected: Mapping[str, ExpectedValue] | Expected | str
                     | os.PathLike[str] | None = None,
                     normalize: bool = False, alpha: float = 0.05, seed: int = 0,
                     resamples: int = 9999) -> AccuracyComparison:
    """Two suite runs' accuracy, paired by prompt: the sign-flip permutation test over
    prompts (the decision), a paired bootstrap interval of the difference, McNemar's exact
    test per rerun (``accuracy`` module).

    ``a`` and ``b``: ``SuiteResult``s made with ``expected=`` (their grades are used as
    they are), or suite run files / ``SuiteResult``s graded here with ``answer`` and
    ``expected``.
    """
    grids = []
    for name, source in (("a", a), ("b", b)):
        grades = getattr(source, "_grades", None)
        if grades is not None and expected is None:
            grids.append(grades)
            continue
        if expected is None or answer is None:
            raise ConfigError("expected", f"{name} was not graded: pass answer= and expected=")
        side = _Side(source, name)
        if side.suite_ids is None:
            raise ConfigError(name, "accuracy needs a suite's run (many prompts)")
        tally = _SuiteTally(side, _expected(expected),
                            AnswerComparison(answer, normalize=normalize))
        assert tally.grid is not None
        grids.append(tally.grid)
    return compare_grids(grids[0], grids[1], alpha=alpha, seed=seed, resamples=resamples)
