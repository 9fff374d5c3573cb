"""The tables behind the decoding rule `whole_words` (rules.py): which tokens may come next so that
every word the output holds is one the manifest's word list (or the request) spells.

A **letter run** is a maximal run of ASCII letters, lowered; anything else (digits, punctuation,
spaces, other characters) ends one. A run is **spelt** when it is a word of the manifest's
``spelling.words`` or a letter run of the request, or, directly after an apostrophe (``'`` or
``’``), one of ``spelling.after_apostrophe`` ("s" of "jam's", "t" of "don't"). A run a token leaves
open at the end of the text only has to be the beginning of a spelt one. docs/decoding.md states the
rule; native/udrl.c holds the same tables.

`Spelling` is made once per vocabulary (`rules.vocabulary`), `RequestSpelling` once per request;
`RequestSpelling.allowed` answers for one step.

>>> s = Spelling("an and jam", ("s",), [b"", b" jam", b"s", b" an", b"d", b"'s", b" xq"], eos=0)
>>> s.request("label for a jar").allowed("my an").tolist()  # "an" may end or go on to "and", not "ans"
[True, True, False, True, True, True, False]
>>> s.request("label for a jar").allowed("my jam'").tolist()  # after an apostrophe, "s" but not "d"
[True, True, True, True, False, True, False]
>>> s.request("label for a jar").allowed("a ja").tolist()  # "ja" ends nowhere; "jar" is the request's
[False, False, False, False, False, False, False]
"""

from __future__ import annotations

import bisect
import re
from array import array
from collections.abc import Iterable, Sequence

import numpy as np

APOSTROPHES = ("'", "\u2019")
_RUN = re.compile(rb"[A-Za-z]+")
_APOSTROPHE_BYTES = (b"'", "\u2019".encode())


def letter_runs(text: str) -> list[str]:
    """The text's letter runs, lowered ("5K Run!" -> ["k", "run"])."""
    return [run.decode().lower() for run in _RUN.findall(text.encode("utf-8", errors="replace"))]


def open_run(text: str) -> tuple[str, bool]:
    """The letter run at the end of ``text`` ("" when it ends on anything else) and whether an
    apostrophe comes right before it."""
    match = re.search(r"[A-Za-z]*$", text)
    assert match is not None
    return match.group(0).lower(), text[: match.start()].endswith(APOSTROPHES)


class _Words:
    """A set of words with word and prefix lookups by bisection, kept as one space-separated string
    in ascending order and its words' offsets (a list of 160,000 strings and their prefixes would
    cost a Python process tens of MB)."""

    def __init__(self, words: str | Iterable[str]):
        self.text = words if isinstance(words, str) else " ".join(sorted(set(words)))
        self.starts, self.ends = array("i"), array("i")
        if self.text:
            data = np.frombuffer(self.text.encode("ascii"), dtype=np.uint8)
            spaces = np.flatnonzero(data == ord(" "))
            self.starts.frombytes(np.concatenate([[0], spaces + 1]).astype(np.int32).tobytes())
            self.ends.frombytes(np.concatenate([spaces, [data.size]]).astype(np.int32).tobytes())

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, i: int) -> str:
        return self.text[self.starts[i]:self.ends[i]]

    def spells(self, text: str, whole: bool) -> bool:
        """Whether ``text`` is one of the words (``whole``) or the beginning of one."""
        i = bisect.bisect_left(self, text)
        return i < len(self) and (self[i] == text if whole else self[i].startswith(text))

    def starting(self, text: str) -> list[str]:
        """The words that begin with ``text`` (ASCII lowercase), in order."""
        lo, hi = bisect.bisect_left(self, text), bisect.bisect_left(self, text + "{")
        return [self[i] for i in range(lo, hi)]

    def count_starting(self, text: str) -> int:
        return bisect.bisect_left(self, text + "{") - bisect.bisect_left(self, text)


class Spelling:
    """The word list and per-token tables for one vocabulary (``pieces``: each token's bytes, b"" for
    special tokens). A token's **lead** is the letter run it starts with: it carries on the text's
    open run; the runs after the lead are the token's own."""

    def __init__(self, words: str, after_apostrophe: Sequence[str], pieces: Sequence[bytes], eos: int):
        self.eos = eos
        self.words = _Words(words)  # the manifest's string, ascending already
        self.endings = _Words(after_apostrophe)
        self.n_vocab = len(pieces)
        self.has_text = np.array([p != b"" for p in pieces])
        leads = [re.match(rb"[A-Za-z]*", p).group(0).decode().lower() for p in pieces]  # type: ignore[union-attr]
        self.leads = leads
        self.all_letters = np.array([bool(p) and len(lead) == len(p) for p, lead in zip(pieces, leads)])
        self.continues = np.array([bool(lead) for lead in leads])
        # The continuing tokens by the first letter of their lead, so that a step looks only at the
        # letters that can carry the open run on.
        by_letter: dict[str, list[int]] = {}
        for t, lead in enumerate(leads):
            if lead:
                by_letter.setdefault(lead[0], []).append(t)
        self.by_letter = {letter: np.array(by_letter[letter]) for letter in sorted(by_letter)}
        # Each token's own runs: (run, complete, after an apostrophe); a token is spelt when all are.
        self.own_runs: list[list[tuple[str, bool, bool]]] = []
        for piece, lead in zip(pieces, leads):
            runs = []
            for match in _RUN.finditer(piece, len(lead)):
                before = piece[: match.start()]
                runs.append((match.group(0).decode().lower(), match.end() < len(piece),
                             before.endswith(_APOSTROPHE_BYTES)))
            self.own_runs.append(runs)
        self.own_spelt = np.array([all(self._spelt(*run) for run in runs) for runs in self.own_runs])
        # The tokens by their lead: those of letters only, and those the lead of which something follows.
        self.lettered: dict[str, list[int]] = {}
        self.mixed: dict[str, list[int]] = {}
        for t, lead in enumerate(leads):
            if lead:
                (self.lettered if self.all_letters[t] else self.mixed).setdefault(lead, []).append(t)
        self._continued: dict[tuple[str, bool], np.ndarray] = {}  # open run -> the tokens that carry it on

    def _spelt(self, run: str, complete: bool, after_apostrophe: bool, request: Iterable[_Words] = ()) -> bool:
        lists = (self.words, self.endings, *request) if after_apostrophe else (self.words, *request)
        return any(words.spells(run, complete) for words in lists)

    def continued(self, run: str, after_apostrophe: bool, request: Sequence[_Words] = ()) -> np.ndarray:
        """Per token, whether its lead carries the open ``run`` on into something spelt (a token of
        letters only: the beginning of something spelt). Tokens without a lead: False."""
        key = (run, after_apostrophe)
        known = self._continued.get(key)
        if known is None:  # the same open runs come back request after request
            known = self._carried(run, self.words)
            if after_apostrophe:
                known = np.union1d(known, self._carried(run, self.endings))
            if len(self._continued) >= 4096:
                self._continued.clear()
            self._continued[key] = known
        ok = np.zeros(self.n_vocab, dtype=bool)
        ok[known] = True
        for words in request:
            ok[self._carried(run, words)] = True
        return ok

    def _carried(self, run: str, words: _Words) -> np.ndarray:
        """The tokens whose lead carries ``run`` on into one of ``words`` or the beginning of one.
        Few words begin with a long run: then it walks those words; else the tokens."""
        found: list[int] = []
        if words.count_starting(run) * 8 < len(self.leads):
            for word in words.starting(run):
                rest = word[len(run):]
                for end in range(1, len(rest) + 1):
                    found += self.lettered.get(rest[:end], ())
                found += self.mixed.get(rest, ())
            return np.unique(np.array(found, dtype=np.int64))
        for letter, tokens in self.by_letter.items():
            if words.spells(run + letter, False):
                found += [t for t in tokens if words.spells(run + self.leads[t], not self.all_letters[t])]
        return np.array(found, dtype=np.int64)

    def request(self, query: str) -> RequestSpelling:
        """The tables for one request: the request's own letter runs are spelt too."""
        return RequestSpelling(self, query)


class RequestSpelling:
    """`Spelling` with one request's letter runs added."""

    def __init__(self, spelling: Spelling, query: str):
        self.spelling = spelling
        extra = [run for run in letter_runs(query) if not spelling.words.spells(run, True)]
        self.extra = (_Words(extra),) if extra else ()
        self.own_spelt = spelling.own_spelt
        if self.extra:
            self.own_spelt = spelling.own_spelt.copy()
            for t in np.flatnonzero(~spelling.own_spelt):
                self.own_spelt[t] = all(spelling._spelt(*run, self.extra) for run in spelling.own_runs[t])

    def allowed(self, text: str) -> np.ndarray:
        """Per token, whether `whole_words` lets it follow ``text`` (the output so far): a token
        with a lead carries the open run on into something spelt; any other token, and the end of
        sequence, ends the open run, which must then be spelt (or be none); the token's own runs are
        spelt; other tokens without text are not allowed."""
        run, apostrophe = open_run(text)
        s = self.spelling
        ends = not run or s._spelt(run, True, apostrophe, self.extra)
        continued = s.continued(run, apostrophe, self.extra)
        allowed = s.has_text & self.own_spelt & np.where(s.continues, continued, ends)
        allowed[s.eos] = ends
        return allowed
