"""Distillation: the teacher writes outputs for design requests, at many requested lengths.

A long job, built to be interrupted: every result goes to an append-only JSONL log, flushed and
fsynced per batch, keyed by a deterministic job id. Started again (after kill -9 too) it reads the
log, drops a torn last line, and continues with the jobs not yet logged; it never repeats one.

Files in ``out_dir``::

    distill.json      the run's configuration and teacher (a resumed run must match it)
    query_calls.jsonl log of query-generation calls (when queries come from seed topics)
    queries.txt       the cleaned, deduplicated queries, in order
    raw.jsonl         one line per job: query, task, requested length, output or reject reason

Then `udrl judge` (see `relabel.py`) scores and relabels ``raw.jsonl`` into training records.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from udrl.files import write_atomic
from udrl.manifest import DEFAULT_TASKS

from ..errors import ConfigError, DatasetError
from ..handwritten import query_key, read_requests
from ..jobs import JsonlLog, batches, progress_bar, query_id, stable_int
from ..prompts import (
    LENGTH_SPREAD,
    QUERY_STOP,
    SHOWN_REQUESTS,
    STOP,
    build_prompt,
    build_query_prompt,
    clean_output,
    clean_query,
    split_query_list,
)
from ..taskfile import TASKS
from ..teachers import Sampling, Teacher, make_teacher


@dataclasses.dataclass
class DistillConfig:
    out_dir: str = "data/distill"
    queries: str | None = None  # a file of queries (one per line); and/or
    topics: str | None = None  # a file of seed topics the teacher writes queries about
    n_queries: int = 2500  # queries to generate from topics
    exclude: list[str] = dataclasses.field(default_factory=list)  # files of queries never to use
    tasks: list[str] = dataclasses.field(default_factory=lambda: list(DEFAULT_TASKS))
    task_files: list[str] = dataclasses.field(default_factory=list)  # tasks of one's own (taskfile.py)
    tasks_per_query: int | None = None  # how many of the tasks each query gets (None: all of them)
    samples_per_task: int = 1  # outputs per (query, task)
    seed: int = 0
    batch_size: int = 64  # jobs per fsynced append (and per teacher call: fewer half-empty tails)
    attempts: int = 3  # tries per job before it is logged as rejected
    temperature: float = 0.8
    max_tokens: int = 80
    max_query_rounds: int = 60  # passes over the topics before giving up on n_queries

    def validate(self) -> None:
        """`ConfigError` for settings that cannot run (a task file's tasks must be known: call it
        inside ``TASKS.extended(self.task_files)``, as `distill` does)."""
        if self.queries is None and self.topics is None:
            raise ConfigError("no source of queries: give --queries FILE, --topics FILE, or both")
        unknown = [t for t in self.tasks if t not in LENGTH_SPREAD]
        if unknown:
            raise ConfigError(f"no teacher prompt for task(s) {unknown}; prompts exist for {list(LENGTH_SPREAD)} "
                              "(a task of one's own comes from a task file: --task-file FILE)")
        if self.samples_per_task < 1 or self.batch_size < 1 or self.attempts < 1 or self.n_queries < 1:
            raise ConfigError("samples_per_task, batch_size, attempts and n_queries must be at least 1")
        if self.tasks_per_query is not None and not 1 <= self.tasks_per_query <= len(self.tasks):
            raise ConfigError(f"tasks_per_query must be between 1 and the number of tasks ({len(self.tasks)}), "
                              f"got {self.tasks_per_query}")


# -- queries -------------------------------------------------------------------------------------


def read_lines(path: str | Path) -> list[str]:
    p = Path(path)
    if not p.is_file():
        raise DatasetError(f"file not found: {p}")
    return [line.strip() for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]


def dedupe_queries(candidates: Iterable[str], banned: Iterable[str] = ()) -> list[str]:
    """Cleaned queries, first occurrence kept, duplicates by case and punctuation removed, and none
    of the few-shot requests, the hand-written evaluation set or ``banned``."""
    key = query_key
    seen = {key(r) for r in SHOWN_REQUESTS} | {key(r.query) for r in read_requests()} | {key(b) for b in banned}
    kept = []
    for text in candidates:
        q = clean_query(text)
        if q and key(q) not in seen:
            seen.add(key(q))
            kept.append(q)
    return kept


def generate_queries(teacher: Teacher, topics: Sequence[str], config: DistillConfig, out: Path,
                     banned: Sequence[str] = ()) -> list[str]:
    """Ask the teacher for design requests about each topic until ``n_queries`` distinct ones exist
    (none of them in ``banned``)."""
    log = JsonlLog(out / "query_calls.jsonl")
    sampling = Sampling(max_tokens=120, temperature=1.0, top_p=0.95, stop=tuple(QUERY_STOP))
    queries = dedupe_queries((q for row in log.rows for q in row["queries"]), banned)
    bar = progress_bar(config.n_queries, min(len(queries), config.n_queries), "queries")
    calls = [(r, t) for r in range(config.max_query_rounds) for t in topics]
    pending = [c for c in calls if f"{c[0]}:{c[1]}" not in log.ids]
    for batch in batches(pending, config.batch_size):
        if len(queries) >= config.n_queries:
            break
        texts = teacher.complete_many([build_query_prompt(t) for _, t in batch], sampling,
                                      [stable_int(config.seed, r, t) for r, t in batch])
        log.append([{"id": f"{r}:{t}", "topic": t, "queries": split_query_list(text)}
                    for (r, t), text in zip(batch, texts)])
        before = len(queries)
        queries = dedupe_queries((q for row in log.rows for q in row["queries"]), banned)
        bar.update(min(len(queries), config.n_queries) - min(before, config.n_queries))
    bar.close()
    if len(queries) < config.n_queries:
        print(f"warning: only {len(queries)} distinct queries after {config.max_query_rounds} rounds "
              f"(asked for {config.n_queries}); add topics or raise max_query_rounds", file=sys.stderr)
    return queries[: config.n_queries]


# -- outputs -------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Job:
    id: str
    query: str
    task: str
    requested: int


def tasks_for(query: str, config: DistillConfig) -> list[str]:
    """The tasks a query gets: all of them, or ``tasks_per_query`` of them, chosen by the query's
    hash (so that every task sees a share of every kind of query)."""
    if config.tasks_per_query is None:
        return list(config.tasks)
    ranked = sorted(config.tasks, key=lambda t: stable_int(config.seed, "task", query, t))
    return [t for t in config.tasks if t in ranked[: config.tasks_per_query]]


def plan_jobs(queries: Sequence[str], config: DistillConfig) -> list[Job]:
    """Every (query, task, sample) with its requested length, query by query: an interrupted run
    has covered every task (the teacher keeps each task's few-shot prefix cached, so mixing tasks
    costs nothing)."""
    jobs = []
    for query in queries:
        qid = query_id(query)
        for task in tasks_for(query, config):
            lo, hi = LENGTH_SPREAD[task]
            for k in range(config.samples_per_task):
                job_id = f"{task}:{qid}:{k}"
                requested = lo + stable_int(config.seed, job_id) % (hi - lo + 1)
                jobs.append(Job(job_id, query, task, requested))
    return jobs


def run_jobs(teacher: Teacher, jobs: Sequence[Job], config: DistillConfig, log: JsonlLog,
             teacher_name: str) -> None:
    sampling = Sampling(max_tokens=config.max_tokens, temperature=config.temperature, stop=tuple(STOP))
    taken: dict[tuple[str, str], set[str]] = {}
    for row in log.rows:
        if row.get("output"):
            taken.setdefault((row["query"], row["task"]), set()).add(row["output"].lower())
    pending = [j for j in jobs if j.id not in log.ids]
    bar = progress_bar(len(jobs), len(jobs) - len(pending), "distill")
    for batch in batches(pending, config.batch_size):
        # Attempt by attempt, every job still without an output of this batch goes to the teacher
        # at once (it decodes several together); a job's seed per attempt is as before.
        found: dict[str, tuple[str | None, str, int]] = {}
        todo = list(batch)
        for attempt in range(config.attempts):
            if not todo:
                break
            texts = teacher.complete_many([build_prompt(j.task, j.query, j.requested) for j in todo], sampling,
                                          [stable_int(config.seed, j.id, attempt) for j in todo])
            retry = []
            for job, text in zip(todo, texts):
                output, reason = clean_output(job.task, text, job.query)
                if output and output.lower() in taken.get((job.query, job.task), set()):
                    output, reason = None, "duplicate"
                found[job.id] = (output, reason, attempt + 1)
                if output:
                    taken.setdefault((job.query, job.task), set()).add(output.lower())
                else:
                    retry.append(job)
            todo = retry
        rows = [{"id": job.id, "query": job.query, "task": job.task, "requested": job.requested,
                 "output": found[job.id][0], "reject": found[job.id][1] or None, "attempts": found[job.id][2],
                 "teacher": teacher_name} for job in batch]
        log.append(rows)
        bar.update(len(batch))
    bar.close()


def distill(config: DistillConfig, teacher: Teacher | None = None, teacher_kind: str = "gemma",
            teacher_options: dict[str, Any] | None = None) -> Path:
    """Run (or resume) a distillation; returns the path of ``raw.jsonl``. The tasks of
    ``config.task_files`` are known for the length of the call only."""
    with TASKS.extended(config.task_files):
        return _distill(config, teacher, teacher_kind, teacher_options)


def _distill(config: DistillConfig, teacher: Teacher | None, teacher_kind: str,
             teacher_options: dict[str, Any] | None) -> Path:
    config.validate()
    out = Path(config.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    options = dict(teacher_options or {})
    if teacher_kind in ("gemma", "gguf"):
        options.setdefault("prefix_cache", True)  # every prompt of a task shares its few-shot prefix
    teacher = teacher or make_teacher(teacher_kind, **options)
    settings = {"config": dataclasses.asdict(config), "teacher": teacher.describe()}
    saved = out / "distill.json"
    if saved.exists():
        previous = json.loads(saved.read_text())
        # A run saved before a setting existed ran with its default.
        defaults = dataclasses.asdict(DistillConfig())
        previous["config"] = {**{k: v for k, v in defaults.items() if k not in previous.get("config", {})},
                              **previous.get("config", {})}
        if previous != settings:
            raise ConfigError(
                f"{out} holds a distillation with other settings ({saved}); resume it with the same "
                "options, or choose another --out"
            )
    else:
        write_atomic(saved, json.dumps(settings, indent=2) + "\n")
    t0 = time.time()
    banned = [q for path in config.exclude for q in read_lines(path)]
    queries = generate_queries(teacher, read_lines(config.topics), config, out, banned) if config.topics else []
    if config.queries:  # after the teacher's own, so that its part of the log keeps its order
        queries = dedupe_queries(queries + read_lines(config.queries), banned)
    if not queries:
        raise DatasetError("no usable queries: each needs 3 to 20 words, mostly letters")
    write_atomic(out / "queries.txt", "\n".join(queries) + "\n")
    log = JsonlLog(out / "raw.jsonl")
    run_jobs(teacher, plan_jobs(queries, config), config, log, teacher.describe().get("model", teacher.name))
    kept = sum(1 for r in log.rows if r["output"])
    print(f"distilled {kept} outputs ({len(log.rows) - kept} rejected) for {len(queries)} queries "
          f"in {time.time() - t0:.0f} s -> {log.path}")
    return log.path
