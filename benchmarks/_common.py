"""Shared by the benchmark scripts: medians, a table printer, JSON output, the library's
source at a baseline revision."""

from __future__ import annotations

import json
import platform
import statistics
import subprocess
import tarfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parents[1]


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(h) for h in headers]] + [[_fmt(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 100 else f"{value:,.0f}"
    return str(value)


def write_json(name: str, payload: dict[str, Any], path: Path | None = None) -> Path:
    """Write ``payload`` to ``path`` (default: the committed ``results/NAME.json``)."""
    path = path or RESULTS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"benchmark": name, "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "python": platform.python_version(), "machine": platform.machine(), **payload}
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path


def baseline_src(revision: str, into: Path) -> Path | None:
    """``src/`` of the library at ``revision`` (``git archive``), unpacked under ``into``;
    None when git does not know it."""
    archive = into / "baseline.tar"
    with archive.open("wb") as handle:
        done = subprocess.run(["git", "archive", revision, "src"],  # noqa: S603, S607
                              cwd=ROOT, stdout=handle, stderr=subprocess.PIPE, check=False)
    if done.returncode != 0:
        print(f"baseline {revision}: {done.stderr.decode().strip()}; measuring only the "
              "current version", flush=True)
        return None
    with tarfile.open(archive) as tar:
        tar.extractall(into / "baseline", filter="data")
    return into / "baseline" / "src"
