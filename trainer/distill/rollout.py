"""A second UDRL round: the trained student answers its own training queries, and its outputs are
judged and relabelled like the teacher's.

For every (query, task, achieved length) of the training split, the student is asked at the top
reward level and sampled ``samples`` times. Each output is checked like a teacher's (format,
length range, duplicates, loops) and also for fragments, pieces that are neither English words nor
words of the request (the student's own failure); it is scored by the same judge and given the
reward level its score falls in under the model's own edges (those of the teacher data), so the new
records mean what the old ones mean. The judge favours outputs that repeat the request, so the
student's best samples can teach it to copy more than the teacher's data does: a copy guard keeps a
(task, reward level) only if its records copy no larger mean share of the request than the data's
records of that task and level.
Train one more stage from the model on both files (``udrl train --init``): it keeps the model's
reward edges, where a fresh run would recompute them over the mixture. Held-out queries (the same
hash split, ``val_fraction``) are never asked, so evaluation stays clean.

Resumable like distillation: every sample goes to an append-only log next to the output
(``NAME.raw.jsonl``), keyed by a stable id and seeded from it; a restarted run continues with the
samples not logged yet and ends with the same records.

    udrl rollout runs/mini/model-q8_0.gguf --data data/udrl-gemma.jsonl.gz --tasks headline \\
        --samples 8 --out data/rollout/headline.jsonl.gz
"""

from __future__ import annotations

import collections
import dataclasses
import json
import time
from pathlib import Path
from typing import Any

from udrl.commands import reward_level_for
from udrl.files import file_digest, write_atomic
from udrl.manifest import Manifest

from ..errors import ConfigError
from ..jobs import JsonlLog, batches, progress_bar, query_id, stable_int
from ..judge import Judge
from ..training.dataset import Record, query_hash, query_word_share, read_records, split_by_query
from .relabel import RelabelConfig, relabel, write_records


@dataclasses.dataclass
class RolloutConfig:
    model: str  # the student artifact (a GGUF is fastest)
    data: list[str]  # the data it was trained on (its training split is asked)
    out: str  # records to write (.jsonl or .jsonl.gz); the log goes next to it
    tasks: list[str] | None = None  # default: every task of the model
    samples: int = 8  # outputs per (query, task, length)
    temperature: float = 0.8
    top_p: float = 0.95
    queries: int | None = None  # ask only the first N training queries (by hash order); None: all
    seed: int = 0
    val_fraction: float = 0.05  # must match the training run's, so held-out queries stay unseen
    batch_size: int = 64  # samples per fsynced append
    threads: int = 2
    copy_guard: bool = True  # drop (task, level) groups that copy more of the request than the data's
    drop_fragments: bool = True  # drop samples with a piece that is neither an English word nor the request's

    def validate(self) -> None:
        if self.samples < 1 or self.batch_size < 1 or (self.queries is not None and self.queries < 1):
            raise ConfigError("samples, batch_size and queries must be at least 1")
        if not self.temperature > 0 or not 0 < self.top_p <= 1:
            raise ConfigError(f"a rollout samples: temperature must be > 0 and top_p in (0, 1], got "
                              f"{self.temperature} and {self.top_p}")
        if not 0 <= self.val_fraction < 1:
            raise ConfigError(f"val_fraction must be in [0, 1), got {self.val_fraction}")


@dataclasses.dataclass(frozen=True)
class Job:
    id: str
    query: str
    task: str
    length: int


def training_split(config: RolloutConfig, manifest: Manifest) -> list[Record]:
    """The records the model was trained on: the data less its held-out queries."""
    # Split over every task's records, as the trainer did, so the held-out queries are the same.
    records = read_records(config.data, manifest.tasks, (manifest.length_min, manifest.length_max),
                           skip_invalid=True).records
    return split_by_query(records, config.val_fraction)[0]


def plan_jobs(config: RolloutConfig, train: list[Record], tasks: list[str]) -> list[Job]:
    """Every (training query, task, achieved length) of ``train`` (`training_split`), ``samples`` times, in
    a stable order."""
    queries = sorted({r.query for r in train}, key=query_hash)
    asked = set(queries[: config.queries] if config.queries else queries)
    keys = sorted({(r.task, r.query, r.words) for r in train if r.query in asked and r.task in tasks})
    return [Job(f"{task}:{query_id(query)}:{words}:{k}", query, task, words)
            for task, query, words in keys for k in range(config.samples)]


def rollout(config: RolloutConfig, judge: Judge | None = None) -> Path:
    """Run (or resume) a rollout; returns the path of the relabelled records."""
    import udrl
    from udrl.artifacts import read_manifest

    config.validate()
    manifest = read_manifest(config.model)
    tasks = list(config.tasks or manifest.tasks)
    unknown = [t for t in tasks if t not in manifest.tasks]
    if unknown:
        raise ConfigError(f"the model has no task(s) {unknown}; it knows {list(manifest.tasks)}")
    if not manifest.reward_edges:
        raise ConfigError(f"{config.model} has no reward levels: a rollout relabels by reward, "
                          "so it needs a model trained with the reward command")
    out = Path(config.out)
    stem = out.name.split(".")[0]
    out.parent.mkdir(parents=True, exist_ok=True)
    # What changes the samples; the copy guard and the fragment filter only filter them at the end.
    settings = {"config": {k: v for k, v in dataclasses.asdict(config).items()
                           if k not in ("threads", "batch_size", "copy_guard", "drop_fragments")},
                "model_digest": file_digest(_files(Path(config.model)))}
    saved = out.parent / f"{stem}.rollout.json"
    if saved.exists() and json.loads(saved.read_text()) != settings:
        raise ConfigError(f"{saved} records a rollout with other settings or another model; resume it with "
                          "the same ones, or choose another --out")
    write_atomic(saved, json.dumps(settings, indent=2) + "\n")

    t0 = time.time()
    train = training_split(config, manifest)
    jobs = plan_jobs(config, train, tasks)
    log = JsonlLog(out.parent / f"{stem}.raw.jsonl")
    pending = [j for j in jobs if j.id not in log.ids]
    bar = progress_bar(len(jobs), len(jobs) - len(pending), "rollout")
    with udrl.load(config.model, threads=config.threads) as model:
        for batch in batches(pending, config.batch_size):
            log.append([{"id": j.id, "query": j.query, "task": j.task, "requested": j.length,
                         "output": model.generate(j.query, task=j.task, length=j.length,
                                                  temperature=config.temperature, top_p=config.top_p,
                                                  seed=stable_int(config.seed, j.id)).text}
                        for j in batch])
            bar.update(len(batch))
    bar.close()

    planned = {j.id for j in jobs}
    seen: set[tuple[str, str, str]] = set()
    rows: list[dict[str, Any]] = []
    left_out = {"empty": 0, "duplicate": 0}
    for row in (r for r in log.rows if r["id"] in planned):
        key = (row["query"], row["task"], row["output"].lower())
        reason = "empty" if not row["output"].strip() else "duplicate" if key in seen else None
        if reason:
            left_out[reason] += 1
            continue
        seen.add(key)
        rows.append(row)
    records, stats = relabel(rows, judge or Judge(threads=config.threads),
                             RelabelConfig(reward_levels=manifest.reward_levels, length_min=manifest.length_min,
                                           length_max=manifest.length_max, drop_fragments=config.drop_fragments),
                             edges=manifest.reward_edges)
    stats["dropped"].update({k: n for k, n in left_out.items() if n})
    shares = copy_shares(records, train, manifest.reward_edges)
    counts = collections.Counter((r["task"], r["reward"]) for r in records)
    guarded = set()
    for (task, level), (share, data_share) in sorted(shares.items()):
        if config.copy_guard and (data_share is None or share > data_share):
            guarded.add((task, level))
            stats["dropped"][f"copy guard: {task} level {level}"] = counts[task, level]
        print(f"{task} level {level}: {counts[task, level]} records copy {share:.3f} of the request, the data's "
              f"{'-' if data_share is None else f'{data_share:.3f}'}"
              f"{' -> left out (copy guard)' if (task, level) in guarded else ''}")
    records = [r for r in records if (r["task"], r["reward"]) not in guarded]
    path = write_records(records, out)
    levels = {lvl: sum(r["reward"] == lvl for r in records) for lvl in range(manifest.reward_levels)}
    print(f"{len(records)} records from {len(jobs)} samples ({json.dumps(stats['dropped'])} left out) in "
          f"{time.time() - t0:.0f} s -> {path}; records per reward level {levels} under edges "
          f"{list(manifest.reward_edges)}")
    return path


def copy_shares(records: list[dict[str, Any]], data: list[Record],
                edges: list[float]) -> dict[tuple[str, int], tuple[float, float | None]]:
    """Per (task, reward level) of the new records: their mean share of words taken from the request,
    and the data's records' at the same task and level (None where the data has none)."""
    def means(rows: list[tuple[str, int, float]]) -> dict[tuple[str, int], float]:
        groups: dict[tuple[str, int], list[float]] = {}
        for task, level, share in rows:
            groups.setdefault((task, level), []).append(share)
        return {k: sum(v) / len(v) for k, v in groups.items()}

    new = means([(r["task"], r["reward"], query_word_share(r["query"], r["output"])) for r in records])
    old = means([(r.task, reward_level_for(edges, r.score), query_word_share(r.query, r.output)) for r in data])
    return {k: (share, old.get(k)) for k, share in new.items()}


def _files(path: Path) -> list[Path]:
    """The files an artifact is made of (a GGUF or ONNX file, or a checkpoint directory)."""
    if not path.exists():
        raise ConfigError(f"model not found: {path}")
    return sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
