"""Which HTTP proxy a URL goes through: an explicit one, or the environment's.

With ``trust_env`` (the default, as in the official SDKs) ``HTTPS_PROXY`` /
``HTTP_PROXY`` (per the URL's scheme, either case) and then ``ALL_PROXY`` name the
proxy, and ``NO_PROXY`` lists the hosts reached directly (``*``, names with their
subdomains, ``host:port``, IP addresses), read by the standard library's
``urllib.request`` exactly as ``requests`` and ``httpx`` read them. An explicit ``proxy``
applies to every URL. HTTPS goes through the proxy in a ``CONNECT`` tunnel, so the proxy
never sees the key; plain HTTP is sent to the proxy in absolute form. Credentials in the
proxy URL (``http://user:pass@host:port``) become ``Proxy-Authorization: Basic``.
"""

from __future__ import annotations

import base64
import urllib.request
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

from .._errors import ConnectError

__all__ = ["Proxy", "proxy_for"]


@dataclass(frozen=True, slots=True)
class Proxy:
    """An HTTP proxy; ``authorization`` is the ``Proxy-Authorization`` value (kept out of
    the repr)."""

    host: str
    port: int
    authorization: str | None = field(default=None, repr=False)
    source: str = "proxy"
    """Where it came from, for messages: ``proxy`` or the variable's name."""

    @property
    def url(self) -> str:
        """``http://host:port``, without credentials."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


def _parse(url: str, source: str) -> Proxy:
    if "://" not in url:
        url = "http://" + url  # "host:port", as curl and requests accept
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        # never silently direct: the user meant their traffic to go through it
        raise ConnectError(f"{source} names a {parts.scheme}:// proxy; only http:// proxies "
                           "are supported (set NO_PROXY, or Endpoint(trust_env=False))",
                           final=True)
    try:
        port = parts.port or 80
    except ValueError:
        raise ConnectError(f"{source} has an invalid port", final=True) from None
    authorization = None
    if parts.username is not None:
        pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        authorization = "Basic " + base64.b64encode(pair.encode()).decode("ascii")
    return Proxy(parts.hostname, port, authorization, source)


def proxy_for(url: str, *, trust_env: bool, proxy: str | None = None) -> Proxy | None:
    """The proxy to reach ``url`` through, or None to connect directly.

    Raises ``ConnectError`` (final) for a proxy that is not ``http://``.
    """
    if proxy is not None:
        return _parse(proxy, "proxy")
    if not trust_env:
        return None
    proxies = urllib.request.getproxies_environment()
    parts = urlsplit(url)
    scheme = parts.scheme
    chosen = proxies.get(scheme)
    name = f"{scheme.upper()}_PROXY"
    if not chosen:
        chosen, name = proxies.get("all"), "ALL_PROXY"
    if not chosen:
        return None
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    # (untyped in typeshed, documented since Python 3.0, what requests and httpx call too)
    bypass = getattr(urllib.request, "proxy_bypass_environment")  # noqa: B009
    if "no" in proxies and bypass(netloc, proxies):
        return None
    return _parse(chosen, f"${name}")
