"""Shards of a designed experiment (whole blocks) and of a server matrix (whole
configurations): merged, they give what one process gives."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

import llmvariance as lv
from llmvariance.testing import SimServer
from shard_helpers import without_timing

pytestmark = pytest.mark.anyio

DENSE = lv.ChatRequest(model="dense", messages=[{"role": "user", "content": "Tell a story"}],
                       max_tokens=12)


def _result(result: lv.BatchEffectResult) -> object:
    return without_timing(result.model_dump(exclude={"samples"}))


async def test_batch_effect_shards_run_whole_blocks_and_merge_to_the_one_process_result(
        sim: SimServer, tmp_path: Path) -> None:
    endpoint = lv.Endpoint(base_url=sim.base_url)
    kwargs = {"endpoint": endpoint, "conditions": ["sequential", "burst"], "blocks": 5,
              "resamples": 999}
    one = await lv.batch_effect(DENSE, 10, output=tmp_path / "one.jsonl", **kwargs)  # type: ignore[arg-type]
    blocks_of: dict[int, set[int | None]] = {}
    for k in range(2):
        part = await lv.batch_effect(DENSE, 10, output=tmp_path / f"s{k}.jsonl",
                                     shard=(k, 2), **kwargs)  # type: ignore[arg-type]
        blocks_of[k] = {s.block for arm in part.samples.values() for s in arm}
        assert (part.calibration is not None) == (k == 0)
    assert blocks_of == {0: {0, 2, 4}, 1: {1, 3}}
    merged = lv.merge_runs([tmp_path / "s1.jsonl", tmp_path / "s0.jsonl"],
                           tmp_path / "merged.jsonl")
    assert merged.complete and merged.expected_pairs == 2 * 10 + 1
    assert merged.describe() == "merged 2 files (shards of 2 (blocks)): 21 of 21 pairs"
    sent: list[object] = []
    original = lv.ClientPool.send

    async def spy(self: lv.ClientPool, call: object, index: int) -> lv.Sample:
        sent.append(call)
        return await original(self, call, index)  # type: ignore[arg-type]

    lv.ClientPool.send = spy  # type: ignore[method-assign]
    try:
        again = await lv.batch_effect(DENSE, 10, output=merged.path, **kwargs)  # type: ignore[arg-type]
    finally:
        lv.ClientPool.send = original  # type: ignore[method-assign]
    assert sent == []
    assert _result(again) == _result(one)
    assert again.to_text() == one.to_text()
    assert again.verdict_kind == "no_variation_observed"


async def test_a_batch_effect_cut_short_resumes_its_unfinished_blocks_whole(
        sim: SimServer, tmp_path: Path) -> None:
    endpoint = lv.Endpoint(base_url=sim.base_url)
    kwargs = {"endpoint": endpoint, "conditions": ["sequential", "burst"], "blocks": 3,
              "resamples": 999}
    path = tmp_path / "run.jsonl"
    await lv.batch_effect(DENSE, 6, output=path, **kwargs)  # type: ignore[arg-type]
    # keep the calibration, block 0 whole and half of block 1 (as a kill would leave it)
    lines = path.read_bytes().splitlines(keepends=True)
    kept = [line for line in lines[1:] if orjson.loads(line).get("block") in (None, 0)]
    half = [line for line in lines[1:] if orjson.loads(line).get("block") == 1][:3]
    path.write_bytes(lines[0] + b"".join(kept + half))
    cells: list[tuple[str | None, int | None, int]] = []

    def watch(block: int, result: lv.BatchEffectResult) -> None:
        cells.append((None, block, sum(len(a) for a in result.samples.values())))

    again = await lv.batch_effect(DENSE, 6, output=path, on_block=watch, **kwargs)  # type: ignore[arg-type]
    # block 0 was kept; blocks 1 and 2 ran (the interim analysis after block 1 holds 0 and 1)
    assert cells == [(None, 1, 8)]
    assert {arm: len(s) for arm, s in again.samples.items()} == {"sequential": 6, "burst": 6}
    assert again.calibration is not None and again.calibration.condition == "calibration"
    assert sorted(s.index for s in again.samples["burst"]) == [0, 1, 2, 3, 4, 5]


async def test_more_shards_than_blocks_or_configurations_are_refused(tmp_path: Path) -> None:
    with pytest.raises(lv.ConfigError, match="shard: 3 shards of 2 blocks"):
        await lv.batch_effect(DENSE, 4, endpoint=lv.Endpoint(base_url="http://h/v1"),
                              blocks=2, shard=(0, 3), output=tmp_path / "x.jsonl")
    with pytest.raises(lv.ConfigError, match="shard: 3 shards of 2 configurations"):
        await lv.server_matrix(DENSE, 4, ["a=1", "a=2"], server=SimServer, shard=(2, 3))


MOE = DENSE.model_copy(update={"model": "moe", "max_tokens": 24})


async def test_matrix_shards_merge_with_holm_across_every_configuration_once(
        tmp_path: Path) -> None:
    started: list[dict[str, object]] = []

    def sim(**settings: object) -> SimServer:
        started.append(settings)
        return SimServer(step_time_s=0.002, **settings)  # type: ignore[arg-type]

    configs = ["max_batch=1", "max_batch=64"]
    kwargs = {"server": sim, "conditions": ["sequential", "burst"], "blocks": 2}
    paths = [tmp_path / f"m{k}.json" for k in range(2)]
    for k, path in enumerate(paths):
        part = await lv.server_matrix(MOE, 12, configs, output=path, shard=(k, 2), **kwargs)  # type: ignore[arg-type]
        assert [row.config for row in part.rows] == [configs[k]]
        assert part.rows[0].matrix_pvalue is None  # not yet corrected across the matrix
    assert [s["max_batch"] for s in started] == [1, 64]
    with pytest.raises(lv.ConfigError, match=r"missing shard 1/2 \(max_batch=64\)"):
        lv.merge_matrices([paths[0]])
    merged = lv.merge_matrices(list(reversed(paths)), tmp_path / "matrix.json")
    one, many = merged.rows
    assert (one.config, many.config) == tuple(configs)
    assert many.verdict_kind == "batch_dependent" and many.pvalue is not None
    assert many.matrix_pvalue == min(1.0, 2 * many.pvalue)
    # the merged file is the whole matrix: a rerun starts no server and changes nothing
    again = await lv.server_matrix(MOE, 12, configs, output=tmp_path / "matrix.json", **kwargs)  # type: ignore[arg-type]
    assert len(started) == 2 and again == merged
    with pytest.raises(lv.ConfigError, match=r"holds shard 0/2, not the whole matrix"):
        await lv.server_matrix(MOE, 12, configs, output=paths[0], **kwargs)  # type: ignore[arg-type]


async def test_matrix_shards_of_a_deterministic_engine_equal_the_serial_matrix(
        tmp_path: Path) -> None:
    configs = ["max_batch=1", "max_batch=2", "max_batch=4", "max_batch=8"]
    # speed=(): throughput is a timing, which no two runs share
    kwargs = {"server": SimServer, "conditions": ["sequential", "burst"], "blocks": 2,
              "speed": ()}
    serial = await lv.server_matrix(DENSE, 6, configs, **kwargs)  # type: ignore[arg-type]
    for k in range(4):
        await lv.server_matrix(DENSE, 6, configs, output=tmp_path / f"m{k}.json",
                               shard=(k, 4), **kwargs)  # type: ignore[arg-type]
    merged = lv.merge_matrices([tmp_path / f"m{k}.json" for k in (3, 1, 0, 2)])
    assert merged.to_text() == serial.to_text()
    # each configuration's server was started on its own free port: where it listened is
    # the one field of the server record two runs cannot share
    where = {"rows": {"__all__": {"server": {"base_url"}}}}
    assert (without_timing(merged.model_dump(exclude=where))
            == without_timing(serial.model_dump(exclude=where)))
