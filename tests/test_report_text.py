"""The text report says why samples failed and where each top output leaves the others."""

from __future__ import annotations

import llmvariance as lv
from llmvariance._analysis import failures as _failures

S = lv.Sample


def failed(i: int, message: str, status: int | None = 404,
           kind: str = "http_status") -> lv.Sample:
    return S(index=i, error=lv.SampleError(kind=kind, message=message,  # type: ignore[arg-type]
                                           status=status))


NOT_FOUND = "HTTP 404: The model `gpt-4o-mini` does not exist."


def test_when_every_sample_failed_the_report_says_so_first_and_why() -> None:
    samples = [failed(i, NOT_FOUND) for i in range(28)]
    samples += [failed(28, "read timed out after 90 s", None, "timeout")] * 2
    report = lv.analyze(samples)
    assert [(f.kind, f.status, f.message, f.count) for f in report.failure_messages] == [
        ("http_status", 404, NOT_FOUND, 28), ("timeout", None, "read timed out after 90 s", 2)]
    assert report.to_text().splitlines() == [
        "every sample failed (30 of 30), so there are no outputs to compare; the most common "
        "reasons:",
        f"  x28    {NOT_FOUND}",
        "  x2     timeout: read timed out after 90 s",
        "samples           30 (0 ok, 30 failed)",
        "failures          http_status 28, timeout 2",
    ]


def test_some_failures_are_listed_with_their_messages_after_the_counts() -> None:
    report = lv.analyze([S(index=0, text="a"), failed(1, "HTTP 503: overloaded", 503),
                         failed(2, "HTTP 503: overloaded", 503), failed(3, "HTTP 500: boom", 500)])
    lines = report.to_text().splitlines()
    at = lines.index("failures          http_status 3")
    assert lines[at + 1: at + 3] == ["  x2     HTTP 503: overloaded", "  x1     HTTP 500: boom"]


def test_failure_messages_are_bounded_and_still_add_up() -> None:
    samples = [failed(i, f"HTTP 500: request {i} failed", 500) for i in range(200)]
    collector = lv.VarianceCollector()
    collector.update(samples)
    messages = collector._messages  # the counter behind report.failure_messages
    assert len(messages._counts) == _failures.MAX_MESSAGES + 1
    assert messages._counts.total() == 200
    assert messages._counts[("http_status", None, _failures.OTHER)] == 200 - 64
    assert len(collector.report().failure_messages) == _failures.TOP


def test_merged_failure_messages_equal_counting_both() -> None:
    left = [failed(i, "HTTP 503: busy", 503) for i in range(3)]
    right = [failed(3, "HTTP 503: busy", 503), failed(4, NOT_FOUND)]
    a, b = lv.VarianceCollector(), lv.VarianceCollector()
    a.update(left)
    b.update(right)
    assert a.merge(b).report() == lv.analyze(left + right)
    assert [(f.message, f.count) for f in a.merge(b).report().failure_messages] == [
        ("HTTP 503: busy", 4), (NOT_FOUND, 1)]


def test_top_outputs_show_where_each_leaves_the_ones_above_it() -> None:
    mode = "Once upon a time the dragon slept in the old tower by the sea."
    second = "Once upon a time the dragon flew over the hills and far away."
    third = "Once upon a time the dragon flew over the river and home again."
    report = lv.analyze([mode] * 5 + [second] * 3 + [third] * 2)
    lines = report.to_text().splitlines()
    at = lines.index("top outputs       each from where it leaves the ones above it ('|' "
                     "marks the split)")
    assert lines[at + 1] == f"  #1 x5     {mode!r}"
    assert lines[at + 2] == ("  #2 x3     leaves the mode at char 28: …'n a time the dragon "
                             "|flew over the hills and far away'…")
    # the third leaves the mode where the second did, so it is shown where it leaves #2
    assert lines[at + 3] == ("  #3 x2     leaves the mode at char 28, #2 at char 42: "
                             "…'ragon flew over the |river and home again.'")


def test_first_divergence_is_said_in_plain_words() -> None:
    report = lv.analyze(["one two three", "one two four"])
    assert ("first divergence  token 2 (words), char 8: all outputs agree on the 2 words "
            "before it") in report.to_text().splitlines()
    report = lv.analyze(["one", "two"])
    assert ("first divergence  token 0 (words), char 0: they differ from the start"
            in report.to_text().splitlines())
