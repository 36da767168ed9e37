"""The exception tree.

    LLMVarianceError
    ├── ConfigError (also ValueError)      bad input, raised before any request is sent
    ├── EngineError                        an inference server we launched failed
    ├── TransportError                     the request got no HTTP response
    │   ├── ConnectError                   could not connect, or the connection dropped
    │   └── RequestTimeout                 no complete response in time
    └── ResponseError                      an HTTP response the adapter cannot use
        ├── MalformedResponseError         a 2xx body that is not the expected JSON
        │                                  (or a stream that ends before its last event)
        ├── StreamError                    an error event in the middle of a stream
        └── ResponseTooLargeError          a body past ``max_response_bytes``

Every per-request error is caught and recorded as ``Sample.error``, never raised: what
escapes ``sample_many`` is ``ConfigError`` (bad input, before anything is sent), an
exception raised by the caller's own hooks (as itself), ``OSError`` when the run file
cannot be written, and cancellation. Messages carry context (endpoint name, status, request
index) and never an API key: the key lives only in a ``SecretStr`` and in the request
headers handed to the transport.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "ConnectError",
    "EngineError",
    "LLMVarianceError",
    "MalformedResponseError",
    "RequestTimeout",
    "ResponseError",
    "ResponseTooLargeError",
    "StreamError",
    "TransportError",
]


class LLMVarianceError(Exception):
    """Base class of every error this library raises."""


class ConfigError(LLMVarianceError, ValueError):
    """An argument is out of range or malformed; ``field`` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field

    @classmethod
    def check_int(cls, field: str, value: object, minimum: int = 1, why: str = "") -> int:
        """``value`` if it is an int (not a bool) of at least ``minimum``, else raise."""
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise cls(field, f"must be an integer >= {minimum}{why}, got {value!r}")
        return value

    @classmethod
    def check_type(cls, field: str, value: object, *expected: type) -> None:
        """Raise unless ``value`` is None or an instance of one of ``expected``."""
        if value is not None and not isinstance(value, expected):
            wanted = " or ".join(t.__name__ for t in expected)
            raise cls(field, f"must be {wanted}, got {type(value).__name__}")


class TransportError(LLMVarianceError):
    """The request did not produce an HTTP response."""


class ConnectError(TransportError):
    """Connecting failed, or the server closed the connection before answering.

    ``final``: waiting will not help (an unknown host name, a certificate that is not
    trusted, expired or for another name, TLS spoken to a plain port), so it is never
    retried. ``resendable``: the request failed on a kept-alive connection the server had
    already closed, before any byte of an answer, so it never reached the server and is
    sent again at once on a new connection, at no cost of an attempt.
    """

    def __init__(self, message: str, *, final: bool = False, resendable: bool = False
                 ) -> None:
        super().__init__(message)
        self.final = final
        self.resendable = resendable


class RequestTimeout(TransportError):
    """The response did not arrive within the configured timeout."""


class ResponseError(LLMVarianceError):
    """A response arrived but cannot be turned into a sample."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class MalformedResponseError(ResponseError):
    """A 2xx response whose body is not what the provider's API promises."""


class ResponseTooLargeError(ResponseError):
    """A response body (decompressed) larger than the transport accepts; read no further."""

    def __init__(self, limit: int, status: int, detail: str, *, part: str = "body") -> None:
        hint = ("raise max_response_bytes if answers this large are expected"
                if part == "body" else "a server that floods them is refused")
        super().__init__(f"response {part} over the {limit:,}-byte limit ({detail}); {hint}",
                         status=status)


class EngineError(LLMVarianceError):
    """An inference server started by ``llmvariance.engines`` failed to start or died; the
    message ends with the last lines of its log."""


class StreamError(ResponseError):
    """The server sent an error event in the middle of a stream; the message is its own."""
