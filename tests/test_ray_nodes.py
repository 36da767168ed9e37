"""Two Ray nodes on this machine (a head and a second node, one CPU each, dashboard off, both
at 127.0.0.1, started and stopped by this test): a suite sharded over both against the
simulator, one node's worker killed mid-run, merged to exactly the one-process result, and
no Ray process left behind.

The nodes are started with Ray's own ``ray.cluster_utils.Cluster`` (what Ray tests its
multi-node behaviour with), not ``ray start``: for a second node, ``ray start`` rewrites
127.0.0.1 into the machine's outside address, and Ray's servers listen on every interface
unless the node's address is 127.0.0.1. Here every process of both nodes listens on
127.0.0.1 alone (checked), and every one carries the test's marker, so none can outlive it.
"""

from __future__ import annotations

import functools
import os
import shutil
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

import llmvariance as lv
from conftest import served
from ray_helpers import (
    INSTALL,
    cluster_env,
    kill_once,
    listening_addresses,
    processes_with,
    wait_until_gone,
)
from shard_helpers import suite, without_timing

ray = pytest.importorskip("ray", reason=INSTALL)


@pytest.fixture
def two_nodes() -> Iterator[str]:
    """The id of the second node of a two-node cluster on 127.0.0.1 that the driver is
    connected to; stopped after the test, and no process of it left."""
    from ray.cluster_utils import Cluster

    env = cluster_env()
    marker = env["LLMVARIANCE_RAY_CLUSTER"]
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # the nodes' processes inherit the marker
    directory = tempfile.mkdtemp(prefix="lvray")  # short: Ray's socket paths must fit
    cluster = None
    try:
        cluster = Cluster(initialize_head=True, head_node_args={
            "num_cpus": 1, "node_ip_address": "127.0.0.1", "include_dashboard": False,
            "temp_dir": directory})
        second = cluster.add_node(num_cpus=1, node_ip_address="127.0.0.1")
        ray.init(address=cluster.address, configure_logging=False, log_to_driver=False)
        alive = [n for n in ray.nodes() if n["Alive"]]
        assert len(alive) == 2
        assert {n["NodeManagerAddress"] for n in alive} == {"127.0.0.1"}
        yield second.node_id
        # both nodes (their workers have run) listened on 127.0.0.1 only
        assert listening_addresses(processes_with(marker)) == {"127.0.0.1"}
    finally:
        ray.shutdown()
        if cluster is not None:
            cluster.shutdown()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        left = wait_until_gone(marker)
        for pid in left:  # fail, but leave nothing running
            os.kill(pid, signal.SIGKILL)
        shutil.rmtree(directory, ignore_errors=True)
        assert left == [], f"Ray processes outlived the test: {left}"


@pytest.fixture
def served_url() -> Iterator[str]:
    with served() as url:
        yield url


def test_a_suite_sharded_over_two_nodes_survives_a_killed_worker_exactly(
        two_nodes: str, served_url: str, tmp_path: Path) -> None:
    second = two_nodes
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
