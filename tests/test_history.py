"""``llmvariance report --over-time`` / ``lv.run_history``: runs of one request in time
order, so a provider's change shows as a step."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

import llmvariance as lv
from llmvariance.testing import DenseModel, SimServer

CLI = [sys.executable, "-m", "llmvariance"]
REQUEST = lv.ChatRequest(model="dense", messages=[{"role": "user", "content": "a story"}],
                         max_tokens=16)


def dated(path: Path, started_at: str) -> None:
    lines = path.read_bytes().split(b"\n")
    header = orjson.loads(lines[0])
    header["started_at"] = started_at
    path.write_bytes(b"\n".join([orjson.dumps(header), *lines[1:]]))


@pytest.fixture
def runs(tmp_path: Path) -> list[Path]:
    """Three weekly runs of one request; the provider redeployed before the third."""

    async def make() -> None:
        async with SimServer() as url:
            for name in ("week1", "week2"):
                await lv.sample_many(REQUEST, 8, endpoint=lv.Endpoint(base_url=url),
                                     output=tmp_path / f"{name}.jsonl")
        async with SimServer(models=[DenseModel(variant=1, fingerprint="fp_new")]) as url:
            await lv.sample_many(REQUEST, 8, endpoint=lv.Endpoint(base_url=url),
                                 output=tmp_path / "week3.jsonl")

    import anyio

    anyio.run(make)
    for week, day in (("week1", "01"), ("week2", "08"), ("week3", "15")):
        dated(tmp_path / f"{week}.jsonl", f"2026-11-{day}T09:00:00Z")
    return [tmp_path / "week3.jsonl", tmp_path / "week1.jsonl", tmp_path / "week2.jsonl"]


def test_rows_are_in_time_order_and_the_redeploy_is_a_step(runs: list[Path]) -> None:
    history = lv.run_history(runs)  # given out of order
    assert [Path(r.path).name for r in history.rows] == ["week1.jsonl", "week2.jsonl",
                                                        "week3.jsonl"]
    first, second, third = history.rows
    assert (first.mode_changed, second.mode_changed, third.mode_changed) == (False, False, True)
    assert third.fingerprint_changed and third.fingerprint == "fp_new"
    assert second.fingerprint == "fp_sim_dense" and not second.fingerprint_changed
    assert all(r.distinct == 1 and r.disagreement_rate == 0 for r in history.rows)
    assert history.summary == ("the most common output and the fingerprint changed at run 3 "
                               "(week3.jsonl, 2026-11-15T09:00:00Z)")
    assert third.mode_start and len(third.mode_start.split()) <= 9


def test_the_report_command_over_time(runs: list[Path], tmp_path: Path) -> None:
    out = subprocess.run([*CLI, "report", *map(str, runs), "--over-time"], capture_output=True,
                         text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("runs over time (3 runs, by start time): the most common "
                               "output and the fingerprint changed at run 3")
    rows = [line for line in lines if line.lstrip()[:1].isdigit()]
    assert [r.split()[2] for r in rows] == ["week1.jsonl", "week2.jsonl", "week3.jsonl"]
    assert rows[2].endswith("<- new output; new fingerprint") and "<-" not in rows[1]
    page = tmp_path / "history.html"
    out = subprocess.run([*CLI, "report", *map(str, runs), "--over-time", "--json", "--html",
                          str(page)], capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    assert [r["mode_changed"] for r in json.loads(out.stdout)["rows"]] == [False, False, True]
    html = page.read_text()
    assert html.count('<tr class="step">') == 1 and "new most common output" in html
    out = subprocess.run([*CLI, "report", *map(str, runs), "--over-time", "--tree"],
                         capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 2 and "--over-time: cannot be combined with --tree" in out.stderr


def test_a_suite_run_file_has_no_history(tmp_path: Path) -> None:
    ep = lv.Endpoint(base_url="http://127.0.0.1:9/v1", api_key=None)

    def echo(request: lv.HTTPRequest) -> lv.HTTPResponse:
        return lv.HTTPResponse(200, orjson.dumps({"choices": [{
            "message": {"content": "x"}, "finish_reason": "stop"}]}))

    lv.sample_suite_sync({"q": REQUEST}, 2, endpoint=ep, transport=lv.MockTransport(echo),
                         output=tmp_path / "suite.jsonl")
    with pytest.raises(lv.ConfigError, match="is a suite's run file: the history is of runs "
                                             "of one request"):
        lv.run_history([tmp_path / "suite.jsonl"])


def test_a_changed_request_is_marked_and_a_run_without_a_start_time_comes_last(
        tmp_path: Path) -> None:
    from llmvariance._runs.runfile import RunFile

    ep = lv.Endpoint(base_url="http://127.0.0.1:9/v1", api_key=None)
    for name, model, text in (("old", "m1", "a"), ("new", "m2", "a"), ("undated", "m2", "b")):
        request = REQUEST.model_copy(update={"model": model})
        run_file, _ = RunFile.open(tmp_path / f"{name}.jsonl", request, 2, ep, lv.__version__)
        for i in range(2):
            run_file.write(lv.Sample(index=i, text=text, model=model))
        run_file.close()
    dated(tmp_path / "old.jsonl", "2026-01-01T00:00:00Z")
    dated(tmp_path / "new.jsonl", "2026-02-01T00:00:00Z")
    path = tmp_path / "undated.jsonl"
    lines = path.read_bytes().split(b"\n")
    header = orjson.loads(lines[0])
    del header["started_at"]
    path.write_bytes(b"\n".join([orjson.dumps(header), *lines[1:]]))
    history = lv.run_history([path, tmp_path / "new.jsonl", tmp_path / "old.jsonl"])
    assert [Path(r.path).stem for r in history.rows] == ["old", "new", "undated"]
    assert [r.request_changed for r in history.rows] == [[], ["model"], []]
    assert [r.model for r in history.rows] == ["m1", "m2", "m2"]
    assert [r.mode_changed for r in history.rows] == [False, False, True]
    assert "the request changed at run 2" in history.summary
