"""The tree on every report: equal to ``lv.divergence_tree`` of the same samples, wherever
the report comes from (a run, ``analyze``, a run file, a merge, a group)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import llmvariance as lv
from llmvariance.testing import SimServer

S = lv.Sample


@pytest.mark.anyio
async def test_a_runs_report_carries_the_tree_of_its_samples(tmp_path: Path) -> None:
    async with SimServer(step_time_s=0.001) as url:
        request = lv.ChatRequest(model="moe", messages=[{"role": "user", "content": "Go on"}],
                                 max_tokens=24, logprobs=True, top_logprobs=3)
        path = tmp_path / "run.jsonl"
        result = await lv.sample_many(request, 48, endpoint=lv.Endpoint(base_url=url),
                                      concurrency=16, output=path)
    report = result.report
    tree = lv.divergence_tree(result.samples)
    assert report.tree == tree
    assert tree.tokenization == "provider" and tree.n == report.n_ok == 48
    assert any(node.margin is not None for node in tree.branch_points())
    # the root ends where the report says the outputs first diverge
    assert tree.root is not None
    if report.unique_count > 1:
        assert tree.root.end_token == report.common_prefix_tokens
    # the run file's report has the same tree, and survives JSON
    assert lv.read_run(path).report.tree == tree
    assert lv.VarianceReport.model_validate_json(report.model_dump_json()).tree == tree


def test_a_report_of_plain_strings_has_the_word_tree() -> None:
    rng = random.Random(3)
    texts = [" ".join(rng.choice(["a", "b", "c!"]) for _ in range(6)) for _ in range(300)]
    report = lv.analyze(texts)
    assert report.tree == lv.divergence_tree(texts)
    assert report.tree is not None and report.tree.tokenization == "words"
    assert len(report.tree.leaves()) <= 32
    assert report.tree.root is not None
    assert report.tree.root.end_token == report.common_prefix_tokens


def test_no_ok_sample_gives_an_empty_tree_not_none() -> None:
    report = lv.analyze([S(index=0, error=lv.SampleError(kind="timeout", message="t"))])
    assert report.tree is not None and report.tree.nodes == [] and report.tree.n == 0


def test_each_condition_has_the_tree_of_its_own_samples() -> None:
    burst = [S(index=i, text=t, condition="burst") for i, t in enumerate(["x y", "x z", "x y"])]
    calm = [S(index=i, text="x y", condition="sequential") for i in range(3)]
    report = lv.analyze(burst + calm)
    assert report.by_condition["burst"].tree == lv.divergence_tree(burst)
    assert report.by_condition["sequential"].tree == lv.divergence_tree(calm)
    assert report.tree == lv.divergence_tree(burst + calm)


token_samples = st.lists(st.builds(
    lambda toks, top, fail, fp: S(
        index=0, text=None if fail else "".join(toks), tokens=None if fail else toks,
        top_logprobs=None if fail or top is None else [{"a": -0.1, "b": top}] * len(toks),
        system_fingerprint=fp,
        error=lv.SampleError(kind="timeout", message="t") if fail else None),
    st.lists(st.sampled_from(["a", "b", "c", "ab"]), max_size=5),
    st.one_of(st.none(), st.floats(-5, -0.1)), st.booleans(),
    st.sampled_from(["fp1", "fp2"])), max_size=14)


@settings(max_examples=60, deadline=None)
@given(token_samples, token_samples)
def test_merged_collectors_report_the_tree_of_all_their_samples(
        left: list[lv.Sample], right: list[lv.Sample]) -> None:
    a, b = lv.VarianceCollector(), lv.VarianceCollector()
    a.update(left)
    b.update(right)
    merged = a.merge(b).report()
    assert merged.tree == lv.divergence_tree(left + right)
    for fingerprint, group in merged.by_fingerprint.items():
        mine = [s for s in left + right if s.ok and s.system_fingerprint == fingerprint]
        assert group.tree == lv.divergence_tree(mine)


def test_print_shows_the_first_branch_points() -> None:
    texts = ["The cat sat"] * 5 + ["The cat ran"] * 3 + ["The dog sat"] * 2
    text = str(lv.analyze(texts))
    assert "branch points     2 in the tree; the first 2 (print(report.tree) for all):" in text
    # char: the first character that differs (' cat' and ' dog' share the space)
    assert "  token 1 (char 4), 10 samples: 8 ' cat', 2 ' dog sat'" in text
    assert "  token 2 (char 8), 8 samples: 5 ' sat', 3 ' ran'" in text
    assert "branch points" not in str(lv.analyze(["same"] * 3))


@pytest.mark.parametrize("min_count", [None, 1, 3])
def test_the_cli_tree_is_the_reports_or_a_cut_of_the_same_outputs(min_count: int | None
                                                                 ) -> None:
    texts = ["a b"] * 6 + ["a c"] * 3 + ["a d", "a e"]
    collector = lv.VarianceCollector()
    collector.update(texts)
    assert collector.tree(min_count=min_count) == lv.divergence_tree(texts, min_count=min_count)
    if min_count is None:
        assert collector.tree() == collector.report().tree
