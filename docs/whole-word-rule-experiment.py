"""An experiment, not the product: `udrl eval` with one decoding rule more, run after the SDK's own
(sdk/rules.py), that lets a word end, and a piece continue one, only where a word of wordfreq's
English list (lower-case letters, the 200,000 most frequent; one-letter words a, i, x) or of the
request's content words can still come out. When it would forbid every token the other rules left,
it does nothing. trainer/recipes/mini-notes.md ("How much the word rule would close") quotes what it measured:

    .venv/bin/python docs/whole-word-rule-experiment.py eval MODEL.gguf \
        --data data/udrl-gemma.jsonl.gz --set handwritten-tune --no-teacher --before default --out R.json

It wraps the SDK's private decoder class, so it only runs against the SDK it was written with; the
product version belongs in rules.py and native/udrl.c with shared vectors.
"""

import re
import sys

import numpy as np
from udrl import generate
from udrl.cli import main
from wordfreq import top_n_list

WORDS = {w for w in top_n_list("en", 200000) if re.fullmatch(r"[a-z]+", w) and (len(w) > 1 or w in "aix")}
PREFIXES = {w[:i] for w in WORDS for i in range(1, len(w) + 1)}
_pieces: dict[int, tuple[list[str], list[str]]] = {}
_allowed: dict[tuple, tuple] = {}


def token_tables(backend, n_vocab: int) -> tuple[list[str], list[str]]:
    """Each token's lower-case text and the letters it starts with."""
    if id(backend) not in _pieces:
        pieces = [backend.token_bytes(i).decode("utf-8", errors="replace").lower() for i in range(n_vocab)]
        _pieces[id(backend)] = (pieces, [re.match(r"[a-z]*", p).group(0) for p in pieces])
    return _pieces[id(backend)]


def inner_words_ok(piece: str, lead: str, words: set[str], prefixes: set[str]) -> bool:
    """After its leading letters, a piece's letter runs are whole words, the last one a prefix."""
    runs = re.findall(r"[a-z]+|[^a-z]", piece[len(lead):])
    for i, run in enumerate(runs):
        if run[0].isalpha() and run not in (prefixes if i == len(runs) - 1 else words):
            return False
    return True


def whole_words(logits: np.ndarray, state, backend) -> None:
    """Forbid the tokens that would leave, or start, a letter run no allowed word spells."""
    pieces, leads = token_tables(backend, len(logits))
    key = (id(backend), tuple(sorted(state.focus)))
    if key not in _allowed:
        words = WORDS | {w for asked in state.focus for w in re.findall(r"[a-z]+", asked)}
        prefixes = PREFIXES | {w[:i] for w in words - WORDS for i in range(1, len(w) + 1)}
        inner = np.array([inner_words_ok(p, lead, words, prefixes) for p, lead in zip(pieces, leads)])
        _allowed.clear()
        _allowed[key] = (words, prefixes, inner, np.array([bool(lead) for lead in leads]), {})
    words, prefixes, inner, continues, by_partial = _allowed[key]
    match = re.search(r"[a-z]+$", state.text.lower())
    partial = match.group(0) if match else ""
    allowed = by_partial.get(partial)
    if allowed is None:
        allowed = inner.copy()
        complete = partial == "" or partial in words
        if not complete:  # a token that does not continue the word would end it
            allowed &= continues
        for i in np.flatnonzero(continues & allowed):
            word = partial + leads[i]
            if word not in (prefixes if len(leads[i]) == len(pieces[i]) else words):
                allowed[i] = False
        allowed[state.vocab.eos] = complete
        by_partial[partial] = allowed
    if np.isfinite(logits[allowed]).any():
        logits[~allowed] = -np.inf


decoder = generate._Decoder
sdk_mask = decoder.mask


def mask(self, logits: np.ndarray) -> np.ndarray:
    """The SDK's rules, then `whole_words`."""
    out = sdk_mask(self, logits)
    whole_words(out, self.state, self.backend)
    return out


decoder.mask = mask

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
