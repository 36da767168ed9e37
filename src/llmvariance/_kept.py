"""Kept samples in columns: what a run holds in memory, each ``Sample`` built when read.

A pydantic ``Sample`` costs ~4.5 KB in memory (its ``__dict__``, its fields-set, a
``Usage`` model, boxed floats). ``KeptSamples`` keeps the same information as columns:

- the text, one shared string per distinct output (identical outputs cost one pointer);
- the fields most samples share — finish reason, fingerprint, model, usage, endpoint,
  condition, request id, attempts, error — as one small integer into a table of the
  distinct combinations seen;
- index and latency in numpy arrays; ttft/itl and ``response_id`` only once a sample
  has them;
- tokens and logprobs, when a sample has them, as a few packed buffers: token lengths
  (int32), chosen-token logprobs (float64), and per position the alternatives' lengths,
  joined text and logprobs; identical tokenizations and alternative sets are shared.

It is a read-only ``Sequence[Sample]``: indexing builds the ``Sample`` (equal, field for
field, to the one that was kept), slicing and ``+`` give lists, and it compares equal to
a list of the same samples (``list(result.samples)`` for a list to change).
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterable, Iterator, Sequence
from itertools import chain
from typing import Any, overload

import numpy as np
import numpy.typing as npt
from pydantic import GetCoreSchemaHandler
from pydantic_core import core_schema

from ._sample import Sample, SampleError, Usage

__all__ = ["KeptSamples"]

_Profile = tuple[str | None, str | None, str | None, str | None, str | None, str | None,
                 int, SampleError | None, tuple[int | None, ...] | None, int | None]
"""finish_reason, system_fingerprint, model, endpoint, condition, request_id, attempts,
error, usage (as a tuple), block: the fields that take few distinct values over a run."""

_Packed = tuple[Any, ...]
"""One sample's tokens and logprobs: see ``_pack``."""


def _usage_key(usage: Usage | None) -> tuple[int | None, ...] | None:
    if usage is None:
        return None
    return (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens,
            usage.cache_read_tokens, usage.cache_write_tokens)


class KeptSamples(Sequence[Sample]):
    """A run's kept samples, compactly; reads as a list of ``Sample`` (see the module)."""

    __slots__ = ("_codes", "_index", "_interned", "_latency", "_packed", "_profile_codes",
                 "_profiles", "_response_ids", "_size", "_texts", "_timing")

    def __init__(self, size: int) -> None:
        self._size = size
        # columns grow as positions fill (a run of 10**9 that stops early costs little)
        capacity = min(size, 1024)
        self._codes: npt.NDArray[np.int32] = np.full(capacity, -1, dtype=np.int32)
        """Per position: the sample's profile, -1 while the position is empty."""
        self._index: npt.NDArray[np.int64] = np.zeros(capacity, dtype=np.int64)
        self._latency: npt.NDArray[np.float64] = np.zeros(capacity, dtype=np.float64)
        self._texts: list[str | None] = [None] * capacity
        self._profiles: list[tuple[_Profile, Usage | None]] = []
        self._profile_codes: dict[_Profile, int] = {}
        self._interned: dict[Any, Any] = {}
        """Texts, token lengths and alternative sets: one object per distinct value."""
        self._timing: npt.NDArray[np.float64] | None = None
        """ttft_s, itl_mean_s, itl_max_s per position (NaN: None), once one is set."""
        self._response_ids: list[str | None] | None = None
        self._packed: list[_Packed | None] | None = None

    @classmethod
    def of(cls, samples: Iterable[Sample]) -> KeptSamples:
        """The given samples, in the given order."""
        items = list(samples)
        kept = cls(len(items))
        for position, sample in enumerate(items):
            kept.put(position, sample)
        return kept

    # -- filling (the sampler's hot path: a few µs a sample) --------------------------------

    def _intern(self, value: Any) -> Any:
        return self._interned.setdefault(value, value)

    def _grow(self, position: int) -> None:
        if not 0 <= position < self._size:
            raise IndexError(f"position {position} is outside 0..{self._size - 1}")
        old = self._codes.size
        new = min(self._size, max(2 * old, position + 1))
        self._codes = np.concatenate((self._codes, np.full(new - old, -1, dtype=np.int32)))
        self._index = np.concatenate((self._index, np.zeros(new - old, dtype=np.int64)))
        self._latency = np.concatenate((self._latency, np.zeros(new - old)))
        self._texts.extend([None] * (new - old))
        if self._timing is not None:
            self._timing = np.concatenate((self._timing, np.full((new - old, 3), math.nan)))
        if self._response_ids is not None:
            self._response_ids.extend([None] * (new - old))
        if self._packed is not None:
            self._packed.extend([None] * (new - old))

    def put(self, position: int, sample: Sample) -> None:
        """Keep ``sample`` at ``position`` (its index, in a run)."""
        if position >= self._codes.size:
            self._grow(position)
        usage = sample.usage
        profile: _Profile = (sample.finish_reason, sample.system_fingerprint, sample.model,
                             sample.endpoint, sample.condition, sample.request_id,
                             sample.attempts, sample.error, _usage_key(usage), sample.block)
        code = self._profile_codes.get(profile)
        if code is None:
            code = self._profile_codes[profile] = len(self._profiles)
            self._profiles.append((profile, usage))
        self._codes[position] = code
        self._index[position] = sample.index
        self._latency[position] = sample.latency_s
        text = sample.text
        self._texts[position] = None if text is None else self._intern(text)
        ttft, itl_mean, itl_max = sample.ttft_s, sample.itl_mean_s, sample.itl_max_s
        if ttft is not None or itl_mean is not None or itl_max is not None:
            if self._timing is None:
                self._timing = np.full((self._codes.size, 3), math.nan)
            self._timing[position] = [math.nan if v is None else v
                                      for v in (ttft, itl_mean, itl_max)]
        if sample.response_id is not None:
            if self._response_ids is None:
                self._response_ids = [None] * self._codes.size
            self._response_ids[position] = sample.response_id
        if (sample.tokens is not None or sample.token_logprobs is not None
                or sample.top_logprobs is not None or sample.token_ids is not None):
            if self._packed is None:
                self._packed = [None] * self._codes.size
            self._packed[position] = self._pack(sample)

    def _pack(self, sample: Sample) -> _Packed:
        """(token lengths, the tokens' text unless it is the sample's text, chosen
        logprobs, alternatives, token ids); each part None when the sample has none of it."""
        lengths = joined = logprobs = alternatives = ids = None
        tokens = sample.tokens
        if tokens is not None:
            lengths = self._intern(_int32(map(len, tokens)))
            text = "".join(tokens)
            joined = None if text == sample.text else self._intern(text)
        if sample.token_logprobs is not None:
            logprobs = _floats(sample.token_logprobs)
        top = sample.top_logprobs
        if top is not None:
            keys = list(chain.from_iterable(top))
            values = array("d", list(chain.from_iterable(map(dict.values, top))))
            alternatives = (self._intern(_int32(map(len, top))),
                            self._intern(_int32(map(len, keys))),
                            self._intern("".join(keys)), values.tobytes())
        if sample.token_ids is not None:
            ids = np.asarray(sample.token_ids, dtype=np.int64).tobytes()
        return lengths, joined, logprobs, alternatives, ids

    # -- reading ----------------------------------------------------------------------------

    def __len__(self) -> int:
        return self._size

    @overload
    def __getitem__(self, position: int) -> Sample: ...

    @overload
    def __getitem__(self, position: slice) -> list[Sample]: ...

    def __getitem__(self, position: int | slice) -> Sample | list[Sample]:
        if isinstance(position, slice):
            return [self._sample(i) for i in range(*position.indices(self._size))]
        size = self._size
        if not -size <= position < size:
            raise IndexError("sample position out of range")
        return self._sample(position % size)

    def __iter__(self) -> Iterator[Sample]:
        return (self._sample(i) for i in range(self._size))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence) or isinstance(other, str | bytes):
            return NotImplemented
        return len(self) == len(other) and all(a == b for a, b in zip(self, other,
                                                                          strict=True))

    __hash__ = None  # type: ignore[assignment]  # mutable while a run fills it, like a list

    def __add__(self, other: object) -> list[Sample]:
        """A list of these samples then ``other``'s, as ``list + list`` gives."""
        if not isinstance(other, Sequence) or isinstance(other, str | bytes):
            return NotImplemented
        return [*self, *other]

    def __radd__(self, other: object) -> list[Sample]:
        if not isinstance(other, Sequence) or isinstance(other, str | bytes):
            return NotImplemented
        return [*other, *self]

    def __repr__(self) -> str:
        distinct = len({id(t) for t in self._texts if t is not None})
        return f"<KeptSamples {self._size} samples, {distinct} distinct texts>"

    def filled(self) -> KeptSamples:
        """The positions that hold a sample, in order, as kept samples of their own (a run
        that stopped early holds fewer than it was sized for)."""
        held = np.flatnonzero(self._codes >= 0).tolist()
        return KeptSamples.of(self._sample(position) for position in held)

    @property
    def complete(self) -> bool:
        """True when every position holds a sample."""
        return self._codes.size == self._size and bool((self._codes >= 0).all())

    def _sample(self, position: int) -> Sample:
        code = int(self._codes[position]) if position < self._codes.size else -1
        if code < 0:
            raise LookupError(f"no sample was kept at position {position}")
        profile, usage = self._profiles[code]
        (finish, fingerprint, model, endpoint, condition, request_id, attempts, error, _,
         block) = profile
        ttft = itl_mean = itl_max = None
        if self._timing is not None:
            ttft, itl_mean, itl_max = (None if math.isnan(v) else v
                                       for v in self._timing[position].tolist())
        tokens = logprobs = top = ids = None
        packed = self._packed[position] if self._packed is not None else None
        text = self._texts[position]
        if packed is not None:
            tokens, logprobs, top, ids = _unpack(packed, text)
        return Sample.model_construct(
            index=int(self._index[position]), text=text, tokens=tokens, token_ids=ids,
            token_logprobs=logprobs, top_logprobs=top, finish_reason=finish,
            system_fingerprint=fingerprint, model=model, usage=usage, endpoint=endpoint,
            condition=condition, request_id=request_id, block=block,
            latency_s=float(self._latency[position]), ttft_s=ttft, itl_mean_s=itl_mean,
            itl_max_s=itl_max,
            response_id=None if self._response_ids is None else self._response_ids[position],
            attempts=attempts, error=error)

    # -- as a pydantic field ----------------------------------------------------------------

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler
                                     ) -> core_schema.CoreSchema:
        as_list = handler.generate_schema(list[Sample])
        return core_schema.union_schema(
            [core_schema.is_instance_schema(cls),
             core_schema.no_info_after_validator_function(cls.of, as_list)],
            serialization=core_schema.plain_serializer_function_ser_schema(
                list, return_schema=as_list))


def _int32(values: Iterable[int]) -> bytes:
    """int32 bytes (``array`` from a list: both steps in C; ``np.fromiter`` calls back)."""
    return array("i", list(values)).tobytes()


def _floats(values: list[float | None]) -> bytes | list[float | None]:
    """float64 bytes with NaN for None; the list itself when it holds a real NaN."""
    try:
        array = np.asarray(values, dtype=np.float64)
    except TypeError:  # a None (e.g. the first token of an echoed prompt)
        if any(v is not None and v != v for v in values):
            return values
        return np.asarray([math.nan if v is None else v for v in values],
                          dtype=np.float64).tobytes()
    if np.isnan(array).any():
        return values
    return array.tobytes()


def _split(text: str, lengths: bytes) -> list[str]:
    ends = np.cumsum(np.frombuffer(lengths, dtype=np.int32)).tolist()
    return [text[a:b] for a, b in zip([0, *ends][:len(ends)], ends, strict=True)]


def _unpack(packed: _Packed, text: str | None
            ) -> tuple[list[str] | None, list[float | None] | None,
                       list[dict[str, float]] | None, list[int] | None]:
    lengths, joined, raw_logprobs, alternatives, raw_ids = packed
    tokens = logprobs = top = ids = None
    if raw_ids is not None:
        ids = np.frombuffer(raw_ids, dtype=np.int64).tolist()
    if lengths is not None:
        tokens = _split(joined if joined is not None else text or "", lengths)
    if isinstance(raw_logprobs, bytes):
        logprobs = [None if v != v else v
                    for v in np.frombuffer(raw_logprobs, dtype=np.float64).tolist()]
    elif raw_logprobs is not None:
        logprobs = list(raw_logprobs)
    if alternatives is not None:
        counts, key_lengths, key_text, values = alternatives
        keys = _split(key_text, key_lengths)
        floats = np.frombuffer(values, dtype=np.float64).tolist()
        top = []
        start = 0
        for count in np.frombuffer(counts, dtype=np.int32).tolist():
            end = start + count
            top.append(dict(zip(keys[start:end], floats[start:end], strict=True)))
            start = end
    return tokens, logprobs, top, ids
