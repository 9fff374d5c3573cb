"""Degenerate outputs: what a reader sees at once as broken, whatever a judge scores it.

An output is degenerate when it repeats a word in a row ("poster poster") or a content word three
or more times, holds a fragment that is neither an English word (wordfreq's English list) nor a
word of the request ("t t Veget"), is empty, or, for a list, has an empty or duplicated item.
`udrl eval` reports the rate per task for the model and the teacher alike.

>>> degenerate_reasons("menu for a mexican taqueria with vegetarian options", "menu, t t Veget", "tags")
['repeats "t" in a row', 'fragment "t"', 'fragment "Veget"']
>>> degenerate_reasons("menu for a mexican taqueria", "Mexican Taqueria", "headline")
[]
"""

from __future__ import annotations

import re
import string
from functools import lru_cache

from udrl.manifest import focus_key

from ..decoding import END_STOPWORDS, FOCUS_STOPWORDS

LIST_TASKS = ("tags",)  # outputs that are comma-separated lists
_KEEP_SINGLE = {"a", "i", "&", "+", "x"}  # one-character words that are words ("4 x 6" too)
_WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)*", re.UNICODE)


@lru_cache(maxsize=65536)
def is_english_word(word: str) -> bool:
    """Whether wordfreq's English list knows ``word`` (numbers and one-letter words aside)."""
    from wordfreq import zipf_frequency

    if word.isdigit() or re.fullmatch(r"\d+(st|nd|rd|th|s|k|p|am|pm|x)?", word):
        return True
    if len(word) == 1:
        return word in _KEEP_SINGLE
    return zipf_frequency(word, "en") > 0


def repetition_reasons(output: str, task: str) -> list[str]:
    """The repetitions among `degenerate_reasons`: a word twice in a row or a content word three
    or more times, an empty or duplicated list item (what a teacher's loop leaves)."""
    reasons: list[str] = []
    words = output.split()
    keys = [focus_key(w) for w in words]
    for prev, cur, raw in zip(keys, keys[1:], words[1:]):
        if cur and cur == prev:
            reasons.append(f'repeats "{raw.strip(string.punctuation)}" in a row')
    common = set(FOCUS_STOPWORDS) | set(END_STOPWORDS)
    for key in dict.fromkeys(keys):
        if key and key not in common and len(key) > 1 and keys.count(key) >= 3:
            reasons.append(f'"{key}" {keys.count(key)} times')
    if task in LIST_TASKS:
        items = [focus_key(" ".join(item.split())) for item in output.split(",")]
        if any(not item for item in items[:-1]) or (len(items) > 1 and not items[-1]):
            reasons.append("empty item")
        duplicated = sorted({item for item in items if item and items.count(item) > 1})
        reasons += [f'item "{item}" twice' for item in duplicated]
    return list(dict.fromkeys(reasons))


def fragment_reasons(query: str, output: str) -> list[str]:
    """The fragments among `degenerate_reasons`: pieces that are neither English words nor words
    of the request."""
    reasons: list[str] = []
    asked = {focus_key(w) for w in query.split()} | {m.group(0).lower() for m in _WORD.finditer(query)}
    for match in _WORD.finditer(output):
        piece = match.group(0)
        low = piece.lower()
        if low in asked or is_english_word(low):
            continue
        if any(part and not (part in asked or is_english_word(part)) for part in re.split(r"['’]", low)):
            reasons.append(f'fragment "{piece}"')
    return list(dict.fromkeys(reasons))


def degenerate_reasons(query: str, output: str, task: str) -> list[str]:
    """Why ``output`` is degenerate (empty list: it is not)."""
    if not output.strip():
        return ["empty"]
    reasons = repetition_reasons(output, task)
    # In reading order: repeats in a row, counts, fragments, then list items.
    items = [r for r in reasons if r == "empty item" or r.startswith("item ")]
    return list(dict.fromkeys([r for r in reasons if r not in items] + fragment_reasons(query, output) + items))


def is_degenerate(query: str, output: str, task: str) -> bool:
    """True when `degenerate_reasons` finds anything."""
    return bool(degenerate_reasons(query, output, task))
