"""The first hour with the command line: exit statuses for every command, failing fast,
before and after a run, no silence, the common flags, results folders, provenance, suites
that read as suites. Each runs the console script as a real subprocess, as a user would."""

from __future__ import annotations

import fcntl
import json
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest
from aiohttp import web

import llmvariance as lv
from conftest import served
from llmvariance._cli._common import ExitCode
from llmvariance._cli._console import Console
from llmvariance._render.tree_plot import mode_path
from llmvariance.testing import SimServer

CLI = [sys.executable, "-m", "llmvariance"]
HERE = Path(__file__).resolve().parent
EXAMPLES = HERE.parent / "examples" / "suite.jsonl"


def run(*args: str, env: dict[str, str] | None = None, timeout: float = 120,
        cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout,
                          env=env, cwd=cwd, check=False)


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with served() as url:
        yield url


def one_line_error(out: subprocess.CompletedProcess[str], command: str) -> str:
    lines = out.stderr.splitlines()
    errors = [line for line in lines if line.startswith(f"llmvariance {command}: error: ")]
    assert len(errors) == 1 and "Traceback" not in out.stderr, out.stderr
    return errors[0]


# -- exit statuses ----------------------------------------------------------------------------

def test_the_exit_statuses_are_defined_once_and_shown_in_help() -> None:
    assert [int(c) for c in ExitCode] == [0, 1, 2, 3, 130]
    for command in ("sample", "batch-effect", "suite", "matrix", "report"):
        out = run(command, "--help")
        assert out.returncode == 0
        text = " ".join(out.stdout.split())
        assert ("exit status: 0 measured; 1 an expectation failed (check; compare: a change); "
                "2 usage") in text
        assert "3 could not measure" in text


def test_an_unreachable_server_is_one_line_and_status_3_within_seconds() -> None:
    # the issue's own command: port 9 refuses the connection
    started = time.monotonic()
    out = run("batch-effect", "--base-url", "http://127.0.0.1:9/v1", "--model", "x",
              "--prompt", "hi")
    took = time.monotonic() - started
    assert out.returncode == 3 and took < 5, (took, out.stderr)
    line = one_line_error(out, "batch-effect")
    assert ("cannot reach http://127.0.0.1:9/v1" in line and "refused" in line.lower()) or (
        "Connect call failed" in line), line
    assert out.stdout == ""


@pytest.mark.parametrize("command", [
    ["sample", "--model", "x", "--prompt", "hi"],
    ["suite", str(EXAMPLES)],
])
def test_sample_and_suite_exit_3_when_the_server_is_not_there(command: list[str]) -> None:
    out = run(*command, "--base-url", "http://127.0.0.1:9/v1")
    assert out.returncode == 3
    assert "cannot reach" in one_line_error(out, command[0])


def test_every_sample_failing_is_status_3_with_the_commonest_reason(url: str) -> None:
    out = run("sample", "--base-url", url, "--model", "nope", "--prompt", "hi", "-n", "4",
              "--no-preflight", "-q")
    assert out.returncode == 3
    assert one_line_error(out, "sample").endswith(
        "every one of the 4 samples failed: x4 HTTP 404: The model `nope` does not exist.")


@pytest.mark.anyio
async def test_batch_effect_stops_when_its_first_samples_all_fail_the_same_way() -> None:
    # without the preflight, an unknown model got all 21 requests before the run said
    # what sample says after 5
    server = SimServer()
    async with server as base:
        # a server on this machine is first asked what it is (engines.server_info): count
        # what that probe sends here, so only the measured requests are counted below
        async with lv.ClientPool(lv.Endpoint(base_url=base)) as pool:
            await lv.engines.server_info(pool)
        probe = server.stats.requests
        out = await anyio.run_process(
            [*CLI, "batch-effect", "--base-url", base, "--model", "nope", "--prompt", "hi",
             "-n", "10", "--conditions", "sequential,burst", "--no-preflight"],
            check=False)
    assert out.returncode == 3
    errors = [ln for ln in out.stderr.decode().splitlines() if ": error: " in ln]
    assert errors == ["llmvariance batch-effect: error: stopped early: the first 5 requests "
                      "all failed with an error waiting cannot fix: HTTP 404: The model "
                      "`nope` does not exist."]
    # the calibration, block 1's two cells of 2 and block 2's first cell: nothing after
    assert server.stats.requests - 2 * probe == 1 + 2 + 2 + 2
    assert "block 2/5 sequential" not in out.stderr.decode()


def test_sample_measures_and_exits_0_and_bad_flags_exit_2(url: str) -> None:
    out = run("sample", "--base-url", url, "--model", "dense", "--prompt", "hi", "-n", "3",
              "--max-tokens", "4", "--json")
    assert out.returncode == 0 and json.loads(out.stdout)["n_ok"] == 3
    out = run("sample", "--base-url", url, "--model", "dense", "--prompt", "hi",
              "--logit-bias", "x=1")
    assert out.returncode == 2 and "--logit-bias: must be TOKEN_ID=BIAS" in one_line_error(
        out, "sample")


def test_suite_statuses(url: str, tmp_path: Path) -> None:
    out = run("suite", str(EXAMPLES), "--base-url", url, "--model", "dense", "-n", "2",
              "--json")
    assert out.returncode == 0 and json.loads(out.stdout)["n_prompts"] == 36
    out = run("suite", str(tmp_path / "missing.jsonl"), "--base-url", url)
    assert out.returncode == 2
    out = run("suite", str(EXAMPLES), "--base-url", url, "--model", "nope", "-n", "2",
              "--no-preflight")
    assert out.returncode == 3
    assert "x" in one_line_error(out, "suite") and "does not exist" in out.stderr


def test_report_statuses(url: str, tmp_path: Path) -> None:
    good, bad = tmp_path / "good.jsonl", tmp_path / "bad.jsonl"
    assert run("sample", "--base-url", url, "--model", "dense", "--prompt", "hi", "-n", "3",
               "--out", str(good)).returncode == 0
    assert run("sample", "--base-url", url, "--model", "nope", "--prompt", "hi", "-n", "3",
               "--out", str(bad), "--no-preflight").returncode == 3
    assert run("report", str(good)).returncode == 0
    out = run("report", str(bad))
    assert out.returncode == 3 and "every one of the 3 samples failed" in one_line_error(
        out, "report")
    out = run("report", str(tmp_path / "none.jsonl"))
    assert out.returncode == 2


def _fake_llama(tmp_path: Path) -> Path:
    binary = tmp_path / "llama-server"
    binary.write_text(f"#!/bin/sh\nexec {sys.executable} {HERE / 'fake_llama_server.py'} "
                      '"$@"\n')
    binary.chmod(binary.stat().st_mode | stat.S_IXUSR)
    return binary


def test_matrix_statuses_with_a_stand_in_engine(tmp_path: Path) -> None:
    model = tmp_path / "moe.gguf"  # the stand-in serves the simulator's `moe`
    model.write_bytes(b"GGUF")
    binary = _fake_llama(tmp_path)
    out = run("matrix", "--model", str(model), "--binary", str(binary), "--config",
              "parallel=1", "--config", "parallel=8", "-n", "6", "--max-tokens", "12",
              "--conditions", "sequential,burst", "--blocks", "2", timeout=180)
    assert out.returncode == 0, out.stderr
    assert "configuration 1/2: starting llama-server (parallel=1" in out.stderr
    assert "done: parallel=8: sequential" in out.stderr
    assert "parallel=1" in out.stdout and "parallel=8" in out.stdout
    out = run("matrix", "--model", str(model), "--binary", str(binary), "--config",
              "parallel=x")
    assert out.returncode == 2
    died = tmp_path / "dies"
    died.write_text("#!/bin/sh\necho 'cannot load model' >&2\nexit 1\n")
    died.chmod(died.stat().st_mode | stat.S_IXUSR)
    out = run("matrix", "--model", str(model), "--binary", str(died), "--config",
              "parallel=1", "-n", "4")
    assert out.returncode == 3 and "cannot load model" in out.stderr


# -- failing fast -----------------------------------------------------------------------------

@pytest.fixture
async def refusing() -> AsyncIterator[str]:
    """A server that answers every request 401, the model list included."""
    seen: list[str] = []

    async def refuse(request: web.Request) -> web.Response:
        seen.append(request.path)
        return web.json_response({"error": {"message": "Incorrect API key provided"}},
                                 status=401)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", refuse)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/v1"
    finally:
        assert seen == ["/v1/models"]  # the preflight's one request, nothing else
        await runner.cleanup()


@pytest.mark.anyio
async def test_a_refused_key_is_one_line_before_anything_else_is_sent(refusing: str) -> None:
    out = await anyio.run_process([*CLI, "sample", "--base-url", refusing, "--model", "m",
                                   "--prompt", "hi", "-n", "50"], check=False)
    assert out.returncode == 3
    assert b"refused the key" in out.stderr and b"Incorrect API key" in out.stderr
    assert len(out.stderr.splitlines()) == 1


def test_no_url_and_no_key_sends_nothing_and_openai_api_base_is_an_alias(
        monkeypatch: pytest.MonkeyPatch) -> None:
    env = {k: v for k, v in os.environ.items()
           if k not in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_API_BASE")}
    out = run("sample", "--model", "m", "--prompt", "hi", env=env)
    assert out.returncode == 2
    assert "no --base-url, $OPENAI_BASE_URL or $OPENAI_API_BASE and no $OPENAI_API_KEY" in (
        one_line_error(out, "sample"))
    monkeypatch.setenv("OPENAI_API_BASE", "http://127.0.0.1:9/v1")
    assert lv.Endpoint().base_url == "http://127.0.0.1:9/v1"
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:7/v1")  # the current name wins
    assert lv.Endpoint.openai().base_url == "http://127.0.0.1:7/v1"


# -- before and after a run -------------------------------------------------------------------

@pytest.mark.anyio
async def test_dry_run_says_what_would_be_sent_and_sends_nothing(tmp_path: Path) -> None:
    server = SimServer()
    async with server as base:
        out = await anyio.run_process(
            [*CLI, "batch-effect", "--base-url", base, "--model", "moe", "--prompt", "hi",
             "-n", "30", "--max-tokens", "100", "--rpm", "60", "--dry-run"], check=False)
        suite = await anyio.run_process(
            [*CLI, "suite", str(EXAMPLES), "--base-url", base, "-n", "10", "--dry-run"],
            check=False)
    assert server.stats.requests == 0
    text = out.stdout.decode()
    assert out.returncode == 0 and text.startswith("dry run: nothing is sent")
    assert "requests          91 (+ 8 background requests kept in flight" in text
    assert "at least 1.5 min (--rpm 60)" in text  # 91 requests at 60 a minute
    assert re.search(r"tokens \(at most\)  about [\d,]+ \([\d,]+ prompt \+ 9,100 completion",
                     text)
    assert "run file          about" in text
    assert "requests          360" in suite.stdout.decode()
    assert "... and 26 more requests" in suite.stdout.decode()


def test_totals_give_tokens_time_rate_and_the_cost_at_the_given_prices(url: str) -> None:
    out = run("sample", "--base-url", url, "--model", "dense", "--prompt", "hi", "-n", "10",
              "--max-tokens", "8", "--price-in", "2", "--price-out", "10")
    assert out.returncode == 0
    [line] = [ln for ln in out.stderr.splitlines() if ln.startswith("totals:")]
    found = re.search(r"totals: 10 requests \(0 failed\) in [\d.]+ s \([\d.]+/s\), "
                      r"([\d,]+) prompt \+ ([\d,]+) completion tokens, \$([\d.]+) at \$2/\$10",
                      line)
    assert found, line
    prompt, completion = (int(found.group(i).replace(",", "")) for i in (1, 2))
    assert completion == 80
    assert float(found.group(3)) == pytest.approx((prompt * 2 + completion * 10) / 1e6,
                                                  abs=1e-4)


# -- no silence ---------------------------------------------------------------------------------

def test_batch_effect_and_demo_show_progress_and_quiet_silences_it(url: str) -> None:
    out = run("batch-effect", "--base-url", url, "--model", "dense", "--prompt", "hi",
              "-n", "4", "--max-tokens", "4", "--conditions", "sequential,burst",
              "--blocks", "2")
    assert out.returncode == 0
    assert "block 1/2 sequential: 2/2 ok, 1 distinct" in out.stderr
    assert "block 2/2 burst: 2/2 ok, 1 distinct" in out.stderr
    quiet = run("batch-effect", "--base-url", url, "--model", "dense", "--prompt", "hi",
                "-n", "4", "--max-tokens", "4", "--conditions", "sequential,burst", "-q")
    assert quiet.returncode == 0 and quiet.stderr == ""
    demo = run("demo", "-n", "4", "--max-tokens", "8", "--models", "dense")
    assert demo.returncode == 0 and "dense: block 1 sequential: " in demo.stderr


def _sigint_as_usual() -> None:
    # a shell without job control starts background commands with SIGINT ignored (and
    # Python then never sees Ctrl-C): the command under test gets the usual disposition
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_says_how_many_samples_are_saved_and_how_to_resume(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    with subprocess.Popen([*CLI, "serve", "--port", "0", "--step-time", "0.05"],
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                          text=True) as server:
        try:
            assert server.stdout is not None
            base = server.stdout.readline().strip()
            command = [*CLI, "sample", "--base-url", base, "--model", "dense", "--prompt",
                       "hi", "-n", "400", "--max-tokens", "8", "--concurrency", "4", "--out",
                       str(path)]
            with subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                  text=True, preexec_fn=_sigint_as_usual) as proc:
                deadline = time.monotonic() + 30
                while not path.exists() or len(path.read_bytes().splitlines()) < 6:
                    assert time.monotonic() < deadline and proc.poll() is None
                    time.sleep(0.05)  # until the header and 5 samples are saved
                proc.send_signal(signal.SIGINT)  # a real Ctrl-C
                _, stderr = proc.communicate(timeout=15)
            held = len(lv.read_run(path))
            assert proc.returncode == 130 and "Traceback" not in stderr
            assert (f"llmvariance sample: error: interrupted: {held:,} samples saved in "
                    f"{path}; rerun the same command to resume") in stderr
            again = subprocess.run([*command, "-n", "10"], capture_output=True, text=True,
                                   timeout=60, check=False)
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=10)
    assert again.returncode == 0
    assert f"resuming: {min(held, 10)} of 10 done, sending {10 - min(held, 10)}" in (
        again.stderr)


def test_colour_only_on_a_terminal_and_never_with_no_color(monkeypatch: pytest.MonkeyPatch,
                                                          tmp_path: Path) -> None:
    class Terminal:
        def __init__(self) -> None:
            self.text = ""

        def isatty(self) -> bool:
            return True

        def write(self, text: str) -> None:
            self.text += text

        def flush(self) -> None:
            pass

    monkeypatch.delenv("NO_COLOR", raising=False)
    terminal = Terminal()
    Console("sample", stream=terminal).error("boom")  # type: ignore[arg-type]
    assert "\x1b[1;31merror:\x1b[0m boom" in terminal.text
    monkeypatch.setenv("NO_COLOR", "1")
    terminal = Terminal()
    Console("sample", stream=terminal).error("boom")  # type: ignore[arg-type]
    assert terminal.text == "llmvariance sample: error: boom\n"


# -- the command line's reach -----------------------------------------------------------------

def test_version_defaults_in_help_and_a_mistyped_flag() -> None:
    out = run("--version")
    assert out.returncode == 0 and out.stdout.strip() == f"llmvariance {lv.__version__}"
    text = " ".join(run("sample", "--help").stdout.split())
    assert "--max-tokens MAX_TOKENS (default: 128)" in text
    assert "--temperature TEMPERATURE (default: 0.0)" in text
    assert "--concurrency CONCURRENCY requests in flight (default: 8)" in text
    out = run("sample", "--base-url", "http://127.0.0.1:9/v1", "--concurency", "4")
    assert out.returncode == 2
    assert out.stderr.startswith("usage: llmvariance sample ")
    assert "unrecognized arguments: --concurency (did you mean --concurrency?) 4" in out.stderr


def test_json_into_a_closed_pipe_ends_with_one_line(url: str, tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    assert run("sample", "--base-url", url, "--model", "moe", "--prompt", "hi", "-n", "40",
               "--max-tokens", "24", "--out", str(path)).returncode == 0
    # `report --json --tree | head -c 10`: the reader leaves after ten bytes. The pipe holds
    # one page, less than the ~16 kB report, so the writer meets the closed end whatever the
    # timing (a 64 kB pipe took it all, and the test passed or failed by scheduling)
    read_end, write_end = os.pipe()
    fcntl.fcntl(read_end, fcntl.F_SETPIPE_SZ, 4096)
    with subprocess.Popen([*CLI, "report", str(path), "--json", "--tree"],
                          stdout=write_end, stderr=subprocess.PIPE) as proc:
        os.close(write_end)
        assert proc.stderr is not None
        with os.fdopen(read_end, "rb") as reader:
            first = reader.read(10)
        stderr = proc.stderr.read().decode()
        code = proc.wait(timeout=60)
    assert first == b'{\n  "prove'[:10]
    assert code == 0 and "Traceback" not in stderr
    assert stderr.splitlines() == ["llmvariance report: stdout was closed early (broken "
                                   "pipe); the output is cut short"]


def test_serve_on_a_busy_port_is_one_line() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        out = run("serve", "--port", str(busy.getsockname()[1]))
    assert out.returncode == 2
    assert "address already in use" in one_line_error(out, "serve").lower()


def test_the_request_options_reach_the_request(url: str, tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    out = run("sample", "--base-url", url, "--model", "moe", "--prompt", "hi", "-n", "4",
              "--max-tokens", "8", "--system", "Be brief.", "--seed", "7", "--logprobs", "3",
              "--logit-bias", "100257=-100", "--top-p", "0.9", "--stop", "END", "--stop", "FIN",
              "--out", str(path))
    assert out.returncode == 0, out.stderr
    request = lv.read_run(path).request
    assert isinstance(request, lv.ChatRequest)
    assert [m.role for m in request.messages] == ["system", "user"]
    assert (request.seed, request.logprobs, request.top_logprobs, request.logit_bias,
            request.top_p, request.stop) == (7, True, 3, {"100257": -100.0}, 0.9,
                                             ["END", "FIN"])
    assert all(s.top_logprobs for s in lv.read_run(path).iter_samples())
    out = run("sample", "--base-url", url, "--model", "m", "--prompt", "hi", "--api",
              "messages", "--logit-bias", "1=2")
    assert out.returncode == 2 and "--logit-bias: the messages API has no such option" in (
        out.stderr)


def test_batch_effect_and_suite_take_the_same_request_options(url: str, tmp_path: Path
                                                               ) -> None:
    flags = ["--system", "Be brief.", "--seed", "7", "--logprobs", "2", "--top-p", "0.5",
             "--stop", "END", "--logit-bias", "5=1", "-q"]
    out = run("batch-effect", "--base-url", url, "--model", "moe", "--prompt", "hi", "-n", "4",
              "--max-tokens", "8", "--conditions", "sequential,burst", "--out-dir",
              str(tmp_path / "be"), *flags)
    assert out.returncode == 0, out.stderr
    out = run("suite", str(EXAMPLES), "--base-url", url, "--model", "moe", "-n", "2",
              "--out", str(tmp_path / "suite.jsonl"), *flags)
    assert out.returncode == 0, out.stderr
    [(_, in_suite), *_] = lv.read_run(tmp_path / "suite.jsonl").requests
    for request in (lv.read_run(tmp_path / "be" / "burst.jsonl").request, in_suite):
        assert isinstance(request, lv.ChatRequest)
        assert (request.messages[0].role, request.messages[0].content) == ("system",
                                                                           "Be brief.")
        assert (request.seed, request.logprobs, request.top_logprobs, request.top_p,
                request.stop, request.logit_bias) == (7, True, 2, 0.5, ["END"], {"5": 1.0})


def test_out_dir_and_batch_effect_out_keep_every_file(url: str, tmp_path: Path) -> None:
    folder = tmp_path / "results"
    out = run("sample", "--base-url", url, "--model", "moe", "--prompt", "hi", "-n", "6",
              "--max-tokens", "8", "--out-dir", str(folder))
    assert out.returncode == 0
    assert sorted(p.name for p in folder.iterdir()) == ["report.html", "report.json",
                                                        "run.jsonl"]
    saved = orjson.loads((folder / "report.json").read_bytes())
    assert saved["report"]["n_samples"] == 6 and saved["provenance"]["model"] == "moe"
    runs = tmp_path / "runs"
    out = run("batch-effect", "--base-url", url, "--model", "dense", "--prompt", "hi", "-n",
              "4", "--max-tokens", "4", "--conditions", "sequential,burst", "--out-dir",
              str(runs))
    assert out.returncode == 0
    assert sorted(p.name for p in runs.iterdir()) == ["burst.jsonl", "calibration.jsonl",
                                                      "report.html", "report.json",
                                                      "sequential.jsonl"]
    assert len(lv.read_run(runs / "burst.jsonl")) == 4
    report = run("report", str(runs / "burst.jsonl"), str(runs / "sequential.jsonl"),
                 "--group-by", "condition")
    assert report.returncode == 0 and "burst" in report.stdout
    again = run("batch-effect", "--base-url", url, "--model", "dense", "--prompt", "hi",
                "-n", "4", "--out-dir", str(runs))
    assert again.returncode == 2 and "only --out FILE resumes" in again.stderr


def test_report_json_carries_provenance_without_the_key(url: str, tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    env = {**os.environ, "OPENAI_API_KEY": "sk-provenance-SECRET"}
    assert run("sample", "--base-url", url, "--model", "dense", "--prompt", "hi", "-n", "3",
               "--out", str(path), env=env).returncode == 0
    out = run("report", str(path), "--json")
    data = json.loads(out.stdout)
    assert data["n_samples"] == 3  # the report's fields, as before
    [file] = data["provenance"]["files"]
    assert file["model"] == "dense" and file["request"]["messages"][0]["content"] == "hi"
    assert file["endpoint"]["base_url"] == url and file["written_by"] == lv.__version__
    assert file["started_at"] and data["provenance"]["library_version"] == lv.__version__
    assert "SECRET" not in out.stdout


def test_report_of_different_requests_warns_and_groups_them(url: str, tmp_path: Path) -> None:
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    for path, prompt in ((a, "one"), (b, "two")):
        assert run("sample", "--base-url", url, "--model", "dense", "--prompt", prompt,
                   "-n", "3", "--out", str(path)).returncode == 0
    out = run("report", str(a), str(b))
    assert out.returncode == 0
    assert "these files were written for different requests" in out.stderr
    assert "by request" in out.stdout
    same = run("report", str(a), str(a))
    assert "different requests" not in same.stderr


# -- suites -----------------------------------------------------------------------------------

def test_a_suite_report_leads_with_tar_and_reproduces_tara_from_the_run_file(
        url: str, tmp_path: Path) -> None:
    path = tmp_path / "suite.jsonl"
    out = run("suite", str(EXAMPLES), "--base-url", url, "--model", "moe", "-n", "4",
              "--out", str(path), "--answer=-?\\d+|\\w+", "--concurrency", "16")
    assert out.returncode == 0
    header = orjson.loads(path.read_bytes().split(b"\n", 1)[0])
    assert header["comparison"] == {"answer": {"regex": "-?\\d+|\\w+", "flags": 0},
                                    "normalize": False}
    tara = re.search(r"TARa@4 +([\d.]+)", out.stdout)
    report = run("report", str(path))  # no --answer: the run file says how
    assert report.returncode == 0
    assert re.search(r"TARa@4 +([\d.]+)", report.stdout).group(1) == tara.group(1)  # type: ignore[union-attr]
    text = report.stdout
    assert text.index("TARr@4") < text.index("pooled over every request of the suite")


def test_a_suite_page_links_each_varying_prompt_to_its_tree(tmp_path: Path) -> None:
    outputs = {"steady": ["same"] * 4, "shaky": ["a b c", "a b d", "a x", "a b c"]}
    suite = lv.analyze_suite(outputs)
    from llmvariance._render.suite_html import suite_page

    collectors = {"shaky": lv.analyze(outputs["shaky"])}
    page = suite_page(suite, collectors, [])
    assert page.index("TARr@4") < page.index("Prompts, most varying first")
    assert '<a href="#prompt-0"><bdi>shaky</bdi></a>' in page  # most varying first, linked
    assert '<section id="prompt-0"><h2>Prompt shaky: 3 distinct of 4</h2>' in page
    assert "<td><bdi>steady</bdi></td>" in page  # agreeing prompts: a row, no section


def test_a_stored_function_says_it_cannot_be_restored() -> None:
    from llmvariance._analysis.answers import comparison_from_record, comparison_record

    record = comparison_record(str.strip, True)
    answer, normalize, note = comparison_from_record(record)
    assert answer is None and normalize is True
    assert note is not None and "a file cannot hold" in note
    pattern, _, none = comparison_from_record(comparison_record(re.compile("x", re.I), False))
    assert pattern == re.compile("x", re.I) and none is None


# -- the tree figure ----------------------------------------------------------------------------

def test_the_highlighted_path_is_the_most_common_outputs() -> None:
    # the heaviest first branch (8 samples) splits four ways; the mode (7) is the other one
    texts = (["a b c"] * 7 + ["a d e"] * 2 + ["a d f"] * 2 + ["a d g"] * 2 + ["a d h"] * 2)
    tree = lv.analyze(texts).tree
    assert tree is not None
    path = mode_path(tree)
    assert path[-1].count == 7 and tree.prefix(path[-1]) == "a b c"
    heaviest = tree.root
    while heaviest is not None and heaviest.children:  # what the figure used to follow
        heaviest = tree.nodes[heaviest.children[0]]
    assert heaviest is not None and heaviest.count == 2


def test_the_tree_figure_has_a_legend_and_a_margin_key_only_with_logprobs() -> None:
    pytest.importorskip("matplotlib")
    tree = lv.analyze(["a b c"] * 7 + ["a d e"] * 3).tree
    assert tree is not None
    figure = lv.plot_tree(tree)
    [ax] = figure.axes
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["the most common output (7 of 10)", "other outputs", "branch point"]
    assert "Δ" not in ax.get_xlabel()


# -- notebooks: every result is one line of text and a short view ------------------------------

@pytest.mark.anyio
async def test_every_result_has_a_one_line_repr_and_a_bounded_html_view() -> None:
    req = lv.ChatRequest(model="m", messages=[{"role": "user", "content": "hi"}])
    reports = {"sequential": lv.analyze(["a"] * 4), "burst": lv.analyze(["a", "b", "c", "a"])}
    effect = lv.BatchEffectResult(request=req, endpoint="e", conditions=reports, samples={},
                                  n=4, verdict="v", verdict_kind="batch_dependent",
                                  adjusted_pvalues={"burst": 0.2})
    rows = [lv.MatrixRow(config=name, settings={}, conditions=reports, verdict="v",
                         verdict_kind="inconclusive") for name in ("parallel=1", "parallel=8")]
    matrix = lv.MatrixResult(request=req, n=4, conditions=list(reports), rows=rows)
    body = orjson.dumps({"choices": [{"message": {"content": "x" * 2000}}]})
    transport = lv.MockTransport(lambda request: lv.HTTPResponse(200, body))
    endpoint = lv.Endpoint(base_url="http://127.0.0.1:9/v1")
    many = await lv.sample_many(req, 10_000, endpoint=endpoint, transport=transport,
                                concurrency=64)
    suite = await lv.sample_suite({"a": req}, 3, endpoint=endpoint, transport=transport)
    expected: list[tuple[Any, str]] = [
        (many, "<SampleSet m@127.0.0.1:9 n=10000 ok=10000 distinct=1 D=0>"),
        (many.report, "<VarianceReport n=10000 ok=10000 distinct=1 D=0 all agree>"),
        (effect, "<BatchEffectResult m@e n=4 conditions=sequential,burst batch_dependent "
                 "p=0.2>"),
        (matrix, "<MatrixResult m n=4 configurations=2 (parallel=1: inconclusive, "
                 "parallel=8: inconclusive)>"),
        (suite, "<SuiteResult 127.0.0.1:9 n=3 requests=1 tar_raw=1.0 tar_answer=None>"),
        (suite.report, "<SuiteReport prompts=1 n=3 TARr@3=1 varying=0>"),
        (lv.compare(["a"] * 10, ["a", "b"] * 5),
         "<Comparison a n=10 vs b n=10 delta_D=+0.556 p=0.00639 significant>"),
        (lv.compare_suites({"p": ["a"] * 5, "q": ["x"] * 5},
                           {"p": ["a", "b", "c", "a", "d"], "q": ["x"] * 5}),
         "<SuiteComparison prompts=2 TARr a=1 b=0.5 sign_p=0.5 significant_prompts=0>"),
    ]
    for result, line in expected:
        assert repr(result) == line
        view = result._repr_html_()
        assert view.startswith('<div class="lv-nb">') and len(view) < 60_000
    tree = many.report.tree
    assert tree is not None and repr(tree).startswith("<DivergenceTree n=10000 distinct=1")
    # a 10,000-sample result was a 400,000-character repr; its view is a few kilobytes
    assert len(many._repr_html_()) < 20_000
