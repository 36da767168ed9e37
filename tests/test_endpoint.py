import pytest
from pydantic import ValidationError

import llmvariance as lv

KEY = "sk-test-SECRET-0123456789"


def test_key_never_appears_in_repr_str_or_json() -> None:
    ep = lv.Endpoint(base_url="http://127.0.0.1:1/v1", api_key=KEY,
                     headers={"X-Org-Token": "org-SECRET-value"})
    for rendering in (repr(ep), str(ep), ep.model_dump_json(), str(ep.model_dump())):
        assert KEY not in rendering
        assert "org-SECRET-value" not in rendering
    assert ep.request_headers()["Authorization"] == f"Bearer {KEY}"
    assert ep.request_headers()["X-Org-Token"] == "org-SECRET-value"


def test_defaults_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1/")
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    ep = lv.Endpoint()
    assert ep.base_url == "http://127.0.0.1:9/v1"
    assert ep.api_key is not None and ep.api_key.get_secret_value() == KEY
    assert ep.label == "127.0.0.1:9"


def test_no_key_sends_no_authorization_header() -> None:
    ep = lv.Endpoint(base_url="http://127.0.0.1:9/v1", api_key=None)
    assert "Authorization" not in ep.request_headers()


@pytest.mark.parametrize(
    "url", ["127.0.0.1:8000/v1", "ftp://host/v1", "http:///v1", "http://host:99999/v1",
            "http://user:pw@host/v1", "http://host/v1?x=1"],
)
def test_malformed_base_url_is_refused_naming_the_field(url: str) -> None:
    with pytest.raises(ValidationError) as info:
        lv.Endpoint(base_url=url)
    assert "base_url" in str(info.value)
    assert info.value.errors()[0]["loc"] == ("base_url",)


def test_name_overrides_the_label() -> None:
    assert lv.Endpoint(base_url="http://127.0.0.1:9/v1", name="local").label == "local"


def test_validation_errors_do_not_echo_secret_values() -> None:
    with pytest.raises(ValidationError) as info:
        lv.Endpoint(base_url="http://127.0.0.1:9/v1", headers={"bad name": "sk-SECRET-hdr"},
                    api_key=KEY)
    assert "headers" in str(info.value)
    assert "sk-SECRET-hdr" not in str(info.value) and KEY not in str(info.value)
    with pytest.raises(ValidationError) as info:
        lv.Endpoint(base_url="http://127.0.0.1:9/v1", api_key=12345)  # type: ignore[arg-type]
    assert "12345" not in str(info.value)


# -- what HTTP/1.1 cannot carry is refused up front (issue 19, defect 6) --------------------

KEY_TAIL = "sk-abcdefghijklmnop"


@pytest.mark.parametrize(("fields", "field", "says"), [
    ({"api_key": "sk-abc\u200bdefghijklmnop"}, "api_key", "U+200B ZERO WIDTH SPACE"),
    ({"api_key": "\u201csk-abcdefghijklmnop\u201d"}, "api_key", "LEFT DOUBLE QUOTATION MARK"),
    ({"headers": {"X-Title": "runs \U0001f389"}}, "headers", "U+1F389 PARTY POPPER"),
    ({"headers": {"content-length": "5"}}, "headers", "set from the request itself"),
    ({"headers": {"Transfer-Encoding": "chunked"}}, "headers", "set from the request itself"),
    ({"headers": {"HOST": "evil.test"}}, "headers", "set from the request itself"),
    ({"proxy": "socks5://127.0.0.1:1080"}, "proxy", "only HTTP proxies"),
])
def test_characters_and_headers_http_cannot_carry_are_refused_naming_the_field(
        fields: dict[str, object], field: str, says: str) -> None:
    with pytest.raises(ValidationError) as raised:
        lv.Endpoint(base_url="http://127.0.0.1:9/v1", **fields)  # type: ignore[arg-type]
    error = raised.value.errors()[0]
    assert error["loc"] == (field,) and says in error["msg"]
    assert "abcdefghijklmnop" not in str(raised.value)  # never the key itself


def test_a_non_ascii_base_url_is_sent_percent_encoded_with_an_idna_host() -> None:
    endpoint = lv.Endpoint(base_url="http://bücher.example/ärger/v1")
    assert endpoint.base_url == "http://xn--bcher-kva.example/%C3%A4rger/v1"


def test_a_proxy_url_is_a_secret() -> None:
    endpoint = lv.Endpoint(base_url="http://127.0.0.1:9/v1",
                           proxy="http://user:hunter2@127.0.0.1:3128")
    assert "hunter2" not in repr(endpoint) and "hunter2" not in endpoint.model_dump_json()
    assert endpoint.trust_env is True
