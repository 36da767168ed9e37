"""A real run killed with SIGKILL part-way, its file damaged, then resumed."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import anyio
import orjson
import pytest

import llmvariance as lv
from llmvariance.testing import SimServer

pytestmark = pytest.mark.anyio

KEY = "sk-crash-TOPSECRET-0987654321"
CHILD = """
import sys, llmvariance as lv
req = lv.ChatRequest(model="dense", messages=[{"role": "user", "content": "crash test"}],
                     max_tokens=10, logit_bias={"100257": -100})
lv.sample_many_sync(req, 200, endpoint=lv.Endpoint(base_url=sys.argv[1]), concurrency=8,
                    output=sys.argv[2])
"""
REQ = lv.ChatRequest(model="dense", messages=[{"role": "user", "content": "crash test"}],
                     max_tokens=10, logit_bias={"100257": -100})


async def test_sigkill_mid_run_then_resume_to_exactly_n(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    server = SimServer(api_key=KEY, step_time_s=0.004)
    async with server as url:
        env = {**os.environ, "OPENAI_API_KEY": KEY}
        proc = await anyio.open_process([sys.executable, "-c", CHILD, url, str(path)], env=env)
        async with proc:
            with anyio.fail_after(60):
                await server.wait_for(lambda stats: stats.completed >= 60)
            proc.send_signal(signal.SIGKILL)
            assert await proc.wait() == -signal.SIGKILL
        sent_before = server.stats.requests
        lines = path.read_bytes().splitlines()
        recorded = {orjson.loads(line)["index"] for line in lines[1:]}
        assert 0 < len(recorded) < 200  # killed part-way
        with path.open("ab") as f:  # what a crash in the middle of a write leaves
            f.write(b'{"record": "sample", "index": 199, "text": " the ri')

        result = await lv.sample_many(REQ, 200, endpoint=lv.Endpoint(base_url=url, api_key=KEY),
                                      concurrency=8, output=path)
        resent = server.stats.requests - sent_before

    assert [s.index for s in result.samples] == list(range(200))
    assert all(s.ok for s in result.samples)
    assert len({s.text for s in result.samples}) == 1
    assert resent == 200 - len(recorded)  # only the missing ones...
    assert sent_before - len(recorded) <= 8  # ...which include those in flight at the kill
    final = [orjson.loads(line) for line in path.read_bytes().splitlines()]
    indices = [r["index"] for r in final if r["record"] == "sample"]
    assert sorted(indices) == list(range(200))  # each index exactly once in the file
    assert [r["record"] for r in final].count("resume") == 1
    assert KEY.encode() not in path.read_bytes()

    out = await anyio.run_process(
        [sys.executable, "-m", "llmvariance", "report", str(path), "--json"], check=False)
    assert out.returncode == 0, out.stderr.decode()
    report = json.loads(out.stdout)
    assert (report["n_samples"], report["n_ok"], report["unique_count"]) == (200, 200, 1)
