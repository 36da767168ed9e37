"""Suites at scale: the run file's header does not grow with the suite, suite files are
read a line at a time (``/dev/zero`` is refused, not read until memory runs out), a BOM
is skipped, duplicate ids are found in linear time, and a refused resume names the first
request that differs; run files of the previous format still resume."""

from __future__ import annotations

import resource
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

import llmvariance as lv

pytestmark = pytest.mark.anyio

EP = lv.Endpoint(base_url="http://127.0.0.1:9/v1", api_key=None)


def chat(prompt: str) -> lv.ChatRequest:
    return lv.ChatRequest(model="m", messages=[{"role": "user", "content": prompt}],
                          max_tokens=8)


def echo(request: lv.HTTPRequest) -> lv.HTTPResponse:
    text = orjson.loads(request.body or b"")["messages"][-1]["content"]
    return lv.HTTPResponse(200, orjson.dumps({"choices": [{
        "message": {"content": text}, "finish_reason": "stop"}]}))


def lines(path: Path) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


async def test_the_header_stays_small_and_the_requests_follow_it_once(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    suite = {f"q{i:05d}": chat(f"prompt {i}") for i in range(3000)}
    await lv.sample_suite(suite, 1, endpoint=EP, transport=lv.MockTransport(echo),
                          output=path, concurrency=32)
    first = path.read_bytes().split(b"\n", 1)[0]
    assert len(first) < 400  # was 3000 full requests on this one line
    records = lines(path)
    header = records[0]
    assert header["format"] == "llmvariance.run/2"
    assert header["suite"]["requests"] == 3000  # type: ignore[index]
    requests = [r for r in records[1:3001]]
    assert [r["record"] for r in requests] == ["request"] * 3000
    assert requests[7] == {"record": "request", "id": "q00007", "request": {
        "kind": "chat", "model": "m", "messages": [{"role": "user", "content": "prompt 7"}],
        "max_tokens": 8, "temperature": 0.0, "stream": False, "extra": {}, "logprobs": False}}
    run = lv.read_run(path)
    assert run.suite_ids == list(suite) and run.ok_pairs() == {(q, 0) for q in suite}
    assert dict(run.requests) == suite


async def test_a_refused_resume_names_the_first_request_that_differs(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    suite = {f"q{i}": chat(f"prompt {i}") for i in range(5)}
    await lv.sample_suite(suite, 1, endpoint=EP, transport=lv.MockTransport(echo),
                          output=path)
    before = path.read_bytes()
    changed = {**suite, "q3": chat("another prompt")}
    with pytest.raises(lv.ConfigError, match=r"different suite: request 4 \('q3'\) differs"):
        await lv.sample_suite(changed, 2, endpoint=EP, transport=lv.MockTransport(echo),
                              output=path)
    renamed = dict(suite)
    renamed["other"] = renamed.pop("q1")
    with pytest.raises(lv.ConfigError, match="request 2 is 'q1' in the file and 'q2' here"):
        await lv.sample_suite(renamed, 2, endpoint=EP, transport=lv.MockTransport(echo),
                              output=path)
    with pytest.raises(lv.ConfigError, match=r"request 6 \('q5'\) is only in this suite"):
        await lv.sample_suite({**suite, "q5": chat("new")}, 2, endpoint=EP,
                              transport=lv.MockTransport(echo), output=path)
    assert path.read_bytes() == before  # refused and left untouched
    again = await lv.sample_suite(suite, 2, endpoint=EP, transport=lv.MockTransport(echo),
                                  output=path)
    assert all(e.report.n_ok == 2 for e in again.entries)


async def test_a_run_file_of_the_first_format_still_resumes(tmp_path: Path) -> None:
    path = tmp_path / "old.jsonl"
    suite = {"a": chat("one"), "b": chat("two")}
    header = {"record": "header", "format": "llmvariance.run/1", "library_version": "0.1.0",
              "started_at": "2026-11-28T00:00:00Z", "n": 2,
              "suite": [{"id": rid, "request": {"kind": "chat", **r.model_dump(mode="json")}}
                        for rid, r in suite.items()],
              "endpoint": {"base_url": EP.base_url, "name": "x", "header_names": []}}
    sample = {"record": "sample", "index": 0, "text": "one", "request_id": "a"}
    path.write_bytes(orjson.dumps(header) + b"\n" + orjson.dumps(sample) + b"\n")
    result = await lv.sample_suite(suite, 2, endpoint=EP, transport=lv.MockTransport(echo),
                                   output=path)
    assert [e.report.n_ok for e in result.entries] == [2, 2]
    assert lv.read_run(path).ok_pairs() == {(r, i) for r in "ab" for i in range(2)}
    assert lines(path)[0] == header  # appended to, never rewritten
    with pytest.raises(lv.ConfigError, match=r"request 2 \('b'\) differs"):
        await lv.sample_suite({"a": chat("one"), "b": chat("changed")}, 2, endpoint=EP,
                              transport=lv.MockTransport(echo), output=path)


def test_duplicate_ids_are_found_in_linear_time() -> None:
    pairs = [(f"id{i % 20_000}", chat("x")) for i in range(40_000)]
    started = time.monotonic()
    with pytest.raises(lv.ConfigError, match=r"ids must be unique; repeated: id0, id1, "
                                             r"id10, .* and 19990 more"):
        lv.sample_suite_sync(pairs, 1, endpoint=EP, transport=lv.MockTransport(echo))
    assert time.monotonic() - started < 10  # 40,000 pairs took 42.5 s


def test_a_byte_order_mark_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "suite.jsonl"
    body = b'{"custom_id": "first", "model": "m", "prompt": "hi"}\n'
    path.write_bytes(b"\xef\xbb\xbf" + body + body.replace(b"first", b"second"))
    assert [rid for rid, _ in lv.read_suite(path)] == ["first", "second"]
    one = tmp_path / "request.json"
    one.write_bytes(b"\xef\xbb\xbf" + body)
    assert lv.read_request(one).model == "m"


def _limit_memory() -> None:  # runs in the child: 1.5 GB of address space
    limit = 1536 * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


@pytest.mark.parametrize("args", [("suite", "/dev/zero"), ("sample", "--request", "/dev/zero")])
def test_dev_zero_is_refused_in_bounded_memory(args: tuple[str, ...]) -> None:
    done = subprocess.run([sys.executable, "-m", "llmvariance", *args, "--base-url",
                           EP.base_url], capture_output=True, text=True, timeout=120,
                          preexec_fn=_limit_memory, check=False)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "/dev/zero" in done.stderr and "64 MiB" in done.stderr
    assert "MemoryError" not in done.stderr
