"""No process of a server's tree outlives its ``ServerProcess`` block.

The server is tests/fake_engine.py in modes that leave processes behind the way real
engines do: a worker that ignores SIGTERM, a leader that ignores it too, a daemon that
double-forks into a session of its own, a worker in a session of its own. Each records
its pid in a directory, so the test knows the whole tree and checks ``/proc`` for every
one of them after the block ends — normally, by an exception, by cancellation, or by
SIGKILL of the process that ran the block.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import anyio
import pytest
from aiohttp import web

import llmvariance as lv
from llmvariance.engines import EngineCommand, ServerProcess, _process

FAKE = str(Path(__file__).with_name("fake_engine.py"))
MODES = ["worker-ignores-term", "stubborn-worker", "daemon", "session-worker"]
GRACE_S = 0.3


def alive(pid: int) -> bool:
    """Running, or stopped: anything but gone or a zombie (as ``ps`` would list it)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def living(pids: list[int]) -> int:
    return sum(alive(pid) for pid in pids)


def expected_living(mode: str) -> int:
    """The server and its worker; a daemon's first process has exited by design."""
    return 1 if mode == "daemon" else 2


def recorded(folder: Path) -> list[int]:
    return sorted(int(p.name) for p in folder.iterdir())


def survivors_after(pids: list[int], timeout_s: float) -> list[int]:
    """The pids still alive once each has exited or ``timeout_s`` has passed (waiting on
    pidfds: woken by each exit, never polling)."""
    fds = {}
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            fds[os.pidfd_open(pid)] = pid
    pending, deadline = set(fds), time.monotonic() + timeout_s
    while pending and (left := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select(list(pending), [], [], left)
        pending -= set(ready)
    for fd in fds:
        os.close(fd)
    return [pid for pid in pids if alive(pid)]


@pytest.fixture
def pids_dir(tmp_path: Path) -> Iterator[Path]:
    """Where the fake engine's processes record themselves; whatever a failing test
    leaves alive is killed, so no process outlives a test."""
    folder = tmp_path / "pids"
    folder.mkdir()
    yield folder
    for pid in recorded(folder):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def fake(mode: str, folder: Path, **kwargs: object) -> ServerProcess:
    return ServerProcess(
        lambda port: EngineCommand((sys.executable, FAKE, str(port), mode),
                                   env={"FAKE_ENGINE_PIDS": str(folder)}),
        name="fake", stop_grace_s=GRACE_S, **kwargs)  # type: ignore[arg-type]


async def health(base_url: str) -> int:
    async with aiohttp.ClientSession() as session, session.get(
            base_url.removesuffix("/v1") + "/health") as response:
        return response.status


@pytest.mark.anyio
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("ending", ["normally", "by an exception", "by cancellation"])
async def test_no_process_of_the_tree_outlives_the_block(mode: str, ending: str,
                                                         pids_dir: Path) -> None:
    server = fake(mode, pids_dir)
    with anyio.CancelScope() as scope:
        with contextlib.suppress(KeyError):
            async with server as base_url:
                assert await health(base_url) == 200
                tree = recorded(pids_dir)
                assert len(tree) == 2 and living(tree) == expected_living(mode)
                if ending == "by an exception":
                    raise KeyError("inside")
                if ending == "by cancellation":
                    scope.cancel()
                    await anyio.sleep_forever()
    assert scope.cancelled_caught == (ending == "by cancellation")
    # the block returns only once the whole tree is gone: nothing to wait for
    assert [pid for pid in tree if alive(pid)] == []


LAUNCHER = """
import sys, anyio
from llmvariance.engines import EngineCommand, ServerProcess

async def main() -> None:
    command = lambda port: EngineCommand((sys.executable, sys.argv[1], str(port), sys.argv[2]))
    async with ServerProcess(command, name="fake", stop_grace_s=float(sys.argv[3])):
        print("ready", flush=True)
        await anyio.sleep_forever()

anyio.run(main)
"""


@pytest.mark.parametrize("mode", MODES)
def test_no_process_of_the_tree_outlives_a_launcher_killed_by_sigkill(
        mode: str, pids_dir: Path) -> None:
    env = {**os.environ, "FAKE_ENGINE_PIDS": str(pids_dir)}
    with subprocess.Popen([sys.executable, "-c", LAUNCHER, FAKE, mode, str(GRACE_S)],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                          text=True) as launcher:
        try:
            assert launcher.stdout is not None
            assert launcher.stdout.readline() == "ready\n", launcher.stderr
            tree = recorded(pids_dir)
            assert len(tree) == 2 and living(tree) == expected_living(mode)
            launcher.kill()  # SIGKILL: no handler, no finally, no atexit runs
        finally:
            launcher.kill()
            launcher.wait()
    assert survivors_after(tree, timeout_s=GRACE_S + 15) == []


# -- the launcher's details -----------------------------------------------------------------

@pytest.mark.anyio
async def test_a_health_answer_from_another_process_on_the_port_is_refused(
        pids_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async def someone_elses(request: web.Request) -> web.Response:
        return web.Response(text="someone else's")

    app = web.Application()
    app.router.add_get("/health", someone_elses)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    monkeypatch.setattr(_process, "free_port", lambda: port)  # the race, lost for sure
    server = fake("never-binds", pids_dir)
    try:
        with pytest.raises(lv.EngineError, match=f"another program took 127.0.0.1:{port}"):
            async with server:
                raise AssertionError("yielded a server that is not ours")
    finally:
        await runner.cleanup()
    assert [pid for pid in recorded(pids_dir) if alive(pid)] == []


@pytest.mark.anyio
async def test_the_startup_timeout_bounds_a_health_request_that_hangs(pids_dir: Path) -> None:
    server = fake("hang-health", pids_dir, startup_timeout_s=0.5)
    started = time.monotonic()
    with pytest.raises(lv.EngineError, match=r"not healthy at .* within 0.5 s"):
        async with server:
            raise AssertionError("never healthy")
    assert time.monotonic() - started < 2.5  # a hung request was given 5 s before


@pytest.mark.anyio
async def test_a_cancelled_start_leaves_no_log_in_the_temp_dir(pids_dir: Path) -> None:
    server = fake("never-binds", pids_dir)
    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as tg:
            async def start() -> None:
                async with server:
                    raise AssertionError("never healthy")
            tg.start_soon(start)
            while server.pid is None:  # noqa: ASYNC110 - the launcher offers no event
                await anyio.sleep(0.01)
            log = server.log_path
            scope.cancel()
    assert log is not None and not log.exists()
    assert [pid for pid in recorded(pids_dir) if alive(pid)] == []
