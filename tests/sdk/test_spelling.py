"""udrl/spelling.py and the rule that reads it (rules.whole_words): every word of an output is a word
of the manifest's list or of the request. The shared vectors (test_rules.py) check it against the C
layer on the bundled model; these check what it allows on small hand-made vocabularies."""

import numpy as np
import pytest
from udrl import rules
from udrl.spelling import Spelling, letter_runs, open_run

PIECES = [b"", b" p", b"ders", b"arty", b" party", b",", b" jam", b"'", b"s", b"t", b" zor", b"bl", b"ax", b"q",
          b"5", b"k", b" jam,", b"ty!", b" jamx"]
WORDS = "a jam party"


def allowed(query: str, text: str) -> set[bytes]:
    mask = Spelling(WORDS, ("s", "t"), PIECES, eos=0).request(query).allowed(text)
    return {b"<eos>" if t == 0 else PIECES[t] for t in np.flatnonzero(mask)}


def test_a_word_goes_on_only_into_a_word_and_ends_only_where_one_ends():
    after_p = allowed("flyer", " p")
    assert b"arty" in after_p and b"ders" not in after_p  # "party", not "pders"
    assert not {b" party", b",", b"<eos>"} & after_p  # "p" may not end
    after_party = allowed("flyer", " party")
    assert {b" jam", b",", b"<eos>", b" jam,"} <= after_party and b"ty!" not in after_party
    assert b" jamx" not in after_party  # its own run is spelt by nothing


def test_a_word_of_the_request_may_be_spelt_even_if_no_list_holds_it():
    assert b"ax" not in allowed("flyer", " zorbl")
    assert b"ax" in allowed("poster for the Zorblax festival", " zorbl")
    assert b"<eos>" in allowed("poster for the Zorblax festival", " zorblax")
    assert b"k" in allowed("charity 5k run", " 5") and b"<eos>" in allowed("charity 5k run", " 5k")
    assert b"<eos>" not in allowed("charity run", " 5k")


def test_after_an_apostrophe_the_listed_endings_are_words():
    assert b"s" in allowed("flyer", " jam'") and b"<eos>" in allowed("flyer", " jam's")
    assert b"<eos>" not in allowed("flyer", " jam'q")  # "q" begins words, but ends none
    assert b"<eos>" not in allowed("flyer", " jam s")  # "s" is a word only after an apostrophe
    assert b"<eos>" in allowed("flyer", " jam\u2019t")


def test_special_tokens_other_than_the_end_are_never_allowed():
    assert b"" not in allowed("flyer", " party")


@pytest.mark.parametrize("text, run", [("Jazz Fest", ("fest", False)), ("jam's", ("s", True)), ("5k", ("k", False)),
                                      ("night,", ("", False)), ("festival\u2019", ("", True)), ("", ("", False))])
def test_the_open_run(text, run):
    assert open_run(text) == run


def test_letter_runs_are_ascii_letters_lowered():
    assert letter_runs("5K Run! Café naïve") == ["k", "run", "caf", "na", "ve"]


class _Backend:
    """Enough of a backend for `rules.vocabulary`: a manifest and the pieces."""

    def __init__(self, manifest):
        self.manifest = manifest

    def token_bytes(self, token: int) -> bytes:
        return PIECES[token]


def _state(text: str, query: str = "flyer") -> rules.DecodeState:
    from udrl import Manifest

    tokens = {"<|endoftext|>": 0, "<|sep|>": 100}
    manifest = Manifest.new(tasks=["tags"], length_range=(1, 4), spelling_words=WORDS,
                            spelling_after_apostrophe=("s",))
    manifest = manifest.replace(token_ids={**tokens, **{t: 200 + i for i, t in enumerate(manifest.special_tokens[2:])}})
    vocab = rules.vocabulary(_Backend(manifest), len(PIECES))
    return rules.DecodeState(vocab, length=4, spelling=vocab.spelling.request(query), text=text)


def test_the_rule_forbids_what_is_not_allowed():
    logits = np.zeros(len(PIECES), dtype=np.float32)
    rules.whole_words(logits, _state(" p"))
    assert np.isfinite(logits[PIECES.index(b"arty")]) and np.isneginf(logits[PIECES.index(b"ders")])


def test_the_rule_steps_aside_when_it_would_leave_nothing():
    logits = np.full(len(PIECES), -np.inf, dtype=np.float32)
    logits[PIECES.index(b"ders")] = 1.0  # the only token another rule left
    rules.whole_words(logits, _state(" p"))
    assert logits[PIECES.index(b"ders")] == 1.0


# The requests of the issue that asked for this rule, where the bundled model wrote "t t Veget".
ISSUE_REQUESTS = ["menu for a mexican taqueria with vegetarian options",
                  "flyer for a lost golden retriever named biscuit last seen near maple park",
                  "label for homemade strawberry jam", "youtube thumbnail for a beginner guitar lesson",
                  "poster for a charity 5k run supporting cancer research",
                  "invite for my daughter's quinceañera, don't forget the mariachi"]


def test_the_bundled_model_writes_only_spelt_words():
    import re

    import udrl
    from udrl.model import default_model_path

    with udrl.load(default_model_path()) as model:
        manifest = model.manifest
        words = set(manifest.spelling_words.split())
        assert len(words) > 150_000, "the bundled model's manifest lists the spelling words"
        for query in ISSUE_REQUESTS:
            asked = set(letter_runs(query))
            for task in manifest.tasks:
                text = model.generate(query, task=task).text
                for match in re.finditer("[A-Za-z]+", text):
                    run = match.group(0).lower()
                    after_apostrophe = text[: match.start()].endswith(("'", "\u2019"))
                    assert run in words or run in asked or (
                        after_apostrophe and run in manifest.spelling_after_apostrophe), (query, task, text)


def test_whole_words_off_lets_the_model_spell_freely():
    import re

    import udrl
    from udrl.model import default_model_path

    with udrl.load(default_model_path()) as model:
        words = set(model.manifest.spelling_words.split())
        unspelt = []
        for query in ISSUE_REQUESTS:
            for task in model.manifest.tasks:
                text = model.generate(query, task=task, whole_words=False).text
                asked = set(letter_runs(query))
                unspelt += [w for w in re.findall("[a-z]+", text.lower()) if w not in words and w not in asked]
        assert unspelt, "without the rule the bundled model writes fragments on these requests (e.g. 'veget')"
