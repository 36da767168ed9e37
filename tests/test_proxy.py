"""Which proxy a URL goes through: the environment's variables as the SDKs read them."""

from __future__ import annotations

import pytest

import llmvariance as lv
from llmvariance._client.proxy import proxy_for


@pytest.mark.parametrize(("env", "url", "expected"), [
    ({"HTTPS_PROXY": "http://p:3128"}, "https://api.test/v1", ("p", 3128, "$HTTPS_PROXY")),
    ({"https_proxy": "p:8080"}, "https://api.test/v1", ("p", 8080, "$HTTPS_PROXY")),
    ({"HTTPS_PROXY": "http://p:3128"}, "http://api.test/v1", None),
    ({"HTTP_PROXY": "http://q:80"}, "http://api.test/v1", ("q", 80, "$HTTP_PROXY")),
    ({"ALL_PROXY": "http://a:1"}, "https://api.test/v1", ("a", 1, "$ALL_PROXY")),
    ({"HTTPS_PROXY": "http://p:1", "NO_PROXY": "127.0.0.1"}, "https://127.0.0.1:8/v1", None),
    ({"HTTPS_PROXY": "http://p:1", "NO_PROXY": "api.test"}, "https://x.api.test/v1", None),
    ({"HTTPS_PROXY": "http://p:1", "NO_PROXY": "*"}, "https://api.test/v1", None),
    ({"HTTPS_PROXY": "http://p:1", "NO_PROXY": "other.test"}, "https://api.test/v1",
     ("p", 1, "$HTTPS_PROXY")),
])
def test_the_environment_picks_the_proxy_per_scheme_unless_no_proxy(
        monkeypatch: pytest.MonkeyPatch, env: dict[str, str], url: str,
        expected: tuple[str, int, str] | None) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    proxy = proxy_for(url, trust_env=True)
    assert (None if proxy is None else (proxy.host, proxy.port, proxy.source)) == expected
    assert proxy_for(url, trust_env=False) is None


def test_credentials_become_basic_proxy_authorization_and_stay_out_of_reprs() -> None:
    proxy = proxy_for("https://api.test/v1", trust_env=False,
                      proxy="http://us%40er:p%3Ass@127.0.0.1:3128")
    assert proxy is not None and proxy.authorization == "Basic dXNAZXI6cDpzcw=="
    assert "p:ss" not in repr(proxy) and proxy.url == "http://127.0.0.1:3128"


def test_a_socks_proxy_from_the_environment_is_a_final_error_not_a_silent_bypass(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALL_PROXY", "socks5://127.0.0.1:1080")
    with pytest.raises(lv.ConnectError, match=r"\$ALL_PROXY names a socks5:// proxy") as raised:
        proxy_for("https://api.test/v1", trust_env=True)
    assert raised.value.final
