"""``llmvariance check`` / ``lv.check``: a determinism gate for CI, its exit codes, its
JUnit XML (read back with a JUnit parser CI systems agree with), its baseline, and the
pytest helper's message."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from junitparser import Error, Failure, JUnitXml

import llmvariance as lv
from conftest import served
from llmvariance._analysis.collect import VarianceCollector
from llmvariance._analysis.stats import exact_upper_bound, samples_to_bound
from llmvariance._check import ALL, _Limits, _row, least_disagreement
from llmvariance.testing import DenseModel, SimServer, assert_reproducible

CLI = [sys.executable, "-m", "llmvariance"]
README = Path(__file__).resolve().parent.parent / "README.md"
PROMPT = "Tell me story number 1"
"""A prompt on which the simulator's moe model, batched, never gives dense's output."""


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=120,
                          check=False)


@pytest.fixture(scope="module")
def served_url() -> Iterator[str]:
    # decode steps take real time, so a burst's requests share batches
    with served("--step-time", "0.002") as url:
        yield url


def gate(url: str, model: str, *extra: str) -> list[str]:
    return ["check", "--base-url", url, "--model", model, "--prompt", PROMPT,
            "--max-tokens", "32", *extra]


def test_check_exits_0_on_dense_and_1_on_moe_under_a_burst_with_junit(served_url: str,
                                                                      tmp_path: Path) -> None:
    report = tmp_path / "dense.xml"
    out = run(*gate(served_url, "dense", "-n", "30", "--conditions", "sequential,burst",
                    "--max-disagreement", "0", "--junit", str(report)))
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stderr.startswith("llmvariance check: passed: all 60 outputs identical "
                                 "across sequential, burst")
    assert "at most 4.9% of requests differ from the reference (95% one-sided, 0 of 60)" in (
        out.stderr)
    xml = JUnitXml.fromfile(str(report))
    suite = next(iter(xml))
    cases = list(suite)
    assert [c.name for c in cases] == ["sequential", "burst", ALL]
    assert all(c.is_passed for c in cases)
    assert (suite.tests, suite.failures, suite.errors) == (3, 0, 0)
    assert {p.name: p.value for p in suite.properties()}["model"] == "dense"

    report = tmp_path / "moe.xml"
    out = run(*gate(served_url, "moe", "-n", "30", "--conditions", "sequential,burst",
                    "--junit", str(report)))
    assert out.returncode == 1, out.stdout + out.stderr
    last = out.stderr.strip().splitlines()[-1]
    assert re.match(r"llmvariance check: failed: burst: \d+ distinct of 30, D = 0\.\d+ "
                    r"\[[\d.]+, [\d.]+\]: D = 0\.\d+ > 0", last), last
    suite = next(iter(JUnitXml.fromfile(str(report))))
    by_name = {c.name: c for c in suite}
    assert by_name["sequential"].is_passed  # one at a time, moe is deterministic
    failure = by_name["burst"].result[0]
    assert isinstance(failure, Failure) and failure.type == "not reproducible"
    assert failure.message.startswith("burst: ") and "> 0" in failure.message
    assert "the outputs first differ at token" in (failure.text or "")
    assert (suite.tests, suite.failures, suite.errors) == (3, 2, 0)  # burst and pooled


def test_a_baseline_whose_most_common_output_differs_fails_the_check(served_url: str,
                                                                     tmp_path: Path) -> None:
    baseline = tmp_path / "baseline.jsonl"
    out = run(*gate(served_url, "dense", "-n", "10", "--out", str(baseline)))
    assert out.returncode == 0, out.stderr
    contents = lv.read_run(baseline)
    assert len(contents) == 20 and {s.condition for s in contents.iter_samples()} == {
        "sequential", "burst"}
    again = run(*gate(served_url, "dense", "-n", "10", "--baseline", str(baseline)))
    assert again.returncode == 0, again.stderr
    assert "the most common output is the baseline's" in again.stderr
    refused = run(*gate(served_url, "moe", "-n", "10", "--baseline", str(baseline)))
    assert refused.returncode == 2
    assert "baseline: was run with another request: model: 'dense' in a, 'moe' in b" in (
        refused.stderr)
    moved = run(*gate(served_url, "moe", "-n", "10", "--conditions", "sequential",
                      "--baseline", str(baseline), "--allow-different"))
    assert moved.returncode == 1, moved.stderr
    assert "the most common output is not the baseline's, at word" in moved.stderr
    assert "(the baseline's ' " in moved.stderr


@pytest.mark.anyio
async def test_a_silent_redeploy_under_the_same_name_fails_against_the_baseline(
        tmp_path: Path) -> None:
    request = lv.ChatRequest(model="dense", messages=[{"role": "user", "content": PROMPT}],
                             max_tokens=16)
    baseline = tmp_path / "before.jsonl"
    async with SimServer() as url:
        before = await lv.check(request, 6, endpoint=lv.Endpoint(base_url=url),
                                output=baseline)
    assert before.outcome == "passed" and before.exit_code == 0
    async with SimServer(models=[DenseModel(variant=1)]) as url:  # new weights, same name
        after = await lv.check(request, 6, endpoint=lv.Endpoint(base_url=url),
                               baseline=baseline)
    assert after.outcome == "failed" and after.exit_code == 1
    assert all(row.matches_baseline is False for row in after.rows)
    assert all(row.disagreement_rate == 0 for row in after.rows)  # still deterministic
    assert "not the baseline's" in after.evidence
    with pytest.raises(AssertionError, match="not the baseline's"):
        after.assert_holds()


def test_could_not_measure_exits_3_with_a_junit_error(tmp_path: Path) -> None:
    report = tmp_path / "down.xml"
    out = run("check", "--base-url", "http://127.0.0.1:9/v1", "--model", "m", "--prompt", "p",
              "-n", "5", "--max-attempts", "1", "--junit", str(report))
    assert out.returncode == 3, out.stderr
    assert "could not measure: the first request failed: connection" in out.stderr
    suite = next(iter(JUnitXml.fromfile(str(report))))
    (case,) = list(suite)
    assert case.name == "preflight" and isinstance(case.result[0], Error)
    assert suite.errors == 1


@pytest.mark.anyio
async def test_too_many_failures_in_a_condition_could_not_measure() -> None:
    calls = 0

    def handler(request: lv.HTTPRequest) -> lv.HTTPResponse:
        nonlocal calls
        calls += 1
        if calls > 1 and calls % 3 == 0:
            return lv.HTTPResponse(400, b'{"error": {"message": "bad luck"}}')
        return lv.HTTPResponse(200, orjson.dumps({"choices": [{
            "message": {"content": "same"}, "finish_reason": "stop"}]}))

    request = lv.ChatRequest(model="m", messages=[{"role": "user", "content": "p"}])
    result = await lv.check(request, 12, endpoint=lv.Endpoint(base_url="http://127.0.0.1:9/v1",
                                                              api_key=None),
                            transport=lv.MockTransport(handler))
    assert result.outcome == "could_not_measure" and result.exit_code == 3
    assert "requests failed (http_status x" in result.evidence
    assert "more than 10%" in result.evidence
    junit = JUnitXml.fromstring(result.to_junit())
    assert next(iter(junit)).errors >= 1


def test_the_rate_bound_needs_enough_samples_and_is_checked_before_sending() -> None:
    out = run("check", "--base-url", "http://127.0.0.1:9/v1", "--model", "m", "--prompt", "p",
              "-n", "30", "--max-rate-bound", "0.05")
    assert out.returncode == 2
    assert ("n: 30 per condition can never show a rate of at most 5.0% (0 of 30 differing "
            "still allows 9.5% at 95%); use n >= 59") in out.stderr
    assert samples_to_bound(0.05) == 59 and exact_upper_bound(0, 59) <= 0.05 < (
        exact_upper_bound(0, 58))


def test_the_exact_upper_bound_is_clopper_pearsons() -> None:
    from scipy import stats

    for k, n in ((1, 30), (3, 30), (7, 100), (0, 12)):
        ci = stats.binomtest(k, n).proportion_ci(confidence_level=0.90, method="exact")
        assert exact_upper_bound(k, n, 0.95) == pytest.approx(ci.high)  # one-sided 95 %


def rows_of(texts: list[str], limits: _Limits, reference: str = "a") -> str:
    samples = [lv.Sample(index=i, text=t) for i, t in enumerate(texts)]
    collector = VarianceCollector(grouped=False)
    collector.update(samples)
    row = _row("c", samples, collector.report(), len(texts), reference, None, limits)
    return row.status


def test_observed_bound_and_proven_bound_differ_on_the_same_outputs() -> None:
    observed = _Limits(max_disagreement=0.05, max_rate_bound=None, confidence=0.95,
                       max_failure_rate=0.1)
    proven = _Limits(max_disagreement=None, max_rate_bound=0.05, confidence=0.95,
                     max_failure_rate=0.1)
    one_off = ["a"] * 99 + ["b"]  # D = 0.02; upper bound on the deviating share 4.7 %
    assert rows_of(one_off, observed) == "holds" and rows_of(one_off, proven) == "holds"
    three_off = ["a"] * 97 + ["b", "c", "d"]  # D = 0.059 > 0.05; bound 7.6 % > 5 %
    assert rows_of(three_off, observed) == "violated"
    assert rows_of(three_off, proven) == "violated"
    two_off = ["a"] * 98 + ["b", "c"]  # D = 0.0396 within 0.05, but the bound is 6.1 %
    assert rows_of(two_off, observed) == "holds" and rows_of(two_off, proven) == "violated"


def test_assert_reproducible_passes_on_dense_and_says_what_varied_on_moe(
        served_url: str) -> None:
    endpoint = lv.Endpoint(base_url=served_url)
    request = lv.ChatRequest(model="dense", messages=[{"role": "user", "content": PROMPT}],
                             max_tokens=32)
    result = assert_reproducible(request, 20, endpoint=endpoint)
    assert result.passed and [r.name for r in result.rows] == ["sequential", "burst", ALL]
    with pytest.raises(AssertionError) as caught:
        assert_reproducible(request.model_copy(update={"model": "moe"}), 20,
                            endpoint=endpoint, conditions=["burst"])
    message = str(caught.value)
    assert message.startswith("failed: burst: ")
    assert re.search(r"the outputs first differ at token \d+ \(words\)", message)
    assert re.search(r"\n +\d+x ' because quietly", message)  # the outputs, with counts


@pytest.mark.anyio
async def test_junit_stays_valid_xml_when_outputs_hold_control_characters() -> None:
    texts = iter(["\x1b[2J\x00bad", "\u202eok", "\x07"] * 10)

    def handler(request: lv.HTTPRequest) -> lv.HTTPResponse:
        return lv.HTTPResponse(200, orjson.dumps({"choices": [{
            "message": {"content": next(texts)}, "finish_reason": "stop"}]}))

    request = lv.ChatRequest(model="m\x1b", messages=[{"role": "user", "content": "p"}])
    result = await lv.check(request, 6, conditions=["sequential"],
                            endpoint=lv.Endpoint(base_url="http://127.0.0.1:9/v1",
                                                 api_key=None),
                            transport=lv.MockTransport(handler))
    assert result.outcome == "failed"
    xml = result.to_junit()
    assert "\x1b" not in xml and "\x00" not in xml and "\\x1b" in xml
    (case,) = list(next(iter(JUnitXml.fromstring(xml))))
    assert isinstance(case.result[0], Failure)


def test_the_readme_ci_job_runs_against_the_built_in_server(served_url: str,
                                                            tmp_path: Path) -> None:
    text = README.read_text()
    job = re.search(r"```yaml\n(.*?)```", text[text.index("## Gate a deployment in CI"):],
                    flags=re.DOTALL)
    assert job is not None
    commands = [line.strip().removeprefix("run: ").strip()
                for line in job.group(1).splitlines()
                if line.strip().startswith(("run: llmvariance check", "llmvariance check"))]
    assert commands, "the CI job runs llmvariance check"
    port = served_url.split(":")[2].split("/")[0]
    for command in commands:
        argv = shlex.split(command.replace("127.0.0.1:8000", f"127.0.0.1:{port}"))
        assert argv[0] == "llmvariance"
        out = subprocess.run([*CLI, *argv[1:]], capture_output=True, text=True, timeout=120,
                             cwd=tmp_path, check=False)
        assert out.returncode == 0, (argv, out.stdout, out.stderr)
        assert "llmvariance check: passed" in out.stderr


# -- early stop: curtailment -----------------------------------------------------------------

def _chat(model: str) -> lv.ChatRequest:
    return lv.ChatRequest(model=model, max_tokens=16,
                          messages=[{"role": "user", "content": "Tell me a story."}])


def test_least_disagreement_is_reached_when_the_rest_give_the_most_common_output() -> None:
    # 8 a, 2 b now, 10 more to come: all a gives counts (18, 2), D = 2*18*2/(20*19)
    assert least_disagreement([8, 2], 10) == pytest.approx(1 - (18 * 17 + 2) / (20 * 19))
    assert least_disagreement([8, 2], 0) == pytest.approx(1 - (8 * 7 + 2) / (10 * 9))
    assert least_disagreement([5], 5) == 0.0  # all agree so far: nothing is decided
    assert least_disagreement([1, 1], 0) == 1.0


@pytest.mark.anyio
async def test_early_stop_ends_a_failing_check_at_once_and_a_passing_one_sends_everything(
        ) -> None:
    server = SimServer(step_time_s=0.001)
    async with server as url:
        ep = lv.Endpoint(base_url=url)
        moe = await lv.check(_chat("moe"), 30, endpoint=ep, conditions=["sequential", "burst"],
                             early_stop=True)
        failing = server.stats.requests
        dense = await lv.check(_chat("dense"), 30, endpoint=ep,
                               conditions=["sequential", "burst"], early_stop=True)
        passing = server.stats.requests - failing
    assert moe.outcome == "failed" and moe.exit_code == 1
    assert moe.stopped_early is not None
    stopped = re.match(r"stopped after block (\d) of 5: burst varies beyond the bound",
                       moe.stopped_early)
    assert stopped is not None, moe.stopped_early
    block = int(stopped.group(1))
    sent = sum(r.n_ok + r.n_failed for r in moe.rows if r.name != ALL)
    assert sent == 12 * block < 60  # 6 per condition in each block run, the rest never sent
    assert f"{sent} of 60 requests sent, {60 - sent} saved" in moe.stopped_early
    assert failing == 1 + sent  # the preflight request, then only the blocks run
    # a pass is never curtailed: all n per condition, the same outcome as without early stop
    assert dense.outcome == "passed" and dense.stopped_early is None
    assert passing == 1 + 60
    assert "early stop:" in moe.to_text() and "early stop:" not in dense.to_text()
