"""Title Case: how the outputs of a title-case task are spelt (a rule of the manifest's ``case``).

A small policy learns the teacher's headlines better in lower case: "Summer" and "summer" are two
tokens, and written as the request writes them (lower case) the model copies the request's words
with the same circuit it uses for tags and search queries. So the trainer folds the Title Case
words of a title-case task's outputs to lower case (`fold_title_case`) and the SDK and the C layer
capitalise what the model writes (`title_case`). ``docs/decoding.md`` specifies both and
``tests/data/casing-vectors.json`` holds cases the Python tests and native/test_rules.c reproduce.

A word is a run of non-whitespace (as ``str.split`` finds); its **head** is its first character
after any ASCII punctuation. `title_case` upper-cases the head of a word when the head is an ASCII
lowercase letter and the word has no ASCII uppercase letter, unless the word is a minor word (its
focus key is one of ``minor_words``) that does not start the text or follow a word ending in
``.``, ``!``, ``?`` or ``:``. `fold_title_case` lower-cases the head of every word whose head is
an ASCII uppercase letter and that has no other ASCII uppercase letter, so that
``title_case(fold_title_case(s)) == s`` for every headline already in that style, while acronyms
and mixed case ("USA", "iPhone", "McDonald's") pass through both untouched.

    >>> title_case("fresh bread: a love story for the ages", ("a", "for", "the"))
    'Fresh Bread: A Love Story for the Ages'
    >>> fold_title_case("Paddle, Play and Make Friends at USA Camp")
    'paddle, play and make friends at USA camp'
"""

from __future__ import annotations

import re
import string
from collections.abc import Collection

from .manifest import focus_key

_WORD = re.compile(r"\S+")
# A word ending in one of these starts a new phrase: the next word is capitalised even if minor.
PHRASE_END = ".!?:"
_ASCII_UPPER = frozenset(string.ascii_uppercase)


def _head(word: str) -> int:
    """Index of the word's first character after ASCII punctuation (len(word) if none)."""
    i = 0
    while i < len(word) and word[i] in string.punctuation:
        i += 1
    return i


def title_case(text: str, minor_words: Collection[str]) -> str:
    """``text`` with each word capitalised by the Title Case rule above (the length never changes)."""
    out = []
    last = 0
    starts_phrase = True
    for match in _WORD.finditer(text):
        word = match.group()
        i = _head(word)
        if (i < len(word) and "a" <= word[i] <= "z" and not _ASCII_UPPER.intersection(word)
                and (starts_phrase or focus_key(word) not in minor_words)):
            out.append(text[last : match.start() + i] + word[i].upper())
            last = match.start() + i + 1
        starts_phrase = word[-1] in PHRASE_END
    out.append(text[last:])
    return "".join(out)


def fold_title_case(text: str) -> str:
    """``text`` with each Title Case word lowered (the trainer's view of a title-case target)."""
    def fold(match: re.Match[str]) -> str:
        word = match.group()
        i = _head(word)
        if i < len(word) and "A" <= word[i] <= "Z" and not _ASCII_UPPER.intersection(word[i + 1 :]):
            return word[:i] + word[i].lower() + word[i + 1 :]
        return word

    return _WORD.sub(fold, text)
