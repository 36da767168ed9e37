"""What several commands share: endpoint and limit flags, the request flags, errors."""

from __future__ import annotations

import argparse
import enum
import os

from pydantic import ValidationError

from .._client.endpoint import Endpoint, env_base_url
from .._client.ratelimit import RateLimit
from .._client.retry import RetryPolicy
from .._errors import ConfigError, EngineError
from .._request import (
    ChatRequest,
    CompletionRequest,
    MessagesRequest,
    Request,
    ResponsesRequest,
)
from .._runs.shard import Shard, shard_of

__all__ = ["EXIT_CODES_HELP", "CouldNotMeasure", "ExitCode", "add_api_flags",
           "add_endpoint_flags", "add_request_flags", "add_sampling_flags", "add_shard_flags",
           "api", "describe", "endpoint", "exit_code_for", "rate_limit", "request", "retry",
           "shard", "with_sampling_flags"]


class ExitCode(enum.IntEnum):
    """What every ``llmvariance`` command's exit status means (``--help`` and the README
    show this table; ``exit_code_for`` maps errors onto it)."""

    MEASURED = 0
    """The command measured what it was asked to (failures of some samples included)."""
    EXPECTATION_FAILED = 1
    """It measured, and an expectation the user set did not hold (``check``)."""
    USAGE = 2
    """Bad flags, arguments or files: nothing was sent."""
    COULD_NOT_MEASURE = 3
    """Nothing usable came back: every sample failed (the most common reason is printed on
    one line), the preflight failed, or an engine we started died."""
    INTERRUPTED = 130
    """Ctrl-C (128 + SIGINT, as shells report it)."""


EXIT_CODES_HELP = ("exit status: 0 measured; 1 an expectation failed (check; compare: a "
                   "change); 2 usage (bad flags or files, nothing sent); 3 could not measure "
                   "(every sample "
                   "failed, the preflight failed or an engine died; the reason on one "
                   "line); 130 interrupted")


class CouldNotMeasure(Exception):
    """Raised by a command when nothing usable came back; the message is the one line
    printed (``ExitCode.COULD_NOT_MEASURE``)."""


def exit_code_for(exc: BaseException) -> ExitCode | None:
    """The exit status an exception that ends a command maps to; None for one that is a
    bug (it is raised, with its traceback)."""
    if isinstance(exc, ConfigError | ValidationError):
        return ExitCode.USAGE
    if isinstance(exc, CouldNotMeasure | EngineError):
        return ExitCode.COULD_NOT_MEASURE
    if isinstance(exc, KeyboardInterrupt):
        return ExitCode.INTERRUPTED
    return None


def add_endpoint_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--base-url", help="default: $OPENAI_BASE_URL (or $OPENAI_API_BASE), "
                                           "else OpenAI's API with $OPENAI_API_KEY")
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
    if not args.base_url and env_base_url() is None and not os.environ.get("OPENAI_API_KEY"):
        # OpenAI's API, unauthenticated: every request would come back 401
        raise ConfigError("--base-url", "no --base-url, $OPENAI_BASE_URL or $OPENAI_API_BASE "
                          "and no $OPENAI_API_KEY: give the server's URL (e.g. "
                          "--base-url http://127.0.0.1:8000/v1 for `llmvariance serve`) or "
                          "set $OPENAI_API_KEY for OpenAI; nothing was sent")
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
    kind = api(args)
    if kind == "completions":
        return CompletionRequest(prompt=args.prompt, max_tokens=args.max_tokens, **common)
    if kind == "messages":
        return MessagesRequest(messages=[{"role": "user", "content": args.prompt}],
                               max_tokens=args.max_tokens, **common)
    if kind == "responses":
        return ResponsesRequest(input=args.prompt, max_output_tokens=args.max_tokens, **common)
    return ChatRequest(messages=[{"role": "user", "content": args.prompt}],
                       max_tokens=args.max_tokens, **common)


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


# -- the sampling flags: one flag away from the diagnostics -----------------------------------

def add_sampling_flags(parser: argparse.ArgumentParser) -> None:
    """``--system``, ``--seed``, ``--logprobs [K]``, ``--logit-bias ID=BIAS``, ``--top-p``,
    ``--stop``: set on the request (on every request of a suite), for any API that has
    them; an API that lacks one refuses it by name."""
    group = parser.add_argument_group("request options (override a body file's)")
    group.add_argument("--system", metavar="TEXT",
                       help="a system prompt (chat: a system message; messages: system; "
                            "responses: instructions)")
    group.add_argument("--seed", type=int, help="the sampling seed, for servers that take one")
    group.add_argument("--logprobs", type=int, nargs="?", const=5, metavar="K",
                       help="ask for each token's logprob and K alternatives (K defaults "
                            "to 5 when the flag has no value): divergence margins, logprob "
                            "noise, bitwise agreement")
    group.add_argument("--logit-bias", action="append", metavar="ID=BIAS",
                       help="bias a token id (-100..100), e.g. 100257=-100 to block "
                            "end-of-text; repeat for more")
    group.add_argument("--top-p", type=float, metavar="P", help="nucleus sampling, 0 < P <= 1")
    group.add_argument("--stop", action="append", metavar="TEXT",
                       help="a stop sequence; repeat for more (at most 4)")


def _logit_bias(values: list[str]) -> dict[str, float]:
    bias: dict[str, float] = {}
    for value in values:
        token, sep, amount = value.partition("=")
        try:
            if not sep or not token.strip().isdigit():
                raise ValueError
            bias[token.strip()] = float(amount)
        except ValueError:
            raise ConfigError("--logit-bias", f"must be TOKEN_ID=BIAS (e.g. 100257=-100), "
                              f"got {value!r}") from None
    return bias


def with_sampling_flags(args: argparse.Namespace, request: Request) -> Request:
    """``request`` with the sampling flags applied, validated again (so a bad value names
    its field); unchanged when none was given."""
    given = {name: getattr(args, name, None) for name in
             ("system", "seed", "logprobs", "logit_bias", "top_p", "stop")}
    if all(v is None for v in given.values()):
        return request
    kind = {ChatRequest: "chat", CompletionRequest: "completions", MessagesRequest: "messages",
            ResponsesRequest: "responses"}[type(request)]
    fields = request.model_dump(exclude_none=True)
    mapping: dict[str, dict[str, str]] = {
        "seed": {"chat": "seed", "completions": "seed"},
        "top_p": {k: "top_p" for k in ("chat", "completions", "messages", "responses")},
        "stop": {"chat": "stop", "completions": "stop", "messages": "stop_sequences"},
        "logit_bias": {"chat": "logit_bias", "completions": "logit_bias"},
    }
    for flag, value in given.items():
        if value is None:
            continue
        option = "--" + flag.replace("_", "-")
        if flag == "system":
            if kind == "completions":
                raise ConfigError(option, "the completions API has no system prompt; put it "
                                  "in --prompt")
            if kind == "chat":
                fields["messages"] = [{"role": "system", "content": value},
                                      *fields["messages"]]
            else:
                fields["system" if kind == "messages" else "instructions"] = value
        elif flag == "logprobs":
            ConfigError.check_int(option, value, 0)
            if kind == "chat":
                fields["logprobs"] = True
                fields["top_logprobs"] = value
            elif kind == "completions":
                fields["logprobs"] = value
            elif kind == "responses":
                fields["top_logprobs"] = value
            else:
                raise ConfigError(option, "Anthropic's messages API returns no logprobs")
        else:
            name = mapping[flag].get(kind)
            if name is None:
                raise ConfigError(option, f"the {kind} API has no such option")
            fields[name] = _logit_bias(value) if flag == "logit_bias" else value
    try:
        return type(request).model_validate(fields)
    except ValidationError as exc:
        raise ConfigError("request", describe(exc)) from None
