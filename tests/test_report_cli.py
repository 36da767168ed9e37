"""``llmvariance report --tree / --plot`` on run files of the moe model under load."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import llmvariance as lv
from moe_runs import moe_run, split_run

CLI = [sys.executable, "-m", "llmvariance"]


def report(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, "report", *map(str, args)], capture_output=True, text=True,
                          timeout=120, check=False)


@pytest.fixture(scope="module")
def moe_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("moe") / "run.jsonl"
    result = moe_run(path, 60)
    assert result.report.n_ok == 60 and result.report.unique_count >= 2  # it did split
    return path


def check_every_level_adds_up(tree: dict[str, Any]) -> None:
    nodes = tree["nodes"]
    assert nodes[0]["count"] == tree["n"]
    for node in nodes:
        if node["children"] or node["pruned_branches"]:
            assert sum(nodes[c]["count"] for c in node["children"]) + node["pruned_samples"] \
                == node["count"]


def test_tree_branch_points_add_up_to_n_at_every_level(moe_file: Path) -> None:
    out = report(moe_file, "--tree", "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    tree, summary = data["tree"], data["report"]
    assert tree["n"] == summary["n_ok"] == 60
    assert tree["unique_count"] == summary["unique_count"]
    check_every_level_adds_up(tree)
    root = tree["nodes"][0]
    assert root["end_token"] == summary["common_prefix_tokens"]
    assert root["margin"] is not None and root["margin"] >= 0  # top logprobs were returned

    text = report(moe_file, "--tree")
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    start = lines.index(f"divergence tree: 60 samples, {tree['unique_count']} distinct "
                        "outputs; positions are 0-based provider tokens")
    # the tree names the character where the outputs first differ, as the report does (the
    # root's end_char is the token boundary before it)
    assert root["end_char"] <= summary["common_prefix_chars"]
    assert lines[start + 1].startswith("60  '") and (
        f"splits at token {root['end_token']} (char {summary['common_prefix_chars']})"
        in lines[start + 1])
    # one line per node after the root (and one per group of pruned alternatives)
    pruned = sum(1 for n in tree["nodes"] if n["pruned_branches"])
    drawn = [line for line in lines[start + 2:] if line.lstrip("│ ").startswith(("├─", "└─"))]
    assert len(drawn) == len(tree["nodes"]) - 1 + pruned


def test_the_tree_of_two_run_files_equals_the_tree_of_one(moe_file: Path,
                                                          tmp_path: Path) -> None:
    first, second = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    split_run(moe_file, first, second, at=25)
    assert len(lv.read_run(first)) == 25 and len(lv.read_run(second)) == 35
    merged = report(first, second, "--tree", "--json")
    whole = report(moe_file, "--tree", "--json")
    assert merged.returncode == whole.returncode == 0
    assert json.loads(merged.stdout)["tree"] == json.loads(whole.stdout)["tree"]
    # the same in the library: collectors of each file, merged
    a, b = lv.DivergenceTreeCollector(), lv.DivergenceTreeCollector()
    a.update(lv.read_run(first).iter_samples())
    b.update(lv.read_run(second).iter_samples())
    assert a.merge(b).tree() == lv.divergence_tree(lv.read_run(moe_file).iter_samples())
    text_merged, text_whole = report(first, second, "--tree"), report(moe_file, "--tree")
    assert text_merged.stdout.split("\n", 1)[1] == text_whole.stdout.split("\n", 1)[1]


def test_plot_writes_a_png_of_the_tree_and_the_report(moe_file: Path, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="the plot extra (matplotlib) is not installed")
    out = report(moe_file, "--plot", tmp_path / "report.png", "--min-count", "2")
    assert out.returncode == 0, out.stderr
    assert out.stderr.strip() == f"wrote {tmp_path / 'report.png'}"
    data = (tmp_path / "report.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000


def test_bad_tree_and_plot_arguments_name_the_field(moe_file: Path, tmp_path: Path) -> None:
    out = report(moe_file, "--tree", "--min-count", "0")
    assert out.returncode == 2 and "min_count: must be an integer >= 1" in out.stderr
    out = report(moe_file, "--plot", tmp_path / "x.gif")
    assert out.returncode == 2 and "the suffix must be .png or .svg" in out.stderr
