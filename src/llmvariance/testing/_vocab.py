"""The simulated models' vocabulary: English words with a little grammar.

Every word has a part of speech, and the dense logits get ``GRAMMAR_BONUS`` for a word
class that may follow the previous token's class and lose as much otherwise, so outputs
read like (dreamlike) sentences rather than word salad. End-of-text is likely only after
a full stop.
"""

from __future__ import annotations

import re

__all__ = ["EOS", "EOS_ALIASES", "GRAMMAR_BONUS", "VOCAB", "next_bonus", "prompt_tokens"]

_CLASSES = {
    "det": "the a",
    "conj": "and but so then when while after because until",
    "noun": "story world city river forest mountain village ocean storm night morning dream "
            "door window clock mirror letter map key lantern ship train bridge tower garden "
            "road stranger child doctor captain queen thief painter baker sailor robot dragon "
            "fox owl",
    "adv": "suddenly quietly slowly strangely finally almost never always again still only",
    "verb": "found lost opened closed whispered shouted remembered forgot discovered followed "
            "built broke carried dropped painted sang danced waited vanished returned changed "
            "was became",
    "adj": "red blue golden silver ancient broken hidden secret tiny enormous quiet loud "
           "bright dark frozen burning invisible impossible curious wild gentle restless "
           "forgotten",
    "prep": "in on under over through beyond between inside behind across toward without "
            "of with from into",
    "pron": "he she they it we everyone nobody somebody",
    "num": "one two three seven hundred",
}

_FOLLOWS = {
    "start": "det pron adv conj",
    "det": "adj noun num",
    "adj": "noun",
    "noun": "verb prep conj comma stop",
    "pron": "verb adv",
    "verb": "det prep adv pron adj stop comma",
    "adv": "verb det adj comma",
    "prep": "det pron num",
    "conj": "det pron adv",
    "num": "noun adj",
    "stop": "det pron adv conj eos",
    "comma": "conj pron det adv",
}

GRAMMAR_BONUS = 2.5
_EXTRA = {("noun", "stop"): 0.8, ("verb", "stop"): 0.8, ("stop", "eos"): 1.5}
"""On top of the bonus: sentences end now and then, and texts after some sentences."""

EOS = 0
"""Index of the end-of-text token; it renders as nothing."""

EOS_ALIASES = frozenset({"100257", "50256"})
"""GPT-4's and GPT-3's end-of-text ids, so published ``logit_bias`` settings work as-is."""

_TOKENS: list[tuple[str, str]] = [("<|endoftext|>", "eos"), (".", "stop"), (",", "comma")]
for _cls, _words in _CLASSES.items():
    _TOKENS.extend((" " + w, _cls) for w in _words.split())

VOCAB: tuple[str, ...] = tuple(token for token, _ in _TOKENS)
_CLASS_OF: tuple[str, ...] = tuple(cls for _, cls in _TOKENS)


def _bonus_row(previous_class: str) -> tuple[float, ...]:
    allowed = set(_FOLLOWS.get(previous_class, _FOLLOWS["start"]).split())
    return tuple((GRAMMAR_BONUS if cls in allowed else -GRAMMAR_BONUS)
                 + _EXTRA.get((previous_class, cls), 0.0) for cls in _CLASS_OF)


_ROWS = {cls: _bonus_row(cls) for cls in {*_FOLLOWS, *_CLASS_OF}}
_START_ROW = _ROWS["start"]


def next_bonus(previous: int | None) -> tuple[float, ...]:
    """The grammar bonus for every next token after token id ``previous`` (None: start)."""
    return _START_ROW if previous is None else _ROWS[_CLASS_OF[previous]]


_SPLIT = re.compile(r"\w+|[^\w\s]")


def prompt_tokens(text: str) -> int:
    """How many tokens the simulator bills a prompt as: words and punctuation marks."""
    return len(_SPLIT.findall(text))
