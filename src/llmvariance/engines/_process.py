"""One launcher for an external inference server process.

``ServerProcess`` picks a free port on 127.0.0.1, starts the command an engine preset
builds for that port, waits until its health URL answers 200, yields the API's base URL,
and on exit — normal, exception or cancellation — stops it: SIGTERM to its process
group, SIGKILL after a grace period. Its output goes to a log file whose last lines are
in every error about it. Linux also kills it should this process die first.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import aiohttp
import anyio

from .._errors import ConfigError, EngineError

__all__ = ["EngineCommand", "ServerProcess", "free_port"]

_LOG_TAIL_LINES = 25


@dataclass(frozen=True)
class EngineCommand:
    """How to start one server: its argv, extra environment and where it answers."""

    argv: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)
    health_path: str = "/health"
    api_path: str = "/v1"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


class ServerProcess:
    """``async with ServerProcess(lambda port: EngineCommand(...)) as base_url:``.

    ``startup_timeout_s`` bounds the wait for health (model loading included);
    ``stop_grace_s`` is how long SIGTERM gets before SIGKILL. ``log_path`` keeps the
    server's output there; by default it goes to a temporary file that is deleted after
    a clean stop and kept (and named in the error) when the server failed.
    """

    __slots__ = ("_command", "_log_path", "_own_log", "_process", "_startup_timeout_s",
                 "_stop_grace_s", "base_url", "name", "port")

    def __init__(self, command: Callable[[int], EngineCommand], *, name: str = "server",
                 log_path: str | os.PathLike[str] | None = None,
                 startup_timeout_s: float = 300.0, stop_grace_s: float = 10.0) -> None:
        self._command = command
        self.name = name
        self._log_path = Path(log_path) if log_path is not None else None
        self._own_log = log_path is None
        self._startup_timeout_s = startup_timeout_s
        self._stop_grace_s = stop_grace_s
        self._process: asyncio.subprocess.Process | None = None
        self.port: int | None = None
        self.base_url: str | None = None

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs."""
        return self._process.pid if self._process is not None else None

    @property
    def log_path(self) -> Path | None:
        return self._log_path

    async def __aenter__(self) -> str:
        port = free_port()
        command = self._command(port)
        if self._log_path is None:
            fd, name = tempfile.mkstemp(prefix=f"{self.name}-", suffix=".log")
            os.close(fd)
            self._log_path = Path(name)
        try:
            log = self._log_path.open("ab")
        except OSError as exc:
            raise ConfigError("log_path", f"cannot write {self._log_path}: {exc.strerror}"
                              ) from None
        with log:
            try:
                self._process = await asyncio.create_subprocess_exec(
                    *command.argv, stdin=asyncio.subprocess.DEVNULL, stdout=log,
                    stderr=asyncio.subprocess.STDOUT, env={**os.environ, **command.env},
                    start_new_session=True,  # a terminal's Ctrl-C reaches us, we stop it
                    preexec_fn=_die_with_parent if sys.platform == "linux" else None)
            except OSError as exc:
                raise EngineError(f"{self.name}: cannot start {command.argv[0]}: "
                                  f"{exc.strerror or exc}") from None
        self.port = port
        root = f"http://127.0.0.1:{port}"
        try:
            await self._wait_healthy(root + command.health_path)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self._stop()
            raise
        self.base_url = root + command.api_path
        return self.base_url

    async def _wait_healthy(self, url: str) -> None:
        assert self._process is not None
        deadline = time.monotonic() + self._startup_timeout_s
        timeout = aiohttp.ClientTimeout(total=5)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                if self._process.returncode is not None:
                    raise EngineError(f"{self.name} exited with code "
                                      f"{self._process.returncode} before it was ready"
                                      f"{self._log_tail()}")
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with session.get(url) as response:
                        if response.status == 200:
                            return
                if time.monotonic() > deadline:
                    raise EngineError(f"{self.name} was not healthy at {url} within "
                                      f"{self._startup_timeout_s:g} s{self._log_tail()}")
                await anyio.sleep(0.1)  # polling: the server offers no readiness event

    async def _stop(self) -> int | None:
        """Stop the server; return its exit code if it had exited by itself (crashed)."""
        process, self._process = self._process, None
        if process is None:
            return None
        if process.returncode is not None:
            with contextlib.suppress(ProcessLookupError):  # leftovers in its group
                os.killpg(process.pid, signal.SIGKILL)
            return process.returncode
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            with anyio.fail_after(self._stop_grace_s):
                code = await process.wait()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            code = await process.wait()
        # What a server stopped by us exits with; anything else means it had died already
        # (its exit raced our look at returncode).
        stopped = (0, -signal.SIGTERM, -signal.SIGKILL, 128 + signal.SIGTERM)
        return None if code in stopped else code

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        with anyio.CancelScope(shield=True):
            died = await self._stop()
        if died is not None and exc is None:
            raise EngineError(f"{self.name} died during the run (exit code {died})"
                              f"{self._log_tail()}")
        if self._own_log and exc is None and self._log_path is not None:
            self._log_path.unlink(missing_ok=True)

    def _log_tail(self) -> str:
        if self._log_path is None:
            return ""
        try:
            with self._log_path.open("rb") as log:
                log.seek(0, os.SEEK_END)
                log.seek(max(0, log.tell() - 16_384))
                lines = log.read().decode("utf-8", "replace").splitlines()[-_LOG_TAIL_LINES:]
        except OSError:
            return ""
        shown = "\n  ".join(lines) if lines else "(empty)"
        return f"; the last lines of its log ({self._log_path}):\n  {shown}"

    def __repr__(self) -> str:
        state = f"pid={self.pid} {self.base_url}" if self._process else "stopped"
        return f"<ServerProcess {self.name} {state}>"


def check_file(field_name: str, path: str | os.PathLike[str], what: str) -> Path:
    """``path`` as a Path if it is an existing file, else a ``ConfigError`` naming it."""
    resolved = Path(path).expanduser()
    if not resolved.is_file():
        raise ConfigError(field_name, f"{what} {str(resolved)!r} does not exist or is not a "
                          "file")
    return resolved


def argv_flags(flags: Sequence[tuple[str, object]]) -> list[str]:
    """``[("--x", 1), ("--y", None), ("--z", True)]`` → ``["--x", "1", "--z"]``."""
    out: list[str] = []
    for flag, value in flags:
        if value is None or value is False:
            continue
        out.append(flag)
        if value is not True:
            out.append(str(value))
    return out
