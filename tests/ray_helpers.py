"""What Ray tests share: a cluster on 127.0.0.1 that leaves no process behind, and hooks that
run in Ray's workers (importable there: the clusters put this folder on PYTHONPATH).

Importing this module, before ``ray`` is imported, sets token authentication with a fresh
token for this test session (Ray reads it once, at import; given in the environment, no
token is written to ``~/.ray``). Every process of a test's cluster inherits a marker of its
own (``$LLMVARIANCE_RAY_CLUSTER``): ``processes_with(marker)`` finds them all, whatever Ray
named them, to check that none outlives the test.
"""

from __future__ import annotations

import os
import secrets
import signal
import time
from pathlib import Path

import llmvariance as lv

TESTS = str(Path(__file__).resolve().parent)
INSTALL = "the Ray tests need ray: pip install 'llmvariance[ray]' (or .[dev])"


os.environ.setdefault("RAY_AUTH_MODE", "token")
os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(32))
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# a one-machine cluster on 127.0.0.1 (Ray would otherwise put it on the machine's outside
# address); read once, at import
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


def cluster_env() -> dict[str, str]:
    """Environment for a test cluster's processes: a marker of its own, and this folder
    importable (the session's token is in the environment already)."""
    return {"LLMVARIANCE_RAY_CLUSTER": secrets.token_hex(16),
            "PYTHONPATH": os.pathsep.join(p for p in (TESTS, os.environ.get("PYTHONPATH"))
                                          if p)}


def processes_with(token: str) -> list[int]:
    """Process ids (other than this one) whose environment holds ``token``."""
    found = []
    needle = token.encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle in (entry / "environ").read_bytes():
                found.append(int(entry.name))
        except OSError:  # gone, or not ours to read
            continue
    return found


def wait_until_gone(token: str, timeout_s: float = 30.0) -> list[int]:
    """The processes still holding ``token`` after up to ``timeout_s`` (empty: all gone)."""
    deadline = time.monotonic() + timeout_s
    while (left := processes_with(token)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


def fail_at_index(index: int, sample: lv.Sample) -> None:
    """An ``on_sample`` hook that fails at one index (so in one shard of a sample_many)."""
    if sample.index == index:
        raise ValueError(f"the hook refused index {index}")


_seen = [0]


def kill_once(marker: str, node_id: str, after: int, sample: lv.Sample) -> None:
    """An ``on_sample`` hook: after ``after`` samples in this worker, on node ``node_id``,
    kill the worker (SIGKILL: no cleanup, as a crash or an OOM kill) — once per ``marker``."""
    import ray

    _seen[0] += 1
    if _seen[0] < after or ray.get_runtime_context().get_node_id() != node_id:
        return
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return
    os.kill(os.getpid(), signal.SIGKILL)


def listening_addresses(pids: list[int]) -> set[str]:
    """The local addresses (IPv4 or IPv6, without the port) that ``pids`` listen on (TCP),
    read from /proc (no tool needed)."""
    inodes: set[str] = set()
    for pid in pids:
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:  # gone, or not ours to read
            continue
    found = set()
    for table, width in (("tcp", 8), ("tcp6", 32)):
        try:
            lines = Path(f"/proc/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                found.add(_address(fields[1].split(":")[0], width))
    return found


def _address(hex_address: str, width: int) -> str:
    """/proc/net/tcp's little-endian hex address as text (IPv4-mapped IPv6 as IPv4)."""
    import ipaddress

    raw = bytes.fromhex(hex_address)
    # each 32-bit word is in host (little-endian) order
    data = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    address = ipaddress.ip_address(data) if width == 8 else ipaddress.IPv6Address(data)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)
