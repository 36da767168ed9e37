"""Two Ray nodes on this machine (a head and a second node, one CPU each, dashboard off, on
loopback, started and stopped by this test by process id): a suite sharded over both
against the simulator, one node's worker killed mid-run, merged to exactly the one-process
result, and no Ray process left behind.

The nodes' address is 127.0.0.2: for a cluster of several nodes, Ray replaces 127.0.0.1
(and "localhost") by the machine's outside address so that other machines could reach it;
127.0.0.2 is loopback too and is kept as given, so every connection stays on this machine.
"""

from __future__ import annotations

import functools
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

import llmvariance as lv
from ray_helpers import INSTALL, cluster_env, kill_once, processes_with, wait_until_gone
from shard_helpers import suite, without_timing

ray = pytest.importorskip("ray", reason=INSTALL)

RAY = Path(sys.executable).with_name("ray")
HOST = "127.0.0.2"


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _node(env: dict[str, str], *args: str) -> subprocess.Popen[bytes]:
    """``ray start --block``: the node's processes live while this one does; SIGTERM stops
    them all."""
    [agent] = _free_ports(1)
    return subprocess.Popen(
        [str(RAY), "start", "--block", f"--node-ip-address={HOST}", "--num-cpus=1",
         "--disable-usage-stats", f"--dashboard-agent-listen-port={agent}", *args],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _listening(port: int, deadline: float) -> None:
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex((HOST, port)) == 0:
                return
        time.sleep(0.1)
    raise AssertionError(f"the head node never listened on {port}")


@pytest.fixture
def two_nodes() -> Iterator[tuple[str, str]]:
    """(address, id of the second node) of a two-node cluster; stopped after the test."""
    # several nodes: `ray start` refuses them unless this is 1 (the tests' default is 0)
    env = {**os.environ, **cluster_env(), "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "1"}
    marker = env["LLMVARIANCE_RAY_CLUSTER"]
    directory = tempfile.mkdtemp(prefix="lvray")
    [port] = _free_ports(1)
    nodes = [_node(env, "--head", f"--port={port}", "--include-dashboard=false",
                   f"--temp-dir={directory}")]
    try:
        deadline = time.monotonic() + 60
        _listening(port, deadline)
        nodes.append(_node(env, f"--address={HOST}:{port}"))
        ray.init(address=f"{HOST}:{port}", _node_ip_address=HOST, configure_logging=False,
                 log_to_driver=False)
        while len([n for n in ray.nodes() if n["Alive"]]) < 2:
            assert time.monotonic() < deadline, "the second node never joined"
            time.sleep(0.1)
        second = next(n["NodeID"] for n in ray.nodes()
                      if n["Alive"] and "node:__internal_head__" not in n["Resources"])
        assert {n["NodeManagerAddress"] for n in ray.nodes()} == {HOST}
        yield f"{HOST}:{port}", second
    finally:
        ray.shutdown()
        for node in reversed(nodes):
            node.send_signal(signal.SIGTERM)
        for node in nodes:
            try:
                node.wait(timeout=30)
            except subprocess.TimeoutExpired:
                node.kill()
                node.wait(timeout=10)
        left = wait_until_gone(marker)
        for pid in left:  # fail, but leave nothing running
            os.kill(pid, signal.SIGKILL)
        subprocess.run(["/bin/rm", "-rf", directory], check=False)
        assert left == [], f"Ray processes outlived the test: {left}"
        assert processes_with(marker) == []


@pytest.fixture
def served_url() -> Iterator[str]:
    with subprocess.Popen([sys.executable, "-m", "llmvariance", "serve", "--port", "0"],
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True) as proc:
        try:
            assert proc.stdout is not None
            yield proc.stdout.readline().strip()
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=10) == 0


def test_a_suite_sharded_over_two_nodes_survives_a_killed_worker_exactly(
        two_nodes: tuple[str, str], served_url: str, tmp_path: Path) -> None:
    _, second = two_nodes
    endpoint = lv.Endpoint(base_url=served_url)
    marker = tmp_path / "killed"
    study = functools.partial(lv.sample_suite, suite(20), 20, endpoint=endpoint,
                              concurrency=8,
                              on_sample=functools.partial(kill_once, str(marker), second, 30))
    run = lv.run_on_ray(study, shards=4, resources={"num_cpus": 1},
                        output=tmp_path / "run.jsonl")
    assert marker.exists(), "no worker of the second node was killed"
    assert run.merged is not None and run.merged.complete and run.merged.findings == []
    resumed = [path for path in run.files
               if any(orjson.loads(line).get("record") == "resume"
                      for line in path.read_bytes().splitlines())]
    assert len(resumed) == 1  # the killed shard's retry resumed its partial file
    resume = next(orjson.loads(line) for line in resumed[0].read_bytes().splitlines()
                  if b'"resume"' in line)
    assert resume["have"] >= 29  # what it had sent before the kill was kept, not resent
    one = lv.sample_suite_sync(suite(20), 20, endpoint=endpoint, concurrency=8)
    assert run.result.report == one.report
    assert without_timing(run.merged.report.model_dump()) == without_timing(
        lv.analyze(list(one.entries[0].samples) + [s for e in one.entries[1:]
                                                   for s in e.samples]).model_dump())
