"""The simulated models' vocabulary: English words, so outputs read like (odd) text."""

from __future__ import annotations

import re

__all__ = ["EOS", "EOS_ALIASES", "VOCAB", "prompt_tokens"]

_WORDS = """
the a an and but or so then when while after before because although if once until
story tale world city river forest mountain village ocean storm night morning dream
door window clock mirror letter map key lantern ship train bridge tower garden road
stranger child doctor captain queen thief painter baker sailor robot dragon fox owl
suddenly quietly slowly strangely finally almost never always again still only even
found lost opened closed whispered shouted remembered forgot discovered followed
built broke carried dropped painted sang danced waited vanished returned changed
red blue golden silver ancient broken hidden secret tiny enormous quiet loud bright
dark frozen burning invisible impossible curious wild gentle restless forgotten
in on under over through beyond between inside behind across toward without
of to with from by for at into about
was were is are had has will would could might
he she they it we everyone nobody somebody
one two three seven hundred
""".split()

EOS = 0
"""Index of the end-of-text token; it renders as nothing."""

EOS_ALIASES = frozenset({"100257", "50256"})
"""GPT-4's and GPT-3's end-of-text ids, so published ``logit_bias`` settings work as-is."""

VOCAB: tuple[str, ...] = ("<|endoftext|>", ".", ",", *(" " + w for w in _WORDS))

_SPLIT = re.compile(r"\w+|[^\w\s]")


def prompt_tokens(text: str) -> int:
    """How many tokens the simulator bills a prompt as: words and punctuation marks."""
    return len(_SPLIT.findall(text))
