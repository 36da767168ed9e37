"""How to send a request to an engine with its caches cold: one policy per engine.

The ``cold`` condition uses these. A policy either adds fields to the request's body (the
engine then ignores what it has cached for that request) or calls the engine's own
endpoints before each request (``flush``), or both:

================== ================================== ====================================
policy             what it does                       verified
================== ================================== ====================================
``llamacpp``       ``"cache_prompt": false`` in the   yes (build b11312): the slot re-
                   body                               processes the whole prompt instead
                                                      of reusing the common prefix of the
                                                      last request it served (llama.cpp's
                                                      own README: prompt processing and
                                                      token generation batch sizes give
                                                      logits that are not bit-for-bit
                                                      equal)
``llamacpp_erase`` ``POST /slots/{id}?action=erase``  yes: needs ``--slot-save-path``
                   for every slot of ``/props``'s     (``LlamaCppServer(slot_save_path=)``;
                   ``total_slots``                    else 501); the RAM prompt cache
                                                      (``--cache-ram``, on by default) can
                                                      still restore a prompt into an erased
                                                      slot, so pair it with ``cache_ram=0``
``sglang``         ``POST /flush_cache``              unverified (GPU): SGLang refuses it
                                                      while requests are running
``vllm``           ``POST /reset_prefix_cache``       unverified (GPU): served only with
                                                      ``VLLM_SERVER_DEV_MODE=1``
================== ================================== ====================================
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from .._errors import ConfigError

__all__ = ["CACHE_POLICIES", "CachePolicy", "cache_policy"]


class CachePolicy(BaseModel):
    """What makes one engine answer a request from cold caches."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    body: dict[str, Any] = {}
    """Fields added to the request's body (its ``extra``)."""
    flush: tuple[str, ...] = ()
    """Paths (at the server's root) to POST before each request; ``{slot}`` in one is
    replaced by each slot id in turn (``total_slots`` from llama.cpp's ``/props``)."""
    verified: bool = False
    """Checked against a running engine (llama.cpp here; GPU engines are not)."""
    note: str = ""


CACHE_POLICIES: dict[str, CachePolicy] = {
    "llamacpp": CachePolicy(
        name="llamacpp", body={"cache_prompt": False}, verified=True,
        note="each request re-processes its whole prompt (no prefix reuse)"),
    "llamacpp_erase": CachePolicy(
        name="llamacpp_erase", flush=("/slots/{slot}?action=erase",), verified=True,
        note="needs --slot-save-path; pair with --cache-ram 0, whose RAM prompt cache can "
             "restore an erased slot"),
    "sglang": CachePolicy(
        name="sglang", flush=("/flush_cache",),
        note="unverified: SGLang refuses a flush while requests run"),
    "vllm": CachePolicy(
        name="vllm", flush=("/reset_prefix_cache",),
        note="unverified: served only with VLLM_SERVER_DEV_MODE=1"),
}


def cache_policy(name: str) -> CachePolicy:
    """The policy ``name`` (a key of ``CACHE_POLICIES``); ``ConfigError`` naming them."""
    try:
        return CACHE_POLICIES[name]
    except KeyError:
        raise ConfigError("cache_policy", f"unknown {name!r}; choose from "
                          f"{sorted(CACHE_POLICIES)}") from None
