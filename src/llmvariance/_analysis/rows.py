"""The distinct outputs as token rows: 64-bit token keys in numpy, not Python tokens.

Every token of every distinct output gets a 64-bit key, equal for equal tokens, so the
token metrics (prefixes, per-position entropy, the tree's order) are array operations,
not Python loops over tokens. Provider tokens get exact keys (1, 2, ... by first
appearance). Word tokens (the fallback tokenizer, ``metrics.word_tokens``) are found for
a few million characters of text at a time from each character's class (whitespace,
word, other), as the regular expression would find them; a word token of at most 7
characters below U+0100 (of 1 character otherwise) is its own key, exactly, and a longer
one a 63-bit hash of its characters (two different long tokens share a key with
probability about 2**-63).

For word tokens only the first ``PREFIX`` keys of each row are kept: per-position
entropy is counted chunk by chunk as the texts are tokenized, and the rare rows that
agree past ``PREFIX`` tokens are tokenized again when a comparison needs them. Memory
is then ~130 bytes a distinct output, however long the outputs are. The common prefix
(in characters) of each pair of neighbouring texts is found from the same encoded chunk.

Cost (100,000 all-distinct texts of 1.4 kB, ``benchmarks/metrics_scale.py``): about ten
passes over the characters (join, encode, a ``bytes.translate`` to classes, two bitwise
passes, ``nonzero`` on a bool array: numpy's nonzero is ~7x slower on uint8) and a few
over the tokens; per-position counts sort every position of a chunk in one call.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from itertools import pairwise
from typing import Any

import numpy as np
import numpy.typing as npt

from .metrics import pair_prefix_length, word_tokens

__all__ = ["PREFIX", "TokenRows"]

IntArray = npt.NDArray[np.int64]
KeyArray = npt.NDArray[np.uint64]
FloatArray = npt.NDArray[np.float64]

PREFIX = 16
"""Keys kept per row for sorting and comparing; rows agreeing further are re-keyed."""
_CHUNK_CHARS = 1 << 21
"""Texts are tokenized in groups of about this many characters, so temporaries stay small."""
_SMALL_CHARS = 1 << 14
"""Up to this many characters in all, texts are tokenized one by one by the pattern."""
_WORKERS = min(2, os.cpu_count() or 1)
"""Threads tokenizing chunks of a large set of texts at once."""
_HASHED = np.uint64(1 << 63)
_LONG_TOKEN = 64
"""Tokens longer than this (in characters) are keyed in Python: rare, and a vectorized
hash would take a pass per 8 bytes of the longest one."""


def _char_class(char: str) -> int:
    """0 whitespace, 1 word, 2 other: the classes ``word_tokens``' pattern tells apart."""
    if re.match(r"\s", char):
        return 0
    return 1 if re.match(r"\w", char) else 2


_LATIN1_CLASSES = np.array([_char_class(chr(c)) for c in range(256)], dtype=np.uint8)
_LATIN1_TABLE = _LATIN1_CLASSES.tobytes()
"""``bytes.translate`` table: each Latin-1 byte to its class."""
_MASKS = np.array([(1 << 8 * min(k, 8)) - 1 for k in range(_LONG_TOKEN + 2)], dtype=np.uint64)
"""The low ``min(k, 8)`` bytes of a block kept for a token (or a block's part) of k
characters; k is clipped to the table, whose last entries keep all 8."""
_WIDE_MASKS = np.array([(1 << 32 * min(k, 2)) - 1 for k in range(_LONG_TOKEN + 2)],
                       dtype=np.uint64)
"""The same for 4-byte characters: ``min(k, 2)`` of them."""
_LENGTH_BITS = np.array([(k & 0xFF) << 56 for k in range(_LONG_TOKEN + 2)], dtype=np.uint64)
"""A short token's length in its key's top byte."""
_IS_LONG = {exact: np.array([exact < k <= _LONG_TOKEN for k in range(_LONG_TOKEN + 2)])
            for exact in (1, 7)}
"""Per token length: hashed in numpy (longer than ``exact`` characters, at most
``_LONG_TOKEN``)? The last entry, for every clipped length, is False."""


def _mix(x: KeyArray) -> KeyArray:
    """splitmix64's finalizer: every input bit reaches every output bit."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


Column = tuple[KeyArray, FloatArray]
"""One position's distinct keys (sorted) and their weighted counts."""


def _column_counts(keys: KeyArray, starts: IntArray, weights: FloatArray) -> list[Column]:
    """Per position, the weighted count of each key over rows ``keys[starts[i]:starts[i+1]]``
    (weight ``weights[i]``): the keys at that position sorted, runs of equal ones counted."""
    lengths = np.diff(starts)
    if not lengths.size or not lengths.max():
        return []
    width, rows = int(lengths.max()), lengths.size
    if width * rows > 2 * keys.size + 4096:  # ragged rows: a padded matrix would be large
        return _column_counts_ragged(keys, starts, weights)
    # positions x rows, 0 past a row's end (keys are never 0): every column sorted at once
    matrix = np.zeros((width, rows), dtype=np.uint64)
    where = np.arange(keys.size, dtype=np.int64)
    where -= np.repeat(starts[:-1], lengths)  # each key's position in its row
    where *= rows
    where += np.repeat(np.arange(rows, dtype=np.int64), lengths)
    flat = matrix.reshape(-1)
    flat[where] = keys
    del where
    uniform = bool((weights == weights[0]).all())
    order = None
    if uniform:
        matrix.sort(axis=1)
    else:
        order = np.argsort(matrix, axis=1)
        matrix = np.take_along_axis(matrix, order, axis=1)
        flat = matrix.reshape(-1)
    first = np.empty(flat.size, dtype=bool)
    first[0] = True
    np.not_equal(flat[1:], flat[:-1], out=first[1:])
    first[::rows] = True  # a run never continues into the next position
    at = np.flatnonzero(first)
    del first
    if uniform:
        counts = np.diff(at, append=flat.size).astype(np.float64) * weights[0]
    else:
        assert order is not None
        counts = np.add.reduceat(weights[order].reshape(-1), at)
    found = flat[at]
    real = found != 0  # the padding's runs
    at, found, counts = at[real], found[real], counts[real]
    bounds = np.searchsorted(at, np.arange(width + 1, dtype=np.int64) * rows).tolist()
    return [(found[i:j], counts[i:j]) for i, j in pairwise(bounds)]


def _column_counts_ragged(keys: KeyArray, starts: IntArray, weights: FloatArray
                          ) -> list[Column]:
    """``_column_counts`` one position at a time: for rows of very different lengths."""
    lengths = np.diff(starts)
    by_length = np.argsort(-lengths, kind="stable")
    row_starts = starts[:-1][by_length]
    w = weights[by_length]
    uniform = bool((w == w[0]).all())
    width = int(lengths.max())
    reach = np.searchsorted(-lengths[by_length], -np.arange(width), side="left").tolist()
    out: list[Column] = []
    for t in range(width):
        m = reach[t]
        column = keys[row_starts[:m] + t]
        if uniform:
            column.sort()
            firsts = np.flatnonzero(np.concatenate(([True], column[1:] != column[:-1])))
            counts = np.diff(np.append(firsts, m)).astype(np.float64) * w[0]
            out.append((column[firsts], counts))
        else:
            by_key = np.argsort(column)
            column = column[by_key]
            firsts = np.flatnonzero(np.concatenate(([True], column[1:] != column[:-1])))
            out.append((column[firsts], np.add.reduceat(w[:m][by_key], firsts)))
    return out


def _entropies(chunks: list[list[Column]]) -> list[float]:
    """``H_t`` in bits for every position, from each chunk's column counts."""
    width = max((len(columns) for columns in chunks), default=0)
    out = []
    for t in range(width):
        parts = [columns[t] for columns in chunks if t < len(columns)]
        if len(parts) == 1:
            counts = parts[0][1]
        else:
            keys = np.concatenate([k for k, _ in parts])
            weights = np.concatenate([c for _, c in parts])
            by_key = np.argsort(keys)
            keys = keys[by_key]
            firsts = np.flatnonzero(np.concatenate(([True], keys[1:] != keys[:-1])))
            counts = np.add.reduceat(weights[by_key], firsts)
        value = 0.0
        if counts.size > 1:
            p = counts / counts.sum()
            value = max(0.0, float(-(p * np.log2(p)).sum()))
        out.append(value)
    return out


def _word_chunk(texts: Sequence[str], weights: FloatArray, wide: bool
                ) -> tuple[IntArray, KeyArray, list[Column], IntArray]:
    """One chunk of texts: tokens per text, the first keys, the column counts, and the
    common prefix (characters) of each pair of neighbouring texts."""
    text = _Text(texts, wide)
    keys, starts = _keys(text)
    return (np.diff(starts), _prefix(keys, starts), _column_counts(keys, starts, weights),
            _adjacent_chars(text))


class TokenRows:
    """The token keys of the distinct outputs (rows), built with each row's weight."""

    __slots__ = ("_entropy", "_full", "_texts", "_wide", "adjacent_chars", "lengths", "prefix")

    def __init__(self, lengths: IntArray, prefix: KeyArray, entropy: list[float],
                 full: tuple[KeyArray, IntArray] | None, texts: Sequence[str] | None,
                 wide: bool, adjacent_chars: IntArray | None = None) -> None:
        self.adjacent_chars = adjacent_chars
        """Word rows: the common prefix (characters) of each pair of neighbouring texts,
        found with the tokens; None for provider tokens."""
        self.lengths = lengths
        """Tokens per row."""
        self.prefix = prefix
        """rows x PREFIX: the first keys of each row, 0 past its end (keys are never 0)."""
        self._entropy = entropy
        self._full = full
        self._texts = texts
        self._wide = wide

    @property
    def count(self) -> int:
        return int(self.lengths.size)

    def per_position_entropy(self) -> list[float]:
        """``H_t`` in bits over the rows longer than t, each counted with its weight."""
        return list(self._entropy)

    # -- building -------------------------------------------------------------------------

    @classmethod
    def from_tokens(cls, sequences: Sequence[Sequence[str]], weights: Sequence[int]
                    ) -> TokenRows:
        """Provider tokens: key k for the k-th distinct token (from 1), exactly."""
        ids: dict[str, int] = {}
        lengths = np.fromiter(map(len, sequences), dtype=np.int64, count=len(sequences))
        keys = np.fromiter((ids.setdefault(t, len(ids) + 1) for seq in sequences for t in seq),
                           dtype=np.uint64, count=int(lengths.sum()))
        starts = np.concatenate(([0], np.cumsum(lengths))).astype(np.int64)
        entropy = _entropies([_column_counts(keys, starts, np.asarray(weights, np.float64))])
        return cls(lengths, _prefix(keys, starts), entropy, (keys, starts), None, False)

    @classmethod
    def from_words(cls, texts: Sequence[str], weights: Sequence[int]) -> TokenRows:
        """``word_tokens`` of every text, keyed (see the module docstring)."""
        lengths = np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))
        if int(lengths.sum()) <= _SMALL_CHARS:  # the regex: fewer steps than numpy's
            return cls.from_tokens([word_tokens(t) for t in texts], weights)
        wide = not all(t.isascii() for t in texts)  # one width for all: keys must agree
        w = np.asarray(weights, dtype=np.float64)
        chunks = _chunks(lengths)
        jobs = [(texts[i:j], w[i:j], wide) for i, j in chunks]
        if len(jobs) > 2 and _WORKERS > 1:
            # numpy lets go of the GIL inside each array operation: chunks in parallel
            with ThreadPoolExecutor(_WORKERS) as pool:
                parts = list(pool.map(lambda job: _word_chunk(*job), jobs))
        else:
            parts = [_word_chunk(*job) for job in jobs]
        if not parts:
            return cls(np.zeros(0, dtype=np.int64), np.zeros((0, PREFIX), dtype=np.uint64),
                       [], None, texts, wide)
        # neighbours in different chunks: one pair per chunk boundary
        across = [np.array([pair_prefix_length(texts[i - 1], texts[i])], dtype=np.int64)
                  for i, _ in chunks[1:]]
        adjacent = [part for k, p in enumerate(parts) for part in (
            (p[3], across[k]) if k < len(across) else (p[3],))]
        return cls(np.concatenate([p[0] for p in parts]),
                   np.concatenate([p[1] for p in parts]),
                   _entropies([p[2] for p in parts]), None, texts, wide,
                   np.concatenate(adjacent))

    def full(self, rows: IntArray) -> tuple[KeyArray, IntArray]:
        """The whole key rows of ``rows``: flat keys and their starts."""
        if self._full is not None:
            keys, starts = self._full
            lengths = self.lengths[rows]
            offsets = np.concatenate(([0], np.cumsum(lengths))).astype(np.int64)
            index = (np.repeat(starts[rows] - offsets[:-1], lengths)
                     + np.arange(int(offsets[-1])))
            return keys[index], offsets
        assert self._texts is not None
        texts = self._texts
        return _word_keys([texts[r] for r in rows.tolist()], self._wide)

    # -- comparing ------------------------------------------------------------------------

    def prefix_lengths(self, a: IntArray, b: IntArray) -> IntArray:
        """For each k, the common prefix length (in tokens) of rows ``a[k]`` and ``b[k]``.

        The first ``PREFIX`` keys of every pair, then (for the pairs that still agree)
        8 more, 16 more and so on: work follows the prefixes, not the rows' lengths.
        """
        limit = np.minimum(self.lengths[a], self.lengths[b])
        differ = self.prefix[a] != self.prefix[b]  # past a row's end both may be 0: limit
        first = np.where(differ.any(axis=1), differ.argmax(axis=1), PREFIX)
        out = np.minimum(first, limit)
        agree = first == PREFIX
        going = np.flatnonzero(agree & (limit > PREFIX))
        if going.size:
            rows, inverse = np.unique(np.concatenate((a[going], b[going])),
                                      return_inverse=True)
            keys, starts = self.full(rows)
            out[going] = _prefix_lengths(keys, starts, inverse[:going.size],
                                         inverse[going.size:], PREFIX)
        return out

    def order(self, tie: Sequence[str]) -> list[int]:
        """Rows sorted by their key sequences (a row before its extensions); rows with
        equal sequences by ``tie``.

        Sorts by the first ``PREFIX`` keys, then each run that still agrees by its next
        keys: the work follows how far rows agree, not how long they are.
        """
        windows = self.prefix.byteswap()  # big-endian: bytes order is key order
        # fixed-size byte strings compare as their bytes (trailing zeros are padding on
        # both sides), and numpy sorts them without a Python key per row
        rows = np.argsort(windows.view(f"S{8 * PREFIX}").reshape(-1), kind="stable")
        out: list[int] = rows.tolist()
        ordered = windows[rows]
        same = np.zeros(rows.size + 1, dtype=np.int8)  # same[p + 1]: rows p, p + 1 agree
        same[1:-1] = (ordered[1:] == ordered[:-1]).all(axis=1)
        edges = np.diff(same, append=np.int8(0))
        lengths = self.lengths
        for i, j in zip(np.flatnonzero(edges == 1).tolist(),
                        (np.flatnonzero(edges == -1) + 1).tolist(), strict=True):
            run = out[i:j]
            if lengths[run[0]] >= PREFIX:  # equal so far, and they go on
                keys, starts = self.full(np.asarray(run, dtype=np.int64))
                local = _order(keys, starts, [tie[r] for r in run], PREFIX)
                out[i:j] = [run[k] for k in local]
            else:  # rows whose whole sequences are equal
                out[i:j] = sorted(run, key=tie.__getitem__)
        return out


def _chunks(lengths: IntArray) -> list[tuple[int, int]]:
    """``(i, j)`` ranges of texts (of ``lengths`` characters) of about ``_CHUNK_CHARS``
    characters each: each ends with the text that brings it to ``_CHUNK_CHARS``, or with
    the last text."""
    ends = np.cumsum(lengths)
    count = int(lengths.size)
    out = []
    i, base = 0, 0
    while i < count:
        j = min(int(np.searchsorted(ends, base + _CHUNK_CHARS, side="left")) + 1, count)
        out.append((i, j))
        i, base = j, int(ends[j - 1])
    return out


def _prefix(keys: KeyArray, starts: IntArray) -> KeyArray:
    """rows x PREFIX matrix of the first keys of each row, 0 past its end."""
    lengths = np.diff(starts)
    out = np.zeros((lengths.size, PREFIX), dtype=np.uint64)
    for t in range(PREFIX):
        reach = lengths > t
        out[reach, t] = keys[starts[:-1][reach] + t]
    return out


def _prefix_lengths(keys: KeyArray, starts: IntArray, a: IntArray, b: IntArray,
                    position: int) -> IntArray:
    """Common prefix lengths of rows ``a[k]``, ``b[k]`` of flat ``keys``, known to agree
    on their first ``position`` keys."""
    lengths = np.diff(starts)
    limit = np.minimum(lengths[a], lengths[b])
    out = limit.copy()
    active = np.arange(a.size)
    width = 8
    while active.size:
        span = np.clip(limit[active] - position, 0, width)
        total = int(span.sum())
        if total == 0:
            break
        owner = np.repeat(np.arange(active.size), span)
        ends = np.cumsum(span)
        offset = np.arange(total) - np.repeat(ends - span, span) + position
        pairs = active[owner]
        differ = keys[starts[a[pairs]] + offset] != keys[starts[b[pairs]] + offset]
        first = np.full(active.size, np.iinfo(np.int64).max)
        np.minimum.at(first, owner[differ], offset[differ])
        found = first < np.iinfo(np.int64).max
        out[active[found]] = first[found]
        # still agreeing and with tokens left to compare: look further
        active = active[~found & (limit[active] > position + width)]
        position += width
        width *= 2
    return out


def _order(keys: KeyArray, starts: IntArray, tie: Sequence[str], depth: int) -> list[int]:
    """Rows of flat ``keys`` (all agreeing on their first ``depth`` keys) in order."""
    bounds, lengths = starts.tolist(), np.diff(starts).tolist()

    def sort(rows: list[int], depth: int, width: int) -> list[int]:
        seen = [keys[bounds[r] + depth: bounds[r] + min(depth + width, lengths[r])]
                .byteswap().tobytes() for r in rows]
        by_window = sorted(range(len(rows)), key=seen.__getitem__)
        out: list[int] = []
        i = 0
        while i < len(by_window):
            first = seen[by_window[i]]
            j = i + 1
            while j < len(by_window) and seen[by_window[j]] == first:
                j += 1
            run = [rows[k] for k in by_window[i:j]]
            if len(run) > 1 and len(first) == 8 * width:  # equal so far, and they go on
                out.extend(sort(run, depth + width, width * 4))
            else:
                out.extend(sorted(run, key=tie.__getitem__))
            i = j
        return out

    return sort(list(range(len(lengths))), depth, 64)


def _classes(codes: npt.NDArray[Any]) -> npt.NDArray[np.uint8]:
    """Each code point's class (``_char_class``): a table below U+0100, the pattern above."""
    out = np.empty(codes.size, dtype=np.uint8)
    low = codes < 256
    out[low] = _LATIN1_CLASSES[codes[low]]
    high = codes[~low]
    if high.size:
        distinct, inverse = np.unique(high, return_inverse=True)
        table = np.array([_char_class(chr(c)) for c in distinct.tolist()], dtype=np.uint8)
        out[~low] = table[inverse]
    return out


class _Text:
    """Texts joined and encoded once: one byte per character (all ASCII) or four."""

    __slots__ = ("codes", "joined", "lengths", "raw", "size", "starts", "wide")

    def __init__(self, texts: Sequence[str], wide: bool) -> None:
        self.wide = wide
        self.lengths = np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))
        self.starts = np.cumsum(self.lengths) - self.lengths
        """Where each text starts, in characters."""
        self.size = int(self.lengths.sum())
        self.joined = "".join([*texts, "\0" * 8])  # padded: 8-byte blocks read past the end
        self.raw = self.joined.encode("utf-32-le" if wide else "latin-1")
        self.codes: npt.NDArray[Any] = np.frombuffer(
            self.raw, dtype=np.uint32 if wide else np.uint8)[:self.size]


def _word_keys(texts: Sequence[str], wide: bool) -> tuple[KeyArray, IntArray]:
    """The keys of the word tokens of ``texts``, flat, and where each text's start."""
    return _keys(_Text(texts, wide))


_HEAD = 64
"""Characters of each pair of neighbours compared at once before comparing in Python."""


def _adjacent_chars(text: _Text) -> IntArray:
    """The common prefix (characters) of each pair of neighbouring texts: their first
    ``_HEAD`` characters compared as arrays, only pairs agreeing on all of them in Python."""
    lengths, starts = text.lengths, text.starts
    if lengths.size < 2:
        return np.zeros(0, dtype=np.int64)
    where = starts[:, None] + np.arange(_HEAD, dtype=np.int64)
    np.minimum(where, max(text.size - 1, 0), out=where)  # past a text's end: limited below
    heads = text.codes[where] if text.size else np.zeros(where.shape, dtype=np.uint8)
    differ = heads[:-1] != heads[1:]
    first = np.where(differ.any(axis=1), differ.argmax(axis=1), _HEAD)
    limit = np.minimum(lengths[:-1], lengths[1:])
    out = np.minimum(first, limit)
    joined = text.joined
    for p in np.flatnonzero((first == _HEAD) & (limit > _HEAD)).tolist():
        a, b = int(starts[p]), int(starts[p + 1])
        out[p] = pair_prefix_length(joined[a: a + int(lengths[p])],
                                    joined[b: b + int(lengths[p + 1])])
    return out


def _keys(text: _Text) -> tuple[KeyArray, IntArray]:
    """``_word_keys`` of encoded texts."""
    wide, lengths, text_starts, size = text.wide, text.lengths, text.starts, text.size
    if not size:
        return np.zeros(0, dtype=np.uint64), np.zeros(lengths.size + 1, dtype=np.int64)
    unit = 4 if wide else 1
    joined, raw = text.joined, text.raw
    if wide:
        kind = _classes(text.codes)
    else:  # ASCII: each byte's class by one table lookup in C
        kind = np.frombuffer(raw.translate(_LATIN1_TABLE), dtype=np.uint8)[:size]
    # A token starts where whitespace starts, or where a non-space run changes class:
    # with classes 0 (space), 1 (word), 2 (other), exactly where prev & (prev ^ cur) != 0.
    boundary = np.empty(size, dtype=np.uint8)
    boundary[0] = 1
    np.bitwise_xor(kind[1:], kind[:-1], out=boundary[1:])
    np.bitwise_and(boundary[1:], kind[:-1], out=boundary[1:])
    del kind
    boundary[text_starts[lengths > 0]] = 1
    token_starts = np.flatnonzero(boundary != 0)  # numpy's nonzero is 7x faster on bools
    del boundary
    count = token_starts.size
    token_lengths = np.empty(count, dtype=np.int64)
    np.subtract(token_starts[1:], token_starts[:-1], out=token_lengths[:-1])
    token_lengths[-1] = size - token_starts[-1]
    per_text = np.diff(np.searchsorted(token_starts, text_starts), append=count)
    # blocks of 8 bytes (8 characters, or 2 wide ones) read in place
    blocks = np.ndarray(shape=(len(raw) - 7,), dtype="<u8", buffer=raw, strides=(1,))
    byte_starts = token_starts * unit if wide else token_starts
    masks, exact_max = (_WIDE_MASKS, 1) if wide else (_MASKS, 7)
    # a short token is its own characters (the block, cut to its length) and its length
    keys = blocks[byte_starts]
    keys &= masks.take(token_lengths, mode="clip")
    keys |= _LENGTH_BITS.take(token_lengths, mode="clip")
    # a longer one: its blocks, each cut to what is left of it, mixed into a hash
    long_tokens = np.flatnonzero(_IS_LONG[exact_max].take(token_lengths, mode="clip"))
    if long_tokens.size:
        long_starts = byte_starts[long_tokens]
        long_lengths = token_lengths[long_tokens]
        per_block = 8 // unit
        # per block a multiply and an xorshift (each a bijection, and the shift carries
        # the high bits down into the next multiply), splitmix64's finalizer at the end
        h = long_lengths.astype(np.uint64)
        h += np.uint64(0x9E3779B97F4A7C15)
        # the first block is whole: every long token has more than one block's characters
        h ^= blocks[long_starts]
        h *= np.uint64(0x9FB21C651E98DF25)
        h ^= h >> np.uint64(29)
        for done in range(per_block, int(long_lengths.max()), per_block):
            going = np.flatnonzero(long_lengths > done)
            block = blocks[long_starts[going] + done * unit]
            block &= masks.take(long_lengths[going] - done, mode="clip")
            mixed = h[going]
            mixed ^= block
            mixed *= np.uint64(0x9FB21C651E98DF25)
            mixed ^= mixed >> np.uint64(29)
            h[going] = mixed
        h = _mix(h)
        h |= _HASHED
        keys[long_tokens] = h
    for index in np.flatnonzero(token_lengths > _LONG_TOKEN).tolist():
        start = int(token_starts[index])
        token = joined[start:start + int(token_lengths[index])]
        keys[index] = np.uint64(hash(token) & 0xFFFFFFFFFFFFFFFF) | _HASHED
    return keys, np.concatenate(([0], np.cumsum(per_text))).astype(np.int64)
