"""What server answered: its engine, build, slots and settings, asked of the server itself.

``server_info(pool)`` probes the engine's own configuration endpoints at the server's root
(the base URL without ``/v1``), in this order, and keeps the first that answers with JSON:

=========== ======================= =====================================================
engine      endpoint                what is kept
=========== ======================= =====================================================
llama.cpp   ``GET /props``          everything (``build_info``, ``total_slots``, the
            ``GET /slots``          default generation settings, the chat template);
                                    each slot's counters and sampling settings, without the
                                    prompt and output another request left in it
SGLang      ``GET /server_info``    the server arguments and version (older builds:
            (``/get_server_info``)  ``/get_server_info``)
vLLM        ``GET /version``        the version only (vLLM has no configuration endpoint)
=========== ======================= =====================================================

Verified against llama.cpp build b11312 here; the SGLang and vLLM probes follow their
documentation and are **unverified** (they need a GPU). A server that answers none is
``engine="unknown"``: nothing fails, the run goes on. ``ServerInfo.command`` is the command
line that started it, when llmvariance did (``LlamaCppServer.command``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import orjson
from pydantic import BaseModel, ConfigDict

from .._errors import TransportError

if TYPE_CHECKING:
    from .._client.pool import ClientPool

__all__ = ["ServerInfo", "server_info"]

_SLOT_PRIVATE = ("prompt", "generated")
"""What a llama.cpp slot keeps of the last request it served: another user's text."""


class ServerInfo(BaseModel):
    """The configuration a server reported, recorded beside every result."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    engine: str
    """``llama.cpp``, ``sglang``, ``vllm`` or ``unknown``."""
    base_url: str
    fetched_at: str
    """UTC, RFC 3339."""
    build: str | None = None
    """llama.cpp's ``build_info`` (``b11312-0c1e57098``), SGLang's or vLLM's version."""
    total_slots: int | None = None
    """Sequences the server decodes at once (llama.cpp's ``--parallel``)."""
    props: dict[str, Any] | None = None
    """What the configuration endpoint answered, as it answered."""
    slots: list[dict[str, Any]] | None = None
    """llama.cpp's ``/slots`` when probed, without the text other requests left there."""
    command: list[str] | None = None
    """The command line that started the server, when llmvariance started it."""
    verified: bool = False
    """Whether this engine's probe has been checked against a running engine."""

    def summary(self) -> str:
        """One line: ``llama.cpp b11312-0c1e57098, 4 slots``."""
        parts = [self.engine]
        if self.build:
            parts.append(self.build)
        text = " ".join(parts)
        if self.total_slots is not None:
            text += f", {self.total_slots} slot{'s' if self.total_slots != 1 else ''}"
        if self.command:
            flags = [a for a in self.command[1:] if a.startswith("--") and a not in (
                "--model", "--host", "--port", "--no-webui")]
            if flags:
                text += f", started with {' '.join(flags)}"
        return text


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


async def _get_json(pool: ClientPool, path: str) -> Any:
    """The JSON a GET of ``path`` answered with 200, else None."""
    try:
        response = await pool.call_server("GET", path)
    except TransportError:
        return None
    if response.status != 200:
        return None
    try:
        return orjson.loads(response.body)
    except orjson.JSONDecodeError:
        return None


def _slots(found: Any) -> list[dict[str, Any]] | None:
    if not isinstance(found, list):
        return None
    return [{k: v for k, v in slot.items() if k not in _SLOT_PRIVATE}
            for slot in found if isinstance(slot, dict)]


async def server_info(pool: ClientPool, *, command: Sequence[str] | None = None
                      ) -> ServerInfo:
    """Ask the pool's server what it is (see the module's table); never raises for a
    server that does not say: its ``engine`` is then ``unknown``."""
    base = {"base_url": pool.endpoint.base_url, "fetched_at": _now(),
            "command": list(command) if command is not None else None}
    props = await _get_json(pool, "/props")
    if isinstance(props, dict) and ("build_info" in props or "total_slots" in props):
        slots = props.get("total_slots")
        return ServerInfo(engine="llama.cpp", build=_text(props.get("build_info")),
                          total_slots=slots if isinstance(slots, int) else None, props=props,
                          slots=_slots(await _get_json(pool, "/slots")), verified=True,
                          **base)
    for path in ("/server_info", "/get_server_info"):
        info = await _get_json(pool, path)
        if isinstance(info, dict) and ("server_args" in info or "model_path" in info
                                       or "version" in info):
            running = info.get("max_running_requests")
            return ServerInfo(engine="sglang", build=_text(info.get("version")),
                              total_slots=running if isinstance(running, int) else None,
                              props=info, **base)
    version = await _get_json(pool, "/version")
    if isinstance(version, dict) and isinstance(version.get("version"), str):
        return ServerInfo(engine="vllm", build=version["version"], props=version, **base)
    return ServerInfo(engine="unknown", **base)


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None
