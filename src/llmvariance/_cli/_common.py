"""What several commands share: endpoint and limit flags, the request flags, errors."""

from __future__ import annotations

import argparse

from pydantic import ValidationError

from .._endpoint import Endpoint
from .._ratelimit import RateLimit
from .._request import ChatRequest, CompletionRequest, Request
from .._retry import RetryPolicy

__all__ = ["add_endpoint_flags", "add_request_flags", "describe", "endpoint", "rate_limit",
           "request", "retry"]


def add_endpoint_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--base-url", help="default: $OPENAI_BASE_URL or OpenAI's API")
    parser.add_argument("--rpm", type=float, help="client-side limit, requests per minute")
    parser.add_argument("--tpm", type=float, help="client-side limit, tokens per minute")
    parser.add_argument("--max-attempts", type=int, default=6,
                        help="tries per request, the first included (default 6)")


def add_request_flags(parser: argparse.ArgumentParser, *, model_required: bool = True) -> None:
    parser.add_argument("--model", required=model_required)
    parser.add_argument("--prompt", required=True)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--temperature", type=float, default=0.0)
    parser.add_argument("--completion", action="store_true",
                        help="use the legacy /completions API instead of chat")


def endpoint(args: argparse.Namespace) -> Endpoint:
    """The endpoint of ``--base-url``; the key comes from $OPENAI_API_KEY, never argv."""
    return Endpoint(base_url=args.base_url) if args.base_url else Endpoint()


def rate_limit(args: argparse.Namespace) -> RateLimit | None:
    if args.rpm is None and args.tpm is None:
        return None
    return RateLimit(requests_per_minute=args.rpm, tokens_per_minute=args.tpm)


def retry(args: argparse.Namespace) -> RetryPolicy:
    return RetryPolicy(max_attempts=args.max_attempts)


def request(args: argparse.Namespace, model: str | None = None) -> Request:
    model = model or args.model
    if args.completion:
        return CompletionRequest(model=model, prompt=args.prompt,
                                 max_tokens=args.max_tokens, temperature=args.temperature)
    return ChatRequest(model=model, messages=[{"role": "user", "content": args.prompt}],
                       max_tokens=args.max_tokens, temperature=args.temperature)


def describe(exc: ValidationError) -> str:
    """A pydantic error as one line: ``field: message; field: message``."""
    parts = []
    for error in exc.errors():
        field = ".".join(str(p) for p in error["loc"]) or exc.title
        parts.append(f"{field}: {error['msg']}")
    return "; ".join(parts)
