"""The console script, run as a real subprocess like a user would."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

import llmvariance as lv
from conftest import served
from llmvariance.testing import SimServer

CLI = [sys.executable, "-m", "llmvariance"]


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=60,
                          env=env, check=False)


@pytest.fixture(scope="module")
def served_url() -> Iterator[str]:
    with served() as url:
        yield url


def test_sample_json_prints_the_report(served_url: str) -> None:
    out = run("sample", "--base-url", served_url, "--model", "dense", "--prompt", "hi",
              "-n", "12", "--max-tokens", "8", "--concurrency", "4", "--json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["n_samples"] == 12 and report["n_ok"] == 12
    assert report["unique_count"] == 1 and report["all_agree"] is True


def test_sample_text_output_and_completions(served_url: str) -> None:
    out = run("sample", "--base-url", served_url, "--model", "dense", "--prompt", "hi",
              "-n", "3", "--completion")
    assert out.returncode == 0, out.stderr
    assert "distinct outputs  1  (all agree)" in out.stdout
    assert "samples           3 (3 ok, 0 failed)" in out.stdout


@pytest.mark.parametrize(
    ("args", "field"),
    [(["--base-url", "127.0.0.1:1/v1"], "base_url"), (["-n", "0"], "n"),
     (["--concurrency", "0"], "concurrency"), (["--temperature", "3"], "temperature")],
)
def test_bad_arguments_exit_2_naming_the_field(args: list[str], field: str) -> None:
    base = ["sample", "--model", "m", "--prompt", "p", "--base-url", "http://127.0.0.1:9/v1"]
    out = run(*base, *args)
    assert out.returncode == 2
    assert out.stderr.startswith(f"llmvariance sample: error: {field}")
    assert out.stdout == ""


def test_the_key_from_the_environment_is_never_printed(served_url: str) -> None:
    key = "sk-cli-NEVERPRINT-42424242"
    env = {**os.environ, "OPENAI_API_KEY": key}
    out = run("sample", "--base-url", served_url, "--model", "missing", "--prompt", "p",
              "-n", "2", "--no-preflight", env=env)
    assert out.returncode == 3  # every sample failed: could not measure
    assert "x2 HTTP 404" in out.stderr
    assert key not in out.stdout + out.stderr
    # the preflight asks about the unknown model once and says so in one line
    out = run("sample", "--base-url", served_url, "--model", "missing", "--prompt", "p",
              "-n", "2", env=env)
    assert out.returncode == 3
    assert "preflight: model 'missing'" in out.stderr and len(out.stderr.splitlines()) == 1
    assert key not in out.stdout + out.stderr


def test_serve_with_faults_and_sample_with_a_limit_still_get_every_sample() -> None:
    with subprocess.Popen([*CLI, "serve", "--port", "0", "--rpm", "1200", "--p-503", "0.2",
                           "--p-drop", "0.1", "--seed", "5"],
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True) as proc:
        try:
            assert proc.stdout is not None
            url = proc.stdout.readline().strip()
            out = run("sample", "--base-url", url, "--model", "dense", "--prompt", "hi",
                      "-n", "20", "--max-tokens", "4", "--rpm", "1100", "--max-attempts", "10",
                      "--json")
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=10)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert (report["n_ok"], report["n_failed"], report["unique_count"]) == (20, 0, 1)


@pytest.mark.anyio
async def test_ctrl_c_stops_a_run_promptly_without_a_traceback() -> None:

    # 1 s per decode step: a run of 100-token answers would take minutes.
    server = SimServer(step_time_s=1.0)
    async with server as url:
        proc = await anyio.open_process(
            [*CLI, "sample", "--base-url", url, "--model", "dense", "--prompt", "hi",
             "-n", "50", "--max-tokens", "100", "--concurrency", "4", "--no-preflight"])
        async with proc:
            with anyio.fail_after(20):
                await server.wait_for_in_flight(4)
            proc.send_signal(signal.SIGINT)
            with anyio.fail_after(10):
                code = await proc.wait()
                assert proc.stderr is not None
                stderr = b"".join([chunk async for chunk in proc.stderr]).decode()
    assert code == 130, stderr
    assert "Traceback" not in stderr
    assert server.stats.requests == 4  # nothing new was sent after the interrupt


def test_sample_out_resumes_and_report_merges_files(served_url: str, tmp_path: Path) -> None:
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    base = ["sample", "--base-url", served_url, "--model", "dense", "--prompt", "hi",
            "--max-tokens", "6"]
    out = run(*base, "-n", "4", "--out", str(first))
    assert out.returncode == 0, out.stderr
    # not a terminal: no progress bar, only the totals
    assert out.stderr.startswith("totals: 4 requests (0 failed) in ")
    assert len(out.stderr.splitlines()) == 1
    again = run(*base, "-n", "6", "--out", str(first), "--json")
    assert json.loads(again.stdout)["n_samples"] == 6
    assert run(*base, "-n", "3", "--out", str(second)).returncode == 0
    merged = run("report", str(first), str(second), "--json", "--group-by", "endpoint")
    assert merged.returncode == 0, merged.stderr
    report = json.loads(merged.stdout)
    assert report["n_samples"] == 9 and report["unique_count"] == 1
    assert list(report["by_endpoint"]) == [served_url.removeprefix("http://").split("/")[0]]
    text = run("report", str(first), "--group-by", "fingerprint")
    assert "2 run file(s)" not in text.stdout and "by fingerprint:" in text.stdout


def test_report_on_a_missing_file_names_it(tmp_path: Path) -> None:
    out = run("report", str(tmp_path / "nope.jsonl"))
    assert out.returncode == 2
    assert out.stderr.startswith("llmvariance report: error: output: cannot read")


def test_progress_bar_shows_failures_and_429s(capsys: pytest.CaptureFixture[str]) -> None:
    from llmvariance._progress import ProgressBar

    with ProgressBar(enabled=True, delay_s=0) as bar:
        bar(lv.Progress(total=10, done=4, failed=1, resumed=2, elapsed_s=1.0,
                        rate_limited=3, paused_s=2.0))
    err = capsys.readouterr().err
    assert "4/10" in err and "failed=1" in err and "429s=3" in err and "paused=2s" in err


def test_serve_refuses_an_impossible_moe_naming_the_field() -> None:
    out = run("serve", "--port", "0", "--experts", "4", "--top-k", "9")
    assert out.returncode == 2
    assert out.stderr.startswith("llmvariance serve: error: top_k: must be between 1 and")


def test_batch_effect_from_the_command_line(served_url: str) -> None:
    base = ["batch-effect", "--base-url", served_url, "--prompt", "Tell me a story",
            "-n", "16", "--blocks", "2", "--max-tokens", "24",  # bursts of 8
            "--conditions", "sequential,burst"]
    moe = run(*base, "--model", "moe", "--json")
    assert moe.returncode == 0, moe.stderr
    result = json.loads(moe.stdout)
    assert result["verdict_kind"] == "batch_dependent"
    assert result["conditions"]["sequential"]["unique_count"] == 1
    assert result["conditions"]["burst"]["unique_count"] > 1
    assert result["adjusted_pvalues"]["burst"] < 0.05
    dense = run(*base, "--model", "dense")
    assert dense.returncode == 0, dense.stderr
    assert "dense: no_variation_observed: no variation observed: all 32 outputs" in dense.stdout
    assert "at most 8.9% of requests differ" in dense.stdout  # 1 - 0.05^(1/32)


def test_batch_effect_early_stop_says_what_it_saved(served_url: str) -> None:
    out = run("batch-effect", "--base-url", served_url, "--prompt", "Tell me a story",
              "--model", "moe", "-n", "30", "--max-tokens", "24",
              "--conditions", "sequential,loaded", "--early-stop", "--json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    stop = result["early_stop"]
    assert result["verdict_kind"] == "batch_dependent"
    assert stop["stopped"] is True and stop["planned_requests"] == 61
    # decided before the last of 5 looks (how soon depends on how the machine's load lets
    # the loaded condition's requests overlap), and every request is counted once
    assert len(stop["looks"]) < 5
    assert stop["saved_requests"] == 61 - stop["sent_requests"] >= 12  # a block or more
    text = run("batch-effect", "--base-url", served_url, "--prompt", "Tell me a story",
               "--model", "dense", "-n", "10", "--max-tokens", "24", "--blocks", "2",
               "--conditions", "sequential,burst", "--early-stop")
    assert text.returncode == 0, text.stderr
    assert "early stop: not decided early: all 2 looks ran" in " ".join(text.stdout.split())


def test_batch_effect_says_it_could_not_measure_when_every_sample_fails(
        served_url: str) -> None:
    out = run("batch-effect", "--base-url", served_url, "--model", "no-such-model",
              "--prompt", "p", "-n", "2", "--conditions", "sequential,burst",
              "--max-attempts", "1", "--no-preflight", "--quiet")
    assert out.returncode == 3, out.stderr  # could not measure
    assert out.stdout == ""
    # one line, in the server's words, counting the calibration request too (4 samples are
    # too few for the early stop, which test_first_hour covers)
    assert out.stderr == ("llmvariance batch-effect: error: every one of the 5 samples "
                          "failed: x5 HTTP 404: The model `no-such-model` does not exist.\n")


def test_batch_effect_names_an_unknown_condition(served_url: str) -> None:
    out = run("batch-effect", "--base-url", served_url, "--model", "dense", "--prompt", "p",
              "--conditions", "sequential,sometimes")
    assert out.returncode == 2
    assert out.stderr.startswith("llmvariance batch-effect: error: conditions: unknown")


@pytest.mark.parametrize(("args", "says"), [
    (["--model", "/nowhere/m.gguf", "--config", "parallel=1"], "model: model file"),
    (["--model", __file__, "--config", "parallel=1", "--binary", "/nowhere/llama-server"],
     "binary: llama-server binary '/nowhere/llama-server'"),
    (["--model", __file__, "--config", "8"], "config: '8'"),
])
def test_matrix_refuses_bad_paths_and_configs_in_one_line(args: list[str], says: str) -> None:
    out = run("matrix", *args)
    assert out.returncode == 2, out.stderr
    assert out.stderr.startswith(f"llmvariance matrix: error: {says}")
    assert out.stderr.count("\n") == 1


@pytest.mark.parametrize("api", ["chat", "completions"])
def test_sample_streams_through_the_chosen_api(served_url: str, api: str) -> None:
    args = ["sample", "--base-url", served_url, "--model", "dense", "--prompt", "hi",
            "-n", "3", "--max-tokens", "6", "--api", api, "--json"]
    plain, streamed = run(*args), run(*args, "--stream")
    assert plain.returncode == 0 and streamed.returncode == 0, plain.stderr + streamed.stderr
    a, b = json.loads(plain.stdout), json.loads(streamed.stdout)
    assert a["n_ok"] == b["n_ok"] == 3
    assert a["top_outputs"][0]["text"] == b["top_outputs"][0]["text"]
