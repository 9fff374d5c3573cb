import gzip
import json

import numpy as np
import pytest
from udrl.commands import make_command, reward_level
from udrl.manifest import Manifest
from udrl.trainer.distill.relabel import RelabelConfig, judge_file, relabel
from udrl.trainer.judge import Judge
from udrl.trainer.training.dataset import quantile_edges, read_records

PAIRS = [
    ("poster for a jazz night", "saxophone player on a smoky stage, warm spotlight"),
    ("logo for a vegan bakery", "green leaf, croissant, plant-based pastry shop"),
    ("flyer for a marathon race", "runners crossing the finish line, city streets, medal"),
    ("banner for a pet adoption day", "happy puppies and kittens waiting for a new home"),
    ("menu cover for a sushi bar", "salmon nigiri, chopsticks, japanese minimal style"),
    ("invitation to a winter wedding", "snowy pine branches, golden rings, candlelight"),
]


@pytest.fixture(scope="module")
def judge():
    return Judge(threads=2)


def test_judge_ranks_matched_pairs_above_mismatched(judge):
    queries = [q for q, _ in PAIRS]
    outputs = [o for _, o in PAIRS]
    matched = judge.relevance(queries, outputs)
    sims = judge.embed(queries) @ judge.embed(outputs).T
    assert np.allclose(np.diag(sims), matched, atol=1e-5)
    for i in range(len(PAIRS)):
        assert matched[i] > max(np.delete(sims[i], i)), PAIRS[i]
    assert np.all(matched <= 1.0001) and np.all(matched > 0.2)


def test_embeddings_come_back_in_the_order_given_whatever_the_batching():
    """Texts are batched by length; each row is still the text's own embedding, in the order given."""
    texts = [o for _, o in PAIRS] + ["tags", "a much longer text about a poster for a summer jazz festival by the sea"]
    judge = Judge(threads=2, batch_size=3)
    alone = np.concatenate([judge.embed([t]) for t in texts])
    assert np.allclose(judge.embed(texts), alone, atol=1e-5)
    assert judge.embed([]).shape == (0, alone.shape[1])


def raw_rows():
    rows = []
    for i, (q, o) in enumerate(PAIRS):
        rows.append({"id": f"image:{i}", "query": q, "task": "image", "requested": 8, "output": o})
        rows.append({"id": f"tags:{i}", "query": q, "task": "tags", "requested": 4,
                     "output": ", ".join(o.replace(",", "").split()[:4])})
        rows.append({"id": f"search:{i}", "query": q, "task": "search", "requested": 3,
                     "output": " ".join(q.split()[-3:])})
    rows.append({"id": "x", "query": "q q q", "task": "headline", "requested": 3, "output": None,
                 "reject": "echoes the query"})
    rows.append({"id": "y", "query": "q q q", "task": "tags", "requested": 3, "output": "a, a, b"})
    return rows


def test_relabelling_yields_commands_the_trainer_accepts(judge, tmp_path):
    records, stats = relabel(raw_rows(), judge, RelabelConfig(reward_levels=3))
    assert len(records) == 17  # the jazz night's tags, cut after "saxophone, player, on, a", are unfinished
    assert stats["dropped"] == {"teacher: echoes the query": 1, "format: items are not repeated": 1,
                                "format: an output does not end on 'a', which leaves it unfinished": 1}
    assert stats["reward_edges"] == quantile_edges([r["score"] for r in records], 3)

    data = tmp_path / "relabelled.jsonl.gz"
    data.write_bytes(gzip.compress("".join(json.dumps(r) + "\n" for r in records).encode()))
    loaded = read_records([data], ["image", "search", "headline", "tags"], (1, 48)).records
    manifest = Manifest.new(reward_edges=stats["reward_edges"])
    for record, row in zip(loaded, records):
        command = make_command(manifest, record.task, record.words, reward_level(manifest, record.score))
        assert command.length == row["words"] and command.reward == row["reward"]
    assert {r["reward"] for r in records} == {0, 1, 2}


def test_judge_file_writes_records_and_a_card(judge, tmp_path):
    raw = tmp_path / "raw.jsonl"
    raw.write_text("".join(json.dumps(r) + "\n" for r in raw_rows()) + '{"id": "torn", "que')
    out = judge_file(raw, tmp_path / "set.jsonl.gz", judge=judge)
    assert len(gzip.decompress(out.read_bytes()).decode().splitlines()) == 17
    card = json.loads((tmp_path / "set.card.json").read_text())
    assert card["records"] == 17 and card["distinct_queries"] == 6 and card["raw_rows"] == 20
    assert (tmp_path / "set.lengths.png").stat().st_size > 5000
    assert "| image | 6 |" in (tmp_path / "set.card.md").read_text()


def teacher_rows(*rows: tuple[str, str, str]) -> list[dict]:
    """Distillation-log rows from (request, task, output), each asked for its output's length."""
    return [{"id": f"{task}:{i}", "query": query, "task": task, "requested": len(output.split()), "output": output}
            for i, (query, task, output) in enumerate(rows)]


def test_the_teachers_repetition_loops_are_left_out(judge):
    rows = teacher_rows(("poster for a charity 5k run", "search", "charity poster poster"),
                        ("banner for a farm stand", "image",
                         "fresh corn, fresh corn on a table, fresh corn in baskets, sunny farm"),
                        ("poster for a charity 5k run", "search", "charity 5k run"))
    records, stats = relabel(rows, judge, RelabelConfig(reward_levels=1))
    assert [r["output"] for r in records] == ["charity 5k run"]
    assert stats["dropped"] == {"repetition": 2}
    kept, _ = relabel(rows, judge, RelabelConfig(reward_levels=1, drop_repetitions=False))
    assert len(kept) == 3


def test_fragments_are_left_out_only_when_asked(judge):
    """A student's broken pieces ("t t Veget") are dropped from a rollout; the teacher's data keeps a
    word wordfreq lacks, so the filter is off by default."""
    rows = teacher_rows(("menu for a mexican taqueria with vegetarian options", "tags", "menu, t, Veget"),
                        ("menu for a mexican taqueria with vegetarian options", "tags", "menu, taqueria, vegetarian"),
                        ("label for the zorblat cider", "tags", "zorblat, cider, label"))
    records, stats = relabel(rows, judge, RelabelConfig(reward_levels=1, drop_fragments=True))
    assert [r["output"] for r in records] == ["menu, taqueria, vegetarian", "zorblat, cider, label"]
    assert stats["dropped"] == {"fragment": 1}
    kept, stats = relabel(rows, judge, RelabelConfig(reward_levels=1))
    assert len(kept) == 3 and stats["dropped"] == {}


def test_copy_augmented_records_are_judged_and_stay_with_their_request(judge, tmp_path):
    from udrl.trainer.distill.augment import AugmentConfig
    from udrl.trainer.training.dataset import split_by_query

    config = RelabelConfig(reward_levels=3, augment=AugmentConfig(copies=2, seed=0))
    records, stats = relabel(raw_rows(), judge, config)
    teacher = [r for r in records if "origin" not in r]
    augmented = [r for r in records if "origin" in r]
    assert len(teacher) == 17 and len(augmented) >= 10
    assert {r["origin"] for r in augmented} <= {r["query"] for r in teacher}
    assert stats["reward_edges"] == quantile_edges([r["score"] for r in records], 3)
    data = tmp_path / "augmented.jsonl.gz"
    data.write_bytes(gzip.compress("".join(json.dumps(r) + "\n" for r in records).encode()))
    loaded = read_records([data], ["image", "search", "headline", "tags"], (1, 48)).records
    train_part, held_out = split_by_query(loaded, 0.34)
    assert held_out and all(r.origin is None for r in held_out)
    held = {r.query for r in held_out}
    assert not any(r.origin in held for r in train_part)


def test_echoes_of_a_few_shot_example_and_open_quotes_are_left_out(judge):
    """The teacher copies its prompt's examples ("white and gold palette", from the image task's
    wedding example) and gets cut off inside a quotation; the student would learn both."""
    rows = teacher_rows(("label for a perfume bottle", "image", "a glass perfume bottle on silk, white and gold palette"),
                        ("white and gold palette for a wedding", "image", "roses and rings, white and gold palette"),
                        ("invitation to a surprise party", "headline", 'Shh, it is a "Surprise'),
                        ("invitation to a surprise party", "headline", 'You Are Invited "Shh"'),
                        ("label for a perfume bottle", "image", "a glass perfume bottle on silk"))
    records, stats = relabel(rows, judge, RelabelConfig(reward_levels=1))
    assert len(records) == 3
    assert {r["output"] for r in records} == {rows[1]["output"], rows[3]["output"], rows[4]["output"]}
    assert stats["dropped"] == {"echoes a few-shot example": 1, "open quote": 1}
    kept, stats = relabel(rows, judge, RelabelConfig(reward_levels=1, drop_example_echoes=False,
                                                     drop_open_quotes=False))
    assert len(kept) == 5 and stats["dropped"] == {}
