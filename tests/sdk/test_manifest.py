import json

import pytest
from udrl import Manifest, ManifestError, load_manifest, save_manifest
from udrl.manifest import MANIFEST_FILENAME


def make(**kw):
    return Manifest.new(tasks=["image", "search", "headline", "tags"], length_range=(1, 12),
                        reward_edges=[0.4, 0.6], **kw)


def test_new_manifest_names_one_control_token_per_command_value():
    m = make()
    assert m.control_tokens["task"]["tags"] == "<|task:tags|>"
    assert set(m.control_tokens["length"]) == {str(n) for n in range(1, 13)}
    assert m.reward_levels == 3 and set(m.control_tokens["reward"]) == {"0", "1", "2"}
    assert len(m.special_tokens) == len(set(m.special_tokens)) == 2 + 4 + 12 + 3


def test_new_models_see_every_word_after_a_space_and_older_manifests_keep_their_format():
    from udrl.commands import make_command, render_prompt

    m = make()
    cmd = make_command(m, "tags", 3)
    assert m.output_prefix == " "
    assert render_prompt(m, "jazz night", cmd) == "<|task:tags|><|len:3|><|rew:2|> jazz night<|sep|>"
    older = m.to_dict()
    del older["output_prefix"]
    older["template"] = "{task}{length}{reward}{query}{sep}"
    legacy = Manifest.from_dict(older)
    assert legacy.output_prefix == ""
    assert render_prompt(legacy, "jazz night", cmd) == "<|task:tags|><|len:3|><|rew:2|>jazz night<|sep|>"


def test_the_schema_holds_no_tuned_numbers_and_older_manifests_have_focus_off():
    m = make()  # the SDK's Manifest.new: focus and the end words come from the trainer, not from here
    assert m.focus_bias == {} and m.focus_stopwords == () and m.end_stopwords == ()
    tuned = make(focus_bias={t: 1.5 for t in m.tasks}, focus_stopwords=("the",), end_stopwords=("of",))
    assert Manifest.from_dict(tuned.to_dict()) == tuned
    older = tuned.to_dict()
    del older["focus"], older["length_guard"]
    legacy = Manifest.from_dict(older)
    assert legacy.focus_bias == {} and legacy.focus_stopwords == () and legacy.end_stopwords == ()


def test_a_bonus_per_length_round_trips_and_reads_between_its_points():
    from udrl.manifest import describe_focus, focus_at

    points = ((3, 1.25), (5, 3.5), (7, 5.25))
    m = make(focus_bias={"image": 3.0, "search": 6.5, "headline": points, "tags": 0.0})
    again = Manifest.from_json(m.to_json())
    assert again == m and again.to_dict()["focus"]["bias"]["headline"] == [[3, 1.25], [5, 3.5], [7, 5.25]]
    assert [again.focus_for("headline", n) for n in (1, 3, 4, 5, 6, 7, 12)] == [1.25, 1.25, 2.375, 3.5, 4.375, 5.25, 5.25]
    assert again.focus_for("image", 9) == 3.0 and again.focus_for("tags", 4) == 0.0
    assert focus_at(((4, 2.0),), 1) == focus_at(((4, 2.0),), 12) == 2.0
    assert describe_focus(points) == "1.25 at 3 words, 3.5 at 5, 5.25 at 7" and describe_focus(6.5) == "6.5"


@pytest.mark.parametrize("bias, problem", [
    ([], "must be a finite number >= 0 (0: off) below 1e+30, or a list of [length, bonus] points"),
    ([[5, 1.0], [3, 2.0]], "lengths [5, 3] are not ascending"),
    ([[3, 1.0], [3, 2.0]], "lengths [3, 3] are not ascending"),
    ([[0, 1.0]], "point [0, 1.0] is not"),
    ([[13, 1.0]], "lengths whole numbers from 1 to 12"),
    ([[3, -1.0]], "point [3, -1.0] is not"),
    ([[3.5, 1.0]], "point [3.5, 1.0] is not"),
    ([[3]], "point [3] is not"),
    ([3, 1.0], "point 3 is not"),
    ({"3": 1.0}, "got {'3': 1.0}"),
])
def test_a_malformed_bonus_per_length_names_what_is_allowed(bias, problem):
    data = make(focus_bias={t: 1.0 for t in ("image", "search", "headline", "tags")}).to_dict()
    data["focus"]["bias"]["headline"] = bias
    with pytest.raises(ManifestError, match="focus bias for 'headline' must be") as e:
        Manifest.from_dict(data)
    assert problem in str(e.value)


def test_focus_split_words_round_trips_and_is_off_where_a_manifest_predates_it():
    # A bonus chosen when focus lifted one-token words only keeps that meaning (docs/decoding.md, rule 1).
    split = make(focus_bias={t: 1.5 for t in ("image", "search", "headline", "tags")}, focus_split_words=True,
                 focus_push_function_words=True)
    assert Manifest.from_dict(split.to_dict()) == split
    older = split.to_dict()
    del older["focus"]["split_words"], older["focus"]["push_function_words"]
    legacy = Manifest.from_dict(older)
    assert legacy.focus_split_words is False and legacy.focus_push_function_words is False
    assert legacy.focus_bias == split.focus_bias


def test_round_trip_through_a_checkpoint_directory(tmp_path):
    m = make(data_hash="sha256:abc").replace(default_length={"image": 7})
    path = save_manifest(m, tmp_path)
    assert path.name == MANIFEST_FILENAME
    assert load_manifest(tmp_path) == m
    assert load_manifest(path) == m
    assert not list(tmp_path.glob(".*tmp*")), "atomic write must leave no temporary file"


def test_missing_manifest_is_a_clear_error(tmp_path):
    with pytest.raises(ManifestError, match="no udrl manifest.*udrl.json"):
        load_manifest(tmp_path)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d.update(format="something-else"), "not a udrl manifest"),
        (lambda d: d.update(version=99), "version 99 is not supported"),
        (lambda d: d.update(tasks=[]), "at least one task"),
        (lambda d: d.update(tasks=["image", "Bad Name!", "headline", "tags"]), "task name 'Bad Name!'"),
        (lambda d: d["reward"].update(edges=[0.6, 0.4]), "strictly ascending"),
        (lambda d: d["length"].update(min=0), "1 <= min <= max"),
        (lambda d: d.update(template="{task}{query}"), "must contain {query} and {sep}"),
        (lambda d: d.update(conditioning=["length", "mood"]), "unknown conditioning"),
        (lambda d: d.pop("control_tokens"), "missing or mistypes field"),
        (lambda d: d.update(output_prefix="Output:"), "output_prefix must be at most 8 whitespace"),
        (lambda d: d["focus"]["bias"].update(tags=-1.0), "focus bias for 'tags' must be a finite number >= 0"),
        (lambda d: d["focus"]["bias"].pop("tags"), "focus bias names tasks"),
        (lambda d: d["focus"].update(min_bytes=0), "focus min_bytes must be an integer >= 1"),
        (lambda d: d["focus"].update(split_words="yes"), "focus split_words must be true or false"),
        (lambda d: d["focus"].update(push_function_words=1), "focus push_function_words must be true or false"),
        (lambda d: d["focus"].update(stopwords=["The"]), "focus stopwords must be single non-empty words"),
        (lambda d: d["length_guard"].update(end_stopwords=["of the"]), "length_guard end_stopwords must be single"),
        (lambda d: d["spelling"].update(words="jam  label"), "spelling words must be one string"),
        (lambda d: d["spelling"].update(words="Jam label"), "spelling words must be one string"),
        (lambda d: d["spelling"].update(words=["jam"]), "spelling words must be one string"),
        (lambda d: d["spelling"].update(words="label jam"), "ascending order, each once"),
        (lambda d: d["spelling"].update(words="jam jam"), "ascending order, each once"),
        (lambda d: d["spelling"].update(words="jam", after_apostrophe=["S"]), "after_apostrophe must be at most 64"),
        (lambda d: d["spelling"].update(words="", after_apostrophe=["s"]), "needs spelling words"),
        (lambda d: d.update(spelling=["jam"]), "missing or mistypes field"),
    ],
)
def test_invalid_manifests_are_refused_with_the_reason(tmp_path, mutate, message):
    # A tuned manifest, so that the focus rows have a bias per task to break.
    data = make(focus_bias={t: 1.0 for t in ("image", "search", "headline", "tags")}).to_dict()
    mutate(data)
    (tmp_path / MANIFEST_FILENAME).write_text(json.dumps(data))
    with pytest.raises(ManifestError, match=message):
        load_manifest(tmp_path)


def test_spelling_words_round_trip_and_stay_out_of_the_repr(tmp_path):
    manifest = make(spelling_words="a jam label", spelling_after_apostrophe=("s", "t"))
    save_manifest(manifest, tmp_path)
    loaded = load_manifest(tmp_path)
    assert loaded.spelling_words == "a jam label" and loaded.spelling_after_apostrophe == ("s", "t")
    assert "jam" not in repr(loaded)  # 180,000 words would drown every error message that shows a manifest
    assert make().spelling_words == ""  # older manifests and new ones without a list: the rule off


def test_all_problems_are_listed_at_once():
    data = make().to_dict()
    data["tasks"] = ["image", "image"]
    data["reward"]["edges"] = [0.5, 0.5]
    with pytest.raises(ManifestError) as err:
        Manifest.from_dict(data)
    assert "duplicates" in str(err.value) and "ascending" in str(err.value)


def test_not_json_is_a_clear_error(tmp_path):
    (tmp_path / MANIFEST_FILENAME).write_text("{not json")
    with pytest.raises(ManifestError, match="not valid JSON"):
        load_manifest(tmp_path)


def test_token_ids_must_cover_every_special_token():
    m = make()
    ids = {t: i for i, t in enumerate(m.special_tokens)}
    assert m.replace(token_ids=ids).sep_id == 1
    ids.pop("<|len:3|>")
    with pytest.raises(ManifestError, match="lacks ids"):
        m.replace(token_ids=ids)
    with pytest.raises(ManifestError, match="before a tokenizer existed"):
        _ = m.eos_id


def test_any_focus_bias_json_is_read_or_refused_with_a_manifest_error():
    # Fuzz: whatever JSON a manifest's focus bias holds, reading it either fails with ManifestError or
    # gives a bias that reads a finite bonus >= 0 at every length of the range.
    import math
    import random

    rng = random.Random(18)
    atoms = [0, 1, 3, 12, 13, -1, 2.5, 1e308, float("inf"), float("nan"), True, None, "3", [], {}]

    def value(depth: int):
        if depth > 2 or rng.random() < 0.3:
            return rng.choice(atoms)
        return [value(depth + 1) for _ in range(rng.randint(0, 4))]

    base = make(focus_bias={t: 1.0 for t in ("image", "search", "headline", "tags")}).to_dict()
    read = 0
    for _ in range(2000):
        bias = value(0) if rng.random() < 0.5 else sorted(
            ([rng.randint(0, 14), rng.choice(atoms)] for _ in range(rng.randint(1, 4))), key=lambda p: p[0])
        data = json.loads(json.dumps(base))
        data["focus"]["bias"]["headline"] = bias
        try:
            m = Manifest.from_dict(data)
        except ManifestError:
            continue
        read += 1
        bonuses = [m.focus_for("headline", n) for n in range(m.length_min, m.length_max + 1)]
        assert all(math.isfinite(b) and b >= 0 for b in bonuses), bias
        assert Manifest.from_json(m.to_json()) == m
    assert read > 100  # the generator reaches valid biases too
