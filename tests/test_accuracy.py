"""Accuracy under reruns: every sample right or wrong against its prompt's expected answer,
the accuracy of each rerun, best- and worst-possible accuracy, flipping prompts, intervals
by bootstrap over prompts, and two runs' accuracy compared prompt by prompt."""

from __future__ import annotations

import itertools
from collections import defaultdict
from pathlib import Path

import numpy as np
import orjson
import pytest

import llmvariance as lv
from llmvariance._analysis.accuracy import (
    Expected,
    RerunGrid,
    compare_grids,
    rerun_accuracy,
)
from llmvariance._cli import main
from llmvariance.testing import SimServer

pytestmark = pytest.mark.anyio

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
EP = lv.Endpoint(base_url="http://127.0.0.1:9/v1", api_key=None)
FIRST_WORDS = r"^\s*(\S+(?:\s+\S+){0,2})"
"""Up to the first three words: on the simulator these change under load far more often
than the first word alone."""


def grid_of(rows: dict[str, list[int]], expected: set[str] | None = None) -> RerunGrid:
    n = len(next(iter(rows.values())))
    graded = Expected({rid: "x" for rid in (expected if expected is not None else rows)})
    grid = RerunGrid(list(rows), n, graded)
    for rid, cells in rows.items():
        for index, value in enumerate(cells):
            grid.record(rid, index, None if value < 0 else bool(value))
    return grid


# -- the definitions, on a grid built by hand ---------------------------------------------

def test_per_rerun_best_worst_and_flipping_on_a_known_grid() -> None:
    grid = grid_of({"always": [1, 1, 1], "never": [0, 0, 0], "once": [1, 0, 0],
                    "twice": [0, 1, 1], "failed": [1, -1, 1], "ungraded": [1, 1, 1]},
                   expected={"always", "never", "once", "twice", "failed"})
    acc = rerun_accuracy(grid)
    assert acc is not None
    assert (acc.prompts, acc.ungraded, acc.incomplete, acc.reruns) == (4, 1, 1, 3)
    assert acc.per_rerun == [0.5, 0.5, 0.5]  # always+once, always+twice, always+twice
    assert acc.spread == 0.0 and acc.std == 0.0
    assert acc.best_possible == 0.75   # any of 3 right: always, once, twice
    assert acc.worst_possible == 0.25  # all 3 right: always
    assert acc.flipping == ["once", "twice"]
    assert acc.correct_counts == [1, 1, 1, 1]  # prompts right 0, 1, 2, 3 times
    assert grid.correct("twice") == 2 and grid.correct("ungraded") is None


def test_a_rerun_that_scores_differently_shows_as_spread() -> None:
    grid = grid_of({"a": [1, 1, 0, 1], "b": [1, 0, 0, 1], "c": [1, 1, 1, 1], "d": [0, 0, 0, 0]})
    acc = rerun_accuracy(grid)
    assert acc is not None
    assert acc.per_rerun == [0.75, 0.5, 0.25, 0.75]
    assert (acc.min, acc.max, acc.spread) == (0.25, 0.75, 0.5)
    assert acc.mean == pytest.approx(0.5625)
    assert acc.std == pytest.approx(float(np.std([0.75, 0.5, 0.25, 0.75], ddof=1)))
    assert "spread 0.500" in acc.to_text() and "flipping          2 prompts" in acc.to_text()


def test_the_bootstrap_over_distinct_rows_matches_resampling_prompts() -> None:
    rng = np.random.default_rng(1)
    rows = {f"p{i}": [int(v) for v in rng.random(6) < rng.random()] for i in range(60)}
    acc = rerun_accuracy(grid_of(rows), resamples=20_000, seed=3)
    assert acc is not None
    x = np.asarray(list(rows.values()))
    picks = np.random.default_rng(7).integers(0, len(x), size=(20_000, len(x)))
    sums = x[picks].sum(axis=1)  # resamples x reruns
    naive = {"mean": sums.sum(axis=1) / x.size,
             "spread": (sums.max(axis=1) - sums.min(axis=1)) / len(x),
             "best": (x[picks].max(axis=2)).mean(axis=1),
             "worst": (x[picks].min(axis=2)).mean(axis=1)}
    for name, ci in (("mean", acc.mean_ci), ("spread", acc.spread_ci),
                     ("best", acc.best_possible_ci), ("worst", acc.worst_possible_ci)):
        low, high = np.quantile(naive[name], [0.025, 0.975])
        assert ci.low == pytest.approx(low, abs=0.02), name
        assert ci.high == pytest.approx(high, abs=0.02), name


def test_when_nothing_flips_the_flip_share_still_has_a_bound() -> None:
    acc = rerun_accuracy(grid_of({f"p{i}": [i % 2] * 5 for i in range(36)}))
    assert acc is not None
    assert acc.flipping == [] and acc.spread == 0 and acc.per_rerun == [0.5] * 5
    assert (acc.spread_ci.low, acc.spread_ci.high) == (0.0, 0.0)
    assert acc.flipping_ci.high == pytest.approx(1 - 0.05 ** (1 / 36))  # at most 8 %


def test_answers_match_case_and_whitespace_blind_lists_and_numbers() -> None:
    expected = Expected({"q1": "Oslo", "q2": ["yes", "Y"], "q3": 42, "q4": None})
    assert expected.grade("q1", "  oslo ") is True
    assert expected.grade("q1", "Oslo.") is False  # punctuation is the extractor's job
    assert expected.grade("q2", "y") is True and expected.grade("q2", "no") is False
    assert expected.grade("q3", "42") is True and expected.grade("q3", None) is False
    assert expected.grade("q4", "x") is None and expected.grade("q9", "x") is None
    for bad, message in (({"q": True}, "string or a number"), ({"q": []}, "empty list"),
                         ({"q": " "}, "is empty"), ({"": "a"}, "non-empty strings")):
        with pytest.raises(lv.ConfigError, match=f"expected: .*{message}"):
            Expected(bad)  # type: ignore[arg-type]


def test_contains_matching_finds_the_answer_as_whole_words_only() -> None:
    expected = Expected({"city": "Oslo", "year": "93", "pi": "3.14", "yn": ["no", "n"]},
                        match="contains")
    assert expected.grade("city", "Maria flew to Oslo on Tuesday.") is True
    assert expected.grade("city", "Osloborg") is False
    assert expected.grade("year", "in 1937") is False  # not inside a longer number
    assert expected.grade("year", "it was 93.5 degrees") is False  # nor a decimal
    assert expected.grade("year", "It was 93, then 94.") is True
    assert expected.grade("pi", "about 3.14159") is False and expected.grade("pi", "3.14!")
    assert expected.grade("yn", "No, 91 is not prime") is True
    assert expected.grade("yn", "Nothing") is False
    with pytest.raises(lv.ConfigError, match="match: must be 'exact' or 'contains'"):
        Expected({}, match="fuzzy")  # type: ignore[arg-type]


# -- where expected answers come from ------------------------------------------------------

def test_expected_answers_come_from_a_mapping_file_or_the_suite_lines(tmp_path: Path) -> None:
    mapping = lv.read_expected(EXAMPLES / "suite_answers.json")
    assert len(mapping) == 36 and mapping["arith-01"] == "42"
    suite_file = tmp_path / "suite.jsonl"
    suite_file.write_text(
        '{"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "expected": '
        '"42", "body": {"model": "m", "messages": [{"role": "user", "content": "6*7?"}]}}\n'
        '{"custom_id": "b", "method": "POST", "url": "/v1/chat/completions", '
        '"body": {"model": "m", "messages": [{"role": "user", "content": "hi"}]}}\n')
    suite = lv.read_suite(suite_file)
    assert [s.id for s in suite] == ["a", "b"] and suite.expected == {"a": "42"}
    assert lv.read_expected(suite_file) == {"a": "42"}
    bodies = tmp_path / "bodies.jsonl"
    bodies.write_text('{"id": 7, "model": "m", "prompt": "2+2=", "expected": [4, "four"]}\n')
    suite = lv.read_suite(bodies)
    assert suite.expected == {"7": [4, "four"]}
    assert "expected" not in suite[0].request.extra  # never sent to the server
    thin = tmp_path / "answers.jsonl"
    thin.write_text('{"id": "a", "expected": "42"}\n\n{"id": "b", "expected": "yes"}\n')
    assert lv.read_expected(thin) == {"a": "42", "b": "yes"}
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"id": "a", "expected": "1"}\n{"id": "a", "expected": "2"}\n')
    with pytest.raises(lv.SuiteFileError, match=r"broken.jsonl:2: expected: 'a' has an "):
        lv.read_expected(broken)


# -- on a suite: scripted answers through the mock transport --------------------------------

def scripted(answers: dict[str, list[str]]) -> lv.MockTransport:
    """Each prompt's k-th request answers ``answers[prompt][k]`` (concurrency 1 keeps the
    order: index 0 of every prompt, then index 1)."""
    calls: dict[str, itertools.count[int]] = defaultdict(itertools.count)

    def handler(request: lv.HTTPRequest) -> lv.HTTPResponse:
        prompt = orjson.loads(request.body or b"")["messages"][-1]["content"]
        text = answers[prompt][next(calls[prompt])]
        return lv.HTTPResponse(200, orjson.dumps({"choices": [{
            "message": {"content": text}, "finish_reason": "stop"}]}))

    return lv.MockTransport(handler)


def suite_of(ids: list[str]) -> dict[str, lv.ChatRequest]:
    return {rid: lv.ChatRequest(model="m", messages=[{"role": "user", "content": rid}])
            for rid in ids}


async def test_a_suite_with_expected_answers_reports_accuracy_per_rerun(tmp_path: Path) -> None:
    answers = {"q1": ["The answer is 42", "42", "41"], "q2": ["7", "7", "7"],
               "q3": ["no idea", "no", "no"], "q4": ["5", "5", "5"]}
    path = tmp_path / "run.jsonl"
    result = await lv.sample_suite(
        suite_of(list(answers)), 3, endpoint=EP, transport=scripted(answers), concurrency=1,
        answer=r"-?\d+|\w+", expected={"q1": "42", "q2": 7, "q3": "No"}, output=path)
    acc = result.report.accuracy
    assert acc is not None
    # q1: "The" (the first match), "42", "41": wrong, right, wrong; q2 and q3 always right
    # ("no" is the first word of "no idea"); q4 has no expected answer
    assert acc.per_rerun == [pytest.approx(2 / 3), 1.0, pytest.approx(2 / 3)]
    assert (acc.best_possible, acc.worst_possible) == (1.0, pytest.approx(2 / 3))
    assert acc.flipping == ["q1"] and acc.ungraded == 1
    by_id = {p.id: p for p in result.report.prompts}
    assert (by_id["q1"].correct, by_id["q2"].correct, by_id["q4"].correct) == (1, 3, None)
    assert "flipping          1 prompts (33.3%" in result.report.to_text()
    # the run file reports the same, from the command line
    answers_file = tmp_path / "expected.json"
    answers_file.write_text('{"q1": "42", "q2": "7", "q3": "no"}')
    again = lv.read_run(path)
    from llmvariance._suite import suite_report_from_runs

    report = suite_report_from_runs([again], answer=r"-?\d+|\w+", expected=answers_file)
    assert report.accuracy == acc


async def test_expected_answers_need_an_answer_and_ids_the_suite_has() -> None:
    suite = suite_of(["q1", "q2"])
    with pytest.raises(lv.ConfigError, match="expected: needs answer="):
        await lv.sample_suite(suite, 2, endpoint=EP, expected={"q1": "a"})
    with pytest.raises(lv.ConfigError, match="none of the suite's prompt ids has an expected "
                                             r"answer \(its ids are like 'arith-01'"):
        await lv.sample_suite(suite, 2, endpoint=EP, answer=r"\w+",
                              expected=EXAMPLES / "suite_answers.json")


async def test_failed_samples_leave_their_prompt_out_of_the_accuracy() -> None:
    calls = defaultdict(int)

    def handler(request: lv.HTTPRequest) -> lv.HTTPResponse:
        prompt = orjson.loads(request.body or b"")["messages"][-1]["content"]
        calls[prompt] += 1
        if prompt == "q2" and calls[prompt] == 2:
            return lv.HTTPResponse(400, b'{"error": {"message": "no"}}')
        return lv.HTTPResponse(200, orjson.dumps({"choices": [{
            "message": {"content": "yes"}, "finish_reason": "stop"}]}))

    result = await lv.sample_suite(suite_of(["q1", "q2"]), 3, endpoint=EP,
                                   transport=lv.MockTransport(handler), concurrency=1,
                                   answer=r"\w+", expected={"q1": "yes", "q2": "yes"})
    acc = result.report.accuracy
    assert acc is not None and (acc.prompts, acc.incomplete) == (1, 1)
    assert acc.per_rerun == [1.0, 1.0, 1.0]


# -- on the simulator -------------------------------------------------------------------------

async def answers_alone(url: str, suite: list[lv.SuiteRequest]) -> dict[str, str]:
    """Each prompt's answer when sent alone: the answer key the simulator has."""
    alone = await lv.sample_suite(suite, 1, endpoint=lv.Endpoint(base_url=url),
                                  concurrency=1, answer=FIRST_WORDS)
    key = {}
    for prompt in alone.report.prompts:
        assert prompt.answers is not None and prompt.answers.top
        if prompt.answers.top[0].answer is not None:
            key[prompt.id] = prompt.answers.top[0].answer
    return key


async def test_on_dense_every_rerun_scores_the_same_and_on_moe_under_load_they_do_not(
) -> None:
    suite = [lv.SuiteRequest(rid, r.model_copy(update={"model": "dense"}))
             for rid, r in lv.read_suite(EXAMPLES / "suite.jsonl")]
    moe = [lv.SuiteRequest(rid, r) for rid, r in lv.read_suite(EXAMPLES / "suite.jsonl")]
    async with SimServer(step_time_s=0.002) as url:
        # half the key is the model's own answer, half a wrong one: 50 % on every rerun
        key = await answers_alone(url, suite)
        half = {rid: (a if i % 2 else "wrong answer") for i, (rid, a) in enumerate(key.items())}
        async with (lv.ClientPool(lv.Endpoint(base_url=url), concurrency=48) as pool,
                    lv.background_load(pool, suite[0].request, 16)):
            dense = await lv.sample_suite(suite, 8, pool=pool, concurrency=32,
                                          answer=FIRST_WORDS, expected=half)
        moe_key = await answers_alone(url, moe)
        async with (lv.ClientPool(lv.Endpoint(base_url=url), concurrency=48) as pool,
                    lv.background_load(pool, moe[0].request, 16)):
            loaded = await lv.sample_suite(moe, 8, pool=pool, concurrency=32,
                                           answer=FIRST_WORDS, expected=moe_key)
    acc = dense.report.accuracy
    assert acc is not None and acc.prompts == len(key)
    expected_share = sum(1 for i in range(len(key)) if i % 2) / len(key)
    assert acc.per_rerun == [pytest.approx(expected_share)] * 8
    assert acc.spread == 0 and acc.flipping == []
    assert acc.best_possible == acc.worst_possible == pytest.approx(expected_share)
    moe_acc = loaded.report.accuracy
    assert moe_acc is not None
    # under load moe's answers move: some prompt is right on one rerun and wrong on another
    assert moe_acc.flipping, loaded.report.to_text()
    assert moe_acc.worst_possible < moe_acc.best_possible
    assert moe_acc.spread == pytest.approx(moe_acc.max - moe_acc.min)
    varying_answers = {p.id for p in loaded.report.prompts
                       if p.answers is not None and p.answers.distinct > 1}
    assert set(moe_acc.flipping) <= varying_answers
    assert moe_acc.worst_possible <= moe_acc.min <= moe_acc.mean <= moe_acc.max
    assert moe_acc.max <= moe_acc.best_possible


# -- two runs -----------------------------------------------------------------------------

def test_the_sign_flip_test_agrees_with_exact_enumeration() -> None:
    diffs = [0, 0, -1, 0, -1, -1, 0, -1, 0, -1, -1, 1]  # b loses 6 prompts, gains 1
    a = grid_of({f"p{i}": [1, 0] for i in range(12)})
    b = grid_of({f"p{i}": {-1: [0, 0], 0: [1, 0], 1: [1, 1]}[d] for i, d in enumerate(diffs)})
    result = compare_grids(a, b, resamples=20_000, seed=2)
    nonzero = [d for d in diffs if d]
    flips = [abs(sum(s * d for s, d in zip(signs, nonzero, strict=True)))
             for signs in itertools.product((1, -1), repeat=len(nonzero))]
    exact = sum(f >= abs(sum(diffs)) for f in flips) / len(flips)  # 2 * 8 / 128
    assert result.pvalue == pytest.approx(exact, abs=0.006)
    assert result.statistic == pytest.approx(sum(diffs) / 2 / 12)  # accuracy over 2 reruns
    assert (result.accuracy_a, result.accuracy_b) == (0.5, pytest.approx(7 / 24))
    assert result.changed_prompts == [f"p{i}" for i, d in enumerate(diffs) if d]
    first, second = result.mcnemar
    assert (first.only_a, first.only_b) == (6, 0) and (second.only_a, second.only_b) == (0, 1)
    assert first.pvalue == pytest.approx(2 * 0.5 ** 6)  # exact McNemar: binomial at 1/2


def test_identical_runs_compare_as_no_difference_and_a_large_drop_is_significant() -> None:
    rows = {f"p{i}": [1, 1, 1] if i % 3 else [0, 1, 0] for i in range(30)}
    same = compare_grids(grid_of(rows), grid_of(rows))
    assert same.pvalue == 1.0 and same.statistic == 0 and not same.significant
    assert "no difference in accuracy detected" in same.verdict
    worse = compare_grids(grid_of(rows), grid_of({k: [0, 0, 0] for k in rows}))
    assert worse.significant and worse.statistic < -0.5 and worse.pvalue < 0.001
    assert worse.delta_ci.high < 0
    assert all(r.adjusted_pvalue < 0.05 for r in worse.mcnemar)
    assert worse.verdict.startswith("b's accuracy is lower than a's")


def test_the_report_command_adds_accuracy_from_an_expected_file(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]
                                                                ) -> None:
    answers = {"q1": ["42", "41"], "q2": ["7", "7"]}
    path = tmp_path / "run.jsonl"
    lv.sample_suite_sync(suite_of(list(answers)), 2, endpoint=EP, transport=scripted(answers),
                         concurrency=1, output=path)
    expected = tmp_path / "expected.json"
    expected.write_text('{"q1": "42", "q2": "7"}')
    assert main(["report", str(path), "--answer", r"\d+", "--expected", str(expected)]) == 0
    out = capsys.readouterr().out
    assert "best possible     1.000" in out and "worst possible    0.500" in out
    assert "flipping          1 prompts (50.0%" in out and ": q1" in out
    assert main(["report", str(path), "--expected", str(expected)]) == 2
    assert "--expected: needs --answer" in capsys.readouterr().err
    expected.write_text('{"q1": "4", "q2": "7"}')  # "42" does not contain the word "4"
    assert main(["report", str(path), "--answer", r"(?s).+", "--expected", str(expected),
                 "--match", "contains"]) == 0
    assert "worst possible    0.500" in capsys.readouterr().out


def test_the_html_report_shows_the_reruns_and_the_flipping_prompts(tmp_path: Path) -> None:
    answers = {"q<1>": ["42", "41", "42"], "q2": ["7", "7", "7"]}
    result = lv.sample_suite_sync(suite_of(list(answers)), 3, endpoint=EP,
                                  transport=scripted(answers), concurrency=1, answer=r"\d+",
                                  expected={"q<1>": "42", "q2": "7"})
    page = lv.html_report(result.report, tmp_path / "r.html", plots=False)
    section = page[page.index('id="accuracy"'):]
    assert section.count("<rect ") == 3  # one bar per rerun
    assert "<title>rerun 1: 0.500</title>" in section
    assert "best possible</th><td>1.000" in section and "worst possible</th><td>0.500" in section
    assert "q&lt;1&gt;" in section and "q<1>" not in section  # an id is escaped
    assert "TARr@3" in page
