"""Every Python and shell block of the README runs as written, against `llmvariance serve`.

A block runs by default: a section added to the README is tested without doing anything.
An HTML comment on the line just above a block's fence (invisible where the README is
rendered) changes that:

- ``<!-- readme-test: server -->``: the block starts the simulated server the other blocks
  use. The test starts that command itself on a free port and points every block's
  ``127.0.0.1:8000`` at it.
- ``<!-- readme-test: real -->``: the block needs llama.cpp (``python3 dev.py engines``); it
  runs under the ``real`` marker and is skipped until the engines are built.
- ``<!-- readme-test: skip (REASON) -->``: the block must not run here (a hosted API that
  needs a key, this test suite itself). The reason is required; keep these few.

Blocks run in README order in one temporary folder holding a copy of ``examples/``, a
``.venv`` link to this interpreter's environment and a ``dev.py`` link to this checkout's,
so a block may read what an earlier one wrote (``run.jsonl``), as a reader following along
would. Python blocks each run in a fresh
interpreter (so each must have its imports and names); shell blocks run under
``bash -e -o pipefail`` with ``llmvariance`` on PATH. Output blocks (a fence with no
language) are not run. ``test_the_python_blocks_type_check`` runs ``mypy --strict`` over the
Python blocks, as a user's editor would check them (without this project's pydantic
plugin).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from llmvariance.engines import llama_server_path, model_path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
RUNNABLE = {"python": "python", "bash": "bash", "sh": "bash", "shell": "bash"}
MARKER = re.compile(r"<!--\s*readme-test:\s*(server|real|skip)\s*(\(.*\))?\s*-->")
README_PORT = "127.0.0.1:8000"
TIMEOUT_S = 300
BASH = shutil.which("bash") or "/bin/bash"


@dataclass(frozen=True)
class Block:
    line: int
    """1-based line of the opening fence."""
    language: str
    code: str
    marker: str | None
    reason: str

    @property
    def id(self) -> str:
        first = next((ln for ln in self.code.splitlines() if ln.strip()
                      and not ln.startswith(("import ", "from ", "#"))), "")
        return f"L{self.line}-{self.language}-{first.strip()[:40]}"


def blocks(text: str | None = None) -> list[Block]:
    """The README's blocks with a runnable language, in order, with their markers."""
    lines = (README.read_text() if text is None else text).splitlines()
    found: list[Block] = []
    i = 0
    while i < len(lines):
        fence = re.fullmatch(r"```(\w*)\s*", lines[i])
        if fence is None:
            i += 1
            continue
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        language = fence.group(1)
        if language in RUNNABLE:
            above = lines[i - 1] if i else ""
            marker = MARKER.search(above)
            found.append(Block(i + 1, RUNNABLE[language], "\n".join(lines[i + 1:end]) + "\n",
                               marker.group(1) if marker else None,
                               (marker.group(2) or "").strip("()") if marker else ""))
        i = end + 1
    return found


BLOCKS = blocks()
HAVE_ENGINE = (llama_server_path().is_file()
               and model_path("smollm2-135m-instruct-q4_1").is_file())


def test_the_markers_are_few_and_say_why() -> None:
    skipped = [b for b in BLOCKS if b.marker == "skip"]
    assert all(b.reason for b in skipped), "a skipped block must say why"
    assert len(skipped) <= 3
    assert [b.marker for b in BLOCKS].count("server") == 1
    assert len([b for b in BLOCKS if b.marker is None]) >= 15


def test_the_runner_finds_blocks_and_markers() -> None:
    text = ("intro\n```python\nprint(1)\n```\n```\noutput\n```\n"
            "<!-- readme-test: skip (needs a key) -->\n```bash\ncurl x\n```\n"
            "<!-- readme-test: real -->\n```sh\nls\n```\n")
    found = blocks(text)
    assert [(b.line, b.language, b.marker, b.reason) for b in found] == [
        (2, "python", None, ""), (9, "bash", "skip", "needs a key"), (13, "bash", "real", "")]


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, str]]]:
    """The reader's folder, with the README's server running; yields it and the env."""
    where = tmp_path_factory.mktemp("readme")
    shutil.copytree(ROOT / "examples", where / "examples")
    (where / ".venv").symlink_to(Path(sys.prefix))
    (where / "dev.py").symlink_to(ROOT / "dev.py")  # a clone has it; it resolves to this one
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
           "MPLBACKEND": "Agg", "NO_COLOR": "1"}
    server = next(b for b in BLOCKS if b.marker == "server")
    command = server.code.strip().replace("--port 8000", "--port 0")
    with subprocess.Popen([BASH, "-c", f"exec {command}"], cwd=where, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                          text=True) as proc:
        try:
            assert proc.stdout is not None
            url = proc.stdout.readline().strip()
            assert url.startswith("http://127.0.0.1:"), url
            env["README_SERVER"] = url.removeprefix("http://").removesuffix("/v1")
            yield where, env
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=10)


def _params() -> list[object]:
    params: list[object] = []
    for block in BLOCKS:
        marks: list[pytest.MarkDecorator] = []
        if block.marker == "server":
            continue
        if block.marker == "skip":
            marks.append(pytest.mark.skip(reason=f"README marks it: {block.reason}"))
        if block.marker == "real":
            marks += [pytest.mark.real, pytest.mark.skipif(
                not HAVE_ENGINE, reason="needs `python3 dev.py engines` (llama.cpp)")]
        params.append(pytest.param(block, id=block.id, marks=marks))
    return params


@pytest.mark.parametrize("block", _params())
def test_the_readme_block_runs_as_written(block: Block,
                                          folder: tuple[Path, dict[str, str]]) -> None:
    where, env = folder
    code = block.code.replace(README_PORT, env["README_SERVER"])
    command = ([sys.executable, "-c", code] if block.language == "python"
               else [BASH, "-e", "-o", "pipefail", "-c", code])
    out = subprocess.run(command, cwd=where, env=env, capture_output=True, text=True,
                         timeout=TIMEOUT_S, check=False)
    assert out.returncode == 0, f"README line {block.line}:\n{out.stdout}\n{out.stderr}"
    assert "Traceback" not in out.stderr, out.stderr


def test_the_quick_start_prints_the_report_and_the_tree(
        folder: tuple[Path, dict[str, str]]) -> None:
    where, env = folder
    quick = next(b for b in BLOCKS if "sample_many_sync(req, n=30" in b.code)
    assert 'base_url="http://127.0.0.1:8000/v1"' in quick.code  # what the README tells people
    out = subprocess.run([sys.executable, "-c",
                          quick.code.replace(README_PORT, env["README_SERVER"])],
                         cwd=where, env=env, capture_output=True, text=True, timeout=120,
                         check=False)
    assert out.returncode == 0, out.stderr
    assert "samples           30 (30 ok, 0 failed)" in out.stdout
    assert "divergence tree: 30 samples" in out.stdout


def test_the_python_blocks_type_check(tmp_path: Path) -> None:
    """``mypy --strict`` on each Python block, as a user's editor would see it: without
    this project's configuration or pydantic plugin."""
    python = [b for b in BLOCKS if b.language == "python" and b.marker != "skip"]
    for block in python:
        (tmp_path / f"readme_line_{block.line}.py").write_text(block.code)
    (tmp_path / "mypy.ini").write_text("[mypy]\n")
    out = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--config-file",
                          str(tmp_path / "mypy.ini"), "--no-incremental",
                          *[f"readme_line_{b.line}.py" for b in python]],
                         cwd=tmp_path, capture_output=True, text=True, timeout=300,
                         check=False)
    assert out.returncode == 0, out.stdout + out.stderr
