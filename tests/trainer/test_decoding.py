from udrl.manifest import Manifest
from udrl.trainer.decoding import AFTER_APOSTROPHE, END_STOPWORDS, FOCUS_BIAS, FOCUS_STOPWORDS, starting_settings


def test_a_new_model_starts_with_the_tuned_focus_and_a_new_task_without_it():
    m = Manifest.new(tasks=["tags", "poster"], length_range=(1, 12), reward_edges=[0.5],
                     **starting_settings(["tags", "poster"]))
    assert dict(m.focus_bias) == {"tags": FOCUS_BIAS["tags"], "poster": 0.0}
    assert m.focus_stopwords == FOCUS_STOPWORDS and "the" in m.focus_stopwords
    assert m.end_stopwords == END_STOPWORDS and "the" in m.end_stopwords
    assert Manifest.from_dict(m.to_dict()) == m


def test_a_trained_model_carries_its_decoding_settings(tiny_run):
    from udrl.manifest import load_manifest

    m = load_manifest(tiny_run / "model")
    assert m.focus_stopwords == FOCUS_STOPWORDS and m.end_stopwords == END_STOPWORDS
    assert set(m.focus_bias) == set(m.tasks)
    words = m.spelling_words.split()
    assert len(words) > 150_000 and {"poster", "festival", "jazz", "a", "i"} <= set(words)
    assert not {"t", "s", "pders", "veget", "bht", "tup"} & set(words)  # no stray letters, fragments or junk
    assert {"diy", "bbq", "logo", "yoga"} <= set(words)  # short words people write
    assert m.spelling_after_apostrophe == AFTER_APOSTROPHE


def test_no_spelling_words_turns_the_whole_word_rule_off():
    settings = starting_settings(["tags"], spelling=0)
    assert settings["spelling_words"] == "" and settings["spelling_after_apostrophe"] == ()


def test_a_fine_tune_keeps_the_bonus_chosen_for_its_parent():
    settings = starting_settings(["tags", "search", "alt_text"], tuned_focus={"tags": 7.5, "search": 10.0})
    assert settings["focus_bias"] == {"tags": 7.5, "search": 10.0, "alt_text": 0.0}


def test_a_new_model_lifts_split_words_and_a_fine_tune_keeps_its_parents_rule():
    assert starting_settings(["tags"], spelling=0)["focus_split_words"] is True
    assert starting_settings(["tags"], spelling=0)["focus_push_function_words"] is False
    kept = starting_settings(["tags"], tuned_focus={"tags": 7.5}, spelling=0, split_words=False)
    assert kept["focus_split_words"] is False and kept["focus_bias"] == {"tags": 7.5}
