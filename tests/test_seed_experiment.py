"""benchmarks/seed_experiment.py against servers, as a user would run it."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import anyio
import pytest

from llmvariance.testing import SimServer

pytestmark = pytest.mark.anyio

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "seed_experiment.py"


async def run_script(*args: str, json_out: Path) -> str:
    # --json-out: a test never writes into the tree, where the committed figures live
    result = await anyio.run_process([sys.executable, str(SCRIPT), *args, "--json-out",
                                      str(json_out)], check=False)
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout.decode()


def rows(output: str) -> list[str]:
    lines = output.splitlines()
    start = lines.index("Num_Sequences\tModel_Name") + 1
    return lines[start:lines.index("", start)]


async def test_original_table_against_a_foreign_server(third_party_url: str,
                                                      tmp_path: Path) -> None:
    out = await run_script("--base-url", third_party_url, "--models",
                           "gpt-4.1:mock-echo,gpt-4.1", "--completion-models",
                           "davinci:mock-echo", "--n", "6", "--pause", "0",
                           json_out=tmp_path / "seed.json")
    # mock-ai-api is deterministic: one distinct output per model
    assert rows(out) == ["1\tgpt-4.1:mock-echo", "1\tgpt-4.1", "1\tdavinci:mock-echo"]


async def test_counts_on_the_simulator_follow_the_batch(tmp_path: Path) -> None:
    out = tmp_path / "seed.json"
    async with SimServer(step_time_s=0.001) as url:
        quiet = await run_script("--base-url", url, "--models", "moe,dense", "--n", "6",
                                 "--pause", "0", "--max-tokens", "24", "--eos-token-id", "7",
                                 json_out=out)
    # sequential, nothing else running: even the MoE model answers identically
    assert rows(quiet) == ["1\tmoe", "1\tdense"]
    assert "first divergence (token)" in quiet
    figures = json.loads(out.read_text())
    assert figures["protocol"]["eos_token_id"] == 7
    assert [m["report"]["unique_count"] for m in figures["models"]] == [1, 1]
