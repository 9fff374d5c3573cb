from pathlib import Path

import pytest
from udrl.trainer.distill.compose import (
    ComposeConfig,
    compose_queries,
    compose_topics,
    english_words,
)
from udrl.trainer.errors import DatasetError
from udrl.trainer.handwritten import read_requests


def test_composed_requests_are_distinct_varied_and_reproducible():
    queries = compose_queries(ComposeConfig(n=3000, seed=3))
    assert len(queries) == len({q.lower() for q in queries}) == 3000
    assert queries == compose_queries(ComposeConfig(n=3000, seed=3))
    assert compose_queries(ComposeConfig(n=50, seed=4)) != queries[:50]
    assert all(3 <= len(q.split()) <= 20 for q in queries)
    words = {w for q in queries for w in q.split()}
    assert len(words) > 3000  # far beyond a fixed template vocabulary (the lists hold about 750 words)
    # Specifics users type: places, times, prices, numbers, names with possessives.
    for marker in (" in ", " at ", "%", "$", "'s "):
        assert sum(marker in q for q in queries) > 60, marker
    artefacts = {line.strip() for line in Path("data/compose/artefacts.txt").read_text().splitlines()
                 if line.strip() and not line.startswith("#")}
    assert sum(any(q.startswith(a + " ") or f" {a} for" in q for q in queries) for a in artefacts) > 0.9 * len(artefacts)


def test_composition_never_writes_a_hand_written_or_excluded_request(tmp_path):
    first = compose_queries(ComposeConfig(n=200, seed=5))
    exclude = tmp_path / "seen.txt"
    exclude.write_text("\n".join(first[:100]) + "\n")
    again = compose_queries(ComposeConfig(n=200, seed=5, exclude=[str(exclude)]))
    assert not set(again) & set(first[:100])
    handwritten = {r.query.lower() for r in read_requests()}
    assert not handwritten & {q.lower() for q in again}


def test_topics_hold_the_subjects_and_trades():
    topics = compose_topics(ComposeConfig(), jobs=50)
    assert "ramen shop" in topics and len(topics) == len(set(topics))
    assert len(topics) >= 300 + 50


def test_bad_lists_and_impossible_requests_are_refused(tmp_path):
    with pytest.raises(DatasetError, match="artefacts.txt"):
        compose_queries(ComposeConfig(n=5, compose_dir=str(tmp_path)))
    (tmp_path / "artefacts.txt").write_text("flyer\n")
    (tmp_path / "subjects.txt").write_text("food bakery\n")
    (tmp_path / "details.txt").write_text("style | bold\n")
    with pytest.raises(DatasetError, match="expected 'kind \\| phrase'"):
        compose_queries(ComposeConfig(n=5, compose_dir=str(tmp_path)))
    (tmp_path / "subjects.txt").write_text("food | bakery\n")
    with pytest.raises(DatasetError, match="missing: \\['audience', 'offer'\\]"):
        compose_queries(ComposeConfig(n=5, compose_dir=str(tmp_path)))
    with pytest.raises(DatasetError, match="at least 1"):
        compose_queries(ComposeConfig(n=0))


def test_english_words_are_ordinary_words():
    words = english_words()
    assert len(words) > 20000
    assert all(w.isalpha() and w.islower() and len(w) >= 4 for w in words)
    assert "the" not in words and "with" not in words
