"""Keeping secrets out of samples: every string a server sends back is scrubbed of them.

A server can echo the API key anywhere — the text, the model name, the fingerprint, a
token, an alternative in ``top_logprobs``, an error message — and whatever lands in a
``Sample`` reaches run files, reprs, JSON and reports. The pool scrubs a decoded response
before a ``Sample`` is built from it. Checking the raw body first keeps the common case
(no secret, no JSON escapes that could hide one) to one byte search per secret.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .endpoint import Endpoint

__all__ = ["MASK", "NOT_SECRET", "Redactor"]

MASK = "***"
NOT_SECRET = frozenset({"anthropic-version", "anthropic-beta", "openai-beta", "content-type",
                        "accept", "user-agent", "x-title", "http-referer"})
"""Header names whose values are settings, not secrets: masking them would mask ordinary
text (a date like ``2023-06-01``) in every answer."""
_MIN_SECRET_CHARS = 4
"""Shorter values (``"1"``, ``"on"``) would mask ordinary text; they are not secrets."""


class Redactor:
    """Replaces each of an endpoint's secrets (key, header values) with ``***``."""

    __slots__ = ("_encoded", "_escapes", "_secrets")

    def __init__(self, secrets: list[str]) -> None:
        # longest first, so a secret containing another is masked whole
        self._secrets = tuple(sorted({s for s in secrets if len(s) >= _MIN_SECRET_CHARS},
                                     key=len, reverse=True))
        self._encoded = tuple(s.encode() for s in self._secrets)
        # JSON escapes that could spell a secret's character without the secret's bytes
        self._escapes = (b"\\u", *(b"\\" + c.encode() for c in '"\\/'
                                    if any(c in s for s in self._secrets)))

    @classmethod
    def for_endpoint(cls, endpoint: Endpoint) -> Redactor:
        values = [s.get_secret_value() for name, s in endpoint.headers.items()
                  if name.lower() not in NOT_SECRET]
        if endpoint.api_key is not None:
            values.append(endpoint.api_key.get_secret_value())
        return cls(values)

    def __bool__(self) -> bool:
        return bool(self._secrets)

    def may_leak(self, body: bytes) -> bool:
        """False when ``body`` certainly decodes to no secret: none appears in it, and it
        has no JSON escape that could spell one."""
        return bool(self._secrets) and (any(s in body for s in self._encoded)
                                        or any(e in body for e in self._escapes))

    def in_text(self, fields: Mapping[str, object]) -> bool:
        """Whether a secret appears in the assembled ``text`` or the joined ``tokens``,
        which may be put together from pieces none of which holds it whole."""
        if not self._secrets:
            return False
        text = fields.get("text")
        tokens = fields.get("tokens")
        joined = "".join(t for t in tokens if isinstance(t, str)) if isinstance(
            tokens, list) else ""
        return any(s in text for s in self._secrets if isinstance(text, str)) or any(
            s in joined for s in self._secrets)

    def text(self, value: str) -> str:
        for secret in self._secrets:
            if secret in value:
                value = value.replace(secret, MASK)
        return value

    def value(self, value: Any) -> Any:
        """``value`` with secrets masked in every string, dict key and list item within."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, list):
            return [self.value(v) for v in value]
        if isinstance(value, dict):
            return {self.value(k): self.value(v) for k, v in value.items()}
        return value

    def response(self, fields: Mapping[str, object]) -> dict[str, Any]:
        """A decoded response's fields with every secret masked, in tokens too."""
        out: dict[str, Any] = self.value(dict(fields))
        if out.get("tokens"):
            out["tokens"] = self.tokens(out["tokens"])
        return out

    def tokens(self, tokens: list[str]) -> list[str]:
        """Tokens with a secret masked even when it is split across several of them:
        every token that overlaps an occurrence in the joined text becomes ``***``."""
        tokens = [self.text(t) for t in tokens]
        joined = "".join(tokens)
        spans = [(start, start + len(s)) for s in self._secrets
                 for start in _occurrences(joined, s)]
        if not spans:
            return tokens
        out, offset = [], 0
        for token in tokens:
            end = offset + len(token)
            overlaps = any(a < end and offset < b for a, b in spans)
            out.append(MASK if overlaps else token)
            offset = end
        return out


def _occurrences(text: str, secret: str) -> list[int]:
    found, start = [], text.find(secret)
    while start != -1:
        found.append(start)
        start = text.find(secret, start + 1)
    return found
