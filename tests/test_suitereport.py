"""The suite report: TARr@N, TARa@N and the aggregates on suites built by hand."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

import llmvariance as lv
from llmvariance._analysis.answers import Comparison, JsonPointer
from llmvariance._analysis.suitereport import analyze_suite, suite_report

NUMBER = r"(\d+)"


def failed(index: int) -> lv.Sample:
    return lv.Sample(index=index, error=lv.SampleError(kind="timeout", message="slow"))


def ok(index: int, text: str) -> lv.Sample:
    return lv.Sample(index=index, text=text)


SUITE: dict[str, list[str | lv.Sample]] = {
    "same": ["It is 4.", "It is 4.", "It is 4.", "It is 4."],
    "reworded": ["It is 4.", "The answer is 4.", "It is 4.", "4"],
    "split": ["It is 4.", "It is 5.", "It is 4.", "It is 4."],
    "no-answer": ["I cannot say.", "I cannot say.", "I cannot say.", "I cannot say."],
    "partly": ["I cannot say.", "It is 4.", "It is 4.", "It is 4."],
    "failed": [ok(0, "It is 4."), failed(1), ok(2, "It is 4."), ok(3, "It is 5.")],
}


def test_tar_raw_and_tar_answer_over_the_evaluable_prompts() -> None:
    r = analyze_suite(SUITE, n=4, answer=NUMBER)
    assert (r.n, r.n_prompts, r.n_evaluable, r.incomplete) == (4, 6, 5, ["failed"])
    # raw: same and no-answer agree; answers also agree for reworded (all "4")
    assert r.tar_raw == pytest.approx(2 / 5)
    assert r.tar_answer == pytest.approx(3 / 5)
    assert r.unparseable == 1 + 4  # partly, no-answer; failed's ok samples have answers
    assert r.answer == "regex '(\\\\d+)'"
    assert r.normalized is False


def test_per_prompt_figures() -> None:
    r = analyze_suite(SUITE, n=4, answer=NUMBER)
    by_id = {p.id: p for p in r.prompts}
    reworded = by_id["reworded"]
    assert (reworded.distinct, reworded.all_agree, reworded.evaluable) == (3, False, True)
    assert reworded.agreement_rate == pytest.approx(2 / 12)
    assert reworded.answers is not None
    assert (reworded.answers.distinct, reworded.answers.all_agree,
            reworded.answers.agreement_rate) == (1, True, 1.0)
    partly = by_id["partly"].answers
    assert partly is not None
    assert (partly.distinct, partly.unparseable, partly.agreement_rate) == (2, 1, 0.5)
    assert [(a.answer, a.count) for a in partly.top] == [("4", 3), (None, 1)]
    no_answer = by_id["no-answer"].answers
    assert no_answer is not None
    assert (no_answer.all_agree, no_answer.unparseable) == (True, 4)
    broken = by_id["failed"]
    assert (broken.n_samples, broken.n_ok, broken.n_failed, broken.evaluable) == (4, 3, 1, False)
    assert by_id["split"].first_divergence_tokens == 2  # "It", " is", then " 4" / " 5"


def test_aggregates_are_over_evaluable_prompts() -> None:
    r = analyze_suite(SUITE, n=4, answer=NUMBER)
    # distinct per evaluable prompt: same 1, reworded 3, split 2, no-answer 1, partly 2
    assert r.distinct_mean == pytest.approx(9 / 5)
    assert r.distinct_median == 2.0
    assert [(c.distinct, c.prompts) for c in r.distinct_counts] == [(1, 2), (2, 2), (3, 1)]
    assert r.agreement_mean == pytest.approx((1 + 2 / 12 + 0.5 + 1 + 0.5) / 5)
    # answers: 1, 1, 2 (4, 5), 1 (none), 2 (4, none)
    assert r.answer_distinct_mean == pytest.approx(7 / 5)
    assert r.answer_agreement_mean == pytest.approx((1 + 1 + 0.5 + 1 + 0.5) / 5)


def test_prompts_are_ranked_most_varying_first() -> None:
    r = analyze_suite(SUITE, n=4, answer=NUMBER)
    # by distinct count, then agreement (lower first), then id
    assert [p.id for p in r.prompts] == ["reworded", "failed", "partly", "split", "no-answer",
                                         "same"]
    assert r.varying == ["reworded", "failed", "partly", "split"]


def test_without_an_extractor_there_is_no_tar_answer() -> None:
    r = analyze_suite({"a": ["x", "x"], "b": ["x", "y"]})
    assert (r.n, r.tar_raw, r.tar_answer, r.answer, r.unparseable) == (2, 0.5, None, None, 0)
    assert all(p.answers is None for p in r.prompts)


def test_normalisation_counts_whitespace_variants_as_one_output() -> None:
    outputs = {"a": ["4", " 4\n", "4"], "b": ["It  is 4", "It is 4", "It is 5"]}
    plain = analyze_suite(outputs)
    normalized = analyze_suite(outputs, normalize=True)
    assert (plain.tar_raw, normalized.tar_raw) == (0.0, 0.5)
    assert normalized.normalized is True
    assert [p.distinct for p in normalized.prompts] == [2, 1]
    assert "(whitespace normalised)" in normalized.to_text()


def test_no_evaluable_prompt_gives_none() -> None:
    r = analyze_suite({"a": [failed(0), ok(1, "x")]}, n=2, answer=NUMBER)
    assert (r.n_evaluable, r.tar_raw, r.tar_answer, r.distinct_mean, r.distinct_median,
            r.agreement_mean) == (0, None, None, None, None, None)


def test_a_prompt_with_fewer_than_n_samples_is_not_evaluable() -> None:
    r = analyze_suite({"a": ["x", "x"], "b": ["x", "x", "x"]})
    assert (r.n, r.incomplete, r.tar_raw) == (3, ["a"], 1.0)


def test_json_pointer_answers_ignore_key_order_and_spacing() -> None:
    outputs = {"q": ['{"label": "yes", "why": "a"}', '{"why": "b", "label": "yes"}']}
    r = analyze_suite(outputs, answer=JsonPointer("/label"))
    assert (r.tar_raw, r.tar_answer) == (0.0, 1.0)


def test_suite_report_refuses_inconsistent_inputs() -> None:
    comparison = Comparison()
    tally = comparison.tally()
    tally.update(["x"])
    report = lv.analyze(["x", "x"])
    with pytest.raises(ValueError, match="the tally counted 1 outputs but the report 2"):
        suite_report([("a", report, tally)], n=2)
    other = Comparison(NUMBER).tally()
    other.update(["x", "x"])
    full = comparison.tally()
    full.update(["x", "x"])
    with pytest.raises(ValueError, match="different comparisons"):
        suite_report([("a", report, full), ("b", report, other)], n=2)
    with pytest.raises(ValueError, match=r"repeated prompt ids: \['a'\]"):
        suite_report([("a", report, full), ("a", report, full)], n=2)
    with pytest.raises(lv.ConfigError, match="n: must be an integer >= 1"):
        suite_report([], n=0)


def test_to_text_names_the_varying_prompts() -> None:
    text = analyze_suite(SUITE, n=4, answer=NUMBER).to_text()
    lines = text.splitlines()
    assert lines[0] == "prompts           6 (5 with all 4 samples ok; 1 with failures: failed)"
    # with Wilson's 95 % intervals over the 5 evaluable prompts
    assert lines[1] == ("TARr@4            0.400 [0.118, 0.769]  (2 of 5 prompts: all outputs "
                        "agree)")
    assert lines[2] == ("TARa@4            0.600 [0.231, 0.882]  (3 of 5 prompts: all answers "
                        "agree; answer = regex '(\\\\d+)')")
    assert lines[3] == "unparseable       5 outputs without an answer"
    assert lines[4] == ("distinct outputs  mean 1.80, median 2  "
                        "(distinct: prompts  1: 2, 2: 2, 3: 1)")
    rows = [line.split()[0] for line in lines[lines.index(
        "varying or incomplete prompts, most varying first:") + 2:]]
    assert rows == ["reworded", "failed", "partly", "split"]
    assert lines[-2] == ("  partly                 4/4        2     0.500         0       2     "
                         "0.500         1  '4' x3")


def test_to_text_when_everything_agrees() -> None:
    text = analyze_suite({"a": ["x", "x"]}).to_text()
    assert text.splitlines()[-1] == "every prompt: all outputs agree"
    assert str(analyze_suite({"a": ["x", "x"]})) == text


def test_report_round_trips_through_json() -> None:
    r = analyze_suite(SUITE, n=4, answer=NUMBER)
    assert type(r).model_validate_json(r.model_dump_json()) == r


outputs_strategy = st.dictionaries(
    st.text(alphabet="abc", min_size=1, max_size=3),
    st.lists(st.text(alphabet=" \n1a2b", max_size=6), min_size=3, max_size=3),
    min_size=1, max_size=6)


@given(outputs_strategy, st.booleans(),
       st.sampled_from([r"\d", r"(\d)|(a)", r"\s+", JsonPointer(""), "function"]))
def test_tar_answer_is_never_below_tar_raw(outputs: dict[str, list[str]], normalize: bool,
                                           spec: object) -> None:
    answer = (lambda s: s.strip()[:1] or None) if spec == "function" else spec
    r = analyze_suite(outputs, answer=answer, normalize=normalize)  # type: ignore[arg-type]
    assert r.tar_raw is not None
    assert r.tar_answer is not None
    assert r.tar_answer >= r.tar_raw
    for p in r.prompts:
        assert p.answers is not None
        assert p.answers.distinct <= p.distinct


def test_a_prompt_whose_samples_all_failed_neither_agrees_nor_varies() -> None:
    r = analyze_suite({"dead": [failed(0), failed(1)], "fine": ["x", "x"]}, answer=NUMBER)
    dead = next(p for p in r.prompts if p.id == "dead")
    assert (dead.distinct, dead.all_agree, dead.evaluable) == (0, False, False)
    assert dead.answers is not None
    assert (dead.answers.distinct, dead.answers.all_agree, dead.answers.top) == (0, False, [])
    assert (r.varying, r.incomplete, r.tar_raw) == ([], ["dead"], 1.0)
    assert "  dead                   0/2        0       n/a      none       0       n/a" \
           "         0  n/a" in r.to_text()


def test_comparing_two_suite_runs_is_stratified_by_prompt() -> None:
    ids = [f"p{i:02d}" for i in range(12)]
    alone = {k: ["same"] * 10 for k in ids}
    # under load 8 prompts split: 5 of 10 outputs differ; 4 prompts stay put
    loaded = {k: (["same"] * 5 + [f"{k}-{j}" for j in range(5)] if i < 8 else ["same"] * 10)
              for i, k in enumerate(ids)}
    result = lv.compare_suites(alone, loaded)
    assert result.n_prompts == 12 and result.tar_raw_a == 1.0 and result.tar_raw_b == 4 / 12
    assert result.tar_raw_a_ci is not None and result.tar_raw_a_ci.low == pytest.approx(
        0.05 ** (1 / 12))  # all 12 agree: the exact one-sided bound, not [1, 1]
    assert result.cmh.pvalue < 1e-6 and result.cmh.method == "Cochran-Mantel-Haenszel"
    assert result.sign_test.pvalue == pytest.approx(1 / 256)  # 8 up, 0 down, 4 tied
    assert "8 prompts up, 0 down, 4 tied" in result.sign_test.method
    # each split prompt alone: 5/10 vs 0/10, Boschloo p ~ 0.02; BH across 12 keeps them
    assert sorted(result.significant_prompts) == ids[:8]
    assert result.verdict.startswith("b is more variable than a over the 12 prompts")
    same = lv.compare_suites(alone, alone)
    assert same.significant_prompts == [] and same.cmh.pvalue == 1.0
    assert same.verdict.startswith("no difference detected over the 12 prompts")
    assert "sign test on ΔD" in same.to_text()
