import dataclasses
import gzip
import json

import pytest
from udrl.artifacts import read_manifest
from udrl.commands import count_words, reward_level_for
from udrl.trainer.distill.rollout import (
    RolloutConfig,
    copy_shares,
    plan_jobs,
    rollout,
    training_split,
)
from udrl.trainer.errors import ConfigError
from udrl.trainer.evaluate.degenerate import fragment_reasons
from udrl.trainer.judge import Judge
from udrl.trainer.training.dataset import Record, read_records, split_by_query

TASKS = ["headline", "tags"]


def read_gz(path) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def test_the_student_answers_training_queries_and_its_outputs_are_relabelled_on_its_own_scale(
        tiny_artifacts, synthetic_data, tmp_path):
    model = tiny_artifacts["llama"]
    manifest = read_manifest(model)
    lengths = (manifest.length_min, manifest.length_max)
    config = RolloutConfig(model=str(model), data=[str(synthetic_data)], out=str(tmp_path / "r" / "round2.jsonl.gz"),
                           tasks=TASKS, samples=3, queries=5)
    judge = Judge(threads=2)
    # Without the copy guard every judged sample is kept (a tiny model may copy more than the data at
    # every level, and the guard then rightly keeps nothing): the records' properties are checked here.
    unguarded_config = dataclasses.replace(config, copy_guard=False)
    path = rollout(unguarded_config, judge=judge)
    unguarded = read_gz(path)

    _, held_out = split_by_query(read_records([synthetic_data], manifest.tasks, lengths, skip_invalid=True).records, 0.05)
    assert unguarded and not {r["query"] for r in unguarded} & {r.query for r in held_out}
    assert {r["task"] for r in unguarded} <= set(TASKS) and len({r["query"] for r in unguarded}) <= 5
    for r in unguarded:  # the model's edges, not quantiles of these scores
        assert r["reward"] == reward_level_for(manifest.reward_edges, r["score"])
        assert r["words"] == count_words(r["output"]) and r["requested"] == r["words"]  # the length guard holds
    assert len({(r["query"], r["task"], r["output"].lower()) for r in unguarded}) == len(unguarded)  # no duplicates
    # the records are valid training data as they are
    assert len(read_records([path], manifest.tasks, lengths).records) == len(unguarded)

    jobs = plan_jobs(config, training_split(config, manifest), TASKS)
    raw = tmp_path / "r" / "round2.raw.jsonl"
    assert len(raw.read_text().splitlines()) == len(jobs) == 3 * len({(j.task, j.query, j.length) for j in jobs})

    # killed half-way (log cut, torn last line): the run resumes and ends with the same records
    lines = raw.read_text().splitlines(keepends=True)
    raw.write_text("".join(lines[: len(lines) // 2]) + lines[len(lines) // 2][:12])
    assert read_gz(rollout(unguarded_config, judge=judge)) == unguarded
    assert len(raw.read_text().splitlines()) == len(jobs)

    # the copy guard only filters the same samples: switching it on samples nothing new, keeps a subset
    # in the same order, and keeps a (task, level) exactly when it copies no more of the request than
    # the data at that task and level
    records = read_gz(rollout(config, judge=judge))
    assert len(raw.read_text().splitlines()) == len(jobs)
    assert [r for r in unguarded if r in records] == records
    train = split_by_query(read_records([synthetic_data], manifest.tasks, lengths, skip_invalid=True).records, 0.05)[0]
    shares = copy_shares(unguarded, train, manifest.reward_edges)
    assert set(shares) == {(r["task"], r["reward"]) for r in unguarded}
    for (task, level), (share, data_share) in shares.items():
        kept = [r for r in records if (r["task"], r["reward"]) == (task, level)]
        group = [r for r in unguarded if (r["task"], r["reward"]) == (task, level)]
        assert kept == (group if data_share is not None and share <= data_share else [])

    # so does the fragment filter: with it off, the same samples again, and what it left out is
    # exactly the records with a fragment
    loose = read_gz(rollout(dataclasses.replace(unguarded_config, drop_fragments=False), judge=judge))
    assert len(raw.read_text().splitlines()) == len(jobs)
    key = lambda r: (r["query"], r["task"], r["output"])
    kept = {key(r) for r in unguarded}
    assert [key(r) for r in loose if key(r) in kept] == [key(r) for r in unguarded]
    assert all(bool(fragment_reasons(r["query"], r["output"])) == (key(r) not in kept) for r in loose)

    with pytest.raises(ConfigError, match="other settings or another model"):
        rollout(dataclasses.replace(config, samples=4), judge=judge)


def test_copy_shares_compare_each_task_and_level_with_the_data():
    data = [Record("red fox jumps", "headline", "red fox", 2, 0.9),  # level 2, share 1.0
            Record("red fox jumps", "headline", "a quick animal", 3, 0.9),  # level 2, share 0.0
            Record("blue sky", "headline", "weather", 1, 0.1),  # level 0, share 0.0
            Record("blue sky", "tags", "sky, blue", 2, 0.9)]  # another task
    new = [{"query": "green tree", "task": "headline", "output": "green tree now", "reward": 2},  # 2/3
           {"query": "green tree", "task": "headline", "output": "tall forest", "reward": 2},  # 0
           {"query": "old car", "task": "headline", "output": "old car", "reward": 0},  # 1
           {"query": "old car", "task": "search", "output": "car", "reward": 1}]  # no data at search
    shares = copy_shares(new, data, edges=[0.3, 0.6])
    assert shares == {("headline", 2): (pytest.approx(1 / 3), 0.5), ("headline", 0): (1.0, 0.0),
                      ("search", 1): (1.0, None)}


def test_bad_rollout_settings_are_refused_with_what_is_allowed(tiny_artifacts, synthetic_data, tmp_path):
    base = RolloutConfig(model=str(tiny_artifacts["llama"]), data=[str(synthetic_data)], out=str(tmp_path / "x.jsonl"))
    with pytest.raises(ConfigError, match="temperature must be > 0"):
        rollout(dataclasses.replace(base, temperature=0.0))
    with pytest.raises(ConfigError, match="samples, batch_size and queries must be at least 1"):
        rollout(dataclasses.replace(base, samples=0))
    with pytest.raises(ConfigError, match=r"no task\(s\) \['poems'\]; it knows \['image', 'search', 'headline', 'tags'\]"):
        rollout(dataclasses.replace(base, tasks=["poems"]))
    assert not (tmp_path / "x.jsonl").exists()
