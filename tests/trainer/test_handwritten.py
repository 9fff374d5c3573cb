"""The hand-written request set, the judge that only reports, and the degenerate-output check."""

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
from udrl.trainer.errors import DatasetError
from udrl.trainer.evaluate.degenerate import degenerate_reasons, is_degenerate
from udrl.trainer.handwritten import (
    HANDWRITTEN_DIR,
    draw_split,
    load_split,
    query_key,
    read_requests,
)

DATA = Path(__file__).resolve().parents[2] / "data"


def test_the_set_is_large_varied_and_split_once_into_disjoint_halves():
    requests = read_requests()
    assert len(requests) >= 400 and len({r.domain for r in requests}) >= 40
    assert len({query_key(r.query) for r in requests}) == len(requests)  # no duplicates
    tune, evaluation = load_split("tune"), load_split("eval")
    assert not set(tune) & set(evaluation) and len(tune) + len(evaluation) == len(requests)
    assert abs(len(tune) - len(evaluation)) <= 1
    # the committed split is the one draw_split makes: it is never redrawn differently
    assert draw_split(requests) == json.loads((HANDWRITTEN_DIR / "split.json").read_text())


RAW_LOGS = ("udrl-gemma.raw.jsonl.gz", "udrl-broad.raw.jsonl.gz", "udrl-broad2.raw.jsonl.gz",
            "udrl-greedy-headlines.raw.jsonl.gz", "udrl-greedy-headlines-more.raw.jsonl.gz")
# every judged file a training recipe reads
TRAINING = ("udrl-gemma.jsonl.gz", "udrl-greedy-headlines.jsonl.gz", "udrl-greedy-headlines-more.jsonl.gz",
            "stages/udrl-round2-rollout.jsonl.gz")
QUERY_LISTS = ("udrl-gemma.queries.txt", "udrl-greedy-headlines.queries.txt",
               "udrl-greedy-headlines-more.queries.txt")


def _queries(name: str, keys: tuple[str, ...] = ("query",)) -> set[str]:
    with gzip.open(DATA / name, "rt", encoding="utf-8") as f:
        return {query_key(row[k]) for row in map(json.loads, f) for k in keys if row.get(k)}


def _listed(name: str) -> set[str]:
    return {query_key(q) for q in (DATA / name).read_text().splitlines()}


def test_no_hand_written_request_is_training_data():
    """Over the committed data, compared as the distillation bans them (case and punctuation aside)."""
    hand = {query_key(r.query) for r in read_requests()}
    teacher = set().union(*(_queries(name) for name in RAW_LOGS))
    training = set().union(*(_queries(name, ("query", "origin")) for name in TRAINING))
    listed = set().union(*(_listed(name) for name in QUERY_LISTS))
    assert len(teacher) >= 30_000  # the distinct requests the teacher answered
    assert not hand & training and not hand & teacher and not hand & listed


def test_the_greedy_headlines_answer_training_requests_only():
    """The teacher's greedy headlines were drawn from the training requests of the data they are
    trained beside: none is a held-out request, neither of the split that validates that training nor
    of the data's own split, which the in-distribution evaluation draws from."""
    from udrl.manifest import DEFAULT_TASKS
    from udrl.trainer.training.config import TrainConfig
    from udrl.trainer.training.dataset import read_records, split_by_query

    config = TrainConfig()  # the split the recipes train with

    def split(names: tuple[str, ...]) -> tuple[set[str], set[str]]:
        records = read_records([DATA / n for n in names], DEFAULT_TASKS, (config.length_min, config.length_max),
                               skip_invalid=True).records
        train, held_out = split_by_query(records, config.val_fraction)
        return ({query_key(r.query) for r in train if r.origin is None},
                {query_key(r.query) for r in held_out})

    trained_beside, validation = split(("udrl-gemma.jsonl.gz", "stages/udrl-round2-rollout.jsonl.gz"))
    _, in_distribution = split(("udrl-gemma.jsonl.gz",))
    greedy = _queries("udrl-greedy-headlines.jsonl.gz")
    assert len(greedy) >= 4_500 and greedy <= trained_beside
    assert not greedy & validation and not greedy & in_distribution
    # the second pass: the rest of the same pool, none of the first pass's; its judged records answer it
    more = _listed("udrl-greedy-headlines-more.queries.txt")
    assert len(more) >= 8_000 and more <= trained_beside and not more & greedy
    assert not more & validation and not more & in_distribution
    judged_more = _queries("udrl-greedy-headlines-more.jsonl.gz")
    assert len(judged_more) >= 8_000 and judged_more <= more


def test_a_broken_split_file_is_refused(tmp_path):
    (tmp_path / "requests.txt").write_text("food | menu for a diner\npets | dog walker card\n")
    (tmp_path / "split.json").write_text(json.dumps({"tune": ["menu for a diner"], "eval": ["menu for a diner"]}))
    with pytest.raises(DatasetError, match="disjoint halves"):
        load_split("eval", tmp_path)
    (tmp_path / "requests.txt").write_text("no separator here\n")
    with pytest.raises(DatasetError, match="expected 'domain \\| request'"):
        read_requests(tmp_path)
    with pytest.raises(DatasetError, match="unknown hand-written split"):
        load_split("train")


def test_the_reporting_judge_ranks_matched_pairs_above_mismatched_ones():
    from udrl.trainer.judge import reporting_judge

    judge = reporting_judge(threads=2)
    assert judge.metric == "mpnet-cosine"
    queries = ["menu for a mexican taqueria with vegetarian options", "flyer for a lost golden retriever named biscuit",
               "label for homemade strawberry jam", "poster for a charity 5k run supporting cancer research",
               "youtube thumbnail for a beginner guitar lesson"]
    outputs = ["Mexican taqueria menu, vegetarian tacos and burritos", "Lost golden retriever Biscuit, please call",
               "homemade strawberry jam label with red berries", "charity 5k run for cancer research",
               "beginner guitar lesson thumbnail, acoustic guitar"]
    sim = judge.embed(queries) @ judge.embed(outputs).T
    assert (np.argmax(sim, axis=1) == np.arange(len(queries))).all()
    for i in range(len(queries)):  # each matched pair beats every mismatched one in its row by a margin
        assert sim[i, i] > max(np.delete(sim[i], i)) + 0.2


@pytest.mark.parametrize("query, output, task", [
    ("menu for a mexican taqueria with vegetarian options", "menu, t t Veget", "tags"),
    ("poster for a charity 5k run supporting cancer research", "charity poster poster", "search"),
    ("poster for a jazz night", "jazz jazz jazz music", "image"),
    ("logo for a vegan bakery", "bakery, vegan, bakery", "tags"),
    ("logo for a vegan bakery", "bakery, , vegan", "tags"),
    ("logo for a vegan bakery", "", "headline"),
    ("flyer for a yoga retreat", "yoga retreat, calm sunrisexq colors", "image"),
])
def test_degenerate_outputs_are_flagged(query, output, task):
    assert is_degenerate(query, output, task), degenerate_reasons(query, output, task)


@pytest.mark.parametrize("query, output, task", [
    ("menu for a mexican taqueria with vegetarian options", "Mexican Taqueria", "headline"),
    ("menu for a mexican taqueria with vegetarian options", "menu, taqueria, vegetarian, mexican", "tags"),
    ("label for homemade strawberry jam", "homemade strawberry jam, a label with a strawberry, red gingham", "image"),
    ("poster for a charity 5k run supporting cancer research", "charity 5k run for cancer research", "search"),
    ("flyer for a lost golden retriever named biscuit", "The Lost Golden Retriever", "headline"),
    ("youtube thumbnail for a beginner guitar lesson", "guitar lessons with a beginner's guitar, bold text", "image"),
    ("invitation to grandma's 90th birthday in the garden", "Grandma's 90th Birthday, 3pm", "headline"),
    ("sticker for a balayage salon", "balayage, hair salon, sticker", "tags"),  # a request word counts as a word
])
def test_clean_outputs_pass(query, output, task):
    assert degenerate_reasons(query, output, task) == []
