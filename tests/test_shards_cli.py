"""A 40-prompt x 50-sample suite run as four processes (`--shard k/4`), merged on the command
line, against the same suite run by one process."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import served
from shard_helpers import suite, without_timing

CLI = [sys.executable, "-m", "llmvariance"]
PROMPTS, N, K = 40, 50, 4


@pytest.fixture(scope="module")
def served_url() -> Iterator[str]:
    with served() as url:
        yield url


def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True,
                          timeout=120, check=False)


@pytest.fixture(scope="module")
def runs(served_url: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The suite's file, its one-process run file and its four shards' run files."""
    directory = tmp_path_factory.mktemp("shards")
    suite_file = directory / "suite.jsonl"
    suite_file.write_text("".join(
        json.dumps(request.model_dump(mode="json", exclude_none=True)) + "\n"
        for _, request in suite(PROMPTS)))
    common = ["suite", suite_file, "--base-url", served_url, "-n", str(N),
              "--concurrency", "16", "--rpm", "600000"]
    shards = [subprocess.Popen([*CLI, *map(str, common), "--shard", f"{k}/{K}", "--out",
                                directory / f"shard{k}.jsonl"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
              for k in range(K)]
    one = run(*common, "--out", directory / "one.jsonl")
    assert one.returncode == 0, one.stderr
    for proc in shards:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        assert f"{PROMPTS} requests x n={N}" in out
    return directory


def test_four_processes_merge_to_the_one_process_report_tar_and_tree(runs: Path) -> None:
    shards = [runs / f"shard{k}.jsonl" for k in range(K)]
    merged = run("merge", *reversed(shards), "-o", runs / "merged.jsonl")
    assert merged.returncode == 0, merged.stderr
    assert merged.stdout.splitlines()[0] == (
        f"merged 4 files (shards of 4 (diagonal)): {PROMPTS * N:,} of {PROMPTS * N:,} pairs")
    reports = {}
    for name, files in (("one", [runs / "one.jsonl"]), ("merged", [runs / "merged.jsonl"]),
                        ("shards", shards)):
        out = run("report", *files, "--json", "--tree")
        assert out.returncode == 0, out.stderr
        # provenance names each side's own files and times; everything else must agree
        reports[name] = without_timing({k: v for k, v in json.loads(out.stdout).items()
                                        if k != "provenance"})
    assert reports["merged"] == reports["one"]
    assert reports["shards"] == reports["one"]
    suite_report = reports["one"]["suite"]
    assert suite_report["n_prompts"] == PROMPTS and suite_report["n"] == N
    assert suite_report["tar_raw"] == 1.0  # the dense model: every prompt agrees
    assert suite_report["incomplete"] == []
    assert reports["one"]["report"]["n_samples"] == PROMPTS * N
    tree = reports["one"]["tree"]["nodes"]
    assert tree[0]["count"] == PROMPTS * N and len(tree[0]["children"]) > 1


def test_a_missing_shard_is_named_and_nothing_is_written(runs: Path) -> None:
    out = run("merge", runs / "shard0.jsonl", runs / "shard1.jsonl", runs / "shard3.jsonl",
              "-o", runs / "partial.jsonl")
    assert out.returncode == 2
    assert "missing shard 2/4 (500 of 2,000 pairs)" in out.stderr
    assert not (runs / "partial.jsonl").exists()
    report = run("report", runs / "shard0.jsonl", runs / "shard1.jsonl", runs / "shard3.jsonl")
    assert report.returncode == 2 and "missing shard 2/4" in report.stderr
    allowed = run("report", runs / "shard0.jsonl", runs / "shard1.jsonl", runs / "shard3.jsonl",
                  "--allow-missing")
    assert allowed.returncode == 0, allowed.stderr
    assert "missing shard 2/4: no file was given for them" in allowed.stderr
    assert "samples           1500 (1500 ok, 0 failed)" in allowed.stdout


def test_report_writes_the_html_of_the_shards_together(runs: Path) -> None:
    shards = [runs / f"shard{k}.jsonl" for k in range(K)]
    out = run("report", *shards, "--html", runs / "report.html")
    assert out.returncode == 0, out.stderr
    page = (runs / "report.html").read_text()
    assert f"{PROMPTS} prompts, {N} samples each" in page  # the suite's page, all shards
    assert "merged 4 files (shards of 4 (diagonal))" in out.stderr


def test_batch_effect_shards_on_the_command_line(served_url: str, runs: Path) -> None:
    common = ["batch-effect", "--base-url", served_url, "--model", "dense", "--prompt", "hi",
              "-n", "6", "--blocks", "3", "--conditions", "sequential,burst",
              "--max-tokens", "8"]
    for k in range(3):
        out = run(*common, "--shard", f"{k}/3", "--out", runs / f"be{k}.jsonl")
        assert out.returncode == 0, out.stderr
    merged = run("merge", *(runs / f"be{k}.jsonl" for k in range(3)), "-o", runs / "be.jsonl")
    assert merged.returncode == 0, merged.stderr
    assert "merged 3 files (shards of 3 (blocks)): 13 of 13 pairs" in merged.stdout
    whole = run(*common, "--out", runs / "be.jsonl", "--json")  # resumes: nothing to send
    assert whole.returncode == 0, whole.stderr
    assert json.loads(whole.stdout)["verdict_kind"] == "no_variation_observed"


def test_shard_needs_an_output_file(served_url: str, runs: Path) -> None:
    out = run("suite", runs / "suite.jsonl", "--base-url", served_url, "--shard", "1/4")
    assert out.returncode == 2
    assert "--shard: needs --out" in out.stderr
