"""The distinct outputs as token rows: one flat array of token keys, in numpy.

Every token of every distinct output gets a 64-bit key, equal for equal tokens, so the
token metrics (prefixes, per-position entropy, the tree's order) are array operations,
not Python loops over tokens. Provider tokens get exact small-integer keys. Word tokens
(the fallback tokenizer, ``metrics.word_tokens``) are found for all texts at once from
each character's class (whitespace, word, other), as the regular expression would find
them; a word token of at most 7 characters below U+0100 (of 1 character otherwise) is
its own key, exactly, and a longer one a 63-bit hash of its characters (two different
long tokens share a key with probability about 2**-63).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["TokenRows"]

IntArray = npt.NDArray[np.int64]
KeyArray = npt.NDArray[np.uint64]

_CHUNK_CHARS = 1 << 22
"""Texts are tokenized in groups of about this many characters, so temporaries stay small."""
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


def _mix(x: KeyArray) -> KeyArray:
    """splitmix64's finalizer: every input bit reaches every output bit."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


class TokenRows:
    """``keys[starts[i]:starts[i + 1]]`` are the token keys of row ``i``."""

    __slots__ = ("keys", "starts")

    def __init__(self, keys: KeyArray, starts: IntArray) -> None:
        self.keys = keys
        self.starts = starts

    @property
    def count(self) -> int:
        return int(self.starts.size - 1)

    def lengths(self) -> IntArray:
        return np.diff(self.starts)

    # -- building -------------------------------------------------------------------------

    @classmethod
    def from_tokens(cls, sequences: Sequence[Sequence[str]]) -> TokenRows:
        """Provider tokens: key i for the i-th distinct token, exactly."""
        ids: dict[str, int] = {}
        lengths = np.fromiter(map(len, sequences), dtype=np.int64, count=len(sequences))
        keys = np.fromiter((ids.setdefault(t, len(ids)) for seq in sequences for t in seq),
                           dtype=np.uint64, count=int(lengths.sum()))
        return cls(keys, np.concatenate(([0], np.cumsum(lengths))))

    @classmethod
    def from_words(cls, texts: Sequence[str]) -> TokenRows:
        """``word_tokens`` of every text, keyed (see the module docstring)."""
        wide = not all(t.isascii() for t in texts)  # one width for all: keys must agree
        keys: list[KeyArray] = []
        counts: list[IntArray] = []
        i = 0
        while i < len(texts):
            j, size = i, 0
            while j < len(texts) and (size < _CHUNK_CHARS or j == i):
                size += len(texts[j])
                j += 1
            chunk_keys, chunk_counts = _word_keys(texts[i:j], wide)
            keys.append(chunk_keys)
            counts.append(chunk_counts)
            i = j
        lengths = np.concatenate(counts) if counts else np.zeros(0, dtype=np.int64)
        return cls(np.concatenate(keys) if keys else np.zeros(0, dtype=np.uint64),
                   np.concatenate(([0], np.cumsum(lengths))).astype(np.int64))

    # -- comparing ------------------------------------------------------------------------

    def prefix_lengths(self, a: IntArray, b: IntArray) -> IntArray:
        """For each k, the common prefix length (in tokens) of rows ``a[k]`` and ``b[k]``.

        Compares 8 tokens of every pair, then 16 more of the pairs that still agree, and
        so on: work proportional to the prefixes, not to the rows' lengths.
        """
        starts, lengths = self.starts, self.lengths()
        limit = np.minimum(lengths[a], lengths[b])
        out = limit.copy()
        active = np.arange(a.size)
        position, width = 0, 8
        while active.size:
            span = np.clip(limit[active] - position, 0, width)
            total = int(span.sum())
            if total == 0:
                break
            owner = np.repeat(np.arange(active.size), span)
            ends = np.cumsum(span)
            offset = np.arange(total) - np.repeat(ends - span, span) + position
            pairs = active[owner]
            differ = self.keys[starts[a[pairs]] + offset] != self.keys[starts[b[pairs]] + offset]
            first = np.full(active.size, np.iinfo(np.int64).max)
            np.minimum.at(first, owner[differ], offset[differ])
            found = first < np.iinfo(np.int64).max
            out[active[found]] = first[found]
            # still agreeing and with tokens left to compare: look further
            more = ~found & (limit[active] > position + width)
            active = active[more]
            position += width
            width *= 2
        return out

    def order(self, tie: Sequence[str]) -> list[int]:
        """Rows sorted by their key sequences (a row before its extensions); rows with
        equal sequences by ``tie``.

        Sorts by the first 16 keys, then each run that still agrees by the next 64,
        and so on: the work follows how far rows agree, not how long they are.
        """
        starts, lengths = self.starts.tolist(), self.lengths().tolist()
        keys = self.keys

        def window(row: int, lo: int, hi: int) -> bytes:
            start = starts[row]
            return keys[start + lo: start + min(hi, lengths[row])].byteswap().tobytes()

        out: list[int] = []
        # (rows that agree on their first `depth` keys, depth, window width)
        stack: list[tuple[list[int], int, int]] = [(list(range(self.count)), 0, 16)]
        while stack:
            rows, depth, width = stack.pop()
            if len(rows) == 1:
                out.extend(rows)
                continue
            seen = {row: window(row, depth, depth + width) for row in rows}
            rows.sort(key=seen.__getitem__)
            runs: list[tuple[list[int], int, int]] = []
            i = 0
            while i < len(rows):
                j = i + 1
                first = seen[rows[i]]
                while j < len(rows) and seen[rows[j]] == first:
                    j += 1
                run = rows[i:j]
                if len(run) > 1 and len(first) == 8 * width:  # they go on: look further
                    runs.append((run, depth + width, width * 4))
                else:  # one row, or rows whose whole sequences are equal
                    run.sort(key=tie.__getitem__)
                    runs.append((run, -1, 0))
                i = j
            for run, next_depth, next_width in reversed(runs):
                if next_depth < 0:
                    stack.extend(([row], 0, 0) for row in reversed(run))
                else:
                    stack.append((run, next_depth, next_width))
        return out

    def per_position_entropy(self, weights: Sequence[int]) -> list[float]:
        """``H_t`` in bits over the rows longer than t, each row counted ``weights`` times.

        Column by column: the keys at position t of the rows that reach it are sorted,
        and runs of equal keys are the token counts.
        """
        lengths = self.lengths()
        if not lengths.size:
            return []
        width = int(lengths.max())
        out = [0.0] * width
        by_length = np.argsort(-lengths, kind="stable")
        sorted_lengths = lengths[by_length]
        row_starts = self.starts[by_length]
        w = np.asarray(weights, dtype=np.float64)[by_length]
        uniform = bool((w == w[0]).all())
        # rows reaching position t: the first reach[t] of by_length; one row: entropy 0
        reach = np.searchsorted(-sorted_lengths, -np.arange(width), side="left")
        for t in range(width):
            m = int(reach[t])
            if m < 2:
                break
            column = self.keys[row_starts[:m] + t]
            if uniform:
                column.sort()
                cuts = np.flatnonzero(column[1:] != column[:-1]) + 1
                counts = np.diff(np.concatenate(([0], cuts, [m]))).astype(np.float64)
            else:
                by_key = np.argsort(column)
                keys = column[by_key]
                cuts = np.flatnonzero(keys[1:] != keys[:-1]) + 1
                counts = np.add.reduceat(w[:m][by_key], np.concatenate(([0], cuts)))
            if counts.size > 1:
                p = counts / counts.sum()
                out[t] = max(0.0, float(-(p * np.log2(p)).sum()))
        return out


def _classes(codes: npt.NDArray[Any]) -> npt.NDArray[np.uint8]:
    if codes.dtype == np.uint8:
        return np.asarray(_LATIN1_CLASSES[codes], dtype=np.uint8)
    out = np.empty(codes.size, dtype=np.uint8)
    low = codes < 256
    out[low] = _LATIN1_CLASSES[codes[low]]
    high = codes[~low]
    if high.size:
        distinct, inverse = np.unique(high, return_inverse=True)
        table = np.array([_char_class(chr(c)) for c in distinct.tolist()], dtype=np.uint8)
        out[~low] = table[inverse]
    return out


def _word_keys(texts: Sequence[str], wide: bool) -> tuple[KeyArray, IntArray]:
    """The keys of the word tokens of ``texts`` (concatenated) and each text's count."""
    joined = "".join(texts)
    lengths = np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))
    text_starts = np.cumsum(lengths) - lengths
    if not joined:
        return np.zeros(0, dtype=np.uint64), np.zeros(len(texts), dtype=np.int64)
    unit = 4 if wide else 1
    raw = joined.encode("utf-32-le" if wide else "latin-1") + bytes(8)  # padded for blocks
    codes = np.frombuffer(raw, dtype=np.uint32 if wide else np.uint8)[: len(joined)]
    kind = _classes(codes)
    # a token starts where whitespace starts, or where a non-space run changes class
    boundary = np.empty(kind.size, dtype=bool)
    boundary[0] = True
    boundary[1:] = (kind[1:] != kind[:-1]) & ((kind[1:] == 0) | (kind[:-1] != 0))
    boundary[text_starts[lengths > 0]] = True
    token_starts = np.flatnonzero(boundary)
    token_lengths = np.diff(np.append(token_starts, kind.size))
    per_text = np.diff(np.append(np.searchsorted(token_starts, text_starts), token_starts.size))
    # blocks of 8 bytes (8 characters, or 2 wide ones) read in place
    blocks = np.ndarray(shape=(len(raw) - 7,), dtype="<u8", buffer=raw, strides=(1,))
    per_block = 8 // unit
    first = blocks[token_starts * unit]
    exact_max = 7 if not wide else 1
    keys = np.empty(token_starts.size, dtype=np.uint64)
    short = token_lengths <= exact_max
    bits = (token_lengths[short] * 8 * unit).astype(np.uint64)
    mask = (np.uint64(1) << bits) - np.uint64(1)
    keys[short] = (first[short] & mask) | (token_lengths[short].astype(np.uint64)
                                           << np.uint64(56))
    long_tokens = np.flatnonzero(~short & (token_lengths <= _LONG_TOKEN))
    h = _mix(token_lengths[long_tokens].astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15))
    done = 0
    active = long_tokens
    while active.size:
        remaining = token_lengths[active] - done
        take = np.minimum(remaining, per_block)
        block = blocks[(token_starts[active] + done) * unit]
        block_mask = np.where(take >= per_block, np.uint64(0xFFFFFFFFFFFFFFFF),
                              (np.uint64(1) << (take * 8 * unit).astype(np.uint64) % np.uint64(64))
                              - np.uint64(1))
        mixed = _mix(h[: active.size] ^ (block & block_mask))
        h[: active.size] = mixed
        left = remaining > per_block
        # keep the still-running tokens first, in order, so h stays aligned with active
        order = np.concatenate((np.flatnonzero(left), np.flatnonzero(~left)))
        finished = active[~left]
        keys[finished] = h[: active.size][~left] | _HASHED
        h[: active.size] = h[: active.size][order]
        active = active[left]
        done += per_block
    for index in np.flatnonzero(token_lengths > _LONG_TOKEN).tolist():
        start = int(token_starts[index])
        token = joined[start:start + int(token_lengths[index])]
        keys[index] = np.uint64(hash(token) & 0xFFFFFFFFFFFFFFFF) | _HASHED
    return keys, per_text.astype(np.int64)
