"""Training data: JSONL records of what the teacher wrote and the commands it achieved.

One record per line, with at least::

    {"query": "poster for a jazz night", "task": "image",
     "output": "smoky club, saxophone silhouette, warm amber light", "words": 7, "score": 0.61}

``words`` is the achieved length (``udrl.count_words(output)``), ``score`` the judge's relevance.
Files may be gzip-compressed (``.gz``). A malformed line is a `DatasetError` naming the file and
line, unless ``skip_invalid`` is set, in which case it is skipped and counted. An unknown task is
always an error: dropping a whole task silently would train a different model than asked for.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import json
import math
import random
import statistics
from collections.abc import Iterator, Sequence
from pathlib import Path

from udrl.commands import count_words
from udrl.manifest import Manifest, focus_key

from ..errors import DatasetError


@dataclasses.dataclass(frozen=True)
class Record:
    query: str
    task: str
    output: str
    words: int
    score: float
    origin: str | None = None  # a copy-augmented record: the request it was made from


@dataclasses.dataclass
class LoadReport:
    """What `read_records` kept, and what it skipped (file:line: reason) when asked to skip."""

    records: list[Record]
    skipped: list[str]


def open_text(path: Path) -> io.TextIOBase:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8")
    return open(path, encoding="utf-8")


def _parse(line: str, tasks: Sequence[str], length_range: tuple[int, int]) -> Record:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON ({exc.msg})") from None
    if not isinstance(obj, dict):
        raise ValueError("a record must be a JSON object")
    missing = [k for k in ("query", "task", "output", "words", "score") if k not in obj]
    if missing:
        raise ValueError(f"missing field(s) {missing}")
    query, task, output, words, score = (obj[k] for k in ("query", "task", "output", "words", "score"))
    if not isinstance(query, str) or not query.strip():
        raise ValueError("'query' must be a non-empty string")
    if not isinstance(task, str):
        raise ValueError("'task' must be a string")
    if not isinstance(output, str) or not output.strip():
        raise ValueError("'output' must be a non-empty string")
    if "\n" in output.strip():
        raise ValueError("'output' must be a single line")
    if isinstance(words, bool) or not isinstance(words, int):
        raise ValueError(f"'words' must be an integer, got {words!r}")
    if words != count_words(output):
        raise ValueError(f"'words' is {words} but the output has {count_words(output)} words")
    if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score):
        raise ValueError(f"'score' must be a finite number, got {score!r}")
    origin = obj.get("origin")
    if origin is not None and (not isinstance(origin, str) or not origin.strip()):
        raise ValueError("'origin' (the request an augmented record was made from) must be a non-empty string")
    lo, hi = length_range
    if not lo <= words <= hi:
        raise ValueError(f"output length {words} words is outside the length range [{lo}, {hi}]")
    if task not in tasks:
        raise _UnknownTask(task)
    return Record(" ".join(query.split()), task, " ".join(output.split()), words, float(score),
                  " ".join(origin.split()) if origin else None)


class _UnknownTask(Exception):
    pass


def read_records(
    paths: Sequence[str | Path],
    tasks: Sequence[str],
    length_range: tuple[int, int],
    skip_invalid: bool = False,
) -> LoadReport:
    """Read and validate JSONL records from one or more files."""
    if not paths:
        raise DatasetError("no dataset given: pass at least one JSONL file")
    records: list[Record] = []
    skipped: list[str] = []
    for p in map(Path, paths):
        if not p.is_file():
            raise DatasetError(f"dataset file not found: {p}")
        with open_text(p) as f:
            for lineno, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    records.append(_parse(line, tasks, length_range))
                except _UnknownTask as exc:
                    raise DatasetError(
                        f"{p}:{lineno}: unknown task {exc.args[0]!r}; allowed tasks: "
                        f"{', '.join(tasks)} (add it to the config's 'tasks' to train it)"
                    ) from None
                except ValueError as exc:
                    where = f"{p}:{lineno}: {exc}"
                    if not skip_invalid:
                        raise DatasetError(f"{where} (pass --skip-invalid to skip such lines)") from None
                    skipped.append(where)
    if not records:
        raise DatasetError(f"dataset is empty: no valid records in {', '.join(map(str, paths))}")
    return LoadReport(records, skipped)


def query_word_share(query: str, output: str) -> float:
    """Share of the output's words that are words of the query (compared as query focus does)."""
    words = [focus_key(w) for w in output.split()]
    asked = {focus_key(w) for w in query.split()}
    return sum(w in asked for w in words) / len(words) if words else 0.0


@dataclasses.dataclass(frozen=True)
class CopyFit:
    """One task's least-squares line of score on copied share (`query_word_share`) over its records."""

    slope: float
    mean_share: float
    records: int


def _require_tasks(records: Sequence[Record], tasks: Sequence[str], option: str) -> None:
    """Refuse a re-scoring ``option`` naming a task the data has no records of."""
    present = {r.task for r in records}
    for task in tasks:
        if task not in present:
            raise DatasetError(f"{option} task {task!r} has no records; the data's tasks: {', '.join(sorted(present))}")


def copy_adjusted(records: Sequence[Record], tasks: Sequence[str]) -> tuple[list[Record], dict[str, CopyFit]]:
    """The records with each of ``tasks`` re-scored by the relevance its copying does not explain:
    score - slope x (copied share - the task's mean share), the line fitted over that task's records.

    The judge rewards copying the request (an echo scores near 1), and the reward edges are shared
    by all tasks, so on a task whose good outputs copy little (image prompts) the top reward level
    would otherwise hold the outputs that copy most. A slope below 0 is taken as 0 (copying that
    lowers the score needs no correction). Returns the records, in order, and each task's fit."""
    _require_tasks(records, tasks, "copy-adjusted")
    fits: dict[str, CopyFit] = {}
    share = {i: query_word_share(r.query, r.output) for i, r in enumerate(records) if r.task in tasks}
    for task in tasks:
        mine = [i for i in share if records[i].task == task]
        shares = [share[i] for i in mine]
        slope = 0.0
        if len(mine) > 1 and len(set(shares)) > 1:
            slope = max(0.0, statistics.linear_regression(shares, [records[i].score for i in mine]).slope)
        fits[task] = CopyFit(slope, statistics.fmean(shares), len(mine))
    adjusted = [dataclasses.replace(r, score=r.score - fits[r.task].slope * (share[i] - fits[r.task].mean_share))
                if i in share else r for i, r in enumerate(records)]
    return adjusted, fits


def rank_matched(records: Sequence[Record], tasks: Sequence[str]) -> list[Record]:
    """The records with each of ``tasks`` re-scored by rank: a record at quantile q of its task's
    scores takes the score at quantile q of all the records' scores (ties share their mean rank).

    The reward edges are shared by all tasks, and a task the judge scores low (image prompts,
    headlines) would otherwise find 2-3% of its records at the top level where search queries find
    45%: the top command then rests on a few hundred examples. Re-scored so, every reward level
    holds the same share of each listed task as of the whole data. Scores of other tasks are kept.
    Returns the records, in order."""
    import numpy as np

    _require_tasks(records, tasks, "rank-matched")
    reference = np.array([r.score for r in records], dtype=np.float64)
    scores = [r.score for r in records]
    for task in tasks:
        mine = [i for i, r in enumerate(records) if r.task == task]
        values = np.array([records[i].score for i in mine], dtype=np.float64)
        _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
        # mean rank of each distinct score: ties (judge scores are rounded) go to one level together
        first = np.concatenate(([0], np.cumsum(counts)[:-1]))
        mean_rank = (first + (counts - 1) / 2)[inverse]
        matched = np.quantile(reference, (mean_rank + 0.5) / len(mine))
        for i, value in zip(mine, matched):
            scores[i] = float(value)
    return [r if r.score == score else dataclasses.replace(r, score=score) for r, score in zip(records, scores)]


def replay_mix(records: Sequence[Record], old_tasks: Sequence[str], share: float, seed: int) -> list[Record]:
    """Every record of a task being taught (one not in ``old_tasks``) and a seeded sample of the
    other tasks' records making up ``share`` of the result (all of them when there are fewer): a
    fine-tune on one task keeps rehearsing the others without drowning the one it teaches."""
    if not 0 <= share < 1:
        raise DatasetError(f"replay share must be in [0, 1), got {share}")
    new = [r for r in records if r.task not in old_tasks]
    old = [r for r in records if r.task in old_tasks]
    keep = round(share / (1 - share) * len(new)) if new else len(old)
    if keep >= len(old):
        return list(records)
    kept = set(random.Random(seed).sample(range(len(old)), keep))
    return new + [r for i, r in enumerate(old) if i in kept]


def query_hash(query: str) -> str:
    """The stable order of queries that the held-out split takes its first ones from."""
    return hashlib.sha256(query.encode()).hexdigest()


def split_by_query(records: Sequence[Record], val_fraction: float) -> tuple[list[Record], list[Record]]:
    """Hold out whole queries (never seen in training), chosen by a stable hash of the query.

    A copy-augmented record goes with the request it was made from (its ``origin``): training
    never sees a variant of a held-out request; the held-out side keeps only teacher records."""
    queries = sorted({r.query for r in records if r.origin is None}, key=query_hash)
    n_val = math.ceil(val_fraction * len(queries)) if val_fraction > 0 else 0
    if n_val >= len(queries):
        raise DatasetError(
            f"cannot hold out {val_fraction:.0%} of {len(queries)} distinct queries for validation "
            "and keep some for training: give more data or a smaller val_fraction"
        )
    held_out = set(queries[:n_val])
    train = [r for r in records if (r.origin or r.query) not in held_out]
    val = [r for r in records if r.origin is None and r.query in held_out]
    return train, val


def quantile_edges(scores: Sequence[float], levels: int) -> list[float]:
    """Edges splitting scores into ``levels`` equally populated buckets (duplicates merged)."""
    if levels < 1:
        raise DatasetError(f"reward levels must be at least 1, got {levels}")
    if levels == 1:
        return []
    qs = statistics.quantiles(scores, n=levels, method="inclusive") if len(scores) > 1 else []
    edges: list[float] = []
    for q in qs:
        q = round(q, 6)
        if not edges or q > edges[-1]:
            edges.append(q)
    return edges


def median_lengths(records: Sequence[Record]) -> dict[str, int]:
    by_task: dict[str, list[int]] = {}
    for r in records:
        by_task.setdefault(r.task, []).append(r.words)
    return {t: int(statistics.median_low(v)) for t, v in sorted(by_task.items())}


def iter_texts(records: Sequence[Record], manifest: Manifest) -> Iterator[str]:
    """The text a tokenizer is trained on: queries and outputs as the manifest's template and output
    prefix place them in a sequence (control tokens aside), so every word is learnt in that form."""
    for r in records:
        yield manifest.template.format(task="", length="", reward="", query=r.query, sep="")
        yield manifest.output_prefix + r.output
