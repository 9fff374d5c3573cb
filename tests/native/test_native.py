"""native/: the C library and udrl-generate, built here and compared with the Python SDK."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import udrl
from udrl.commands import make_command, render_prompt

NATIVE = Path(__file__).resolve().parents[2] / "native"
REQUESTS = [
    ("poster for a summer festival", "image", 9, 2),
    ("Café logo — naïve & bold", "tags", 4, 1),
    ("東京 bakery flyer 🎉", "search", 3, 0),
    ("  banner\tfor a   wedding ", "headline", 6, 2),
    ("flyer for a hiking club", "image", 14, 2),
]

pytestmark = pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None,
                                reason="no C compiler on this machine")


def build(target: Path, sanitize: str = "") -> Path:
    cmd = ["make", "-C", str(NATIVE), f"BUILD={target}", f"PYTHON={sys.executable}"]
    if sanitize:
        cmd.append(f"SANITIZE={sanitize}")
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    return target / "udrl-generate"


@pytest.fixture(scope="module")
def exe(tmp_path_factory) -> Path:
    return build(tmp_path_factory.mktemp("native") / "build")


@pytest.fixture(scope="module")
def gguf(tiny_artifacts) -> Path:
    return tiny_artifacts["llama"]


def run(exe: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    # errors="replace": a byte-level model may write a stray UTF-8 lead byte; the C layer passes bytes on.
    return subprocess.run([str(exe), *args], capture_output=True, text=True, errors="replace", timeout=120, env=env)


def test_library_and_example_compile_with_warnings_as_errors(exe):
    assert exe.exists() and (exe.parent / "libudrl.a").exists() and (exe.parent / "libudrl.so").exists()
    makefile = (NATIVE / "Makefile").read_text()
    assert "-Werror" in makefile and "-std=c99" in makefile


def test_prompt_ids_and_greedy_outputs_equal_the_python_sdk(exe, gguf):
    assert_same_as_sdk(exe, gguf)


def test_the_bundled_default_model_runs_the_same_in_c(exe):
    from udrl.model import default_model_path

    assert_same_as_sdk(exe, default_model_path())


def assert_same_as_sdk(exe: Path, gguf: Path) -> None:
    with udrl.load(gguf) as model:
        backend = model._live()
        for query, task, length, reward in REQUESTS:
            cmd = make_command(model.manifest, task, length, reward)
            ids = backend.encode(render_prompt(model.manifest, query, cmd))
            args = ["--model", str(gguf), query, "--task", task, "--length", str(length), "--reward", str(reward)]
            got_ids = run(exe, *args, "--prompt-tokens")
            assert got_ids.returncode == 0, got_ids.stderr
            assert [int(x) for x in got_ids.stdout.split()] == ids
            text = run(exe, *args)
            assert text.returncode == 0, text.stderr
            assert text.stdout.rstrip("\n") == model.generate(query, task=task, length=length, reward=reward).text
            streamed = run(exe, *args, "--stream")
            assert streamed.stdout.strip() == text.stdout.strip()
            assert streamed.stdout[:1] == text.stdout[:1]  # the output prefix is never streamed


def test_defaults_match_the_sdk(exe, gguf):
    with udrl.load(gguf) as model:
        want = model.generate("logo for a bakery", task="tags").text
    assert run(exe, "--model", str(gguf), "logo for a bakery", "--task", "tags").stdout.strip() == want


@pytest.mark.parametrize("args, code, message", [
    (["x", "--task", "video"], 4, "unknown task 'video'; this model knows: image, search, headline, tags"),
    (["x", "--length", "99"], 5, "length 99 is outside the range this model was trained on: 1 to 16 words"),
    (["x", "--length", "0"], 5, "length 0 is outside the range"),
    (["x", "--reward", "7"], 6, "reward must be an integer level from 0 (lowest) to 2, got 7"),
    (["   "], 7, "query is empty"),
    (["a <|sep|> b"], 7, "reserved control token"),
    (["festival " * 200], 8, "query too long"),
])
def test_invalid_commands_return_the_documented_codes(exe, gguf, args, code, message):
    out = run(exe, "--model", str(gguf), *args)
    assert out.returncode == code and message in out.stderr


def test_corrupted_missing_and_manifestless_models(exe, tmp_path, gguf):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"definitely not a model")
    out = run(exe, "--model", str(bad), "x")
    assert out.returncode == 2 and "not a valid GGUF model" in out.stderr
    out = run(exe, "--model", str(tmp_path / "missing.gguf"), "x")
    assert out.returncode == 2 and "cannot open" in out.stderr
    plain = with_manifest(gguf, tmp_path / "plain.gguf", None)
    out = run(exe, "--model", str(plain), "x")
    assert out.returncode == 3 and "carries no udrl manifest" in out.stderr


def with_manifest(source: Path, target: Path, manifest: str | None) -> Path:
    """A copy of a GGUF whose udrl.manifest string is replaced (None: left out)."""
    import gguf as gguf_py

    reader = gguf_py.GGUFReader(str(source))
    writer = gguf_py.GGUFWriter(str(target), "gpt2")
    for field in reader.fields.values():
        if field.name.startswith("GGUF.") or field.name in ("general.architecture", "udrl.manifest"):
            continue
        sub = field.types[-1] if field.types[0] == gguf_py.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), field.types[0], sub_type=sub)
    if manifest is not None:
        writer.add_string("udrl.manifest", manifest)
    for t in reader.tensors:
        writer.add_tensor(t.name, t.data, raw_shape=t.data.shape, raw_dtype=t.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return target


def _manifest_mutations(text: str) -> dict[str, str]:
    data = json.loads(text)

    def changed(edit) -> str:
        copy = json.loads(text)
        edit(copy)
        return json.dumps(copy)

    return {
        "not JSON": text[: len(text) // 2],
        "a JSON list": json.dumps([data]),
        "nested a thousand deep": "[" * 1000 + "]" * 1000,
        "context beyond int": changed(lambda d: d["model"].update(n_ctx=1e20)),
        "length min a string": changed(lambda d: d["length"].update(min="1")),
        "length min above max": changed(lambda d: d["length"].update(min=9, max=2)),
        "tasks an object": changed(lambda d: d.update(tasks={"image": 1})),
        "a task not a string": changed(lambda d: d.update(tasks=[1, 2])),
        "token id a float": changed(lambda d: d["token_ids"].update({d["eos_token"]: 0.5})),
        "focus stopwords not strings": changed(lambda d: d.setdefault("focus", {"bias": {}, "min_bytes": 3})
                                               .update(stopwords=[1])),
        "focus split_words a string": changed(lambda d: d.setdefault("focus", {"bias": {}, "min_bytes": 3, "stopwords": []})
                                              .update(split_words="yes")),
        "focus push_function_words a number": changed(
            lambda d: d.setdefault("focus", {"bias": {}, "min_bytes": 3, "stopwords": []}).update(push_function_words=1)),
        "no version": changed(lambda d: d.pop("version")),
        "spelling words a list": changed(lambda d: d.update(spelling={"words": ["jam"], "after_apostrophe": []})),
        "spelling words out of order": changed(lambda d: d.update(spelling={"words": "label jam", "after_apostrophe": []})),
        "spelling words with two spaces": changed(lambda d: d.update(spelling={"words": "jam  label",
                                                                              "after_apostrophe": []})),
        "spelling words in capitals": changed(lambda d: d.update(spelling={"words": "Jam", "after_apostrophe": []})),
        "apostrophe endings without words": changed(lambda d: d.update(spelling={"words": "", "after_apostrophe": ["s"]})),
        "apostrophe endings not letters": changed(lambda d: d.update(spelling={"words": "jam", "after_apostrophe": ["'s"]})),
        "spelling an array": changed(lambda d: d.update(spelling=["jam"])),
    }


def test_malformed_manifests_are_refused_by_the_c_layer(exe, gguf, tmp_path):
    """The manifest JSON broken or mistyped in each way: UDRL_E_MANIFEST (exit 3) naming the manifest,
    never a crash or a run on half-read tables."""
    import gguf as gguf_py

    text = gguf_py.GGUFReader(str(gguf)).fields["udrl.manifest"].contents()
    for what, manifest in _manifest_mutations(text).items():
        path = with_manifest(gguf, tmp_path / "mutated.gguf", manifest)
        out = run(exe, "--model", str(path), "--max-tokens", "4", "poster")
        assert out.returncode == 3 and "manifest" in out.stderr, (what, out.returncode, out.stderr)


def test_seeded_sampling_repeats(exe, gguf):
    args = ["--model", str(gguf), "jazz night", "--temperature", "0.9", "--top-k", "40", "--top-p", "0.9"]
    a = run(exe, *args, "--seed", "11").stdout
    assert a == run(exe, *args, "--seed", "11").stdout
    assert len({run(exe, *args, "--seed", str(s)).stdout for s in range(6)}) > 1


def test_sanitized_build_generates_without_reports(tmp_path, gguf):
    exe = build(tmp_path / "asan", "-fsanitize=address,undefined -fno-omit-frame-pointer")
    env = {**os.environ, "ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0", "UBSAN_OPTIONS": "print_stacktrace=1"}
    for args in (["Café logo — naïve & bold 🎉", "--task", "tags", "--length", "6", "--stream"],
                 ["jazz", "--temperature", "0.8", "--top-k", "20", "--top-p", "0.9", "--seed", "5"],
                 ["x", "--task", "video"]):
        out = run(exe, "--model", str(gguf), *args, env=env)
        assert "AddressSanitizer" not in out.stderr and "runtime error" not in out.stderr, out.stderr
        assert "LeakSanitizer" not in out.stderr, out.stderr


def test_no_repeat_ngram_matches_the_sdk_on_the_bundled_model(exe):
    from udrl.model import default_model_path

    path = default_model_path()
    with udrl.load(path) as model:
        # n=1 meets a near-tie on this request (2.6e-4 apart in the logits of an earlier model): the
        # C layer turns flash attention off, as the SDK does, so both compute the same logits.
        for n in (0, 1, 3, 5):
            want = model.generate("logo for a vegan bakery in Berlin", task="tags", length=8, no_repeat_ngram=n).text
            got = run(exe, "--model", str(path), "logo for a vegan bakery in Berlin", "--task", "tags", "--length", "8",
                      "--no-repeat-ngram", str(n))
            assert got.returncode == 0 and got.stdout.rstrip("\n") == want, (n, got.stderr)
    bad = run(exe, "--model", str(path), "x", "--no-repeat-ngram", "-1")
    assert bad.returncode != 0 and "no_repeat_ngram >= 0" in bad.stderr


def _bundled_with_focus(tmp_path: Path, **rule: bool) -> Path:
    """The bundled model with its manifest's focus rule fields set as given (a copy in tmp_path)."""
    import gguf as gguf_py
    from udrl.model import default_model_path

    bundled = default_model_path()
    data = json.loads(gguf_py.GGUFReader(str(bundled)).fields["udrl.manifest"].contents())
    data["focus"].update(rule)
    name = "-".join(f"{k}-{int(v)}" for k, v in rule.items()) + ".gguf"
    return with_manifest(bundled, tmp_path / name, json.dumps(data))


@pytest.mark.parametrize("focus", ["0", "2", "50"])
def test_query_focus_matches_the_sdk(exe, gguf, tmp_path, focus):
    from udrl.artifacts import read_manifest

    # Both rules, as the SDK runs them: the tiny model's manifest lifts split words (the tiny BPE
    # splits most of these), a copy of the bundled model's lifts one-token words only.
    queries = ["Poster for the Summer-festival, summer FESTIVAL!", "Café logo — naïve & bold", "flyer for a hiking club",
               "jazz, blues, soul, funk, disco", "label for homemade kimchi within quixotic zeppelins"]
    one_token = _bundled_with_focus(tmp_path, split_words=False, push_function_words=False)
    assert read_manifest(gguf).focus_split_words and not read_manifest(one_token).focus_split_words
    for path in (gguf, one_token):
        with udrl.load(path) as model:
            for query in queries:
                for length in (3, 6):  # the guard cuts some of these after a separator, which both drop
                    want = model.generate(query, task="tags", length=length, focus=float(focus)).text
                    args = ["--model", str(path), query, "--task", "tags", "--length", str(length), "--focus", focus]
                    got = run(exe, *args)
                    assert got.returncode == 0 and got.stdout.rstrip("\n") == want, (path, query, got.stderr)
                    assert run(exe, *args, "--stream").stdout.strip() == want


def test_focus_pushing_function_words_down_matches_the_sdk(exe, tmp_path):
    # The bundled model's manifest with focus.push_function_words on and off (the tiny model never
    # writes an end word, so the push would not show there): C and the SDK write the same text under
    # each, and the two texts differ.
    pushed = _bundled_with_focus(tmp_path, split_words=True, push_function_words=True)
    not_pushed = _bundled_with_focus(tmp_path, split_words=True, push_function_words=False)
    texts = {}
    for path in (not_pushed, pushed):
        with udrl.load(path) as model:
            for query in ("poster for a bake sale raising money for the animal shelter", "wine label for a pinot noir"):
                for task, length in (("headline", 7), ("image", 14)):
                    want = model.generate(query, task=task, length=length, focus=2.0).text
                    got = run(exe, "--model", str(path), query, "--task", task, "--length", str(length), "--focus", "2")
                    assert got.returncode == 0 and got.stdout.rstrip("\n") == want, (path, query, got.stderr)
                    texts.setdefault(path, []).append(want)
    assert texts[not_pushed] != texts[pushed]


def test_the_guard_asks_for_a_word_where_the_model_would_end_early_as_the_sdk(exe):
    from udrl.model import default_model_path

    path, query = default_model_path(), "graphic design and print design for an advertising campaign"
    with udrl.load(path) as model:
        for length in (4, 6):
            want = model.generate(query, task="headline", length=length, focus=2).text
            got = run(exe, "--model", str(path), query, "--task", "headline", "--length", str(length), "--focus", "2")
            assert got.returncode == 0 and got.stdout.rstrip("\n") == want


def test_whole_words_on_and_off_as_the_sdk(exe):
    from udrl.model import default_model_path

    path = default_model_path()
    queries = ["menu for a mexican taqueria with vegetarian options", "invite for my daughter's quinceañera",
               "label for a zorblax energy drink"]
    with udrl.load(path) as model:
        for query in queries:
            for whole_words in (True, False):
                want = model.generate(query, task="tags", length=5, whole_words=whole_words).text
                args = ["--model", str(path), query, "--task", "tags", "--length", "5"]
                got = run(exe, *args, *([] if whole_words else ["--no-whole-words"]))
                assert got.returncode == 0 and got.stdout.rstrip("\n") == want, (query, whole_words, got.stderr)


def test_the_guard_never_ends_on_an_end_stopword_as_the_sdk(exe, gguf):
    from udrl.manifest import focus_key
    from udrl.model import default_model_path

    queries = ["poster for a summer jazz festival by the sea", "flyer for a hiking club", "bakery logo"]
    for path in (gguf, default_model_path()):
        with udrl.load(path) as model:
            stops = set(model.manifest.end_stopwords)
            assert stops  # both models carry the list
            for query in queries:
                for task in model.manifest.tasks:
                    for length in (4, 9):
                        want = model.generate(query, task=task, length=length).text
                        assert focus_key(want.split()[-1]) not in stops, want
                        got = run(exe, "--model", str(path), query, "--task", task, "--length", str(length))
                        assert got.returncode == 0 and got.stdout.rstrip("\n") == want, (path, query, task, got.stderr)


def test_mutated_gguf_files_are_refused_by_the_c_layer_without_a_crash(exe, gguf, tmp_path):
    """The SDK's mutation set (hyperparameters out of range, control tokens retyped, lengths that
    overflow, truncations, flipped header bytes) through udrl-generate: an error code, never a signal."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "sdk"))
    from gguf_mutations import mutated_files

    outcomes = {}
    for what, path in mutated_files(Path(gguf), tmp_path, n_flips=30, n_truncations=20):
        out = run(exe, "--model", str(path), "--max-tokens", "4", "poster")
        assert out.returncode >= 0, f"{what}: killed by signal {-out.returncode}"
        outcomes[what] = out.returncode
        if what.startswith(("gpt2.block_count=", "gpt2.attention.layer_norm_epsilon=", "token ")):
            assert out.returncode == 3 and "udrl-generate: error:" in out.stderr, (what, out.stderr)
    assert sum(code != 0 for code in outcomes.values()) >= 0.8 * len(outcomes)


# Requests of the hand-written tuning half on which the bundled model used to write a word twice in a
# row ("night poster poster", "Birthday Party Party"), before the decoder forbade starting the last word again.
DOUBLED = [
    ("etsy shop banner for handmade candles", "headline", 4),
    ("poster for a debate club tryouts", "headline", 4),
    ("poster for the new night bus line 24", "image", 11),
    ("poster for a dungeons and dragons night at the comic shop", "tags", 5),
    ("poster for the new night bus line 24", "search", 3),
    ("yard sale sign, everything must go, sunday 8am", "search", 3),
    ("ticket for a minor league baseball game", "headline", 3),
    ("sticker for a hackathon at the city library", "search", 2),
    ("flyer for a free bike helmet giveaway", "search", 5),
    ("flyer for a pop-up ramen night this friday at 7pm, tickets $25", "search", 3),
    ("logo for an esports team called night owls", "image", 11),
    ("boarding pass style invitation for a destination birthday", "headline", 3),
]


def test_no_word_twice_in_a_row_in_c_as_in_the_sdk(exe):
    from udrl.manifest import focus_key
    from udrl.model import default_model_path

    with udrl.load(default_model_path()) as model:
        for query, task, length in DOUBLED:
            text = model.generate(query, task=task, length=length).text
            keys = [focus_key(w) for w in text.split()]
            assert all(a != b for a, b in zip(keys, keys[1:])), (query, text)
            out = run(exe, "--model", str(default_model_path()), "--task", task, "--length", str(length), query)
            assert out.returncode == 0 and out.stdout.strip() == text, (query, out.stdout, text)
            # no_repeat_ngram=0 turns the rule off with the n-gram ban, in both layers
            loose = model.generate(query, task=task, length=length, no_repeat_ngram=0).text
            out = run(exe, "--model", str(default_model_path()), "--task", task, "--length", str(length),
                      "--no-repeat-ngram", "0", query)
            assert out.stdout.strip() == loose, (query, out.stdout, loose)


def test_the_c_layer_never_writes_a_one_word_tag_twice_as_the_sdk(exe):
    from udrl.model import default_model_path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "sdk"))
    from test_default_model import REPEATED_TAGS

    with udrl.load(default_model_path()) as model:
        for query, length in REPEATED_TAGS:
            want = model.generate(query, task="tags", length=length).text
            got = run(exe, "--model", str(default_model_path()), query, "--task", "tags", "--length", str(length))
            assert got.returncode == 0 and got.stdout.rstrip("\n") == want, (query, got.stdout, want)


def test_a_task_added_by_fine_tuning_runs_in_c_as_in_the_sdk(exe, tiny_finetuned):
    gguf = tiny_finetuned["llama"]
    with udrl.load(gguf) as model:
        want = model.generate("poster for a jazz night", task="alt_text", length=8).text
    got = run(exe, "--model", str(gguf), "poster for a jazz night", "--task", "alt_text", "--length", "8")
    assert got.returncode == 0, got.stderr
    assert got.stdout.rstrip("\n") == want


VECTORS = NATIVE.parent / "tests" / "data" / "decoding-vectors.json"
C_RULES = ("query_focus", "ban_repeated_ngram", "ban_word_again", "ban_item_again", "ban_word_thrice", "ban_unfinished_end",
           "whole_words", "word_instead_of_end", "ban_early_end")


def build_rule_tests(source_dir: Path, target: Path, *make_vars: str) -> Path:
    cmd = ["make", "-C", str(source_dir), f"BUILD={target}", f"PYTHON={sys.executable}", "CFLAGS=-O1",
           *make_vars, f"{target}/test-rules"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    return target / "test-rules"


def test_the_c_rules_reproduce_the_shared_decoding_vectors(tmp_path):
    from udrl.model import default_model_path

    exe = build_rule_tests(NATIVE, tmp_path / "build")
    out = run(exe, str(default_model_path()), str(VECTORS))
    assert out.returncode == 0, out.stdout + out.stderr
    vectors = json.loads(VECTORS.read_text(encoding="utf-8"))
    n, m = len(vectors["cases"]), len(vectors["focus_at"]) + len(vectors["invalid_focus_bias"])
    assert out.stdout.count("\nok ") + out.stdout.startswith("ok ") == n + m
    assert f"{n} cases, 0 failed" in out.stdout and f"{m} focus bias cases, 0 failed" in out.stdout


def test_the_c_focus_bias_fails_vectors_changed_on_one_side(tmp_path):
    """A bonus per length read differently, or a bias one side refuses and the other takes, fails in C."""
    from udrl.model import default_model_path

    exe = build_rule_tests(NATIVE, tmp_path / "build")
    vectors = json.loads(VECTORS.read_text(encoding="utf-8"))
    m = len(vectors["focus_at"]) + len(vectors["invalid_focus_bias"])
    vectors["focus_at"][4][2] += 0.25  # between two points
    vectors["invalid_focus_bias"][0] = vectors["focus_at"][4][0]  # a valid bias among the refused
    changed = tmp_path / "changed.json"
    changed.write_text(json.dumps(vectors), encoding="utf-8")
    out = run(exe, str(default_model_path()), str(changed))
    assert out.returncode == 1 and f"{m} focus bias cases, 2 failed" in out.stdout, out.stdout + out.stderr


def test_the_c_title_case_reproduces_the_shared_casing_vectors(tmp_path):
    """Title Case and the stream's hold-back (tests/data/casing-vectors.json) in C, as in
    tests/sdk/test_casing.py; a vector changed alone fails here."""
    exe = build_rule_tests(NATIVE, tmp_path / "build")
    casing = NATIVE.parent / "tests" / "data" / "casing-vectors.json"
    vectors = json.loads(casing.read_text(encoding="utf-8"))
    n = len(vectors["title_case"]) + len(vectors["stream"])
    out = run(exe, "--casing", str(casing))
    assert out.returncode == 0 and f"{n} casing cases, 0 failed" in out.stdout, out.stdout + out.stderr
    vectors["title_case"][0][1] = vectors["title_case"][0][1].lower()
    vectors["stream"][0][1] = vectors["stream"][0][0]
    changed = tmp_path / "changed.json"
    changed.write_text(json.dumps(vectors), encoding="utf-8")
    out = run(exe, "--casing", str(changed))
    assert out.returncode == 1 and f"{n} casing cases, 2 failed" in out.stdout, out.stdout


def test_a_c_rule_left_out_fails_the_vectors(tmp_path):
    """Each rule of the C layer's RULES table, taken out, fails some case: the vectors see every rule."""
    from udrl.model import default_model_path

    source = (NATIVE / "udrl.c").read_text(encoding="utf-8")
    table = source[source.index("RULES[])"):]
    table = table[: table.index("};")]
    assert all(rule in table for rule in C_RULES), "the C RULES table changed: update C_RULES"
    for rule in C_RULES:
        work = tmp_path / rule
        shutil.copytree(NATIVE, work, ignore=shutil.ignore_patterns("build", "jvm"))
        mutated = table.replace(f" {rule},", " ").replace(f"{rule},", "")
        assert mutated != table
        (work / "udrl.c").write_text(source.replace(table, mutated), encoding="utf-8")
        exe = build_rule_tests(work, work / "build", "WARNINGS=-std=c99")  # the rule is now unused
        out = run(exe, str(default_model_path()), str(VECTORS))
        assert out.returncode == 1 and "FAIL" in out.stdout, f"without {rule}: {out.stdout}"
