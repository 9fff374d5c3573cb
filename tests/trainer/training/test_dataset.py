import gzip
import json

import pytest
from udrl.trainer.errors import DatasetError
from udrl.trainer.training.dataset import quantile_edges, read_records, split_by_query

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
