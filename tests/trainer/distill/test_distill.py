import json
import subprocess
import sys
from pathlib import Path

import pytest
from udrl.trainer.distill.distill import DistillConfig, distill, plan_jobs
from udrl.trainer.errors import ConfigError
from udrl.trainer.jobs import JsonlLog

QUERIES = [
    "minimalist poster for a rooftop cinema night", "logo for a family owned pizza place",
    "instagram post for a new vegan ice cream flavor", "flyer for a free coding workshop for teens",
    "banner for a spring garden market", "invitation to a retirement party at the beach",
    "menu cover for a ramen shop", "poster for a charity 5k fun run",
    "social media ad for a used bookstore sale", "thumbnail for a cooking video about tacos",
    "business card for a dog walker", "ticket design for a jazz brunch",
    "label for a small batch hot sauce", "cover for a travel guide to iceland",
    "poster for a science museum dinosaur exhibit", "flyer for a neighborhood yard sale",
]


def test_jobs_are_planned_deterministically_with_a_spread_of_lengths():
    config = DistillConfig(queries="q.txt", seed=7)
    jobs = plan_jobs(QUERIES, config)
    assert jobs == plan_jobs(QUERIES, config)
    assert len(jobs) == len({j.id for j in jobs}) == 4 * len(QUERIES)
    assert [j.task for j in jobs[:4]] == ["image", "search", "headline", "tags"]  # query by query
    assert len({j.query for j in jobs[:4]}) == 1
    image_lengths = {j.requested for j in jobs if j.task == "image"}
    assert len(image_lengths) > 5 and min(image_lengths) >= 5 and max(image_lengths) <= 32
    assert plan_jobs(QUERIES, DistillConfig(queries="q.txt", seed=8)) != jobs


def test_tasks_per_query_spreads_every_task_over_the_queries():
    config = DistillConfig(queries="q.txt", tasks_per_query=1)
    jobs = plan_jobs(QUERIES * 1, config)
    assert len(jobs) == len(QUERIES) and [j.query for j in jobs] == QUERIES
    assert len({j.task for j in jobs}) == 4
    two = plan_jobs(QUERIES, DistillConfig(queries="q.txt", tasks_per_query=2))
    assert len(two) == 2 * len(QUERIES)
    # The one task a query gets is among its two: the choice ranks the tasks per query.
    assert all((j.id in {k.id for k in two}) for j in jobs)


def test_log_drops_a_torn_last_line_and_never_duplicates(tmp_path):
    path = tmp_path / "raw.jsonl"
    path.write_text('{"id": "a"}\n{"id": "b"}\n{"id": "c", "outp')
    log = JsonlLog(path)
    assert [r["id"] for r in log.rows] == ["a", "b"]
    log.append([{"id": "b"}, {"id": "c"}])
    assert [json.loads(line)["id"] for line in path.read_text().splitlines()] == ["a", "b", "c"]


def test_config_errors_are_clear(tmp_path):
    with pytest.raises(ConfigError, match="no source of queries"):
        distill(DistillConfig(out_dir=str(tmp_path)), teacher=object())
    with pytest.raises(ConfigError, match="tasks_per_query must be between 1 and the number of tasks \\(4\\)"):
        distill(DistillConfig(out_dir=str(tmp_path), queries="q", tasks_per_query=5), teacher=object())
    with pytest.raises(ConfigError, match="no teacher prompt for task\\(s\\) \\['video'\\]"):
        distill(DistillConfig(out_dir=str(tmp_path), queries="q", tasks=["video"]), teacher=object())


def test_killed_distillation_resumes_without_losing_or_duplicating(tmp_path, kill9_when):
    queries = tmp_path / "queries.txt"
    queries.write_text("\n".join(QUERIES) + "\n")
    out = tmp_path / "distill"
    cmd = [sys.executable, "-m", "udrl", "distill", "--queries", str(queries), "--out", str(out),
           "--batch-size", "4", "--threads", "2"]
    raw = out / "raw.jsonl"
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    kill9_when(proc, lambda: raw.exists() and raw.read_text().count("\n") >= 12, 180,
               "distillation made no progress")
    done_before = raw.read_text().count("\n")
    assert done_before < 4 * len(QUERIES)

    resumed = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    rows = [json.loads(line) for line in raw.read_text().splitlines()]
    ids = [r["id"] for r in rows]
    planned = [j.id for j in plan_jobs(QUERIES, DistillConfig(queries=str(queries)))]
    assert len(ids) == len(set(ids)), "a job was logged twice"
    assert sorted(ids) == sorted(planned), "a job was lost"
    assert sum(1 for r in rows if r["output"]) >= 0.8 * len(rows)

    again = subprocess.run(cmd + ["--seed", "1"], capture_output=True, text=True, timeout=120)
    assert again.returncode == 6 and "other settings" in again.stderr


def test_a_task_of_ones_own_is_distilled_and_judged_from_its_task_file(tmp_path):
    from udrl.trainer.distill.relabel import judge_file
    from udrl.trainer.judge import Judge
    from udrl.trainer.taskfile import TASKS

    task_file = Path(__file__).resolve().parents[3] / "data" / "tasks" / "alt_text.toml"
    queries = tmp_path / "queries.txt"
    queries.write_text("\n".join(QUERIES[:4]) + "\n")
    out = tmp_path / "distill"
    done = subprocess.run([sys.executable, "-m", "udrl", "distill", "--queries", str(queries), "--out", str(out),
                           "--task-file", str(task_file), "--threads", "2"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [json.loads(line) for line in (out / "raw.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and {r["task"] for r in rows} == {"alt_text"}
    assert all(6 <= r["requested"] <= 24 for r in rows)
    assert json.loads((out / "distill.json").read_text())["config"]["task_files"] == [str(task_file)]
    records = judge_file(out / "raw.jsonl", tmp_path / "alt.jsonl", judge=Judge(threads=2))
    kept = [json.loads(line) for line in records.read_text().splitlines()]
    assert kept and all(r["task"] == "alt_text" for r in kept)
    assert "alt_text" not in TASKS  # known while judging only
