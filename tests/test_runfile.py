"""Run files: append as samples finish, resume what is missing, never lose or leak."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

import llmvariance as lv

pytestmark = pytest.mark.anyio

KEY = "sk-runfile-SECRET-1234567890"
EP = lv.Endpoint(base_url="http://127.0.0.1:9/v1", api_key=KEY)
REQ = lv.ChatRequest(model="m", messages=[{"role": "user", "content": "hi"}], max_tokens=8)


def body(text: str) -> bytes:
    return orjson.dumps({"system_fingerprint": "fp", "choices": [
        {"message": {"content": text}, "finish_reason": "stop"}]})


class Server:
    """Answers 'answer <index>'-style texts and records which requests it got."""

    def __init__(self, fail: set[int] | None = None) -> None:
        self.calls = 0
        self.fail = fail or set()

    def __call__(self, request: lv.HTTPRequest) -> lv.HTTPResponse:
        self.calls += 1
        if self.calls in self.fail:
            return lv.HTTPResponse(400, b'{"error": {"message": "nope"}}')
        return lv.HTTPResponse(200, body("same answer"))


async def run(path: Path, n: int, server: Server, request: lv.Request = REQ,
              **kwargs: object) -> lv.SampleSet:
    return await lv.sample_many(request, n, endpoint=EP, concurrency=3, output=path,
                                transport=lv.MockTransport(server), **kwargs)  # type: ignore[arg-type]


def records(path: Path) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


async def test_a_run_file_holds_a_header_and_every_sample(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    result = await run(path, 5, Server())
    recs = records(path)
    header = recs[0]
    assert header["record"] == "header" and header["format"] == "llmvariance.run/1"
    assert header["request"] == {"kind": "chat", **REQ.model_dump(mode="json")}
    assert header["endpoint"] == {"base_url": "http://127.0.0.1:9/v1", "name": "127.0.0.1:9",
                                  "header_names": []}
    assert header["library_version"] == lv.__version__
    assert sorted(r["index"] for r in recs[1:]) == [0, 1, 2, 3, 4]
    assert KEY not in path.read_text()
    run_back = lv.read_run(path)
    assert [run_back.samples[i] for i in range(5)] == result.samples
    assert run_back.request == REQ


async def test_resume_sends_only_missing_and_failed_indices(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    first = Server(fail={2, 4})  # two 400s: recorded, not retried
    await run(path, 6, first)
    assert first.calls == 6
    second = Server()
    result = await run(path, 6, second)
    assert second.calls == 2  # just the two failures
    assert all(s.ok for s in result.samples)
    assert [s.index for s in result.samples] == list(range(6))
    again = Server()
    await run(path, 6, again)
    assert again.calls == 0  # nothing left to do
    grown = Server()
    result = await run(path, 9, grown)
    assert grown.calls == 3 and len(result.samples) == 9
    assert lv.read_run(path).samples.keys() == set(range(9))


async def test_a_different_request_is_refused_and_the_file_left_untouched(tmp_path: Path
                                                                          ) -> None:
    path = tmp_path / "run.jsonl"
    await run(path, 3, Server())
    before = path.read_bytes()
    other = REQ.model_copy(update={"max_tokens": 9, "temperature": 0.5})
    server = Server()
    with pytest.raises(lv.ConfigError, match=r"^output: .* different request "
                                             r"\(max_tokens, temperature differ\)"):
        await run(path, 3, server, request=other)
    assert server.calls == 0
    assert path.read_bytes() == before


async def test_a_cut_last_line_is_repaired_before_appending(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    await run(path, 4, Server())
    with path.open("ab") as f:
        f.write(b'{"record": "sample", "index": 3, "text": "half a rec')  # the crash
    run_back = lv.read_run(path)
    assert run_back.cut_line and len(run_back.samples) == 4
    server = Server()
    result = await run(path, 5, server)
    assert server.calls == 1 and len(result.samples) == 5
    text = path.read_bytes()
    assert b"half a rec" not in text and text.endswith(b"\n")
    assert all(isinstance(r, dict) for r in records(path))  # every line parses now


async def test_damage_before_the_last_line_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    await run(path, 3, Server())
    lines = path.read_bytes().splitlines()
    lines[1] = b"garbage"
    path.write_bytes(b"\n".join(lines) + b"\n")
    with pytest.raises(lv.ConfigError, match=r"run.jsonl:2 is not a JSON record"):
        await run(path, 3, Server())


async def test_not_a_run_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "notes.jsonl"
    path.write_text('{"hello": 1}\n')
    with pytest.raises(lv.ConfigError, match="not an llmvariance run file"):
        await run(path, 3, Server())
    assert path.read_text() == '{"hello": 1}\n'


async def test_two_writers_cannot_share_a_file(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    from llmvariance._runs.runfile import RunFile

    held, _ = RunFile.open(path, REQ, 3, EP, "test")
    try:
        with pytest.raises(lv.ConfigError, match="being written by another process"):
            RunFile.open(path, REQ, 3, EP, "test")
    finally:
        held.close()


async def test_progress_reports_every_sample_and_counts_resumed_ones(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    await run(path, 3, Server(fail={1}))
    seen: list[lv.Progress] = []
    await run(path, 5, Server(fail={1}), progress=seen.append)
    # one failure from the first run and two new indices: three sends, one fails again
    assert [(p.done, p.failed, p.resumed, p.total) for p in seen] == [
        (3, 1, 2, 5), (4, 1, 2, 5), (5, 1, 2, 5)]
    assert seen[-1].rate_per_s >= 0
