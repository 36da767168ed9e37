"""The README's quick start runs as written against `llmvariance serve`."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"
CLI = [sys.executable, "-m", "llmvariance"]


def quick_start() -> str:
    text = README.read_text()
    section = text[text.index("## Quick start"):]
    match = re.search(r"```python\n(.*?)```", section, flags=re.DOTALL)
    assert match is not None
    return match.group(1)


def test_the_quick_start_runs_against_the_built_in_server() -> None:
    code = quick_start()
    assert 'base_url="http://127.0.0.1:8000/v1"' in code  # what the README tells people
    with subprocess.Popen([*CLI, "serve", "--port", "0"], stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL, text=True) as server:
        try:
            assert server.stdout is not None
            url = server.stdout.readline().strip()
            assert url.startswith("http://127.0.0.1:")
            out = subprocess.run(
                [sys.executable, "-c", code.replace("http://127.0.0.1:8000/v1", url)],
                capture_output=True, text=True, timeout=120, check=False)
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=10)
    assert out.returncode == 0, out.stderr
    assert "samples           30 (30 ok, 0 failed)" in out.stdout
    assert "divergence tree: 30 samples" in out.stdout
