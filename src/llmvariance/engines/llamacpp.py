"""llama.cpp's ``llama-server``: the command line, and the server as a context manager.

    async with LlamaCppServer("model.gguf", parallel=8, kv_unified=True) as base_url:
        result = await lv.batch_effect(req, 30, endpoint=lv.Endpoint(base_url=base_url))

The binary is ``binary=``, else ``$LLAMA_SERVER``, else ``llama-server`` on PATH, else
the one ``python3 dev.py engines`` built into the cache. A model is a GGUF path or the
name of a model in that cache (``smollm2-135m-instruct-q4_1``, ``gemma3-270m-q4_k_m``).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from .._errors import ConfigError
from . import _setup
from ._process import EngineCommand, ServerProcess, argv_flags, check_file

__all__ = ["LlamaCppServer", "find_llama_server", "llamacpp_command", "resolve_model"]


def find_llama_server(binary: str | os.PathLike[str] | None = None) -> Path:
    """The llama-server to run; ``ConfigError`` naming where it looked when there is none."""
    if binary is not None:
        return check_file("binary", binary, "llama-server binary")
    env = os.environ.get("LLAMA_SERVER")
    if env:
        return check_file("binary", env, "$LLAMA_SERVER")
    on_path = shutil.which("llama-server")
    if on_path:
        return Path(on_path)
    cached = _setup.llama_server_path()
    if cached.is_file():
        return cached
    raise ConfigError("binary", "no llama-server: pass binary=, set $LLAMA_SERVER, put it on "
                      f"PATH, or build one into {cached} with `python3 dev.py engines`")


def resolve_model(model: str | os.PathLike[str]) -> Path:
    """A GGUF path, or the path of a model of that name in the cache."""
    if str(model) in _setup.MODELS and not Path(model).exists():
        cached = _setup.model_path(str(model))
        if not cached.is_file():
            raise ConfigError("model", f"{model} is not in the cache ({cached}); run "
                              "`python3 dev.py engines`")
        return cached
    return check_file("model", model, "model file")


DEFAULT_THREADS_HTTP = 64
"""Enough HTTP threads for every connection a pool keeps open."""


def default_threads() -> int:
    """All cores but one, which is left to the client that sends the load.

    On a busy machine llama.cpp's spinning worker threads collapse when they outnumber
    free cores (measured here: 0.7 instead of 88 tokens/s with 2 threads on 2 cores).
    """
    return max(1, (os.cpu_count() or 2) - 1)


def llamacpp_command(
    model: str | os.PathLike[str],
    *,
    port: int,
    binary: str | os.PathLike[str] | None = None,
    parallel: int | None = None,
    kv_unified: bool | None = None,
    ctx_size: int | None = None,
    threads: int | None = None,
    batch_size: int | None = None,
    seed: int | None = None,
    threads_http: int | None = DEFAULT_THREADS_HTTP,
    ubatch_size: int | None = None,
    flash_attn: bool | str | None = None,
    cont_batching: bool | None = None,
    cache_prompt: bool | None = None,
    cache_ram: int | None = None,
    slot_save_path: str | os.PathLike[str] | None = None,
    extra_args: Sequence[str] = (),
) -> EngineCommand:
    """The ``llama-server`` command line for these settings, listening on 127.0.0.1:port.

    ``None`` leaves a setting at llama.cpp's default, except ``threads``
    (``default_threads()``); ``kv_unified=False`` passes ``--no-kv-unified``.
    ``flash_attn``: ``True``/``False`` or ``"on"``/``"off"``/``"auto"``;
    ``cont_batching=False`` passes ``--no-cont-batching`` (requests then wait for the batch
    in progress); ``cache_prompt=False`` passes ``--no-cache-prompt`` (the default of the
    per-request ``cache_prompt``); ``cache_ram`` is the RAM prompt cache in MiB (0: off);
    ``slot_save_path`` enables ``POST /slots/{id}?action=...`` (the ``llamacpp_erase``
    cache policy).
    ``threads_http`` defaults to ``DEFAULT_THREADS_HTTP``, not llama.cpp's
    ``max(parallel + 2, cores - 1)``: each kept-alive connection holds an HTTP thread, so
    with few of them a client's idle connections starve its new requests (measured: a
    ``loaded`` condition with one slot took 94 s instead of 9 s).
    """
    for name, value in (("parallel", parallel), ("ctx_size", ctx_size),
                        ("threads", threads), ("batch_size", batch_size),
                        ("threads_http", threads_http), ("ubatch_size", ubatch_size)):
        if value is not None:
            ConfigError.check_int(name, value)
    if cache_ram is not None:
        ConfigError.check_int("cache_ram", cache_ram, -1)
    flash = ("on" if flash_attn else "off") if isinstance(flash_attn, bool) else flash_attn
    if flash not in (None, "on", "off", "auto"):
        raise ConfigError("flash_attn", f"must be on, off, auto or a bool, got {flash_attn!r}")
    if isinstance(extra_args, str):
        raise ConfigError("extra_args", "must be a list of arguments, not one string")
    argv = [str(find_llama_server(binary)), "--model", str(resolve_model(model)),
            "--host", "127.0.0.1", "--port", str(port), "--no-webui",
            *argv_flags([("--parallel", parallel), ("--ctx-size", ctx_size),
                         ("--threads", threads or default_threads()),
                         ("--batch-size", batch_size), ("--seed", seed),
                         ("--threads-http", threads_http), ("--ubatch-size", ubatch_size),
                         ("--flash-attn", flash), ("--cache-ram", cache_ram),
                         ("--slot-save-path", slot_save_path)])]
    for flag, value in (("kv-unified", kv_unified), ("cont-batching", cont_batching),
                        ("cache-prompt", cache_prompt)):
        if value is not None:
            argv.append(f"--{flag}" if value else f"--no-{flag}")
    return EngineCommand((*argv, *extra_args))


class LlamaCppServer:
    """A ``llama-server`` on a free port of 127.0.0.1 for the duration of an ``async with``.

    Paths are checked when it is created, before anything starts; it yields the base URL
    of its OpenAI-compatible API once ``/health`` answers, and leaves no process behind.
    """

    __slots__ = ("_process", "command", "settings")

    def __init__(self, model: str | os.PathLike[str], *,
                 binary: str | os.PathLike[str] | None = None, parallel: int | None = None,
                 kv_unified: bool | None = None, ctx_size: int | None = None,
                 threads: int | None = None, batch_size: int | None = None,
                 seed: int | None = None, threads_http: int | None = DEFAULT_THREADS_HTTP,
                 ubatch_size: int | None = None, flash_attn: bool | str | None = None,
                 cont_batching: bool | None = None, cache_prompt: bool | None = None,
                 cache_ram: int | None = None,
                 slot_save_path: str | os.PathLike[str] | None = None,
                 extra_args: Sequence[str] = (),
                 log_path: str | os.PathLike[str] | None = None,
                 startup_timeout_s: float = 300.0) -> None:
        settings = {"parallel": parallel, "kv_unified": kv_unified, "ctx_size": ctx_size,
                    "threads": threads, "batch_size": batch_size, "seed": seed,
                    "threads_http": threads_http, "ubatch_size": ubatch_size,
                    "flash_attn": flash_attn, "cont_batching": cont_batching,
                    "cache_prompt": cache_prompt, "cache_ram": cache_ram,
                    "slot_save_path": slot_save_path, "extra_args": tuple(extra_args)}
        llamacpp_command(model, port=1, binary=binary, **settings)  # type: ignore[arg-type]
        self.settings = settings
        self.command: tuple[str, ...] | None = None
        """The command line the server was started with (once it has been)."""

        def command(port: int) -> EngineCommand:
            built = llamacpp_command(model, port=port, binary=binary,
                                     **settings)  # type: ignore[arg-type]
            self.command = built.argv
            return built

        self._process = ServerProcess(command, name="llama-server", log_path=log_path,
                                      startup_timeout_s=startup_timeout_s)

    @property
    def pid(self) -> int | None:
        return self._process.pid

    @property
    def log_path(self) -> Path | None:
        return self._process.log_path

    async def __aenter__(self) -> str:
        return await self._process.__aenter__()

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self._process.__aexit__(exc_type, exc, tb)

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={v!r}" for k, v in self.settings.items() if v not in (None, ()))
        return f"<LlamaCppServer {shown} {self._process!r}>"
