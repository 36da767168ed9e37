"""The divergence tree: hand-built cases, the laws it must obey, and its size at scale."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import llmvariance as lv
from llmvariance._analysis.tree.margins import MARGIN_CAP as _MARGIN_CAP
from llmvariance._analysis.tree.margins import fixed_margins as _fixed_margins
from llmvariance._analysis.tree.margins import fixed_margins_ragged as _fixed_margins_ragged

S = lv.Sample
A = ["The", " cat", " sat", " on", " the", " mat"]
B = ["The", " cat", " sat", " on", " a", " hat"]
C = ["The", " cat", " ran"]
TOP_A = [{"The": -0.1, "A": -2.5}, {" cat": -0.2, " dog": -1.7},
         {" sat": -0.3, " ran": -0.9, " on": -3.0}, {" on": -0.05, " in": -3.0},
         {" the": -0.4, " a": -0.6}, {" mat": -0.2, " hat": -1.0}]


def ten() -> list[lv.Sample]:
    """5 x A (with top logprobs), 3 x B, 2 x C."""
    return [S(index=i, text="".join(t), tokens=t, top_logprobs=TOP_A if t is A else None)
            for i, t in enumerate([A] * 5 + [B] * 3 + [C] * 2)]


def check_counts_add_up(tree: lv.DivergenceTree) -> None:
    """Every branch point's alternatives (shown and pruned) hold exactly its samples."""
    for node in tree.nodes:
        children = tree.children(node)
        if node.is_branch_point:
            assert sum(c.count for c in children) + node.pruned_samples == node.count
        for child in children:
            assert child.parent == node.id and child.depth == node.depth + 1
            assert child.start_token == node.end_token and child.start_char == node.end_char
        assert node.end_char - node.start_char == len(node.text)
    if tree.nodes:
        assert tree.nodes[0].count == tree.n
        leaves = sum(leaf.count for leaf in tree.leaves() if not leaf.pruned_branches)
        assert leaves + tree.pruned_samples == tree.n


def test_five_three_two_splits_where_the_report_says() -> None:
    tree = lv.divergence_tree(ten())
    report = lv.analyze(ten())
    assert (tree.n, tree.unique_count, tree.tokenization, tree.min_count) == (
        10, 3, "provider", 1)
    root = tree.root
    assert root is not None
    assert (root.text, root.start_token, root.end_token, root.end_char) == (
        "The cat", 0, 2, 7)
    assert root.end_token == report.common_prefix_tokens
    assert [(c.text, c.count, c.outputs) for c in tree.children(root)] == [
        (" sat on", 8, 2), (" ran", 2, 1)]
    # at token 2 only A's samples returned alternatives: " sat" -0.3 vs " ran" -0.9
    assert root.margin == pytest.approx(0.6, abs=1e-9)
    sat_on = tree.children(root)[0]
    assert (sat_on.start_token, sat_on.end_token, sat_on.start_char, sat_on.end_char) == (
        2, 4, 7, 14)
    assert sat_on.margin == pytest.approx(0.2, abs=1e-9)  # " the" -0.4 vs " a" -0.6
    assert [(c.text, c.count, c.end_token, c.margin) for c in tree.children(sat_on)] == [
        (" the mat", 5, 6, None), (" a hat", 3, 6, None)]
    assert tree.prefix(tree.children(sat_on)[1]) == "The cat sat on a hat"
    assert [n.end_token for n in tree.branch_points()] == [2, 4]
    check_counts_add_up(tree)


def test_an_output_that_stops_early_is_an_empty_alternative() -> None:
    tree = lv.divergence_tree(["one two", "one two", "one two three"])
    assert tree.tokenization == "words"
    root = tree.root
    assert root is not None and (root.text, root.end_token) == ("one two", 2)
    assert [(c.text, c.count) for c in tree.children(root)] == [("", 2), (" three", 1)]
    assert "(the output ends here)" in tree.to_text()


def test_identical_outputs_are_one_node_and_nothing_is_a_tree() -> None:
    tree = lv.divergence_tree(["same"] * 4)
    assert [(n.text, n.count, n.children, n.is_branch_point) for n in tree.nodes] == [
        ("same", 4, [], False)]
    empty = lv.divergence_tree([S(index=0, error=lv.SampleError(kind="timeout", message="t"))])
    assert (empty.n, empty.nodes, empty.root) == (0, [], None)
    assert empty.to_text() == "divergence tree: no successful samples"


def test_text_shows_counts_positions_and_margins() -> None:
    text = lv.divergence_tree(ten()).to_text()
    assert text.splitlines() == [
        "divergence tree: 10 samples, 3 distinct outputs; positions are 0-based provider tokens",
        "10  'The cat'  splits at token 2 (char 8), margin 0.6",
        "├─  8  ' sat on'  splits at token 4 (char 15), margin 0.2",
        "│  ├─  5  ' the mat'  ends at token 6",
        "│  └─  3  ' a hat'  ends at token 6",
        "└─  2  ' ran'  ends at token 3",
    ]


def test_pruned_alternatives_are_counted_and_said() -> None:
    texts = ["a b"] * 6 + ["a c"] * 3 + ["a d", "a e"]
    tree = lv.divergence_tree(texts, min_count=3)
    root = tree.root
    assert root is not None
    assert [(c.text, c.count) for c in tree.children(root)] == [(" b", 6), (" c", 3)]
    assert (root.pruned_branches, root.pruned_samples) == (2, 2)
    assert (tree.pruned_branches, tree.pruned_samples) == (2, 2)
    check_counts_add_up(tree)
    text = tree.to_text()
    assert "└─  2  (2 rarer alternatives, each under 3 samples, not shown)" in text
    assert "pruned: 2 alternatives with fewer than 3 samples each (2 samples in all)" in text


def test_the_default_keeps_the_most_detail_within_max_leaves() -> None:
    rng = random.Random(7)
    texts = [" ".join(rng.choice("ab") for _ in range(8)) for _ in range(500)]
    full = lv.divergence_tree(texts, min_count=1)
    assert len(full.leaves()) == len(set(texts)) > 32
    tree = lv.divergence_tree(texts)
    assert len(tree.leaves()) <= 32
    assert len(lv.divergence_tree(texts, min_count=tree.min_count - 1).leaves()) > 32
    check_counts_add_up(tree)


def test_a_million_samples_with_thousands_of_outputs_give_a_small_tree() -> None:
    rng = random.Random(1)
    words = ["alpha", " beta", " gamma", " delta"]
    collector = lv.DivergenceTreeCollector()
    distinct = {tuple(rng.choice(words) for _ in range(24)) for _ in range(5000)}
    for i, tokens in enumerate(sorted(distinct)):
        top = [{t: -0.1, "x": -0.5} for t in tokens]
        collector.add(S(index=i, text="".join(tokens), tokens=list(tokens), top_logprobs=top))
    for _ in range(8):  # 2**8 copies of every sample: merging is how big runs combine
        collector = collector.merge(collector)
    tree = collector.tree()
    assert tree.n == 256 * len(distinct) > 1_000_000
    assert tree.unique_count == len(distinct)
    assert len(tree.leaves()) <= 32 and len(tree.nodes) < 64
    assert tree.pruned_samples > 0
    check_counts_add_up(tree)
    root = tree.root
    assert root is not None and root.margin == pytest.approx(0.4, abs=1e-9)


def test_same_text_tokenized_two_ways_counts_once_whatever_the_order() -> None:
    a = [S(index=0, text="ab", tokens=["ab"]), S(index=1, text="ab", tokens=["a", "b"]),
         S(index=2, text="ax", tokens=["a", "x"])]
    tree = lv.divergence_tree(a)
    assert tree == lv.divergence_tree(a[::-1])
    assert (tree.unique_count, tree.n) == (2, 3)
    check_counts_add_up(tree)


def test_huge_and_missing_margins_stay_finite() -> None:
    a = [S(index=0, text="ab", tokens=["a", "b"],
           top_logprobs=[{"a": 0.0, "z": -float("inf")}, {"b": -0.1}]),
         S(index=1, text="ac", tokens=["a", "c"],
           top_logprobs=[{"a": -float("inf"), "z": -float("inf")}, {"c": -0.1, "d": -0.3}])]
    root = lv.divergence_tree(a).root
    # at token 1 the first sample gave one alternative: the mean is over the second only
    assert root is not None and root.margin == pytest.approx(0.2, abs=1e-9)
    root0 = lv.divergence_tree([*a, S(index=2, text="b", tokens=["b"])]).root
    assert root0 is not None and root0.margin == _MARGIN_CAP  # inf is capped; NaN skipped


@settings(max_examples=60)
@given(st.integers(2, 5).flatmap(lambda k: st.lists(st.lists(
    st.one_of(st.floats(-60, 0), st.just(-float("inf"))), min_size=k, max_size=k),
    max_size=6)))
def test_margins_are_the_same_whichever_way_they_are_computed(rows: list[list[float]]) -> None:
    top = [{f"t{i}": v for i, v in enumerate(row)} for row in rows]
    assert _fixed_margins(top).tolist() == _fixed_margins_ragged(top).tolist()


def test_bad_arguments_name_the_field() -> None:
    with pytest.raises(lv.ConfigError, match="min_count"):
        lv.divergence_tree(["a"], min_count=0)
    with pytest.raises(lv.ConfigError, match="max_leaves"):
        lv.divergence_tree(["a"], max_leaves=0)


token_samples = st.lists(st.builds(
    lambda toks, top, fail: S(
        index=0, text=None if fail else "".join(toks), tokens=None if fail else toks,
        top_logprobs=None if fail or top is None else [{"a": -0.1, "b": top}] * len(toks),
        error=lv.SampleError(kind="timeout", message="t") if fail else None),
    st.lists(st.sampled_from(["a", "b", "c"]), max_size=5),
    st.one_of(st.none(), st.floats(-5, -0.1)), st.booleans()), max_size=14)


@settings(max_examples=80)
@given(token_samples, token_samples, st.integers(1, 4), st.randoms(use_true_random=False))
def test_merge_and_order_do_not_change_the_tree(left: list[lv.Sample],
                                                right: list[lv.Sample], min_count: int,
                                                rnd: random.Random) -> None:
    a, b = lv.DivergenceTreeCollector(), lv.DivergenceTreeCollector()
    a.update(left)
    b.update(right)
    shuffled = left + right
    rnd.shuffle(shuffled)
    whole = lv.divergence_tree(shuffled, min_count=min_count)
    assert a.merge(b).tree(min_count=min_count) == whole
    assert b.merge(a).tree(min_count=min_count) == whole
    check_counts_add_up(whole)
    ok = [s for s in shuffled if s.ok]
    if len({s.text for s in ok}) > 1:
        root = whole.root
        assert root is not None and root.end_token == lv.analyze(ok).common_prefix_tokens
