"""udrl/casing.py and the stream's hold-back for title-case tasks, against the shared vectors
(tests/data/casing-vectors.json), which native/test_rules.c (--casing) runs through the C layer too."""

import json
import random
from pathlib import Path

import pytest
from udrl.casing import fold_title_case, title_case
from udrl.generate import stream_ready

VECTORS = json.loads((Path(__file__).parents[1] / "data" / "casing-vectors.json").read_text(encoding="utf-8"))
MINOR = frozenset(VECTORS["minor_words"])


@pytest.mark.parametrize("text, want", VECTORS["title_case"])
def test_title_case_matches_the_vectors(text, want):
    assert title_case(text, MINOR) == want


@pytest.mark.parametrize("text, want", VECTORS["stream"])
def test_a_title_case_stream_holds_back_the_open_word(text, want):
    assert stream_ready(text, MINOR) == want


@pytest.mark.parametrize("text, want", VECTORS["fold"])
def test_fold_lowers_title_case_words_and_keeps_acronyms_and_mixed_case(text, want):
    assert fold_title_case(text) == want


@pytest.mark.parametrize("headline", ["Paddle, Play and Make Friends at USA Camp", "The Lost Golden Retriever",
                                      "Join Us as We Say Yes", "Three Nights of Live Jazz", "McDonald's: A Taste of Home"])
def test_title_case_restores_what_fold_lowered(headline):
    assert title_case(fold_title_case(headline), MINOR) == headline


_PIECES = list("abcAB xyz,.:!?'\"-é東\u3000\t") + ["the ", "of ", "and "]


def _texts(seed: int, n: int = 600):
    rng = random.Random(seed)
    return ["".join(rng.choice(_PIECES) for _ in range(rng.randrange(0, 24))) for _ in range(n)]


def test_title_case_only_upper_cases_ascii_letters_and_is_stable():
    for text in _texts(0):
        cased = title_case(text, MINOR)
        assert len(cased) == len(text) and cased.lower() == text.lower()
        assert title_case(cased, MINOR) == cased
        assert all(c == o or (o.isascii() and c == o.upper()) for c, o in zip(cased, text))


def test_what_a_stream_hands_out_is_never_taken_back():
    """Each prefix's ready text is a prefix of the whole text's: a piece once streamed stays."""
    for text in _texts(1):
        whole = stream_ready(text + " ", MINOR)
        for cut in range(len(text) + 1):
            assert whole.startswith(stream_ready(text[:cut], MINOR)), (text, cut)


QUERIES = ["menu for a mexican taqueria with vegetarian options", "flyer for a lost golden retriever named biscuit",
           "poster for the usa jazz night, friday at 8pm", "東京 bakery flyer 🎉"]


def test_a_title_case_task_returns_title_case_and_streams_whole_words(tiny_artifacts):
    """The tiny model's manifest makes headlines title case (its task file says so); the stream is
    the result, in whole words."""
    import udrl

    for backend in ("llama", "onnx"):
        with udrl.load(tiny_artifacts[backend]) as model:
            assert model.manifest.title_tasks == ("headline",)
            for query in QUERIES:
                for length in (3, 7):
                    text = model.generate(query, task="headline", length=length).text
                    assert text == title_case(text, MINOR) and text != text.lower(), text
                    pieces = list(model.stream(query, task="headline", length=length))
                    assert "".join(pieces) == text
                    assert all(len(p) == len(text) or text[len("".join(pieces[: i + 1]))] in " ,;:"
                               for i, p in enumerate(pieces[:-1])), pieces
