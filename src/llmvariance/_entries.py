"""``SuiteEntries``: a suite's entries in columns, each ``SuiteEntry`` made when read.

A 100,000-prompt suite held as 100,000 ``SuiteEntry`` objects, each with the prompt's
``VarianceCollector`` for its lazy report, costs about 2.2 KB a prompt (the entry 0.5 KB,
its empty ``KeptSamples`` 0.7 KB, the collector 1.5 KB). Here a prompt costs its id, a
reference to its request, and its collector frozen to bytes (``freeze``: pickled and
deflated against a typical collector's pickle, about 50 bytes for a prompt with one
distinct output plus what its outputs' texts add), so the entries of such a suite take
~20 MB instead of ~220 MB. Reading ``entries[i]`` thaws the collector and makes the
entry; its report is made when first read, as before. An entry read twice is made twice
(equal, not the same object): iterating over the entries keeps memory flat.
"""

from __future__ import annotations

import pickle
import zlib
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, overload

from pydantic import GetCoreSchemaHandler
from pydantic_core import core_schema

from ._analysis.collect import VarianceCollector
from ._analysis.report import VarianceReport
from ._kept import KeptSamples
from ._request import Request
from ._sample import Sample

if TYPE_CHECKING:
    from ._suite import SuiteEntry

__all__ = ["SuiteEntries", "freeze", "thaw"]


def _template() -> bytes:
    """A typical prompt's collector, pickled: the dictionary every frozen collector is
    compressed against (what they all spell out, class and field names above all)."""
    collector = VarianceCollector()
    for index in range(2):
        collector.add(Sample(index=index, text="an output", finish_reason="stop",
                             latency_s=0.5, request_id="a request"))
    return pickle.dumps(collector, protocol=pickle.HIGHEST_PROTOCOL)


_DICTIONARY = _template()
_WINDOW = -15  # raw deflate: no header or checksum, a few bytes less per prompt


def freeze(collector: VarianceCollector) -> bytes:
    """The collector as bytes: pickled, then deflated against a typical collector's pickle
    (about 50 bytes for a prompt with one distinct output, 640 pickled alone; 14 µs)."""
    packer = zlib.compressobj(1, zlib.DEFLATED, _WINDOW, 9, zlib.Z_DEFAULT_STRATEGY,
                              _DICTIONARY)
    return packer.compress(pickle.dumps(collector, protocol=pickle.HIGHEST_PROTOCOL)
                           ) + packer.flush()


def thaw(frozen: bytes) -> VarianceCollector:
    """The collector ``freeze`` was given (equal in every field)."""
    unpacker = zlib.decompressobj(_WINDOW, _DICTIONARY)
    # bytes this process made with freeze, never read from outside
    collector = pickle.loads(unpacker.decompress(frozen) + unpacker.flush())  # noqa: S301
    assert isinstance(collector, VarianceCollector)
    return collector


Report = bytes | VarianceReport | None
"""Per entry: its frozen collector, the report it was given, or none."""


class SuiteEntries(Sequence["SuiteEntry"]):
    """A suite's entries, in suite order: reads as a list of ``SuiteEntry``, holds columns.

    Indexing, slicing (a list), ``len``, iteration, ``==`` with a list, pickling and JSON
    (as a list of entries) work as for a list; it cannot be changed.
    """

    __slots__ = ("_ids", "_positions", "_reports", "_requests", "_samples")

    def __init__(self) -> None:
        self._ids: list[str] = []
        self._requests: list[Request] = []
        self._samples: list[KeptSamples | None] = []
        """None for an entry without samples (``keep_samples=False``)."""
        self._reports: list[Report] = []
        self._positions: dict[str, int] | None = None

    def add(self, rid: str, request: Request, samples: KeptSamples | None,
            report: VarianceCollector | VarianceReport | None) -> None:
        """Append an entry; a collector is frozen at once (and can be dropped)."""
        self._ids.append(rid)
        self._requests.append(request)
        self._samples.append(samples if samples is not None and len(samples) else None)
        self._reports.append(freeze(report) if isinstance(report, VarianceCollector)
                             else report)
        self._positions = None

    @classmethod
    def of(cls, entries: Iterable[SuiteEntry]) -> SuiteEntries:
        """Entries made elsewhere (a list, JSON), held in columns."""
        if isinstance(entries, SuiteEntries):
            return entries
        out = cls()
        for entry in entries:
            out.add(entry.id, entry.request, entry.samples, entry._report)
        return out

    # -- reading ----------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._ids)

    @overload
    def __getitem__(self, position: int) -> SuiteEntry: ...

    @overload
    def __getitem__(self, position: slice) -> list[SuiteEntry]: ...

    def __getitem__(self, position: int | slice) -> SuiteEntry | list[SuiteEntry]:
        if isinstance(position, slice):
            return [self._entry(i) for i in range(*position.indices(len(self._ids)))]
        size = len(self._ids)
        if not -size <= position < size:
            raise IndexError("suite entry position out of range")
        return self._entry(position % size)

    def __iter__(self) -> Iterator[SuiteEntry]:
        return (self._entry(i) for i in range(len(self._ids)))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence) or isinstance(other, str | bytes):
            return NotImplemented
        return len(self) == len(other) and all(a == b for a, b in zip(self, other,
                                                                          strict=True))

    __hash__ = None  # type: ignore[assignment]  # compared by value, like a list

    def __repr__(self) -> str:
        return f"<SuiteEntries {len(self._ids)} entries>"

    def __getstate__(self) -> dict[str, Any]:
        # collectors as plain pickles: another process may hold another dictionary
        reports = [pickle.dumps(thaw(r), protocol=pickle.HIGHEST_PROTOCOL)
                   if isinstance(r, bytes) else r for r in self._reports]
        return {"ids": self._ids, "requests": self._requests, "samples": self._samples,
                "reports": reports}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._ids, self._requests = state["ids"], state["requests"]
        self._samples, self._positions = state["samples"], None
        self._reports = [freeze(pickle.loads(r)) if isinstance(r, bytes)  # noqa: S301
                         else r for r in state["reports"]]

    def find(self, rid: str) -> SuiteEntry:
        """The entry with id ``rid``; ``KeyError`` when there is none."""
        if self._positions is None:  # built once: a lookup per id stays linear over a suite
            self._positions = {r: i for i, r in enumerate(self._ids)}
        position = self._positions.get(rid)
        if position is None:
            raise KeyError(rid)
        return self._entry(position)

    @property
    def ids(self) -> list[str]:
        """The entries' ids, in suite order."""
        return list(self._ids)

    def _entry(self, position: int) -> SuiteEntry:
        from ._suite import SuiteEntry

        report = self._reports[position]
        samples = self._samples[position]
        return SuiteEntry._of(self._ids[position], self._requests[position],
                              KeptSamples(0) if samples is None else samples,
                              thaw(report) if isinstance(report, bytes) else report)

    # -- as a pydantic field ----------------------------------------------------------------

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler
                                     ) -> core_schema.CoreSchema:
        from ._suite import SuiteEntry

        as_list = handler.generate_schema(list[SuiteEntry])
        return core_schema.union_schema(
            [core_schema.is_instance_schema(cls),
             core_schema.no_info_after_validator_function(cls.of, as_list)],
            serialization=core_schema.plain_serializer_function_ser_schema(
                list, return_schema=as_list))
