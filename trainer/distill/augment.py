"""Copy augmentation: teach the model to carry any word of the request into its output.

Users ask for things the teacher's data never named ("a label for yuzu kombucha"). A policy that
only saw the data's few thousand subject words writes about a subject it knows instead. Here a
record whose output carries a content word of its request gets copies in which that word is
swapped, in the request and the output together, for a word drawn from wordfreq's English list
(tens of thousands of ordinary words). What the model can learn from those copies is to take the
word from the request, whatever it is. The copies are judged again like any record (their
relevance changes with the word), so their reward commands are what they achieved.

>>> rows = [{"query": "label for strawberry jam", "task": "tags", "output": "jam, strawberry, label",
...          "requested": 3}]
>>> [r["query"] for r in augment_rows(rows, AugmentConfig(copies=1, seed=0), words=("kiwi",))]
['label for kiwi jam']
"""

from __future__ import annotations

import dataclasses
import random
import re
from collections.abc import Sequence
from typing import Any

from ..decoding import END_STOPWORDS, FOCUS_STOPWORDS
from ..handwritten import query_key, read_requests
from .compose import english_words


@dataclasses.dataclass
class AugmentConfig:
    copies: int = 1  # augmented copies per record that has a word to swap (0: none)
    words_per_copy: int = 1  # request words swapped in each copy (at most)
    seed: int = 0


_TOKEN = re.compile(r"[A-Za-z]+")


def swappable_words(query: str, output: str) -> list[str]:
    """Content words of the request (letters only, three or more, no stopwords) that the output
    carries too, lower-cased, in request order."""
    common = set(FOCUS_STOPWORDS) | set(END_STOPWORDS)
    out_words = {w.lower() for w in _TOKEN.findall(output)}
    found = []
    for word in (w.lower() for w in _TOKEN.findall(query)):
        if len(word) >= 3 and word not in common and word in out_words and word not in found:
            found.append(word)
    return found


def _swap(text: str, old: str, new: str) -> str:
    """Every whole-word ``old`` (any case) in ``text`` as ``new``, keeping each one's capitalisation."""
    def replace(match: re.Match[str]) -> str:
        seen = match.group(0)
        if seen.isupper() and len(seen) > 1:
            return new.upper()
        return new.capitalize() if seen[0].isupper() else new

    return re.sub(rf"(?<![A-Za-z]){re.escape(old)}(?![A-Za-z])", replace, text, flags=re.IGNORECASE)


def augment_rows(rows: Sequence[dict[str, Any]], config: AugmentConfig,
                 words: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Augmented copies of ``rows`` (dicts with query, task, output): each copy marks ``origin``,
    the request it was made from, so that a held-out split can keep the two together. A copy that
    happens to spell a hand-written request is never made (that set is never training data)."""
    if config.copies < 0 or config.words_per_copy < 1:
        raise ValueError("copies must be at least 0 and words_per_copy at least 1")
    pool = tuple(words) if words is not None else english_words()
    rng = random.Random(config.seed)
    handwritten = {query_key(r.query) for r in read_requests()}
    out = []
    for row in rows:
        candidates = swappable_words(row["query"], row["output"])
        if not candidates:
            continue
        for _ in range(config.copies):
            chosen = rng.sample(candidates, min(config.words_per_copy, len(candidates)))
            query, output = row["query"], row["output"]
            taken = {w.lower() for w in _TOKEN.findall(query)}
            for old in chosen:
                new = rng.choice(pool)
                if new in taken:  # a swap must not merge two words of the request into one
                    continue
                taken.add(new)
                query, output = _swap(query, old, new), _swap(output, old, new)
            if query != row["query"] and query_key(query) not in handwritten:
                out.append({**row, "query": query, "output": output, "origin": row.get("origin", row["query"])})
    return out
