"""One launcher for an external inference server process and every process it starts.

``ServerProcess`` picks a free port on 127.0.0.1, starts the command an engine preset
builds for that port under a watchdog (``_reaper``: a child subreaper that holds every
descendant of the server, whatever process group or session it moves to), waits until
its health URL answers 200 from a process of that tree, yields the API's base URL, and
on exit — normal, exception or cancellation — stops the whole tree: SIGTERM to every
process of it, SIGKILL to what is left after a grace period. Should this process die
first, even by SIGKILL, the watchdog sees it and does the same. The server's output goes
to a log file whose last lines are in every error about it.
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
import anyio.lowlevel

from .._errors import ConfigError, EngineError
from ._reaper import descendants

__all__ = ["EngineCommand", "ServerProcess", "free_port"]

_LOG_TAIL_LINES = 25
_REAPER = Path(__file__).with_name("_reaper.py")
_STOPPED = (0, -signal.SIGTERM, -signal.SIGKILL, 128 + signal.SIGTERM, 128 + signal.SIGKILL)
"""What a server stopped by its signals exits with."""
_HEALTH_REQUEST_S = 5.0
"""The longest one health request may take (never past the startup deadline)."""


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


def _listeners(port: int) -> set[int] | None:
    """Socket inodes listening on TCP ``port`` (any address); None without ``/proc``."""
    found: set[int] = set()
    readable = False
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table, encoding="ascii") as handle:
                rows = handle.read().splitlines()[1:]
        except OSError:
            continue
        readable = True
        for row in rows:
            fields = row.split()
            # local address "0100007F:1F90", state 0A is LISTEN, the inode is field 9
            if (len(fields) > 9 and fields[3] == "0A"
                    and int(fields[1].rsplit(":", 1)[1], 16) == port):
                found.add(int(fields[9]))
    return found if readable else None


def _holds_socket(pids: Sequence[int], inodes: set[int]) -> bool:
    wanted = {f"socket:[{inode}]" for inode in inodes}
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            with contextlib.suppress(OSError):
                if os.readlink(f"/proc/{pid}/fd/{fd}") in wanted:
                    return True
    return False


class _Tree:
    """The watchdog process and what it has said about the server's tree."""

    __slots__ = ("_reader", "died_first", "leader", "leader_code", "process", "stopping")

    def __init__(self, process: asyncio.subprocess.Process, leader: int) -> None:
        self.process = process
        self.leader = leader
        self.leader_code: int | None = None
        self.died_first = False
        """The server's first process exited by itself (before we asked it to stop)."""
        self.stopping = False
        """The watchdog has said it is stopping the tree."""
        self._reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        assert self.process.stdout is not None
        async for line in self.process.stdout:
            word, _, value = line.decode("ascii", "replace").strip().partition(" ")
            if word == "exit":
                self.leader_code = code = int(value)
                # before the watchdog began to stop it, or after, with a code no stop
                # gives (it died as the stop was being asked for)
                self.died_first = not self.stopping or code not in _STOPPED
            elif word == "stopping":
                self.stopping = True

    @property
    def gone(self) -> bool:
        """No process of the server is left (the watchdog exited with it)."""
        return self.process.returncode is not None

    async def heard_all(self) -> None:
        """Wait until every word of an exited watchdog has been read."""
        await self._reader

    async def stop(self, grace_s: float) -> None:
        """Stop every process of the tree and wait until none is left."""
        process = self.process
        if process.returncode is None:
            with contextlib.suppress(OSError):  # an exited watchdog closed its end
                assert process.stdin is not None
                process.stdin.write(b"stop\n")
                await process.stdin.drain()
            try:
                with anyio.fail_after(grace_s + 10):
                    await process.wait()
            except TimeoutError:  # pragma: no cover - a watchdog that hangs: do its work
                for pid in [*descendants(process.pid), process.pid]:
                    with contextlib.suppress(OSError):
                        os.kill(pid, signal.SIGKILL)
                await process.wait()
        await self._reader


class ServerProcess:
    """``async with ServerProcess(lambda port: EngineCommand(...)) as base_url:``.

    ``startup_timeout_s`` bounds the wait for health (model loading included), every
    health request inside it; ``stop_grace_s`` is how long SIGTERM gets before SIGKILL.
    A server that daemonizes (forks and lets its first process exit 0) is followed to
    its daemon. ``log_path`` keeps the server's output there; by default it goes to a
    temporary file that is kept (and named in the error) only when the server failed,
    and deleted otherwise — after a clean stop, an exception or a cancellation.
    """

    __slots__ = ("_command", "_log_path", "_own_log", "_startup_timeout_s", "_stop_grace_s",
                 "_tree", "base_url", "name", "port")

    def __init__(self, command: Callable[[int], EngineCommand], *, name: str = "server",
                 log_path: str | os.PathLike[str] | None = None,
                 startup_timeout_s: float = 300.0, stop_grace_s: float = 10.0) -> None:
        self._command = command
        self.name = name
        self._log_path = Path(log_path) if log_path is not None else None
        self._own_log = log_path is None
        self._startup_timeout_s = startup_timeout_s
        self._stop_grace_s = stop_grace_s
        self._tree: _Tree | None = None
        self.port: int | None = None
        self.base_url: str | None = None

    @property
    def pid(self) -> int | None:
        """The process id of the server's first process while it runs."""
        return self._tree.leader if self._tree is not None else None

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
        deadline = time.monotonic() + self._startup_timeout_s
        try:
            with log:
                try:
                    process = await asyncio.create_subprocess_exec(
                        sys.executable, "-I", str(_REAPER), str(os.getpid()),
                        repr(float(self._stop_grace_s)), "--", *command.argv,
                        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                        stderr=log, env={**os.environ, **command.env},
                        start_new_session=True)  # a terminal's Ctrl-C reaches us; we stop it
                except OSError as exc:
                    raise EngineError(f"{self.name}: cannot start its watchdog "
                                      f"({sys.executable}): {exc.strerror or exc}") from None
            await self._started(process, command)
            self.port = port
            root = f"http://127.0.0.1:{port}"
            await self._wait_healthy(root + command.health_path, port, deadline)
        except BaseException as exc:
            with anyio.CancelScope(shield=True):
                await self._stop()
            if not isinstance(exc, EngineError):
                self._drop_log()
            raise
        self.base_url = root + command.api_path
        return self.base_url

    async def _started(self, process: asyncio.subprocess.Process,
                       command: EngineCommand) -> None:
        """Read the watchdog's first word: the server's pid, or why it did not start."""
        assert process.stdout is not None
        try:
            first = await process.stdout.readline()
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                process.kill()  # it has started nothing we know of yet
            with anyio.CancelScope(shield=True):
                await process.wait()
            raise
        word, _, value = first.decode("utf-8", "replace").strip().partition(" ")
        if word != "pid":
            await process.wait()
            said = value if word == "error" else f"its watchdog said {first!r}"
            raise EngineError(f"{self.name}: cannot start {command.argv[0]}: {said}")
        self._tree = _Tree(process, int(value))

    async def _wait_healthy(self, url: str, port: int, deadline: float) -> None:
        tree = self._tree
        assert tree is not None
        async with aiohttp.ClientSession() as session:
            while True:
                await anyio.lowlevel.checkpoint()  # let the watchdog's words be read
                if tree.gone:
                    await tree.heard_all()
                if tree.gone or (tree.died_first and tree.leader_code not in (None, 0)):
                    raise EngineError(f"{self.name} exited with code {tree.leader_code} "
                                      f"before it was ready{self._log_tail()}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise EngineError(f"{self.name} was not healthy at {url} within "
                                      f"{self._startup_timeout_s:g} s{self._log_tail()}")
                timeout = aiohttp.ClientTimeout(total=min(_HEALTH_REQUEST_S, left))
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with session.get(url, timeout=timeout) as response:
                        if response.status == 200:
                            self._check_ours(port, url)
                            return
                # polling: the server offers no readiness event
                await anyio.sleep(min(0.1, max(0.0, deadline - time.monotonic())))

    def _check_ours(self, port: int, url: str) -> None:
        """Refuse a healthy answer from a process outside the server's tree: another
        program took the port between ``free_port()`` and the server binding it."""
        tree = self._tree
        assert tree is not None
        inodes = _listeners(port)
        if inodes is None or not inodes:  # no /proc: we cannot tell
            return
        if not _holds_socket(descendants(tree.process.pid), inodes):
            raise EngineError(f"{self.name}: {url} answered, but from a process that is not "
                              f"the server's: another program took 127.0.0.1:{port} before "
                              f"the server could listen on it; start it again"
                              f"{self._log_tail()}")

    async def _stop(self) -> int | None:
        """Stop the whole tree; return the first process's exit code if the server had
        died by itself (its tree gone, or its first process failed) before we stopped it."""
        tree, self._tree = self._tree, None
        if tree is None:
            return None
        gone = tree.gone
        await tree.stop(self._stop_grace_s)
        if gone:
            return tree.leader_code if tree.leader_code is not None else -1
        if tree.died_first and tree.leader_code not in (None, 0):
            return tree.leader_code
        return None

    def _drop_log(self) -> None:
        if self._own_log and self._log_path is not None:
            self._log_path.unlink(missing_ok=True)

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        with anyio.CancelScope(shield=True):
            died = await self._stop()
        if died is None:
            self._drop_log()
            return
        message = f"{self.name} died during the run (exit code {died}){self._log_tail()}"
        if exc is None:
            raise EngineError(message)
        exc.add_note(message)  # what went wrong inside may be because of it

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
        state = f"pid={self.pid} {self.base_url}" if self._tree else "stopped"
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
