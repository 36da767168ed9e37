"""Where requests go: a base URL, an optional secret key, extra headers."""

from __future__ import annotations

import os
import unicodedata
from typing import Annotated
from urllib.parse import quote, urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from .._errors import ConfigError

__all__ = ["Endpoint", "endpoint_or_default", "env_base_url"]

DEFAULT_BASE_URL = "https://api.openai.com/v1"
ANTHROPIC_BASE_URL = "https://api.anthropic.com"


def env_base_url() -> str | None:
    """``$OPENAI_BASE_URL``, or ``$OPENAI_API_BASE`` (the name old SDKs and llmperf read),
    or None."""
    return os.environ.get("OPENAI_BASE_URL") or os.environ.get("OPENAI_API_BASE") or None


def _env_base_url() -> str:
    return env_base_url() or DEFAULT_BASE_URL


def _env_api_key() -> SecretStr | None:
    key = os.environ.get("OPENAI_API_KEY")
    return SecretStr(key) if key else None


_API_PATHS = ("/chat/completions", "/completions", "/messages", "/responses")
"""What a pasted request URL ends with; a base URL never does."""


def _has_control(text: str) -> bool:
    return any(ord(c) < 32 or ord(c) == 127 for c in text)


def _first_outside(text: str, limit: int) -> str | None:
    """The first character at or above code point ``limit``, named (never the text)."""
    for position, c in enumerate(text):
        if ord(c) >= limit:
            name = unicodedata.name(c, "unnamed")
            return f"U+{ord(c):04X} {name} at position {position}"
    return None


_FRAMING_HEADERS = frozenset({"content-length", "transfer-encoding", "host"})
"""Set by the transport from the request itself: sent twice they are refused (nginx
answers 400) or, by a lenient server, read as a second request."""


def _ascii_url(value: str) -> str:
    """The URL with a non-ASCII host in IDNA and a non-ASCII path percent-encoded, as a
    browser sends them (HTTP/1.1 carries neither as they are)."""
    if value.isascii():
        return value
    parts = urlsplit(value)
    host = parts.hostname or ""
    try:
        ascii_host = host.encode("idna").decode("ascii")
    except UnicodeError:
        raise ValueError(f"has a host name that is not a valid international name: "
                         f"{host!r}") from None
    netloc = parts.netloc.replace(host, ascii_host, 1)
    path = quote(parts.path, safe="/%:@!$&'()*+,;=-._~")
    return urlunsplit((parts.scheme, netloc, path, parts.query, parts.fragment))


class Endpoint(BaseModel):
    """An OpenAI-compatible API.

    ``base_url`` and ``api_key`` default to ``$OPENAI_BASE_URL`` (or its older name
    ``$OPENAI_API_BASE``) and ``$OPENAI_API_KEY``.
    The key and every header value are ``SecretStr``: they never appear in a repr, in
    JSON, in a log line or in an error message, only in the headers the transport sends.
    """

    # hide_input_in_errors: a ValidationError would otherwise print header values (secrets)
    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True,
                              hide_input_in_errors=True)

    base_url: str = Field(default_factory=_env_base_url)
    api_key: SecretStr | None = Field(default_factory=_env_api_key)
    headers: dict[str, SecretStr] = Field(default_factory=dict)
    name: Annotated[str, Field(min_length=1)] | None = None
    """A label for reports; defaults to the URL's host and port."""
    proxy: SecretStr | None = None
    """``http://[user:password@]host:port``: every request goes through this HTTP proxy
    (HTTPS in a ``CONNECT`` tunnel). A secret, since it may carry a password."""
    trust_env: bool = True
    """Honour ``HTTPS_PROXY``/``HTTP_PROXY``/``ALL_PROXY`` and ``NO_PROXY`` (as the official
    SDKs do) when ``proxy`` is not set; False connects directly whatever they say."""

    @field_validator("base_url")
    @classmethod
    def _check_base_url(cls, value: str) -> str:
        # before urlsplit, which silently drops tabs and newlines
        if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in value):
            raise ValueError("contains whitespace or a control character (a stray space or "
                             f"newline?): {value!r}")
        if "?" in value or "#" in value:
            raise ValueError("must not have a query string or fragment ('?' or '#'): the "
                             "API path is appended to it")
        parts = urlsplit(value)
        if parts.username or parts.password:
            raise ValueError("must not embed credentials; pass api_key instead")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host, got "
                             f"scheme {parts.scheme!r} and host {parts.hostname!r}")
        if parts.query or parts.fragment:
            raise ValueError("must not have a query string or fragment")
        try:
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError as exc:
            raise ValueError(f"has an invalid port: {exc}") from None
        base = _ascii_url(value.rstrip("/"))
        for api_path in _API_PATHS:
            if base.endswith(api_path):
                raise ValueError(f"ends with the API path {api_path!r}, which is appended "
                                 f"per request; use {base.removesuffix(api_path)!r}")
        return base

    @field_validator("headers")
    @classmethod
    def _check_headers(cls, value: dict[str, SecretStr]) -> dict[str, SecretStr]:
        for header, secret in value.items():
            if not header or any(c in header for c in " :\r\n") or not header.isascii():
                raise ValueError(f"header name {header!r} is not a valid HTTP token")
            if header.lower() in _FRAMING_HEADERS:
                raise ValueError(f"{header!r} is set from the request itself and must not "
                                 "be given (it would be sent twice)")
            text = secret.get_secret_value()
            if _has_control(text):
                raise ValueError(f"the value of {header!r} contains a control character "
                                 "(a stray newline?)")
            where = _first_outside(text, 256)
            if where is not None:
                raise ValueError(f"the value of {header!r} has a character HTTP/1.1 cannot "
                                 f"carry ({where}; copied from a web page?)")
        return value

    @field_validator("api_key")
    @classmethod
    def _check_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and _has_control(value.get_secret_value()):
            raise ValueError("contains a control character (a trailing newline from a "
                             "file or shell?); strip it")
        where = None if value is None else _first_outside(value.get_secret_value(), 128)
        if where is not None:  # a key is ASCII: this came with a copy and paste
            raise ValueError(f"has a character no API key has ({where}; a zero-width "
                             "space or curly quote from a copy and paste?); retype it")
        return value

    @field_validator("proxy")
    @classmethod
    def _check_proxy(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return value
        url = value.get_secret_value()
        parts = urlsplit(url if "://" in url else "http://" + url)
        if parts.scheme != "http" or not parts.hostname or not url.isascii() or _has_control(
                url):
            raise ValueError("must be an http://[user:password@]host:port URL (only HTTP "
                             "proxies are supported)")
        return value

    @classmethod
    def openai(cls, **overrides: object) -> Endpoint:
        """OpenAI's API: ``$OPENAI_BASE_URL`` (``$OPENAI_API_BASE``) or OpenAI's URL, key
        from ``$OPENAI_API_KEY``."""
        return cls.model_validate({"name": "openai", **overrides})

    @classmethod
    def anthropic(cls, **overrides: object) -> Endpoint:
        """Anthropic's API: ``$ANTHROPIC_BASE_URL`` (with ``/v1`` added when it lacks it, as
        the SDK does) or Anthropic's URL, key from ``$ANTHROPIC_API_KEY``."""
        base = (os.environ.get("ANTHROPIC_BASE_URL") or ANTHROPIC_BASE_URL).rstrip("/")
        if not base.endswith("/v1"):
            base += "/v1"
        key = os.environ.get("ANTHROPIC_API_KEY")
        fields: dict[str, object] = {"base_url": base, "api_key": key or None,
                                     "name": "anthropic"}
        return cls.model_validate({**fields, **overrides})

    @property
    def label(self) -> str:
        """The name used in reports: ``name`` if set, else ``host:port``."""
        if self.name:
            return self.name
        parts = urlsplit(self.base_url)
        return parts.netloc

    def request_headers(self, *, key_header: str = "Authorization") -> dict[str, str]:
        """The headers to send, secrets revealed; for the transport, never for display.

        The key goes in ``Authorization: Bearer KEY``, or as the value of ``key_header``
        (Anthropic's ``x-api-key``).
        """
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.api_key is not None:
            key = self.api_key.get_secret_value()
            headers[key_header] = f"Bearer {key}" if key_header == "Authorization" else key
        headers.update((k, v.get_secret_value()) for k, v in self.headers.items())
        return headers


def endpoint_or_default(endpoint: Endpoint | None) -> Endpoint:
    """``endpoint``, or one from ``$OPENAI_BASE_URL``/``$OPENAI_API_KEY`` when None."""
    if endpoint is not None:
        ConfigError.check_type("endpoint", endpoint, Endpoint)
        return endpoint
    try:
        return Endpoint()
    except ValidationError as exc:
        raise ConfigError("endpoint", f"from the environment: {exc}") from None
