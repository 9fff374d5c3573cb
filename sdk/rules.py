"""The decoding rules: what udrl does to the logits of each step before the sampler picks a token.

Each rule is one function ``rule(logits, state)`` that edits a float vector in place; `RULES` lists
them in the order they run and `apply_rules` runs that list, as mlx-lm runs its logits processors.
`DecodeState` is everything a rule may look at: the vocabulary's tables, the command, the options
and what has been generated so far. The C layer (native/udrl.c, ``RULES`` there) runs the same rules
in the same order; ``docs/decoding.md`` specifies them and ``tests/data/decoding-vectors.json`` holds
cases that both the Python tests and native/test_rules.c must reproduce, so a rule changed on one
side only fails a test.

1. `query_focus`: a bonus for the first token of each content word of the query the text does not
   contain yet (a small policy's rare-word knowledge is weak); a word the tokenizer splits only when
   the manifest's `focus_split_words` says so.
2. `push_function_words`: where the manifest says so, the end stopwords down by the focus bonus, so
   that the request's words take the place of its frame ("a book cover for a cover").
3. `ban_repeated_ngram`: no token that would complete an n-gram of tokens already generated.
4. `ban_word_again`: the next word may not be the last word again ("poster poster").
5. `ban_item_again`: after a list separator, no one-word item already written ("label, homemade, label").
6. `ban_word_thrice`: no content word a third time ("book cover for a book card for an book").
7. `ban_unfinished_end`: the length guard's last word may not be one of the manifest's end stopwords
   ("Festival at the") nor bare punctuation ("Reading Club &").
8. `finish_focus_word`: where the text ends in the first tokens of a split word focus lifts, only
   the tokens that carry it on (lifting a first piece alone left fragments such as "t t shirt").
9. `whole_words`: every word the output holds is a word of the manifest's list or of the request
   (spelling.py): a small model starts a word with a short piece and carries on into letters no word
   spells ("pders party", "t t Veget").
10. `word_instead_of_end`: where the model would end too early, only tokens that start a new word
   ("Party!!s!)!" otherwise).
11. `ban_early_end`: no end of sequence before the requested number of words.
"""

from __future__ import annotations

import dataclasses
import re
import weakref
from collections.abc import Callable, Sequence

import numpy as np

from .backends import Backend
from .commands import count_words
from .manifest import Manifest, focus_key
from .spelling import RequestSpelling, Spelling

# What separates the items of a list output.
SEPARATORS = ",;:"
# A token starts a new word when its text begins with one of these and has more than whitespace.
WORD_START = b" \t\n\r\x0b\x0c"


@dataclasses.dataclass(frozen=True)
class Vocabulary:
    """Per-token tables the rules read, computed once per backend (`vocabulary`)."""

    eos: int
    word_start: np.ndarray  # bool per token: starts a new word
    end_word: np.ndarray  # bool per token: starts a new word that is whole an end stopword
    unfinished_end: np.ndarray  # bool per token: a word no output ends on: an end stopword or bare punctuation ("&")
    word_keys: dict[str, list[int]]  # ASCII word key -> the word-start tokens that are that whole word
    common: frozenset[str]  # the manifest's focus and end stopwords: words an output may use often
    spelling: Spelling | None  # the whole-word rule's tables; None when the manifest lists no words


_vocabularies: weakref.WeakKeyDictionary[Backend, Vocabulary] = weakref.WeakKeyDictionary()


def vocabulary(backend: Backend, n_vocab: int) -> Vocabulary:
    """The rules' tables for ``backend``'s tokens (cached per backend)."""
    vocab = _vocabularies.get(backend)
    if vocab is None or len(vocab.word_start) != n_vocab:
        pieces = [backend.token_bytes(t) for t in range(n_vocab)]
        starts = np.array([p[:1] != b"" and p[0] in WORD_START and p.strip(WORD_START) != b"" for p in pieces])
        end_words = set(backend.manifest.end_stopwords)
        ends = np.zeros(n_vocab, dtype=bool)
        bare = np.zeros(n_vocab, dtype=bool)
        keys: dict[str, list[int]] = {}
        for t in np.flatnonzero(starts):
            key = focus_key(pieces[t].strip(WORD_START).decode("utf-8", errors="replace"))
            ends[t] = key in end_words
            bare[t] = key == ""  # nothing but ASCII punctuation
            if key and key.isascii():
                keys.setdefault(key, []).append(int(t))
        manifest = backend.manifest
        spelling = (Spelling(manifest.spelling_words, manifest.spelling_after_apostrophe, pieces, manifest.eos_id)
                    if manifest.spelling_words else None)
        vocab = Vocabulary(manifest.eos_id, starts, ends, ends | bare, keys,
                           frozenset(manifest.focus_stopwords) | frozenset(manifest.end_stopwords), spelling)
        _vocabularies[backend] = vocab
    return vocab


def focus_words(manifest: Manifest, query: str) -> list[str]:
    """The query's content words, as query focus compares them, in order, without repeats.

    >>> focus_words(Manifest.new(focus_stopwords=("for", "the")), "Poster for the Blueberry-latte launch!")
    ['poster', 'blueberry-latte', 'launch']
    """
    words: list[str] = []
    for raw in query.split():
        word = focus_key(raw)
        if len(word.encode()) >= manifest.focus_min_bytes and word not in manifest.focus_stopwords \
                and word not in words:
            words.append(word)
    return words


def focus_tokens(backend: Backend, query: str, split_words: bool | None = None) -> dict[str, list[tuple[int, ...]]]:
    """For each content word of the query, the tokens of its spellings " word" and " Word", one
    tuple per spelling. With ``split_words`` (None: the manifest's `focus_split_words`) a spelling
    the tokenizer splits is kept too, and query focus lifts its first token and then each next one,
    so that a word it starts is a word it finishes; without, only one-token spellings (lifting a
    first piece alone left fragments such as "t t shirt")."""
    split = backend.manifest.focus_split_words if split_words is None else split_words
    tokens = {}
    for word in focus_words(backend.manifest, query):
        first = word[0].upper() if word[0].isascii() else word[0]  # ASCII only, as the C layer
        spellings = (" " + word, " " + first + word[1:])
        # Never a split end stopword ("within"): the guard's end ban sees whole-word tokens only.
        word_split = split and word not in backend.manifest.end_stopwords
        tokens[word] = sorted({tuple(ids) for ids in map(backend.encode, spellings)
                               if len(ids) == 1 or (ids and word_split)})
    return tokens


@dataclasses.dataclass
class DecodeState:
    """What the rules see at one step of one request. ``text`` is the output so far (the generated
    tokens' text without the manifest's output prefix), ``ids`` its tokens."""

    vocab: Vocabulary
    length: int  # the command's word count
    length_guard: bool = True
    no_repeat_ngram: int = 2
    focus_bias: float = 0.0
    focus: dict[str, list[tuple[int, ...]]] = dataclasses.field(default_factory=dict)  # `focus_tokens`
    spelling: RequestSpelling | None = None  # `Spelling.request` for the query; None: no whole-word rule
    ids: list[int] = dataclasses.field(default_factory=list)
    text: str = ""
    push_function_words: bool = False  # the manifest's `focus_push_function_words`

    def guarded_words(self) -> int | None:
        """Words written so far while the length guard still holds the end back; None otherwise."""
        if not self.length_guard:
            return None
        words = count_words(self.text)
        return words if words < self.length else None


Rule = Callable[[np.ndarray, DecodeState], None]


def _focus_started(state: DecodeState, next_piece: bool) -> list[int]:
    """The tokens query focus acts on, each once (``focus_started`` in the C layer): without
    ``next_piece``, the first token of each spelling of each content word the text does not contain
    yet; with it, for each such spelling whose first tokens the generated ids end in (the longest
    such start), the token that comes next in it."""
    written = {focus_key(w) for w in state.text.split()}
    ids = state.ids
    picked = set()
    for word, spellings in state.focus.items():
        if word in written:
            continue
        for spelling in spellings:
            if not next_piece:
                picked.add(spelling[0])
                continue
            for k in range(min(len(spelling) - 1, len(ids)), 0, -1):
                if tuple(ids[len(ids) - k:]) == spelling[:k]:
                    picked.add(spelling[k])
                    break
    return sorted(picked)


def query_focus(logits: np.ndarray, state: DecodeState) -> None:
    """Add the focus bonus to the first token of each content word the text does not contain yet."""
    if state.focus_bias <= 0 or not state.focus:
        return
    firsts = _focus_started(state, next_piece=False)
    if firsts:
        logits[firsts] += state.focus_bias


def push_function_words(logits: np.ndarray, state: DecodeState) -> None:
    """Where the manifest says so and focus is on, push the end stopwords (articles, prepositions,
    conjunctions, as whole-word tokens) down by the focus bonus: a small model pads with the
    request's frame, and the copying that pays for goes to the words focus lifts instead."""
    if state.push_function_words and state.focus_bias > 0:
        logits[state.vocab.end_word] -= state.focus_bias


def finish_focus_word(logits: np.ndarray, state: DecodeState) -> None:
    """Where the text ends in the first tokens of a content word focus lifts (one the tokenizer
    splits), only the tokens that carry on such a word, unless every one of them is forbidden: a
    word focus starts is a word it finishes ("lan" for "lanterns" otherwise)."""
    if state.focus_bias <= 0 or not state.focus:
        return
    keep = _focus_started(state, next_piece=True)
    if keep and np.isfinite(logits[keep]).any():
        kept = logits[keep].copy()
        logits[:] = -np.inf
        logits[keep] = kept


def ban_repeated_ngram(logits: np.ndarray, state: DecodeState) -> None:
    """Forbid each token that would complete an n-gram already generated (small models loop)."""
    n, ids = state.no_repeat_ngram, state.ids
    if n < 1 or len(ids) < n - 1:
        return
    tail = ids[len(ids) - n + 1 :] if n > 1 else []
    banned = [ids[i + n - 1] for i in range(len(ids) - n + 1) if ids[i : i + n - 1] == tail]
    if banned:
        logits[banned] = -np.inf


def ban_word_again(logits: np.ndarray, state: DecodeState) -> None:
    """With the n-gram ban on, the next word may not be the last one again ("poster poster"): the
    token ban cannot see a repeated single-token word."""
    words = state.text.split()
    if state.no_repeat_ngram and words:
        again = state.vocab.word_keys.get(focus_key(words[-1]))
        if again:
            logits[again] = -np.inf


def ban_item_again(logits: np.ndarray, state: DecodeState) -> None:
    """With the n-gram ban on, after a list separator the next item may not be a one-word item
    already written ("label, homemade, label"; the first item has no separator before it)."""
    text = state.text.rstrip(WORD_START.decode())  # ASCII whitespace, as the C layer
    if not state.no_repeat_ngram or not text or text[-1] not in SEPARATORS:
        return
    for item in re.split(f"[{re.escape(SEPARATORS)}]", text[:-1]):
        words = item.split()
        if len(words) == 1:
            again = state.vocab.word_keys.get(focus_key(words[0]))
            if again:
                logits[again] = -np.inf


def ban_word_thrice(logits: np.ndarray, state: DecodeState) -> None:
    """With the n-gram ban on, no content word a third time ("book cover for a book card for an
    book"): a word whose key is longer than one character and not one of the manifest's focus or
    end stopwords, written twice already."""
    if not state.no_repeat_ngram:
        return
    keys = [focus_key(w) for w in state.text.split()]
    for key in {k for k in keys if len(k) > 1 and k not in state.vocab.common and keys.count(k) >= 2}:
        again = state.vocab.word_keys.get(key)
        if again:
            logits[again] = -np.inf


def ban_unfinished_end(logits: np.ndarray, state: DecodeState) -> None:
    """When the next word is the guard's last, it may not be an end stopword ("at the", "colors
    and") or bare punctuation ("Book Club, Reading Club &"), unless nothing else is left."""
    if state.guarded_words() != state.length - 1:
        return
    ends = state.vocab.unfinished_end
    others = np.isfinite(logits) & ~ends
    others[state.vocab.eos] = False
    if others.any():
        logits[ends] = -np.inf


def whole_words(logits: np.ndarray, state: DecodeState) -> None:
    """Only tokens that keep every word of the output one the manifest's list or the request spells
    (spelling.py), unless that would leave no token at all."""
    if state.spelling is None:
        return
    allowed = state.spelling.allowed(state.text)
    if np.isfinite(logits[allowed]).any():
        logits[~allowed] = -np.inf


def word_instead_of_end(logits: np.ndarray, state: DecodeState) -> None:
    """Where the model would end before the requested count, let only word-start tokens through:
    otherwise the best token after a forbidden end is glued-on junk."""
    if state.guarded_words() is None or int(np.argmax(logits)) != state.vocab.eos:
        return
    starts = state.vocab.word_start
    if np.isfinite(logits[starts]).any():
        logits[~starts] = -np.inf


def ban_early_end(logits: np.ndarray, state: DecodeState) -> None:
    """No end of sequence before the requested number of words."""
    if state.guarded_words() is not None:
        logits[state.vocab.eos] = -np.inf


RULES: tuple[Rule, ...] = (query_focus, push_function_words, ban_repeated_ngram, ban_word_again, ban_item_again, ban_word_thrice,
                           ban_unfinished_end, finish_focus_word, whole_words, word_instead_of_end, ban_early_end)


def apply_rules(logits: np.ndarray, state: DecodeState, rules: Sequence[Rule] = RULES) -> np.ndarray:
    """A copy of ``logits`` with each rule applied in turn."""
    out = np.array(logits, copy=True)
    for rule in rules:
        rule(out, state)
    return out
