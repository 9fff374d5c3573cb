import gzip
import json

import pytest
from udrl.commands import reward_level_for
from udrl.trainer.errors import DatasetError
from udrl.trainer.training.dataset import (
    Record,
    copy_adjusted,
    quantile_edges,
    rank_matched,
    read_records,
    split_by_query,
)

TASKS = ["image", "search", "headline", "tags"]


def rec(**kw):
    base = {"query": "poster for a jazz night", "task": "image", "output": "smoky club saxophone", "words": 3,
            "score": 0.5}
    base.update(kw)
    return json.dumps(base)


def write(tmp_path, lines, name="d.jsonl"):
    p = tmp_path / name
    p.write_text("\n".join(lines) + "\n")
    return p


def test_reads_valid_records_plain_and_gzipped(tmp_path):
    p = write(tmp_path, [rec(), rec(task="tags", output="jazz, club", words=2)])
    gz = tmp_path / "d.jsonl.gz"
    gz.write_bytes(gzip.compress(p.read_bytes()))
    for path in (p, gz):
        report = read_records([path], TASKS, (1, 48))
        assert [r.task for r in report.records] == ["image", "tags"] and not report.skipped


@pytest.mark.parametrize(
    "line, reason",
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "a record must be a JSON object"),
        (json.dumps({"query": "q", "task": "image"}), "missing field"),
        (rec(words=5), "'words' is 5 but the output has 3 words"),
        (rec(score="high"), "'score' must be a finite number"),
        (rec(output=""), "'output' must be a non-empty string"),
        (rec(output="two\nlines", words=2), "single line"),
        (rec(output=" ".join(["w"] * 60), words=60), "length 60 words is outside the length range \\[1, 48\\]"),
    ],
)
def test_malformed_line_names_file_and_line(tmp_path, line, reason):
    p = write(tmp_path, [rec(), line])
    with pytest.raises(DatasetError, match=f"d.jsonl:2: .*{reason}"):
        read_records([p], TASKS, (1, 48))


def test_skip_invalid_skips_and_counts(tmp_path):
    p = write(tmp_path, [rec(), "{broken", rec(words=9), rec()])
    report = read_records([p], TASKS, (1, 48), skip_invalid=True)
    assert len(report.records) == 2
    assert [s.split(":")[1] for s in report.skipped] == ["2", "3"]


def test_unknown_task_is_an_error_even_when_skipping(tmp_path):
    p = write(tmp_path, [rec(), rec(task="video")])
    with pytest.raises(DatasetError, match="unknown task 'video'; allowed tasks: image, search"):
        read_records([p], TASKS, (1, 48), skip_invalid=True)


def test_empty_dataset_is_an_error(tmp_path):
    with pytest.raises(DatasetError, match="dataset is empty"):
        read_records([write(tmp_path, [""])], TASKS, (1, 48))
    with pytest.raises(DatasetError, match="not found"):
        read_records([tmp_path / "missing.jsonl"], TASKS, (1, 48))


def test_validation_split_holds_out_whole_queries(synthetic_data):
    records = read_records([synthetic_data], TASKS, (1, 48)).records
    train, val = split_by_query(records, 0.1)
    assert val and train and len(train) + len(val) == len(records)
    assert not {r.query for r in train} & {r.query for r in val}
    assert split_by_query(records, 0.1) == (train, val)  # stable


def test_quantile_edges_make_equal_buckets():
    edges = quantile_edges([i / 100 for i in range(100)], 4)
    assert len(edges) == 3 and edges == sorted(edges)
    assert quantile_edges([0.5] * 10, 3) == [0.5]  # degenerate scores merge buckets


def image(query: str, output: str, score: float) -> Record:
    return Record(query, "image", output, len(output.split()), score)


def test_copy_adjusted_scores_pay_for_what_copying_does_not_explain():
    q = "poster for a jazz night"
    records = [
        image(q, "poster jazz night", 0.90),  # copies all of its words
        image(q, "smoky club, saxophone, warm light", 0.60),  # copies none
        image(q, "jazz trio, saxophone, warm light", 0.75),  # copies one word in five
        Record(q, "tags", "jazz, night", 2, 0.8),
    ]
    adjusted, fits = copy_adjusted(records, ["image"])
    fit = fits["image"]
    # shares 1, 0, 0.2: mean 0.4; least squares slope 0.15 / 0.56
    assert fit.records == 3 and fit.mean_share == pytest.approx(0.4) and fit.slope == pytest.approx(0.15 / 0.56)
    expected = [0.90 - fit.slope * 0.6, 0.60 + fit.slope * 0.4, 0.75 + fit.slope * 0.2]
    assert [r.score for r in adjusted[:3]] == pytest.approx(expected)
    # the echo loses its lead to the output that says most beyond the request's words
    assert max(adjusted[:3], key=lambda r: r.score).output == "jazz trio, saxophone, warm light"
    assert adjusted[3] == records[3]  # other tasks keep their scores
    assert [r.output for r in adjusted] == [r.output for r in records]


def test_copy_adjusted_leaves_scores_alone_where_copying_does_not_pay():
    q = "poster for a jazz night"
    records = [image(q, "poster jazz night", 0.2), image(q, "smoky club", 0.8)]
    adjusted, fits = copy_adjusted(records, ["image"])
    assert fits["image"].slope == 0.0 and [r.score for r in adjusted] == [0.2, 0.8]
    with pytest.raises(DatasetError, match="copy-adjusted task 'tags' has no records; the data's tasks: image"):
        copy_adjusted(records, ["tags"])


def test_rank_matched_levels_hold_the_same_share_of_each_task_as_of_the_data():
    # the judge scores image prompts low and search queries high: under shared edges the image
    # prompts would barely reach the top level
    searches = [Record(f"query {i}", "search", f"search {i}", 2, 0.60 + 0.01 * i) for i in range(30)]
    images = [image(f"query {i}", f"picture {i}", 0.10 + 0.01 * i) for i in range(30)]
    records = searches + images
    edges = quantile_edges([r.score for r in records], 3)
    assert sum(reward_level_for(edges, r.score) == 2 for r in images) == 0
    matched = rank_matched(records, ["image"])
    assert matched[:30] == searches  # other tasks keep their scores
    assert [r.output for r in matched] == [r.output for r in records]
    new = [r.score for r in matched[30:]]
    assert new == sorted(new)  # the task's own order is kept
    data_levels = [sum(reward_level_for(edges, r.score) == lvl for r in records) / 60 for lvl in range(3)]
    image_levels = [sum(reward_level_for(edges, s) == lvl for s in new) / 30 for lvl in range(3)]
    assert image_levels == pytest.approx(data_levels, abs=1 / 30)


def test_rank_matched_ties_share_a_score_and_a_missing_task_is_named():
    records = [image("q", "a", 0.3), image("q", "b", 0.3), image("q", "c", 0.9),
               Record("q", "tags", "x, y", 2, 0.1), Record("q", "tags", "y, z", 2, 0.5)]
    matched = rank_matched(records, ["image"])
    assert matched[0].score == matched[1].score < matched[2].score
    assert matched[3:] == records[3:]
    with pytest.raises(DatasetError, match="rank-matched task 'headline' has no records; the data's tasks: image, tags"):
        rank_matched(records, ["headline"])
