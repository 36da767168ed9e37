"""The Ray executor on a real (in-process) Ray cluster on 127.0.0.1: shards as tasks, merged
to what one process gives; cluster-wide limits and pauses through the coordinator actor."""

from __future__ import annotations

import functools
import itertools
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import llmvariance as lv
from conftest import served
from llmvariance.engines import LlamaCppServer
from llmvariance.engines._setup import llama_server_path, model_path
from ray_helpers import (
    INSTALL,
    cluster_env,
    fail_at_index,
    listening_addresses,
    processes_with,
    wait_until_gone,
)
from shard_helpers import frame_rows, suite, without_timing

ray = pytest.importorskip("ray", reason=INSTALL)


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    """One in-process cluster for the module (starting one costs seconds): 2 CPUs,
    dashboard off, on 127.0.0.1, shut down after; no process of it may outlive the module."""
    env = cluster_env()
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    directory = tempfile.mkdtemp(prefix="lvray")  # short: Ray's socket paths must fit
    try:
        ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1",
                 _temp_dir=directory, configure_logging=False, log_to_driver=False)
        assert {n["NodeManagerAddress"] for n in ray.nodes()} == {"127.0.0.1"}
        yield env["LLMVARIANCE_RAY_CLUSTER"]
    finally:
        ray.shutdown()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        left = wait_until_gone(env["LLMVARIANCE_RAY_CLUSTER"])
        shutil.rmtree(directory, ignore_errors=True)
        assert left == [], f"Ray processes outlived the tests: {left}"


@pytest.fixture(scope="module")
def served_url() -> Iterator[str]:
    with served() as url:
        yield url


def test_a_40_by_50_suite_in_four_ray_tasks_merges_to_the_one_process_result(
        cluster: str, served_url: str, tmp_path: Path) -> None:
    endpoint = lv.Endpoint(base_url=served_url)
    first_word = r"^\W*(\w+)"  # the answer: TARa@50 beside TARr@50
    study = functools.partial(lv.sample_suite, suite(40), 50, endpoint=endpoint,
                              concurrency=16, answer=first_word)
    arrived: list[int] = []
    run = lv.run_on_ray(study, shards=4, resources={"num_cpus": 1},
                        output=tmp_path / "run.jsonl",
                        on_shard=lambda k, path: arrived.append(k))
    assert sorted(arrived) == [0, 1, 2, 3]
    # the cluster (its workers have run) listens on loopback only
    assert listening_addresses(processes_with(cluster)) == {"127.0.0.1"}
    assert run.files == [tmp_path / "run.shards" / f"shard-{k}-of-4.jsonl" for k in range(4)]
    assert run.merged is not None and run.merged.complete and run.merged.findings == []
    one = lv.sample_suite_sync(suite(40), 50, endpoint=endpoint, concurrency=16,
                               output=tmp_path / "one.jsonl", answer=first_word)
    result = run.result
    assert isinstance(result, lv.SuiteResult) and result.shard is None
    assert result.report == one.report  # TARr, TARa, every prompt's row
    assert result.report.tar_answer is not None and result.report.n_prompts == 40
    for ours, theirs in zip(result.entries, one.entries, strict=True):
        assert without_timing(ours.report.model_dump()) == without_timing(
            theirs.report.model_dump())
        assert ours.report.tree == theirs.report.tree
    single = lv.read_run(tmp_path / "one.jsonl")
    assert run.merged.report.tree == single.report.tree
    assert frame_rows(run.merged.to_pandas()) == frame_rows(single.to_pandas())


def test_a_designed_experiment_in_ray_tasks_gives_the_one_process_verdict(
        cluster: str, served_url: str, tmp_path: Path) -> None:
    request = suite(1)[0][1]
    kwargs = {"endpoint": lv.Endpoint(base_url=served_url), "conditions": ["sequential",
                                                                            "burst"],
              "blocks": 4, "resamples": 999}
    study = functools.partial(lv.batch_effect, request, 8, **kwargs)  # type: ignore[arg-type]
    run = lv.run_on_ray(study, shards=2, resources={"num_cpus": 1})
    one = lv.batch_effect  # the same call in this process
    import anyio

    single = anyio.run(functools.partial(one, request, 8, **kwargs))  # type: ignore[arg-type]
    assert isinstance(run.result, lv.BatchEffectResult)
    assert run.result.to_text() == single.to_text()
    assert without_timing(run.result.model_dump(exclude={"samples"})) == without_timing(
        single.model_dump(exclude={"samples"}))


def test_shards_in_a_shared_directory_are_resumed_by_a_rerun(cluster: str, served_url: str,
                                                             tmp_path: Path) -> None:
    shared = tmp_path / "shared"  # storage every node reaches (one node here)
    study = functools.partial(lv.sample_suite, suite(4), 6,
                              endpoint=lv.Endpoint(base_url=served_url))
    first = lv.run_on_ray(study, shards=2, directory=shared, output=tmp_path / "run.jsonl")
    assert first.files == [shared / f"shard-{k}-of-2.jsonl" for k in range(2)]
    assert first.merged is not None and first.merged.complete
    written = [path.read_bytes() for path in first.files]
    again = lv.run_on_ray(study, shards=2, directory=shared, output=tmp_path / "again.jsonl")
    # every pair was in the shards' files already: nothing sent, nothing appended
    assert [path.read_bytes() for path in again.files] == written
    assert again.result.report == first.result.report
    assert again.result.report.n_evaluable == 4 and again.result.report.n == 6


def test_a_failing_shard_is_named(cluster: str, served_url: str, tmp_path: Path) -> None:
    study = functools.partial(lv.sample_many, suite(1)[0][1], 8,
                              endpoint=lv.Endpoint(base_url=served_url),
                              on_sample=functools.partial(fail_at_index, 6))
    local = Path(tempfile.gettempdir()) / "llmvariance-shards"
    before = set(local.iterdir()) if local.exists() else set()
    with pytest.raises(ValueError, match=r"^the hook refused index 6\n") as caught:
        lv.run_on_ray(study, shards=4, output=tmp_path / "run.jsonl")
    assert caught.value.__notes__ == ["(in shard 2/4 of run_on_ray)"]
    # the failed and the cancelled shards' partial files are removed from every node
    assert (set(local.iterdir()) if local.exists() else set()) == before


def test_the_coordinator_keeps_one_rate_across_shards_and_shares_pauses(
        cluster: str, served_url: str) -> None:
    limit = lv.RateLimit(requests_per_minute=3000)  # one send every 20 ms, cluster-wide
    study = functools.partial(lv.sample_suite, suite(4), 10,
                              endpoint=lv.Endpoint(base_url=served_url), concurrency=8)
    run = lv.run_on_ray(study, shards=2, cluster_rate_limit=limit)
    assert run.merged is not None and run.merged.complete  # every send booked and sent
    assert run.merged.report.n_ok == 40

    import anyio

    from llmvariance.distributed import Coordinator, SharedLimiter

    coordinator = ray.remote(num_cpus=0)(Coordinator).remote(limit)
    slept: dict[str, list[float]] = {"a": [], "b": []}

    async def record(name: str, seconds: float) -> None:
        slept[name].append(seconds)

    a = SharedLimiter(coordinator, cluster_limited=True, sleep=functools.partial(record, "a"))
    b = SharedLimiter(coordinator, cluster_limited=True, sleep=functools.partial(record, "b"))

    async def scenario() -> None:
        for _ in range(3):
            await a.acquire()
            await b.acquire()
        a.rate_limited(30.0, sent_at=0.0)  # a's server said 429, retry after 30 s
        await b.sync()

    anyio.run(scenario)
    schedule = ray.get(coordinator.schedule.remote())
    gaps = [later - earlier for earlier, later in itertools.pairwise(schedule)]
    assert len(schedule) == 6 and min(gaps) == pytest.approx(0.020, abs=1e-6)
    assert b.remote_pauses == 1 and b.paused_until - time.monotonic() > 29.0
    assert a.remote_pauses == 0 and a.pauses == 1


SMOLLM2 = model_path("smollm2-135m-instruct-q4_1")
have_engine = llama_server_path().is_file() and SMOLLM2.is_file()
STORY = lv.ChatRequest(model="smollm2", messages=[{"role": "user", "content": (
    "Write a unique, surprising, extremely randomized story with highly unpredictable "
    "changes of events.")}], max_tokens=16)


@pytest.mark.real
@pytest.mark.skipif(not have_engine, reason="llama-server and SmolLM2 are not in the cache: "
                                            "run `python3 dev.py engines` once")
def test_a_llamacpp_matrix_on_ray_gives_the_serial_matrix_table(cluster: str) -> None:
    # one slot each: llama.cpp then answers one request at a time, the same way in every
    # run, so the two runs' tables can be compared exactly; the cluster has 2 CPUs and each
    # task takes one, so at most two servers (one thread each) run at once
    configs = ["parallel=1,ctx_size=1024", "parallel=1,ctx_size=2048",
               "parallel=1,batch_size=256", "parallel=1,seed=7"]
    server = functools.partial(LlamaCppServer, SMOLLM2, threads=1)
    study = functools.partial(lv.server_matrix, STORY, 4, configs, server=server,
                              conditions=["sequential", "burst"], blocks=2,
                              speed=())  # throughput is a timing: no two runs share it
    run = lv.run_on_ray(study, resources={"num_cpus": 1})
    assert [path.name for path in run.files] == [f"shard-{k}-of-4.json" for k in range(4)]
    import anyio

    serial = anyio.run(study)
    assert isinstance(run.result, lv.MatrixResult)
    assert run.result.to_text() == serial.to_text()
    assert [row.verdict_kind for row in run.result.rows] == ["no_variation_observed"] * 4


def test_the_readme_example_runs_on_a_local_cluster_it_starts_and_stops(
        served_url: str, tmp_path: Path) -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme[readme.index("### On a Ray cluster"):]
    code = section[section.index("```python\n") + 10:section.index("```\n", 10)]
    assert 'base_url="http://127.0.0.1:8000/v1"' in code
    env = {**os.environ, **cluster_env()}
    out = subprocess.run([sys.executable, "-c", code.replace("http://127.0.0.1:8000/v1",
                                                             served_url)],
                         capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path,
                         check=False)
    left = wait_until_gone(env["LLMVARIANCE_RAY_CLUSTER"])
    assert out.returncode == 0, out.stderr[-3000:]
    assert left == [], f"the example's cluster outlived it: {left}"
    assert "merged 4 files (shards of 4 (diagonal)): 2,000 of 2,000 pairs" in out.stdout
    assert "TARr@50" in out.stdout
    assert (tmp_path / "run.jsonl").exists()
