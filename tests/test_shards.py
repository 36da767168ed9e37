"""Shards: a fixed partition of a study's pairs, and merges equal to the one-process run."""

from __future__ import annotations

import functools
import itertools
from pathlib import Path

import orjson
import pytest

import llmvariance as lv
from llmvariance.testing import SimServer
from shard_helpers import frame_rows, suite, without_timing

pytestmark = pytest.mark.anyio


# -- the partition ---------------------------------------------------------------------------

@pytest.mark.parametrize(("requests", "n", "count"),
                         [(1, 10, 3), (40, 50, 4), (7, 5, 3), (3, 11, 5), (5, 2, 8)])
def test_the_shards_send_every_pair_exactly_once_and_evenly(requests: int, n: int,
                                                             count: int) -> None:
    shards = [lv.Shard(index=k, count=count) for k in range(count)]
    owners = {(r, i): [s.index for s in shards if s.owns(r, i)]
              for r in range(requests) for i in range(n)}
    assert all(len(o) == 1 for o in owners.values())
    sizes = [sum(1 for o in owners.values() if o == [k]) for k in range(count)]
    assert sizes == [s.pairs(requests, n) for s in shards]
    # within one per request index of an even split
    assert max(sizes) - min(sizes) <= max(1, -(-n * (requests % count) // count))
    # each request's samples are spread over the shards
    if n >= count:
        assert all(len({owners[(r, i)][0] for i in range(n)}) == count
                   for r in range(requests))


def test_a_larger_n_keeps_every_earlier_pair_in_its_shard() -> None:
    shard = lv.Shard(index=2, count=3)
    before = {(r, i) for r in range(4) for i in range(10) if shard.owns(r, i)}
    after = {(r, i) for r in range(4) for i in range(20) if shard.owns(r, i)}
    assert before == {(r, i) for r, i in after if i < 10}


@pytest.mark.parametrize(("value", "message"), [
    ((4, 4), "shard index must be 0..3 for 4 shards, got 4"),
    ("2/0", "must be an integer >= 1 shards, got 0"),
    ("a/b", "must be k/K (shard k of K, 0-based), got 'a/b'"),
    ((-1, 2), "must be an integer >= 0 (0-based), got -1"),
    ([0, 2], "must be (k, K), 'k/K' or a Shard"),
])
async def test_a_bad_shard_is_refused_naming_the_field_before_anything_is_sent(
        value: object, message: str, tmp_path: Path) -> None:
    sent: list[object] = []
    transport = lv.MockTransport(lambda r: sent.append(r))  # type: ignore[arg-type,func-returns-value]
    with pytest.raises(lv.ConfigError, match=r"^shard: ") as caught:
        await lv.sample_many(suite(1)[0][1], 4, endpoint=lv.Endpoint(base_url="http://h/v1"),
                             transport=transport, shard=value)  # type: ignore[arg-type]
    assert message in str(caught.value)
    assert sent == []


def test_a_rate_limit_is_divided_among_the_shards_unless_it_is_per_shard() -> None:
    limit = lv.RateLimit(requests_per_minute=600, tokens_per_minute=40_000, burst=2)
    divided = lv.Shard(index=0, count=4).rate_limit(limit)
    assert divided == lv.RateLimit(requests_per_minute=150, tokens_per_minute=10_000, burst=2)
    own = lv.Shard(index=0, count=4, limits="per_shard").rate_limit(limit)
    assert own == limit


async def test_a_shard_sends_its_rate_limits_share(sim: SimServer, tmp_path: Path) -> None:
    seen: list[lv.RateLimit | None] = []
    original = lv.ClientPool.__init__

    def spy(self: lv.ClientPool, *args: object, **kwargs: object) -> None:
        seen.append(kwargs.get("rate_limit"))  # type: ignore[arg-type]
        original(self, *args, **kwargs)  # type: ignore[arg-type]

    lv.ClientPool.__init__ = spy  # type: ignore[method-assign]
    try:
        await lv.sample_suite(suite(2), 2, endpoint=lv.Endpoint(base_url=sim.base_url),
                              rate_limit=lv.RateLimit(requests_per_minute=60_000),
                              shard=(1, 3), output=tmp_path / "s1.jsonl")
    finally:
        lv.ClientPool.__init__ = original  # type: ignore[method-assign]
    assert seen == [lv.RateLimit(requests_per_minute=20_000)]


# -- running shards and merging them -----------------------------------------------------------

async def _one_and_shards(sim: SimServer, tmp_path: Path, prompts: int, n: int, count: int
                          ) -> tuple[lv.SuiteResult, list[Path]]:
    endpoint = lv.Endpoint(base_url=sim.base_url)
    one = await lv.sample_suite(suite(prompts), n, endpoint=endpoint,
                                output=tmp_path / "one.jsonl", concurrency=8)
    paths = []
    for k in range(count):
        path = tmp_path / f"shard{k}.jsonl"
        part = await lv.sample_suite(suite(prompts), n, endpoint=endpoint, output=path,
                                     shard=(k, count), concurrency=8)
        assert part.shard == lv.Shard(index=k, count=count)
        assert sum(len(e.samples) for e in part.entries) == part.shard.pairs(prompts, n)
        paths.append(path)
    return one, paths


async def test_four_shards_merge_to_the_one_process_suite_report_tree_and_frame(
        sim: SimServer, tmp_path: Path) -> None:
    one, paths = await _one_and_shards(sim, tmp_path, prompts=12, n=10, count=4)
    merged = lv.merge_runs(list(reversed(paths)), tmp_path / "merged.jsonl")
    assert merged.complete and merged.findings == []
    assert merged.describe() == ("merged 4 files (shards of 4 (diagonal)): 120 of 120 pairs")
    single = lv.read_run(tmp_path / "one.jsonl")
    assert without_timing(merged.report.model_dump()) == without_timing(
        single.report.model_dump())
    assert merged.report.tree == single.report.tree
    assert frame_rows(merged.to_pandas()) == frame_rows(single.to_pandas())
    from llmvariance._suite import suite_report_from_runs

    assert suite_report_from_runs([merged.run]) == suite_report_from_runs([single])
    assert suite_report_from_runs([merged.run]) == one.report
    # the merged file is the study's run: resuming it sends nothing
    calls: list[object] = []
    again = await lv.sample_suite(suite(12), 10, endpoint=lv.Endpoint(base_url=sim.base_url),
                                  output=merged.path, on_sample=calls.append)
    assert calls == [] and again.report == one.report


async def test_a_missing_shard_is_named_and_the_merged_file_resumes_the_rest(
        sim: SimServer, tmp_path: Path) -> None:
    one, paths = await _one_and_shards(sim, tmp_path, prompts=5, n=6, count=3)
    with pytest.raises(lv.ConfigError, match=r"missing shard 1/3 \(10 of 30 pairs\)"):
        lv.merge_runs([paths[0], paths[2]], tmp_path / "m.jsonl")
    assert not (tmp_path / "m.jsonl").exists()
    partial = lv.merge_runs([paths[0], paths[2]], tmp_path / "m.jsonl", allow_missing=True)
    assert not partial.complete and partial.missing_pairs == 10
    assert partial.findings == ["missing shard 1/3: no file was given for them"]
    sent: list[tuple[str | None, int]] = []
    done = await lv.sample_suite(suite(5), 6, endpoint=lv.Endpoint(base_url=sim.base_url),
                                 output=partial.path,
                                 on_sample=lambda s: sent.append((s.request_id, s.index)))
    shard1 = lv.Shard(index=1, count=3)
    assert sorted(sent) == sorted((f"q{r}", i) for r in range(5) for i in range(6)
                                  if shard1.owns(r, i))
    assert done.report == one.report


async def test_shards_of_different_suites_endpoints_or_partitions_are_refused(
        sim: SimServer, tmp_path: Path) -> None:
    endpoint = lv.Endpoint(base_url=sim.base_url)
    await lv.sample_suite(suite(4), 3, endpoint=endpoint, output=tmp_path / "a0.jsonl",
                          shard=(0, 2))
    other = suite(4)
    other[2] = ("q2", other[2][1].model_copy(update={"max_tokens": 9}))
    await lv.sample_suite(other, 3, endpoint=endpoint, output=tmp_path / "b1.jsonl",
                          shard=(1, 2))
    with pytest.raises(lv.ConfigError, match=r"a0.jsonl and b1.jsonl are not of one study: "
                                             r"their suites differ: request 3 \('q2'\) differs"):
        lv.merge_runs([tmp_path / "a0.jsonl", tmp_path / "b1.jsonl"])
    async with SimServer() as elsewhere:
        await lv.sample_suite(suite(4), 3, endpoint=lv.Endpoint(base_url=elsewhere),
                              output=tmp_path / "c1.jsonl", shard=(1, 2))
    with pytest.raises(lv.ConfigError, match=r"sent to http://127.0.0.1:\d+/v1 and to "
                                             r"http://127.0.0.1:\d+/v1 \(pass allow_endpoint"):
        lv.merge_runs([tmp_path / "a0.jsonl", tmp_path / "c1.jsonl"])
    across = lv.merge_runs([tmp_path / "a0.jsonl", tmp_path / "c1.jsonl"],
                           allow_endpoint_change=True)
    assert across.complete and len(across.report.by_endpoint) == 2
    await lv.sample_suite(suite(4), 3, endpoint=endpoint, output=tmp_path / "d1.jsonl",
                          shard=(1, 3))
    with pytest.raises(lv.ConfigError, match=r"shard 0/2 \(diagonal\) and shard 1/3 "
                                             r"\(diagonal\) are of different partitions"):
        lv.merge_runs([tmp_path / "a0.jsonl", tmp_path / "d1.jsonl"])
    await lv.sample_suite(suite(4), 3, endpoint=endpoint, output=tmp_path / "whole.jsonl")
    with pytest.raises(lv.ConfigError, match=r"whole\.jsonl is a whole run and a0\.jsonl a shard"):
        lv.merge_runs([tmp_path / "whole.jsonl", tmp_path / "a0.jsonl"])
    await lv.sample_many(suite(1)[0][1], 4, endpoint=endpoint, output=tmp_path / "one.jsonl",
                         shard=(1, 2))
    with pytest.raises(lv.ConfigError, match="a suite run and a sample run"):
        lv.merge_runs([tmp_path / "a0.jsonl", tmp_path / "one.jsonl"])


async def test_a_shard_file_resumes_only_as_the_same_shard(sim: SimServer,
                                                           tmp_path: Path) -> None:
    endpoint = lv.Endpoint(base_url=sim.base_url)
    path = tmp_path / "s.jsonl"
    await lv.sample_suite(suite(3), 4, endpoint=endpoint, output=path, shard=(1, 2))
    with pytest.raises(lv.ConfigError, match=r"holds shard 1/2 \(diagonal\), not shard 0/2"):
        await lv.sample_suite(suite(3), 4, endpoint=endpoint, output=path, shard=(0, 2))
    with pytest.raises(lv.ConfigError, match=r"holds shard 1/2 \(diagonal\), not the whole"):
        await lv.sample_suite(suite(3), 4, endpoint=endpoint, output=path)
    sent: list[int] = []
    await lv.sample_suite(suite(3), 6, endpoint=endpoint, output=path, shard="1/2",
                          on_sample=lambda s: sent.append(s.index))
    assert sorted(sent) == [4, 5, 5]  # n grew from 4 to 6: only the shard's new pairs


async def test_a_pair_in_two_files_is_kept_once_from_the_file_started_last(
        sim: SimServer, tmp_path: Path) -> None:
    endpoint = lv.Endpoint(base_url=sim.base_url)
    for name in ("first", "second"):
        await lv.sample_many(suite(1)[0][1], 6, endpoint=endpoint,
                             output=tmp_path / f"{name}.jsonl", shard=(0, 2))
    await lv.sample_many(suite(1)[0][1], 6, endpoint=endpoint, output=tmp_path / "odd.jsonl",
                         shard=(1, 2))
    _restamp(tmp_path / "first.jsonl", "2030-01-01T00:00:00Z")
    _restamp(tmp_path / "second.jsonl", "2020-01-01T00:00:00Z")
    merged = lv.merge_runs([tmp_path / "first.jsonl", tmp_path / "second.jsonl",
                            tmp_path / "odd.jsonl"])
    assert merged.complete and merged.overlapping_pairs == 3
    assert merged.findings == ["3 pairs are in more than one file; each is kept once, from "
                               "the file started last, e.g. index 0, index 2, index 4"]
    first = lv.read_run(tmp_path / "first.jsonl").samples
    assert all(merged.samples[i] == first[i] for i in (0, 2, 4))


def _restamp(path: Path, when: str) -> None:
    lines = path.read_bytes().splitlines(keepends=True)
    header = orjson.loads(lines[0])
    header["started_at"] = when
    path.write_bytes(orjson.dumps(header) + b"\n" + b"".join(lines[1:]))


def _split(source: Path, directory: Path, count: int) -> list[Path]:
    """Cut a one-process run file into the files its K shards would have written."""
    lines = source.read_bytes().splitlines(keepends=True)
    header = orjson.loads(lines[0])
    requests = header["suite"]["requests"] if isinstance(header.get("suite"), dict) else 0
    ids = [orjson.loads(line)["id"] for line in lines[1:1 + requests]] or [None]
    paths = []
    for k in range(count):
        shard = lv.Shard(index=k, count=count)
        head = orjson.dumps({**header, "shard": shard.record()}) + b"\n"
        mine = [line for line in lines[1 + requests:]
                if shard.owns(ids.index(orjson.loads(line).get("request_id")),
                              orjson.loads(line)["index"])]
        path = directory / f"cut{k}.jsonl"
        path.write_bytes(head + b"".join(lines[1:1 + requests]) + b"".join(mine))
        paths.append(path)
    return paths


async def test_merging_the_shards_of_a_varying_run_gives_its_report_tree_and_frame_exactly(
        tmp_path: Path) -> None:
    # moe outputs depend on batching, so two runs differ; the same records, cut into
    # shards and merged, must give exactly the one file's report, tree and frame, timing
    # included
    async with SimServer() as url:
        await lv.sample_suite(suite(6, model="moe", max_tokens=24), 12,
                              endpoint=lv.Endpoint(base_url=url), concurrency=12,
                              output=tmp_path / "one.jsonl")
    single = lv.read_run(tmp_path / "one.jsonl")
    assert max(e.unique_count for e in single.report.by_request.values()) > 1
    merged = lv.merge_runs(_split(tmp_path / "one.jsonl", tmp_path, 4))
    assert merged.complete
    assert merged.report == single.report
    assert merged.report.tree == single.report.tree
    assert frame_rows(merged.to_pandas()) == frame_rows(single.to_pandas())
    assert list(merged.to_pandas().columns) == list(single.to_pandas().columns)
    # TARr and TARa (the first word as the answer) of the merged shards are the file's
    from llmvariance._suite import suite_report_from_runs

    ours = suite_report_from_runs([merged.run], answer=r"^\W*(\w+)")
    theirs = suite_report_from_runs([single], answer=r"^\W*(\w+)")
    assert ours == theirs and ours.tar_answer is not None
    assert ours.tar_raw is not None and ours.tar_raw < 1.0  # a TAR that could differ


async def test_compare_and_compare_suites_take_a_studys_shards_as_a_list_of_paths(
        tmp_path: Path) -> None:
    async with SimServer() as url:
        for model in ("dense", "moe"):
            await lv.sample_suite(suite(4, model=model, max_tokens=24), 10,
                                  endpoint=lv.Endpoint(base_url=url), concurrency=10,
                                  output=tmp_path / f"{model}.jsonl")
    shards = _split(tmp_path / "moe.jsonl", tmp_path, 3)
    ours = lv.compare(tmp_path / "dense.jsonl", shards, resamples=199)
    assert ours == lv.compare(tmp_path / "dense.jsonl",
                              lv.merge_runs(shards, tmp_path / "merged.jsonl").path,
                              resamples=199)
    whole = lv.compare(tmp_path / "dense.jsonl", tmp_path / "moe.jsonl", resamples=199)
    # ΔD's bootstrap draws outputs in the order they first appear, which is the merged
    # file's fixed order here and completion order in the one file: all else is equal
    assert ours.model_dump(exclude={"delta_d_ci"}) == whole.model_dump(exclude={"delta_d_ci"})
    assert whole.b.n == 40 and whole.b.distinct > whole.a.distinct
    suites = lv.compare_suites(tmp_path / "dense.jsonl", tmp_path / "moe.jsonl")
    assert lv.compare_suites(tmp_path / "dense.jsonl", tuple(shards)) == suites
    with pytest.raises(lv.ConfigError, match=r"missing shard 1/3"):
        lv.compare(tmp_path / "dense.jsonl", [shards[0], shards[2]])


def test_read_runs_of_shards_keeps_its_merged_file_while_the_run_lives(tmp_path: Path) -> None:
    import gc

    source = tmp_path / "one.jsonl"
    request = suite(1)[0][1]
    header = {"record": "header", "format": "llmvariance.run/1", "n": 4,
              "request": {"kind": "chat", **request.model_dump(mode="json")},
              "endpoint": {"base_url": "http://h/v1"}, "started_at": "2026-01-01T00:00:00Z"}
    source.write_bytes(orjson.dumps(header) + b"\n" + b"".join(
        orjson.dumps({"record": "sample", "index": i, "text": f"t{i % 2}"}) + b"\n"
        for i in range(4)))
    run = lv.read_runs(_split(source, tmp_path, 2))  # the MergedRun itself is dropped here
    gc.collect()
    assert [s.text for s in run.iter_samples()] == ["t0", "t1", "t0", "t1"]
    folder = run.path.parent
    del run
    gc.collect()
    assert not folder.exists()  # and removed with the run


def test_the_merged_files_samples_are_in_one_order_whatever_order_the_shards_came(
        tmp_path: Path) -> None:
    source = tmp_path / "one.jsonl"
    request = suite(1)[0][1]
    header = {"record": "header", "format": "llmvariance.run/1", "n": 6,
              "request": {"kind": "chat", **request.model_dump(mode="json")},
              "endpoint": {"base_url": "http://h/v1"}, "started_at": "2026-01-01T00:00:00Z"}
    order = [4, 1, 5, 0, 3, 2]
    source.write_bytes(orjson.dumps(header) + b"\n" + b"".join(
        orjson.dumps({"record": "sample", "index": i, "text": f"t{i % 2}"}) + b"\n"
        for i in order))
    outputs = []
    for permutation in itertools.permutations(_split(source, tmp_path, 3)):
        merged = lv.merge_runs(list(permutation), tmp_path / "m.jsonl")
        outputs.append((tmp_path / "m.jsonl").read_bytes().split(b"\n", 1)[1])
        assert [s.index for s in merged.iter_samples()] == [0, 1, 2, 3, 4, 5]
    assert len(set(outputs)) == 1


# -- the Ray executor's checks (need no Ray) -------------------------------------------------

def test_importing_llmvariance_does_not_import_ray() -> None:
    import subprocess
    import sys

    code = ("import sys, llmvariance as lv; lv.run_on_ray; lv.distributed.RayRun; "
            "print('ray' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize(("study", "kwargs", "message"), [
    (lambda: None, {}, "study: must be functools.partial(f, ...) of sample_many"),
    ("partial:len", {}, "study: must be a partial of sample_many, sample_suite, "
                        "batch_effect or server_matrix, not of <built-in function len>"),
    ("partial:output", {}, "study: leave output to run_on_ray: each shard gets its own"),
    ("partial", {}, "shards: say how many shards"),
    ("partial", {"shards": 0}, "shards: must be an integer >= 1, got 0"),
    ("partial", {"shards": 2, "resources": {"num_gpus": -1}},
     "resources: num_gpus must be a number >= 0, got -1"),
    ("partial", {"shards": 2, "max_retries": -1}, "max_retries: must be an integer >= 0"),
])
def test_run_on_ray_checks_its_arguments_before_any_task_starts(
        study: object, kwargs: dict[str, object], message: str) -> None:
    made = {"partial": functools.partial(lv.sample_many, suite(1)[0][1], 4),
            "partial:len": functools.partial(len),
            "partial:output": functools.partial(lv.sample_many, suite(1)[0][1], 4,
                                                output="x.jsonl")}
    with pytest.raises(lv.ConfigError) as caught:
        lv.run_on_ray(made.get(study, study) if isinstance(study, str) else study,  # type: ignore[arg-type]
                      **kwargs)  # type: ignore[arg-type]
    assert str(caught.value).startswith(message)


def test_the_readmes_vllm_sketch_builds_one_vllm_server_per_configuration(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # the sketch needs GPUs to run; what it hands run_on_ray is checked here: a matrix
    # study whose server factory starts the vLLM command each configuration names
    import types

    from llmvariance._matrix import parse_config

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme[readme.index("A sketch of a GPU cluster run of the vLLM presets"):]
    code = section[section.index("```python\n") + 10:section.index("```\n", 10)]
    handed: list[tuple[object, dict[str, object]]] = []

    def fake_run_on_ray(study: object, **kwargs: object) -> object:
        handed.append((study, kwargs))
        return types.SimpleNamespace(result=types.SimpleNamespace(to_text=lambda: "table"))

    monkeypatch.setattr(lv, "run_on_ray", fake_run_on_ray)
    exec(code, {"request": suite(1)[0][1], "__name__": "sketch"})  # noqa: S102
    [(study, kwargs)] = handed
    assert kwargs == {"resources": {"num_gpus": 1}, "address": "auto",
                      "output": "matrix.json"}
    assert isinstance(study, functools.partial) and study.func is lv.server_matrix
    configs = study.args[2]
    assert len(configs) == 4
    commands = [study.keywords["server"](**parse_config(c))._command(8000)
                for c in configs]
    assert commands[2].argv[:3] == ("vllm", "serve", "Qwen/Qwen3-8B")
    assert "--max-num-seqs" in commands[2].argv and "64" in commands[2].argv
    assert [dict(c.env) for c in commands] == [{}, {}, {"VLLM_BATCH_INVARIANT": "1"},
                                               {"VLLM_BATCH_INVARIANT": "1"}]
