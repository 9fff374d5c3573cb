import threading

import pytest
import udrl
from udrl import Request

BACKENDS = ["torch", "llama", "onnx"]
REQUESTS = [
    ("poster for a summer festival", "image", 9),
    ("Café logo — naïve & bold", "tags", 4),
    ("東京 bakery flyer 🎉", "search", 3),
    ("banner for a wedding", "headline", 6),
    ("flyer for a hiking club", "image", 14),
]


@pytest.fixture(scope="module")
def models(tiny_artifacts):
    opened = {name: udrl.load(path, backend=name, threads=2) for name, path in tiny_artifacts.items()}
    yield opened
    for m in opened.values():
        m.close()


def test_load_picks_the_backend_from_the_artifact(tiny_artifacts):
    for name, path in tiny_artifacts.items():
        with udrl.load(path) as model:
            assert model.backend == name
            assert model.commands.tasks == ("image", "search", "headline", "tags")
            assert model.commands.length_max == 16 and model.commands.reward_default == 2


def test_same_greedy_text_through_torch_gguf_and_onnx(models):
    for query, task, length in REQUESTS:
        texts = {name: m.generate(query, task=task, length=length).text for name, m in models.items()}
        assert len(set(texts.values())) == 1, (query, texts)


@pytest.mark.parametrize("backend", BACKENDS)
def test_stream_yields_exactly_what_generate_returns(models, backend):
    model = models[backend]
    for query, task, length in REQUESTS:
        pieces = list(model.stream(query, task=task, length=length))
        text = model.generate(query, task=task, length=length).text
        assert "".join(pieces).strip() == text
        assert pieces[0][:1] == text[:1]  # the manifest's output prefix is not streamed
        assert len(pieces) >= 1


def test_focus_words_are_the_content_words_of_the_query(models):
    from udrl.rules import focus_words

    manifest = models["llama"].manifest
    assert focus_words(manifest, "A poster for the Jazz-night, at THE park!") == ["poster", "jazz-night", "park"]
    assert focus_words(manifest, "Café naïve 東京 of it") == ["café", "naïve", "東京"]  # bytes, not letters


@pytest.mark.parametrize("backend", BACKENDS)
def test_query_focus_brings_every_content_word_of_the_request_in(models, backend):
    model = models[backend]
    query = "poster for a summer festival"
    # A random-weight model writes none of them unless focused; with a large bonus it writes each
    # (and the bonus lifts a word only until it is written, so the rest of the text is the model's).
    plain = model.generate(query, task="image", length=9, focus=0).text.lower()
    focused = model.generate(query, task="image", length=9, focus=50).text.lower()
    assert not {"poster", "summer", "festival"} <= set(plain.split())
    assert {"poster", "summer", "festival"} <= set(focused.replace(",", " ").split()), focused
    for task in ("image", "tags"):  # the default is the manifest's bonus for the task
        default = model.generate(query, task=task, length=9).text
        assert default == model.generate(query, task=task, length=9, focus=model.manifest.focus_bias[task]).text
    with pytest.raises(udrl.CommandError, match="focus must be a finite number >= 0"):
        model.generate(query, focus=-1)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_separator_the_length_guard_leaves_dangling_is_dropped_and_never_streamed(models, backend):
    model = models[backend]
    cut = 0
    for query in ("jazz, blues, soul, funk, disco", "red; green; blue; cyan", "a: b: c: d: e"):
        for length in range(1, 7):
            pieces = list(model.stream(query, task="tags", length=length, focus=50))
            result = model.generate(query, task="tags", length=length, focus=50)
            assert "".join(pieces).strip() == result.text
            if result.finish_reason == "length":
                cut += 1
                assert result.text[-1:] not in (",", ";", ":"), result.text
    assert cut  # the guard did cut some of them


@pytest.mark.parametrize("backend", BACKENDS)
def test_batch_equals_one_by_one_greedy(models, backend):
    model = models[backend]
    batch = model.generate_batch([Request(q, t, n) for q, t, n in REQUESTS])
    single = [model.generate(q, task=t, length=n) for q, t, n in REQUESTS]
    assert [b.text for b in batch] == [s.text for s in single]
    assert [b.finish_reason for b in batch] == [s.finish_reason for s in single]


@pytest.mark.parametrize("backend", BACKENDS)
def test_seeded_sampling_is_deterministic(models, backend):
    model = models[backend]
    kw = dict(task="image", length=10, temperature=1.0, top_p=0.95, top_k=50)
    a = model.generate("poster for a bakery", seed=7, **kw).text
    assert model.generate("poster for a bakery", seed=7, **kw).text == a
    others = {model.generate("poster for a bakery", seed=s, **kw).text for s in range(8)}
    assert len(others) > 1


@pytest.mark.parametrize("backend", BACKENDS)
def test_length_guard_lands_on_the_requested_word_count(models, backend):
    model = models[backend]
    for query, task, length in REQUESTS:
        result = model.generate(query, task=task, length=length)
        assert result.words == length, (result.text, length)
        assert result.finish_reason in ("stop", "length")


def test_result_carries_commands_counts_and_timings(models):
    r = models["llama"].generate("poster for a bakery", task="tags")
    assert r.command == udrl.Command("tags", models["llama"].commands.default_length["tags"], 2)
    assert r.prompt_tokens > 5 and r.completion_tokens >= r.words
    assert 0 < r.prompt_s <= r.first_token_s <= r.total_s
    assert r.decode_tok_s > 0 and r.peak_rss_mb > 10
    assert set(r.to_dict()) >= {"text", "finish_reason", "decode_tok_s", "prompt_tok_s"}


@pytest.mark.parametrize("backend", BACKENDS)
def test_eight_threads_on_one_model_get_correct_results(models, backend):
    model = models[backend]
    expected = {q: model.generate(q, task=t, length=n).text for q, t, n in REQUESTS}
    got: list[tuple[str, str]] = []
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            for k in range(3):
                q, t, n = REQUESTS[(i + k) % len(REQUESTS)]
                got.append((q, model.generate(q, task=t, length=n).text))
        except BaseException as exc:  # noqa: BLE001  (reported below)
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(got) == 24 and all(text == expected[q] for q, text in got)


def test_close_releases_and_further_use_is_an_error(tiny_artifacts):
    model = udrl.load(tiny_artifacts["llama"])
    model.close()
    model.close()  # idempotent
    with pytest.raises(udrl.UdrlError, match="closed"):
        model.generate("poster")
    with udrl.load(tiny_artifacts["onnx"]) as m:
        assert m.generate("poster", task="search", length=2).words == 2
    with pytest.raises(udrl.UdrlError, match="closed"):
        m.generate("poster")


def test_the_length_guard_never_ends_on_a_word_of_the_manifests_end_stopwords(tiny_run, tmp_path):
    import shutil

    from udrl.files import write_atomic
    from udrl.manifest import MANIFEST_FILENAME, focus_key, load_manifest

    ckpt = tmp_path / "model"
    shutil.copytree(tiny_run / "model", ckpt)
    manifest = load_manifest(ckpt)
    queries = ["poster for a summer festival", "banner for a wedding", "flyer for a hiking club", "bakery logo",
               "jazz night at the harbour", "sale on winter coats"]
    requests = [(q, task, n) for q in queries for task in manifest.tasks for n in (2, 5, 9)]

    def last_words(end_stopwords: tuple[str, ...]) -> list[str]:
        write_atomic(ckpt / MANIFEST_FILENAME, manifest.replace(end_stopwords=end_stopwords).to_json())
        with udrl.load(ckpt, backend="torch") as model:
            results = [model.generate(q, task=t, length=n) for q, t, n in requests]
        assert all(r.words == n for r, (_, _, n) in zip(results, requests))  # the length still holds
        return [focus_key(r.text.split()[-1]) for r in results]

    free = last_words(())
    common = tuple(sorted({w for w in free if w and free.count(w) >= 2}))  # the model's usual last words
    assert common
    banned = last_words(common)
    assert not set(banned) & set(common)
    assert banned != free


def test_query_focus_starts_split_request_words_and_finishes_them(tiny_artifacts):
    from udrl.backends import open_backend
    from udrl.rules import focus_tokens, focus_words

    query = "poster for a summer festival with extraordinarily quixotic zeppelins"
    backend = open_backend(tiny_artifacts["llama"])
    try:
        tokens = focus_tokens(backend, query)
        assert set(tokens) == set(focus_words(backend.manifest, query))
        for word, spellings in tokens.items():  # each spelling whole, as the tokenizer writes it
            assert tuple(backend.encode(" " + word)) in spellings
        split = {w for w in tokens if len(backend.encode(" " + w)) > 1}
        assert split and split != set(tokens)  # the tiny tokenizer has both kinds in this request
        assert backend.manifest.focus_split_words  # a new model's manifest says so (trainer/decoding.py)
        one_token = focus_tokens(backend, query, split_words=False)  # a manifest from before it
        assert all(not one_token[w] for w in split) and all(len(s) == 1 for v in one_token.values() for s in v)
    finally:
        backend.close()
    # A random-weight model with a large bonus writes request words only; a split word it starts it
    # finishes, so no output word is a first piece alone ("zep" for "zeppelins"). The tiny tokenizer
    # spells these words in many pieces, so the token budget is raised to hold six of them.
    with udrl.load(tiny_artifacts["llama"]) as model:
        text = model.generate(query, task="tags", length=6, focus=50, max_tokens=120).text.lower()
        plain = model.generate(query, task="tags", length=6, focus=0, max_tokens=120).text.lower()
    words = text.replace(",", " ").split()
    assert set(words) & split, text  # split words came out whole
    assert not [w for w in words for s in split if s.startswith(w) and w != s], text  # and no first piece alone
    assert not set(plain.replace(",", " ").split()) & split

