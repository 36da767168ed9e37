from datetime import UTC, datetime
from email.utils import format_datetime

import pytest
from multidict import CIMultiDict

from llmvariance._client.hints import ServerHints, has_limit_state, parse_duration
from llmvariance._client.hints import parse_hints as parse_raw

NOW = 1_700_000_000.0


def parse_hints(headers: dict[str, str], now: float) -> ServerHints:
    # transports deliver case-insensitive headers
    return parse_raw(CIMultiDict(headers), now)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("1s", 1.0), ("6m0s", 360.0), ("20ms", 0.02), ("1h2m3.5s", 3723.5), ("0.5", 0.5),
     ("17", 17.0), ("250us", 0.00025), ("soon", None), ("5x", None), ("1s2", None)],
)
def test_durations_in_every_form_providers_send(text: str, seconds: float | None) -> None:
    expected = None if seconds is None else pytest.approx(seconds)
    assert parse_duration(text) == expected


def test_retry_after_ms_wins_over_retry_after() -> None:
    hints = parse_hints({"Retry-After-Ms": "1500", "Retry-After": "30"}, NOW)
    assert hints.retry_after_s == pytest.approx(1.5)


def test_retry_after_as_seconds_and_as_http_date() -> None:
    assert parse_hints({"retry-after": "7"}, NOW).retry_after_s == 7.0
    date = format_datetime(datetime.fromtimestamp(NOW + 42, UTC), usegmt=True)
    assert parse_hints({"Retry-After": date}, NOW).retry_after_s == pytest.approx(42.0)
    past = format_datetime(datetime.fromtimestamp(NOW - 5, UTC), usegmt=True)
    assert parse_hints({"Retry-After": past}, NOW).retry_after_s == 0.0


def test_openai_rate_limit_headers() -> None:
    hints = parse_hints({
        "x-ratelimit-limit-requests": "500", "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-reset-requests": "120ms", "x-ratelimit-limit-tokens": "30000",
        "x-ratelimit-remaining-tokens": "29000", "x-ratelimit-reset-tokens": "6m0s",
    }, NOW)
    assert hints == ServerHints(retry_after_s=None, remaining_requests=0,
                                remaining_tokens=29000, reset_requests_s=pytest.approx(0.12),
                                reset_tokens_s=360.0)
    assert hints.exhausted_for_s(next_cost=100) == pytest.approx(0.12)
    assert hints.exhausted_for_s(next_cost=30000) == 360.0


def test_anthropic_rate_limit_headers_reset_at_an_rfc3339_time() -> None:
    reset = datetime.fromtimestamp(NOW + 3, UTC).isoformat().replace("+00:00", "Z")
    hints = parse_hints({"anthropic-ratelimit-requests-remaining": "0",
                         "anthropic-ratelimit-requests-reset": reset}, NOW)
    assert hints.remaining_requests == 0
    assert hints.reset_requests_s == pytest.approx(3.0)
    assert hints.exhausted_for_s() == pytest.approx(3.0)


def test_nothing_exhausted_means_no_wait() -> None:
    hints = parse_hints({"x-ratelimit-remaining-requests": "3",
                         "x-ratelimit-reset-requests": "1s"}, NOW)
    assert hints.exhausted_for_s() is None
    assert parse_hints({}, NOW) == ServerHints()
    assert parse_hints({"retry-after": "garbage"}, NOW).retry_after_s is None


def test_limit_state_is_detected_in_any_case() -> None:
    assert has_limit_state(CIMultiDict({"X-RateLimit-Remaining-Requests": "4"}))
    assert not has_limit_state(CIMultiDict({"Content-Type": "application/json"}))
