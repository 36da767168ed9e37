"""A run whose first samples all fail with one error waiting cannot fix stops early.

A bad key, a model that does not exist, an unknown host: every further request would only
record the same error (hours of it at n = 10,000). The run stops after the first few, says
why on the result and in one line from the CLI, and its run file resumes the rest.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest

import llmvariance as lv
from llmvariance._sampler import EARLY_STOP_AFTER

pytestmark = pytest.mark.anyio

CHAT = lv.ChatRequest(model="m", messages=[{"role": "user", "content": "hi"}])
OK = orjson.dumps({"choices": [{"message": {"content": "fine"}, "finish_reason": "stop"}]})
EP = lv.Endpoint(base_url="http://127.0.0.1:9/v1", api_key="sk-wrong")


def answering(*statuses: int) -> tuple[lv.MockTransport, list[int]]:
    """A transport answering each request with the next status (the last one repeats)."""
    sent: list[int] = []

    def handler(request: lv.HTTPRequest) -> lv.HTTPResponse:
        status = statuses[min(len(sent), len(statuses) - 1)]
        sent.append(status)
        if status == 200:
            return lv.HTTPResponse(200, OK)
        return lv.HTTPResponse(status, orjson.dumps({"error": {"message": "Incorrect API key"}}))

    return lv.MockTransport(handler), sent


async def test_a_wrong_key_stops_the_run_after_the_first_few_and_it_resumes(
        tmp_path: Path) -> None:
    out = tmp_path / "run.jsonl"
    transport, sent = answering(401)
    result = await lv.sample_many(CHAT, 10_000, endpoint=EP, transport=transport,
                                  concurrency=4, output=out)
    assert result.stopped_early is not None and "Incorrect API key" in result.stopped_early
    assert EARLY_STOP_AFTER <= len(sent) < EARLY_STOP_AFTER + 4  # not 10,000 copies
    assert len(result.samples) == len(sent) and all(s.error for s in result.samples)
    assert all(s.attempts == 1 and s.error and s.error.final for s in result.samples)

    fixed, resent = answering(200)  # the key fixed: the same file sends the rest
    resumed = await lv.sample_many(CHAT, 10_000, endpoint=EP, transport=fixed,
                                   concurrency=8, output=out)
    assert resumed.stopped_early is None and resumed.report.n_ok == 10_000
    assert len(resent) == 10_000  # every index once: the failed ones and the unsent ones


@pytest.mark.parametrize("statuses", [(401, 401, 403), (500,), (400,), (401, 200)],
                         ids=["two different errors", "retryable", "not final", "one ok"])
async def test_no_early_stop_unless_the_first_failures_are_one_final_error(
        statuses: tuple[int, ...]) -> None:
    transport, sent = answering(*statuses)
    result = await lv.sample_many(CHAT, 40, endpoint=EP, transport=transport, concurrency=1,
                                  retry=lv.RetryPolicy(max_attempts=1))
    assert result.stopped_early is None and len(result.samples) == 40 == len(sent)


async def test_a_run_too_short_to_save_anything_is_not_stopped() -> None:
    transport, sent = answering(404)
    result = await lv.sample_many(CHAT, EARLY_STOP_AFTER, endpoint=EP, transport=transport)
    assert result.stopped_early is None and len(sent) == EARLY_STOP_AFTER


async def test_an_unknown_host_stops_a_suite_early() -> None:
    suite = {"a": CHAT, "b": CHAT.model_copy(update={"model": "other"})}
    result = await lv.sample_suite(suite, 50, endpoint=lv.Endpoint(
        base_url="http://no-such-host.invalid/v1"), concurrency=2)
    assert result.stopped_early is not None and "no-such-host.invalid" in result.stopped_early
    sent = sum(len(entry.samples) for entry in result.entries)
    assert EARLY_STOP_AFTER <= sent < EARLY_STOP_AFTER + 2


def test_the_cli_exits_3_with_one_line_for_a_model_that_does_not_exist(
        tmp_path: Path) -> None:
    from llmvariance.testing import SimServer

    async def main() -> subprocess.CompletedProcess[str]:
        import anyio

        async with SimServer() as url:
            done = await anyio.run_process(
                [sys.executable, "-m", "llmvariance", "sample", "--base-url", url,
                 "--model", "no-such-model", "--prompt", "hi", "-n", "500",
                 "--out", str(tmp_path / "run.jsonl"), "--no-preflight"], check=False)
        return subprocess.CompletedProcess(done.args, done.returncode,
                                           done.stdout.decode(), done.stderr.decode())

    import anyio

    out = anyio.run(main)
    assert out.returncode == 3  # could not measure
    lines = [line for line in out.stderr.splitlines() if "stopped early" in line]
    assert len(lines) == 1 and "no-such-model" in lines[0], out.stderr
    assert out.stdout == ""
    records = (tmp_path / "run.jsonl").read_text().splitlines()
    assert EARLY_STOP_AFTER < len(records) < 20  # a header and the samples sent, not 500
