"""The console script, run as a real subprocess like a user would."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator

import pytest

CLI = [sys.executable, "-m", "llmvariance"]


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=60,
                          env=env, check=False)


@pytest.fixture(scope="module")
def served_url() -> Iterator[str]:
    with subprocess.Popen([*CLI, "serve", "--port", "0"], stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL, text=True) as proc:
        try:
            assert proc.stdout is not None
            first = proc.stdout.readline().strip()
            assert first.startswith("http://127.0.0.1:") and first.endswith("/v1")
            yield first
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=10) == 0


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
    assert "distinct outputs 1  (all agree)" in out.stdout
    assert "samples          3 (3 ok, 0 failed)" in out.stdout


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
              "-n", "2", env=env)
    assert out.returncode == 0
    assert "failures         http_status 2" in out.stdout
    assert key not in out.stdout + out.stderr
