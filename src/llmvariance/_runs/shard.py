"""Shards: a fixed partition of a study's (request, index) pairs among K runs, and its record.

A study of R requests x n samples is R·n pairs (request position r, index i). Shard k of K
sends exactly the pairs with ``(r + i) mod K == k`` (the ``diagonal`` partition): every
request's samples are spread over every shard (so a shard that meets another backend, key
or region touches every prompt alike, rather than posing as a property of some prompts),
each shard gets R·n/K pairs to within one per request, and the pairs of a larger n (a run
resumed with more samples) fall into the same shards as before. A one-request run is R = 1:
index i goes to shard i mod K. A designed experiment (``batch_effect``) is partitioned by
its blocks instead: shard k runs the blocks b with ``b mod K == k``, each whole (see
``_experiment``), and the calibration request in shard 0. A server matrix is partitioned by
its configurations: configuration j in shard j mod K.

Rate limits given to a sharded run are divided among its K shards (each keeps 1/K of the
requests and tokens per minute), so K shards sent at once keep the limit together, unless
the limit is per shard (``Shard(..., limits="per_shard")``, ``--limits-per-shard``).

Each shard's run file names its shard in the header, ``"shard": {"index": k, "count": K,
"partition": "diagonal"}``, and every new run file names its ``study``: a digest of what
was asked (the requests and the design, not the endpoint, n or the partition), so shards
of one study are recognised, and shards of different ones refused, when they are merged.
"""

from __future__ import annotations

import hashlib
import re
from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, model_validator

from .._client.ratelimit import RateLimit
from .._errors import ConfigError

__all__ = ["PARTITIONS", "Shard", "ShardSpec", "shard_of", "study_id"]

PARTITIONS = {
    "diagonal": "pair (request position r, index i) in shard (r + i) mod K",
    "blocks": "block b (whole, every condition) in shard b mod K; the calibration in shard 0",
    "configurations": "configuration j (whole) in shard j mod K",
}
"""The partitions a shard record may name, and what each means."""


class Shard(BaseModel):
    """Shard ``index`` of ``count`` (0-based: ``Shard(index=0, count=4)`` is the first of
    four). ``limits``: whether a rate limit given to the run is ``divided`` among the
    shards (the default) or applies ``per_shard``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    index: Annotated[int, Field(ge=0)]
    count: Annotated[int, Field(ge=1)]
    limits: Literal["divided", "per_shard"] = "divided"

    @model_validator(mode="after")
    def _index_in_range(self) -> Shard:
        if self.index >= self.count:
            raise ValueError(f"shard index must be 0..{self.count - 1} for {self.count} "
                             f"shards, got {self.index}")
        return self

    def owns(self, position: int, index: int) -> bool:
        """Whether pair (request position, sample index) is this shard's (``diagonal``)."""
        return (position + index) % self.count == self.index

    def pairs(self, requests: int, n: int) -> int:
        """How many of ``requests`` x ``n`` pairs are this shard's."""
        count, k = self.count, self.index
        full, rest = divmod(requests, count)
        # for each index i, the positions r < requests with (r + i) % count == k
        return sum(full + ((k - i) % count < rest) for i in range(n))

    def rate_limit(self, limit: RateLimit | None) -> RateLimit | None:
        """This shard's share of ``limit``: 1/count of each rate, unless ``per_shard``."""
        if limit is None or self.limits == "per_shard" or self.count == 1:
            return limit
        update: dict[str, Any] = {}
        for name in ("requests_per_minute", "tokens_per_minute"):
            value = getattr(limit, name)
            if value is not None:
                update[name] = value / self.count
        return limit.model_copy(update=update)

    def record(self, partition: str = "diagonal") -> dict[str, Any]:
        """What a run file's header says about this shard."""
        return {"index": self.index, "count": self.count, "partition": partition}

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


ShardSpec = Shard | tuple[int, int] | str
"""A shard as ``Shard(...)``, ``(k, K)`` or ``"k/K"``."""

_TEXT = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


def shard_of(value: ShardSpec | None, field: str = "shard") -> Shard | None:
    """``value`` as a ``Shard`` (None stays None); ``ConfigError`` naming ``field`` when it
    is not one."""
    if value is None or isinstance(value, Shard):
        return value
    parts: tuple[object, ...]
    if isinstance(value, str):
        found = _TEXT.match(value)
        if found is None:
            raise ConfigError(field, f"must be k/K (shard k of K, 0-based), got {value!r}")
        parts = (int(found.group(1)), int(found.group(2)))
    elif isinstance(value, tuple) and len(value) == 2:
        parts = value
    else:
        raise ConfigError(field, "must be (k, K), 'k/K' or a Shard: shard k of K, 0-based; "
                          f"got {value!r}")
    count = ConfigError.check_int(field, parts[1], 1, " shards")
    k = ConfigError.check_int(field, parts[0], 0, " (0-based)")
    if k >= count:
        raise ConfigError(field, f"shard index must be 0..{count - 1} for {count} shards, "
                          f"got {k}")
    return Shard(index=k, count=count)


def study_id(kind: str, requests: str, design: dict[str, Any] | None = None) -> str:
    """The study a run file belongs to: SHA-256 of what it asks (``kind``: sample, suite,
    batch_effect; ``requests``: the request's or suite's digest; the experiment's design)."""
    body = orjson.dumps({"kind": kind, "requests": requests, "design": design or {}},
                        option=orjson.OPT_SORT_KEYS)
    return f"sha256:{hashlib.sha256(body).hexdigest()}"
