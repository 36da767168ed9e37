"""Token rows: word tokens found for many texts at once must be exactly ``word_tokens``."""

from __future__ import annotations

import itertools
import random
from unittest import mock

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from llmvariance._analysis import rows as rows_module
from llmvariance._analysis.metrics import id_rows, per_position_entropy, word_tokens
from llmvariance._analysis.rows import PREFIX, TokenRows

# small inputs go through the pattern one text at a time: these tests need the arrays
vectorized = mock.patch.object(rows_module, "_SMALL_CHARS", 0)

# every class boundary the pattern knows, ASCII and not, short and long tokens
ALPHABET = " \t\n\x0b\x1c_aZ9!?.-é\u00a0\u2028ü中\U0001F600"
texts_strategy = st.lists(st.text(alphabet=ALPHABET, max_size=30).map(
    lambda t: t + " longwordlongword" * (len(t) % 3)), min_size=1, max_size=8, unique=True)


def prefix(a: list[str], b: list[str]) -> int:
    k = 0
    while k < min(len(a), len(b)) and a[k] == b[k]:
        k += 1
    return k


@settings(max_examples=200, deadline=None)
@given(texts_strategy, st.randoms(use_true_random=False))
def test_word_rows_are_word_tokens(texts: list[str], rnd: random.Random) -> None:
    with vectorized:
        check_word_rows(sorted(texts), rnd)


def check_word_rows(texts: list[str], rnd: random.Random) -> None:
    weights = [rnd.randrange(1, 4) for _ in texts]
    rows = TokenRows.from_words(texts, weights)
    tokens = [word_tokens(t) for t in texts]
    assert rows.lengths.tolist() == [len(t) for t in tokens]
    assert np.allclose(rows.per_position_entropy(),
                       per_position_entropy(id_rows(tokens), weights), atol=1e-12)
    # keys are equal exactly where tokens are: the whole rows, re-keyed, agree
    keys, _ = rows.full(np.arange(len(texts), dtype=np.int64))
    flat = [t for row in tokens for t in row]
    assert len(set(keys.tolist())) == len(set(flat))
    assert len(set(zip(keys.tolist(), flat, strict=True))) == len(set(flat))
    order = rows.order(texts)
    a = np.asarray(order[:-1], dtype=np.int64)
    b = np.asarray(order[1:], dtype=np.int64)
    assert rows.prefix_lengths(a, b).tolist() == [
        prefix(tokens[i], tokens[j]) for i, j in zip(a.tolist(), b.tolist(), strict=True)]
    # sorted: the outputs sharing a prefix with one are those next to it
    for i in range(len(order)):
        for j in range(i + 2, len(order)):
            shared = prefix(tokens[order[i]], tokens[order[j]])
            assert all(prefix(tokens[order[i]], tokens[order[k]]) >= shared
                       for k in range(i + 1, j))


@vectorized
def test_every_pair_of_ascii_characters_splits_as_the_pattern_does() -> None:
    """The ASCII path finds token starts by arithmetic on the codes, not by the pattern."""
    pairs = "".join(chr(a) + chr(b) + " " for a in range(128) for b in range(128))
    texts = sorted({pairs[i: i + 997] for i in range(0, len(pairs), 997)})
    rows = TokenRows.from_words(texts, [1] * len(texts))
    assert rows.lengths.tolist() == [len(word_tokens(t)) for t in texts]
    keys, _ = rows.full(np.arange(len(texts), dtype=np.int64))
    flat = [t for text in texts for t in word_tokens(text)]
    assert len(set(zip(keys.tolist(), flat, strict=True))) == len(set(flat)) == len(
        set(keys.tolist()))


@vectorized
def test_rows_that_agree_past_the_kept_prefix_are_compared_in_full() -> None:
    shared = " ".join(f"w{i}" for i in range(3 * PREFIX))
    texts = sorted([shared + " end", shared + " stop", shared + " end now", shared])
    rows = TokenRows.from_words(texts, [1] * 4)
    order = rows.order(texts)
    assert [texts[i] for i in order] == [shared, shared + " end", shared + " end now",
                                         shared + " stop"]
    a = np.asarray(order[:-1], dtype=np.int64)
    b = np.asarray(order[1:], dtype=np.int64)
    assert rows.prefix_lengths(a, b).tolist() == [3 * PREFIX, 3 * PREFIX + 1, 3 * PREFIX]


def test_provider_rows_key_tokens_exactly() -> None:
    rows = TokenRows.from_tokens([["a", "b"], ["a", "c"], ["a", "b", "d"]], [2, 1, 1])
    assert rows.lengths.tolist() == [2, 2, 3]
    assert rows.per_position_entropy() == per_position_entropy(
        id_rows([["a", "b"], ["a", "c"], ["a", "b", "d"]]), [2, 1, 1])
    assert rows.order(["ab", "ac", "abd"]) == [0, 2, 1]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.text(alphabet="ab é中", max_size=90), min_size=1, max_size=12, unique=True),
       st.sampled_from([1, 40, 1 << 20]))
def test_neighbours_common_prefixes_come_with_the_tokens(tails: list[str], chunk: int
                                                         ) -> None:
    """Found with the tokens (chunk by chunk, and across chunks), in characters, also for
    neighbours agreeing past the first characters compared as arrays."""
    shared = "x" * 70
    texts = sorted({*tails, *(shared + t for t in tails)})
    with vectorized, mock.patch.object(rows_module, "_CHUNK_CHARS", chunk):
        rows = TokenRows.from_words(texts, [1] * len(texts))
    assert rows.adjacent_chars is not None
    assert rows.adjacent_chars.tolist() == [
        prefix(list(a), list(b)) for a, b in itertools.pairwise(texts)]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.lists(st.integers(1, 5), max_size=30), min_size=1, max_size=20),
       st.lists(st.integers(1, 3), min_size=20, max_size=20))
def test_every_position_counted_at_once_equals_one_position_at_a_time(
        sequences: list[list[int]], weights: list[int]) -> None:
    lengths = [len(s) for s in sequences]
    keys = np.array([k for s in sequences for k in s], dtype=np.uint64)
    starts = np.concatenate(([0], np.cumsum(lengths))).astype(np.int64)
    for w in (np.asarray(weights[:len(sequences)], dtype=np.float64),
              np.full(len(sequences), 2.0)):
        at_once = rows_module._column_counts(keys, starts, w)
        one_by_one = rows_module._column_counts_ragged(keys, starts, w)
        assert len(at_once) == len(one_by_one) == max(lengths)
        for (k1, c1), (k2, c2) in zip(at_once, one_by_one, strict=True):
            assert k1.tolist() == k2.tolist()
            assert c1.tolist() == c2.tolist()
