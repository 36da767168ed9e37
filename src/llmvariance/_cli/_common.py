"""What several commands share: endpoint and limit flags, the request flags, errors."""

from __future__ import annotations

import argparse

from pydantic import ValidationError

from .._client.endpoint import Endpoint
from .._client.ratelimit import RateLimit
from .._client.retry import RetryPolicy
from .._errors import ConfigError
from .._request import (
    ChatRequest,
    CompletionRequest,
    MessagesRequest,
    Request,
    ResponsesRequest,
)
from .._runs.shard import Shard, shard_of

__all__ = ["add_api_flags", "add_endpoint_flags", "add_request_flags", "add_shard_flags", "api",
           "describe", "endpoint", "rate_limit", "request", "retry", "shard"]


def add_endpoint_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--base-url", help="default: $OPENAI_BASE_URL or OpenAI's API")
    parser.add_argument("--rpm", type=float, help="client-side limit, requests per minute")
    parser.add_argument("--tpm", type=float, help="client-side limit, tokens per minute")
    parser.add_argument("--max-attempts", type=int, default=6,
                        help="tries per request, the first included (default 6)")


def add_request_flags(parser: argparse.ArgumentParser, *, model: bool = True,
                      prompt_required: bool = True) -> None:
    """``--model`` (unless ``model=False``), ``--prompt``, limits, ``--api``, ``--stream``."""
    if model:
        parser.add_argument("--model", required=prompt_required)
    parser.add_argument("--prompt", required=prompt_required)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--temperature", type=float, default=0.0)
    add_api_flags(parser)


def add_api_flags(parser: argparse.ArgumentParser) -> None:
    """``--api`` (None when not given: ``api(args)`` reads it) and ``--stream``."""
    parser.add_argument("--api", choices=["chat", "completions", "messages", "responses"],
                        help="OpenAI chat (default), legacy completions, Anthropic messages "
                             "(key from $ANTHROPIC_API_KEY) or OpenAI responses")
    parser.add_argument("--completion", action="store_const", dest="api",
                        const="completions", help="the same as --api completions")
    parser.add_argument("--stream", action="store_true",
                        help="stream the answers (adds time to first token)")


def api(args: argparse.Namespace) -> str:
    """``--api``, chat when not given."""
    return getattr(args, "api", None) or "chat"


def endpoint(args: argparse.Namespace, anthropic: bool = False) -> Endpoint:
    """The endpoint of ``--base-url``; the key comes from the environment, never argv:
    ``$ANTHROPIC_API_KEY`` for ``--api messages`` (or ``anthropic``), else
    ``$OPENAI_API_KEY``."""
    if anthropic or api(args) == "messages":
        overrides = {"base_url": args.base_url} if args.base_url else {}
        return Endpoint.anthropic(**overrides)
    return Endpoint(base_url=args.base_url) if args.base_url else Endpoint()


def rate_limit(args: argparse.Namespace) -> RateLimit | None:
    if args.rpm is None and args.tpm is None:
        return None
    return RateLimit(requests_per_minute=args.rpm, tokens_per_minute=args.tpm)


def retry(args: argparse.Namespace) -> RetryPolicy:
    return RetryPolicy(max_attempts=args.max_attempts)


def request(args: argparse.Namespace, model: str | None = None) -> Request:
    """The request the flags describe, for the API of ``--api``."""
    model = model or args.model
    common = {"model": model, "temperature": args.temperature, "stream": args.stream}
    user = [{"role": "user", "content": args.prompt}]
    kind = api(args)
    if kind == "completions":
        return CompletionRequest(prompt=args.prompt, max_tokens=args.max_tokens, **common)
    if kind == "messages":
        return MessagesRequest(messages=user, max_tokens=args.max_tokens, **common)
    if kind == "responses":
        return ResponsesRequest(input=args.prompt, max_output_tokens=args.max_tokens, **common)
    return ChatRequest(messages=user, max_tokens=args.max_tokens, **common)


def add_shard_flags(parser: argparse.ArgumentParser, what: str = "(request, index) pairs"
                    ) -> None:
    """``--shard k/K`` and ``--limits-per-shard``."""
    parser.add_argument("--shard", metavar="k/K",
                        help=f"send only shard k of K (0-based) of the {what}; each shard "
                             "writes its own --out, and `llmvariance merge` joins them")
    parser.add_argument("--limits-per-shard", action="store_true",
                        help="--rpm/--tpm apply to this shard alone (default: divided among "
                             "the K shards)")


def shard(args: argparse.Namespace) -> Shard | None:
    """The shard of ``--shard`` (None: the whole study)."""
    found = shard_of(args.shard, "--shard")
    if found is not None and not getattr(args, "out", None):
        raise ConfigError("--shard", "needs --out: each shard writes its own run file, "
                          "which `llmvariance merge` joins")
    if found is not None and args.limits_per_shard:
        found = found.model_copy(update={"limits": "per_shard"})
    return found


def describe(exc: ValidationError) -> str:
    """A pydantic error as one line: ``field: message; field: message``."""
    parts = []
    for error in exc.errors():
        field = ".".join(str(p) for p in error["loc"]) or exc.title
        parts.append(f"{field}: {error['msg']}")
    return "; ".join(parts)
