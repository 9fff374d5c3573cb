"""The shared decoding vectors: cases for the rules of udrl/rules.py, on the bundled model, with the
logits the rules leave. tests/data/decoding-vectors.json is what this writes; the Python test
checks that the rules still produce it, and native/test_rules.c that the C layer's rules do.

Regenerate after changing a rule on purpose (and then change the C layer's to match):
    .venv/bin/python tests/sdk/decoding_vectors.py
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np

VECTORS = Path(__file__).resolve().parents[1] / "data" / "decoding-vectors.json"

# name, query, task, length, options, generated text (encoded with the model), logits other than 0.
# The logits are dyadic numbers, so that adding a bonus is exact in float32 on both sides; a case
# without any gives " night" the lead (with all at 0 the first token, here the end of sequence, would lead).
CASES = [
    ("focus lifts the one-token words of the request", "label for homemade strawberry jam", "tags", 4,
     {"focus": 8.25}, "", {" label": 1.5}),
    ("focus lifts the first token of a split word", "label for homemade kimchi", "tags", 4,
     {"focus": 8.25, "split_words": True}, "", {" label": 1.5}),
    ("a started focus word is finished", "label for homemade kimchi", "tags", 4,
     {"focus": 8.25, "split_words": True}, " kim", {" night": 3.0, "ch": 0.5}),
    ("the longest start decides the next piece", "label for homemade kimchi", "tags", 4,
     {"focus": 8.25, "split_words": True}, " kimch", {" night": 3.0}),
    ("a finished focus word is let go", "label for homemade kimchi", "tags", 4,
     {"focus": 8.25, "split_words": True}, " kimchi", {" night": 3.0}),
    ("finishing steps aside when the n-gram ban forbids the next piece", "label for homemade kimchi", "tags", 6,
     {"focus": 8.25, "split_words": True}, " kimchi's kim", {" night": 3.0}),
    ("no finishing with focus off", "label for homemade kimchi", "tags", 4,
     {"focus": 0.0, "split_words": True}, " kim", {" night": 3.0}),
    ("no split spelling for an end stopword", "poster for a picnic within the park", "tags", 4,
     {"focus": 8.25, "split_words": True}, "", {" label": 1.5}),
    ("focus pushes the function words down by its bonus", "poster for a summer jazz festival", "headline", 5,
     {"focus": 2.0, "push_function_words": True}, " Summer", {" for": 3.0, " jazz": 0.5, " night": 1.0}),
    ("no push with focus off", "poster for a summer jazz festival", "headline", 5,
     {"focus": 0.0, "push_function_words": True}, " Summer", {" for": 3.0, " night": 1.0}),
    ("split words off: a split word gets no bonus and is not finished", "label for homemade kimchi", "tags", 4,
     {"focus": 8.25, "split_words": False}, " kim", {" night": 3.0, "ch": 0.5}),
    ("focus stops for a word once written", "label for homemade strawberry jam", "tags", 4,
     {"focus": 8.25}, " strawberry,", {}),
    ("focus off leaves the request words alone", "label for homemade strawberry jam", "tags", 4,
     {"focus": 0.0}, "", {}),
    ("focus with accents, CJK and punctuation", "Café naïve 東京 poster, for the SUMMER jazz-night!", "search", 6,
     {"focus": 2.625}, " summer", {}),
    ("the n-gram ban forbids completing a pair of tokens again", "poster for a summer jazz festival", "image", 12,
     {}, " jazz festival, summer jazz", {}),
    ("a trigram ban", "poster for a summer jazz festival", "image", 12,
     {"no_repeat_ngram": 3}, " jazz festival, jazz festival night, jazz", {}),
    ("no word twice in a row", "poster for a summer jazz festival", "headline", 5,
     {}, " Summer Poster", {" poster": 4.0, " night": 0.5}),
    ("no one-word item again after a separator", "label for homemade strawberry jam", "tags", 5,
     {"focus": 0.0}, " label, homemade, strawberry jam,", {}),
    ("no item ban before a separator", "label for homemade strawberry jam", "tags", 5,
     {"focus": 0.0}, " label, homemade", {}),
    ("no content word a third time", "book cover for a birthday", "image", 12,
     {}, " book cover for a book card for an", {" book": 4.0, " cover": 3.0, " night": 0.5}),
    ("a stopword as often as it comes", "book cover for a birthday", "image", 12,
     {}, " a book for a card for", {" a": 4.0, " night": 0.5}),
    ("the guard's last word is no end stopword", "poster for a summer jazz festival", "headline", 3,
     {}, " Summer Jazz", {" the": 2.0, " night": 0.5}),
    ("the guard's last word is no bare punctuation", "poster for a summer jazz festival", "headline", 5,
     {}, " Summer Jazz, Live Music", {" &": 2.0, " -": 1.5, " night": 0.5}),
    ("a word goes on into a word, not into an end", "poster for a summer jazz festival", "headline", 5,
     {}, " Summer Jazz Festiv", {"<eos>": 3.0, " night": 2.0, "ities": 1.5, "al": 0.5}),
    ("whole words off", "poster for a summer jazz festival", "headline", 5,
     {"whole_words": False}, " Summer Jazz Festiv", {"<eos>": 3.0, " night": 2.0, "ities": 1.5, "al": 0.5}),
    ("a word of the request that no list spells", "poster for the zorblax festival", "headline", 5,
     {}, " Zorbl", {" night": 1.0, "ax": 0.5}),
    ("after an apostrophe, a word may be t", "poster for a summer jazz festival", "headline", 5,
     {}, " Don't", {" night": 0.5}),
    ("a word instead of an early end", "poster for a summer jazz festival", "headline", 4,
     {}, " Jazz", {"<eos>": 3.0}),
    ("no early end where the model would not end", "poster for a summer jazz festival", "headline", 4,
     {}, " Jazz", {"<eos>": 1.0, " night": 2.0}),
    ("the end allowed once the length is reached", "poster for a summer jazz festival", "headline", 2,
     {}, " Summer Jazz", {"<eos>": 3.0}),
    ("nothing but the n-gram ban with the guard off", "poster for a summer jazz festival", "headline", 4,
     {"length_guard": False}, " Jazz", {"<eos>": 3.0}),
    ("every ban off", "poster for a summer jazz festival", "tags", 4,
     {"length_guard": False, "no_repeat_ngram": 0, "focus": 0.0}, " jazz, jazz,", {"<eos>": 3.0}),
]


# A task's focus bias read at a length (udrl.manifest.focus_at; the C layer's focus_at) and biases a
# manifest may not hold (Manifest.validate; the C layer's valid_focus_bias), within the length range
# FOCUS_LENGTHS. A point's bonus holds at its own length exactly; the non-dyadic pair checks that
# both sides do the arithmetic in the same order.
FOCUS_LENGTHS = (1, 32)
POINTS = [[3, 1.25], [5, 3.5], [7, 5.25]]
FOCUS_AT = [(2.875, 7), (0.0, 3), (POINTS, 1), (POINTS, 3), (POINTS, 4), (POINTS, 5), (POINTS, 6), (POINTS, 7),
            (POINTS, 32), ([[5, 2.0]], 2), ([[5, 2.0]], 9), ([[4, 0.3], [9, 0.7]], 6), ([[1, 0.1], [32, 9.9]], 17)]
INVALID_FOCUS_BIAS = [-1.0, "2", True, None, [], [[3]], [[3, 1.0, 2.0]], [[3, 1.0], [3, 2.0]], [[5, 1.0], [3, 2.0]],
                      [[0, 1.0]], [[33, 1.0]], [[3.5, 1.0]], [[3, -1.0]], [["3", 1.0]], [[3, "1"]], [[3, True]],
                      [3, 1.0], {"3": 1.0}, 1e30, [[3, 1e30]], [[3, 1.0], [7, 1e300]]]


def focus_vectors() -> dict:
    """The focus-bias part of the vectors file."""
    from udrl.manifest import focus_bias_from_json, _focus_bias_problem, focus_at

    lo, hi = FOCUS_LENGTHS
    for bias in INVALID_FOCUS_BIAS:
        assert _focus_bias_problem("t", focus_bias_from_json(bias), lo, hi), f"{bias!r} should be refused"
    for bias, _ in FOCUS_AT:
        assert _focus_bias_problem("t", focus_bias_from_json(bias), lo, hi) is None, f"{bias!r} should be valid"
    return {"focus_lengths": list(FOCUS_LENGTHS),
            "focus_at": [[bias, n, focus_at(focus_bias_from_json(bias), n)] for bias, n in FOCUS_AT],
            "invalid_focus_bias": INVALID_FOCUS_BIAS}


def _token(backend, spelling: str) -> int:
    if spelling == "<eos>":
        return backend.manifest.eos_id
    ids = backend.encode(spelling)
    assert len(ids) == 1, f"{spelling!r} is {len(ids)} tokens in this model; choose a one-token spelling"
    return ids[0]


def _ranges(ids: list[int]) -> list[list[int]]:
    out: list[list[int]] = []
    for i in ids:
        if out and out[-1][1] == i - 1:
            out[-1][1] = i
        else:
            out.append([i, i])
    return out


def case_inputs(backend, case: tuple) -> dict:
    """One case as the vectors file holds its inputs."""
    name, query, task, length, options, written, logits = case
    return {"name": name, "query": query, "task": task, "length": length,
            "length_guard": options.get("length_guard", True), "no_repeat_ngram": options.get("no_repeat_ngram", 2),
            "focus": options.get("focus", backend.manifest.focus_for(task, length)),
            "split_words": options.get("split_words", backend.manifest.focus_split_words),
            "push_function_words": options.get("push_function_words", backend.manifest.focus_push_function_words),
            "whole_words": options.get("whole_words", True),
            "ids": backend.encode(written) if written else [],
            "logits": [[_token(backend, s), v] for s, v in (logits or {" night": 0.5}).items()]}


def apply_case(backend, case: dict, rules=None) -> np.ndarray:
    """The logits the Python rules (``rules``, default all of them) leave for one case of the vectors file."""
    from udrl.rules import RULES, DecodeState, apply_rules, focus_tokens, vocabulary

    n_vocab = len(backend.prefill([backend.manifest.eos_id]))  # the backends tell their size by their logits
    logits = np.zeros(n_vocab, dtype=np.float32)
    for token, value in case["logits"]:
        logits[token] = value
    text = b"".join(backend.token_bytes(t) for t in case["ids"]).decode("utf-8", errors="replace")
    vocab = vocabulary(backend, len(logits))
    state = DecodeState(vocab, case["length"], case["length_guard"], case["no_repeat_ngram"], case["focus"],
                        focus_tokens(backend, case["query"], case["split_words"]) if case["focus"] > 0 else {},
                        vocab.spelling.request(case["query"]) if vocab.spelling and case["whole_words"] else None,
                        list(case["ids"]), text.removeprefix(backend.manifest.output_prefix),
                        push_function_words=case["push_function_words"])
    return apply_rules(logits, state, RULES if rules is None else rules)


def expected(backend, case: dict, rules=None) -> dict:
    """What the rules leave, as the vectors file states it: banned ranges, raised tokens, the argmax."""
    out = apply_case(backend, case, rules)
    base = np.zeros_like(out)
    for token, value in case["logits"]:
        base[token] = value
    banned = np.flatnonzero(np.isneginf(out) & ~np.isneginf(base)).tolist()
    changed = np.flatnonzero(np.isfinite(out) & (out != base)).tolist()
    return {"banned": _ranges(banned), "raised": [[t, float(out[t] - base[t])] for t in changed],
            "argmax": int(np.argmax(out))}


def build(model: Path) -> dict:
    """The vectors file for ``model`` (the bundled GGUF)."""
    from udrl.backends import open_backend

    backend = open_backend(model)
    try:
        cases = []
        for case in CASES:
            inputs = case_inputs(backend, case)
            cases.append({**inputs, "expect": expected(backend, inputs)})
    finally:
        backend.close()
    digest = hashlib.sha256(model.read_bytes()).hexdigest()
    return {"model_sha256": digest, "cases": cases, **focus_vectors()}


def main() -> None:
    from udrl.model import default_model_path

    vectors = build(default_model_path())
    cases = ",\n".join(json.dumps(c, ensure_ascii=False) for c in vectors["cases"])  # a case a line
    focus = "".join(f',\n"{k}": {json.dumps(vectors[k])}' for k in ("focus_lengths", "focus_at", "invalid_focus_bias"))
    VECTORS.write_text(f'{{"model_sha256": "{vectors["model_sha256"]}", "cases": [\n{cases}\n]{focus}}}\n',
                       encoding="utf-8")
    print(f"wrote {len(vectors['cases'])} cases to {VECTORS}", file=sys.stderr)


if __name__ == "__main__":
    main()
