"""`udrl eval`: how well a shipped artifact writes prompts on command, beside the teacher.

On the evaluation half of the hand-written requests (`handwritten.py`: written as users type
them, off the teacher-written training distribution, looked at by no choice), or on the training
data's held-out queries (``query_set="in-distribution"``), every task is requested at lengths
spread over what the data covers. Both the artifact (through the SDK)
and the teacher (few-shot, as in distillation, greedy) answer the same requests, and both are
scored the same way: relevance (the MiniLM judge, and all-mpnet-base-v2, which only reports),
the degenerate-output rate (`degenerate.py`), length adherence (share within ±1 word, mean
absolute error), format validity, diversity (distinct-2), how much of the output is words of the
request (query-word share: the judge rewards copying, so a system that copies more than the
teacher is not better for it) and latency per request. A model with query focus (see
`udrl.generate`) is also run with it off, so the report shows what the decoding rule adds.

    udrl eval runs/mini/model-q8_0.gguf --data data/udrl-gemma.jsonl.gz                      # hand-written
    udrl eval runs/mini/model-q8_0.gguf --data data/udrl-gemma.jsonl.gz --set in-distribution --queries 100

A model fine-tuned on a task of one's own (README "Bring your own task") is evaluated with its task
file (``--task-file``: the teacher's prompt and the format rules), on some of its tasks
(``--tasks``), and beside the model it was fine-tuned from (``--before``): the same requests, the
same judges, and per task the relevance after over before.

    udrl eval runs/alt-model/model-q8_0.gguf --data data/udrl-gemma.jsonl.gz --data runs/alt/alt_text.jsonl.gz \
        --task-file data/tasks/alt_text.toml --tasks headline image search tags --no-teacher --before default
"""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from udrl.commands import count_words
from udrl.files import write_atomic

from ..formats import is_valid_format
from ..handwritten import load_split
from ..judge import Judge, reporting_judge
from ..training.dataset import query_word_share, read_records, split_by_query
from .degenerate import is_degenerate

QUERY_SETS = ("handwritten", "handwritten-tune", "in-distribution")


@dataclasses.dataclass
class EvalConfig:
    model: str
    data: list[str]  # the training data: its held-out split, and the lengths each task is asked at
    # handwritten: the evaluation half of the hand-written requests (`handwritten.py`), off the training
    # distribution and looked at by no choice; handwritten-tune: the tuning half; in-distribution: the
    # training data's held-out queries (teacher-written, like the training queries).
    query_set: str = "handwritten"
    queries: int | None = None  # how many queries of the set (None: all hand-written ones, 100 held-out ones)
    first_query: int = 0  # skip this many held-out queries (`udrl focus` tunes on the ones after eval's)
    lengths_per_task: int = 3
    val_fraction: float = 0.05  # must match the training run's, so the queries are truly held out
    teacher: bool = True
    length_guard: bool = True
    threads: int = 2
    second_judge: bool = True  # also score with all-mpnet-base-v2, which nothing was tuned on (report only)
    tasks: list[str] | None = None  # the model's tasks to ask (None: all of them)
    task_files: list[str] = dataclasses.field(default_factory=list)  # tasks of one's own the model was taught
    before: str | None = None  # a model to run on the same requests too ("default": the bundled one)
    out: str | None = None  # JSON report path

    def __post_init__(self) -> None:
        if self.query_set not in QUERY_SETS:
            from ..errors import ConfigError

            raise ConfigError(f"unknown query set {self.query_set!r}; choose one of: {', '.join(QUERY_SETS)}")


@dataclasses.dataclass(frozen=True)
class EvalRequest:
    query: str
    task: str
    length: int


def plan_requests(config: EvalConfig, tasks: Sequence[str], length_range: tuple[int, int],
                  data_tasks: Sequence[str] | None = None) -> list[EvalRequest]:
    """Held-out queries x tasks x lengths at even quantiles of each task's achieved lengths;
    ``data_tasks`` (default: ``tasks``) are the tasks the data may hold (the model's)."""
    records = read_records(config.data, data_tasks or tasks, length_range, skip_invalid=True).records
    if config.query_set == "in-distribution":
        _, held_out = split_by_query(records, config.val_fraction)
        pool = sorted({r.query for r in held_out})
        count = 100 if config.queries is None else config.queries
    else:
        pool = load_split("eval" if config.query_set == "handwritten" else "tune")
        count = len(pool) if config.queries is None else config.queries
    queries = pool[config.first_query : config.first_query + count]
    requests = []
    for task in tasks:
        lengths = sorted(r.words for r in records if r.task == task)
        if not lengths:
            continue
        k = config.lengths_per_task
        picks = sorted({lengths[min(len(lengths) - 1, int(len(lengths) * (i + 0.5) / k))] for i in range(k)})
        requests += [EvalRequest(q, task, n) for q in queries for n in picks]
    return requests


def distinct_2(texts: Sequence[str]) -> float:
    """Unique word bigrams over all bigrams: 1.0 means no phrase is ever repeated."""
    bigrams = [tuple(t.lower().split()[i : i + 2]) for t in texts for i in range(len(t.split()) - 1)]
    return len(set(bigrams)) / len(bigrams) if bigrams else 0.0


# Upper edges of the query-word-share bins for relevance at equal copying (the last bin holds 1.0).
SHARE_BINS = (0.2, 0.4, 0.6, 0.8, math.inf)


def share_bin(share: float) -> int:
    return next(i for i, edge in enumerate(SHARE_BINS) if share < edge)


def copy_matched(model: Mapping[str, Any], teacher: Mapping[str, Any]) -> float | None:
    """The model's relevance at the teacher's copying: its mean relevance within each bin of query-word
    share, weighted by the share of the teacher's outputs in that bin (bins the model never reaches are
    left out and the weights renormalised). The judge rewards repeating the request, so a model that
    copies more than the teacher can outscore it without writing better; this figure cannot.

    >>> copy_matched({"relevance_by_share": [{"n": 1, "mean": 0.2}, {"n": 3, "mean": 0.8}]},
    ...              {"relevance_by_share": [{"n": 3, "mean": 0.3}, {"n": 1, "mean": 0.7}]})
    0.35
    """
    pairs = [(t["n"], m["mean"]) for m, t in zip(model["relevance_by_share"], teacher["relevance_by_share"])
             if m["n"] and t["n"]]
    weight = sum(n for n, _ in pairs)
    return round(sum(n * mean for n, mean in pairs) / weight, 6) if weight else None


def score(requests: Sequence[EvalRequest], outputs: Sequence[str], latencies: Sequence[float],
          judge: Judge, second: Judge | None = None) -> dict[str, Any]:
    """Per-task and overall figures for one system's outputs; ``second`` is a judge that only
    reports (its relevance sits beside the first judge's)."""
    return summarise(judged_rows(requests, outputs, latencies, judge, second))


def judged_rows(requests: Sequence[EvalRequest], outputs: Sequence[str], latencies: Sequence[float],
                judge: Judge, second: Judge | None = None) -> list[dict[str, Any]]:
    """One row per output: its judges' relevance, length error, format, copying and degeneracy.
    Any subset of the rows can be summarised without judging again."""
    queries, texts = [r.query for r in requests], [o or " " for o in outputs]
    relevance = judge.relevance(queries, texts)
    reported = second.relevance(queries, texts) if second is not None else [None] * len(requests)
    rows = []
    for r, o, rel, rel2, lat in zip(requests, outputs, relevance, reported, latencies):
        error = abs(count_words(o) - r.length)
        rows.append({"task": r.task, "relevance": float(rel), "relevance2": None if rel2 is None else float(rel2),
                     "error": error, "valid": bool(o) and is_valid_format(r.task, o), "latency": lat, "text": o,
                     "copied": query_word_share(r.query, o), "degenerate": is_degenerate(r.query, o, r.task)})
    return rows


def summarise(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per-task and overall figures of ``judged_rows`` output."""
    def by_share(part: list[dict], b: int) -> dict[str, Any]:
        rel = [x["relevance"] for x in part if share_bin(x["copied"]) == b]
        return {"n": len(rel), "mean": statistics.mean(rel) if rel else None}

    def summary(part: list[dict]) -> dict[str, Any]:
        rel = [x["relevance"] for x in part]
        return {
            "n": len(part),
            "relevance_mean": statistics.mean(rel),
            "relevance_quartiles": statistics.quantiles(rel, n=4) if len(rel) > 1 else rel * 3,
            "length_within1": sum(x["error"] <= 1 for x in part) / len(part),
            "length_mae": statistics.mean(x["error"] for x in part),
            "format_valid": sum(x["valid"] for x in part) / len(part),
            "distinct_2": distinct_2([x["text"] for x in part]),
            "query_word_share": statistics.mean(x["copied"] for x in part),
            "relevance_by_share": [by_share(part, b) for b in range(len(SHARE_BINS))],
            "degenerate": sum(x["degenerate"] for x in part) / len(part),
            "latency_p50_s": statistics.median(x["latency"] for x in part),
            **({"relevance_mpnet_mean": statistics.mean(x["relevance2"] for x in part)}
               if part and part[0]["relevance2"] is not None else {}),
        }

    tasks = sorted({x["task"] for x in rows})
    return {"overall": summary(list(rows)), "per_task": {t: summary([x for x in rows if x["task"] == t]) for t in tasks}}


def run_model(config: EvalConfig, requests: Sequence[EvalRequest],
              focus: float | None = None, path: str | None = None) -> tuple[list[str], list[float]]:
    """``path``'s (default: ``config.model``'s) outputs and seconds per request, through the SDK."""
    import udrl

    with udrl.load(path or config.model, threads=config.threads) as model:
        results = [model.generate(r.query, task=r.task, length=r.length, length_guard=config.length_guard,
                                  focus=focus) for r in requests]
    return [r.text for r in results], [r.total_s for r in results]


def run_teacher(config: EvalConfig, requests: Sequence[EvalRequest]) -> tuple[list[str], list[float], dict[str, Any]]:
    from ..prompts import STOP, build_prompt, clean_output
    from ..teachers import Sampling, make_teacher

    teacher = make_teacher("gemma", threads=config.threads)
    sampling = Sampling(max_tokens=80, temperature=0.0, stop=tuple(STOP))
    outputs, latencies = [], []
    try:
        for r in requests:
            start = time.perf_counter()
            text = teacher.complete(build_prompt(r.task, r.query, r.length), sampling)
            latencies.append(time.perf_counter() - start)
            outputs.append(clean_output(r.task, text, r.query)[0] or "")
        about = teacher.describe()
    finally:
        teacher.close()
    return outputs, latencies, about


def evaluate_quality(config: EvalConfig, judge: Judge | None = None) -> dict[str, Any]:
    """Run the evaluation; returns (and writes, with ``out``) the report. The tasks of
    ``config.task_files`` are known for the length of the call only."""
    from ..taskfile import TASKS

    with TASKS.extended(config.task_files):
        return _evaluate_quality(config, judge)


def _evaluate_quality(config: EvalConfig, judge: Judge | None) -> dict[str, Any]:
    from udrl.artifacts import read_manifest
    from udrl.model import named_model_path

    from ..errors import ConfigError

    manifest = read_manifest(config.model)
    tasks = tasks_to_ask(config, manifest.tasks)
    requests = plan_requests(config, tasks, (manifest.length_min, manifest.length_max), manifest.tasks)
    judge = judge or Judge(threads=config.threads)
    second = reporting_judge(threads=config.threads) if config.second_judge else None
    outputs, latencies = run_model(config, requests)
    report: dict[str, Any] = {"model": config.model, "query_set": config.query_set, "requests": len(requests),
                              "queries": len({r.query for r in requests}), "length_guard": config.length_guard,
                              "n_params": manifest.model.get("n_params"),
                              "focus": dict(manifest.focus_bias),
                              "judges": [judge.metric] + ([second.metric] if second else [])}
    u_rows = judged_rows(requests, outputs, latencies, judge, second)
    report["udrl"] = summarise(u_rows)
    if any(manifest.focus_for(r.task, r.length) > 0 for r in requests):
        report["udrl_focus_off"] = score(requests, *run_model(config, requests, focus=0.0), judge, second)
    if config.before:
        # The tasks both know (a fine-tuned model's new task has no "before").
        before_path = named_model_path(config.before)
        before_tasks = read_manifest(before_path).tasks
        shared = [r for r in requests if r.task in before_tasks]
        if not shared:
            raise ConfigError(f"{config.before} knows none of the tasks asked ({', '.join(tasks)}); its tasks: "
                              f"{', '.join(before_tasks)}")
        b_out, b_lat = run_model(config, shared, path=str(before_path))
        report["before"] = score(shared, b_out, b_lat, judge, second)
        before_of = dict(zip(shared, b_out))
        report["before_model"] = config.before
        after, before = report["udrl"]["per_task"], report["before"]["per_task"]
        report["after_over_before"] = {
            "relevance_per_task": {k: after[k]["relevance_mean"] / before[k]["relevance_mean"] for k in before},
            **({"relevance_mpnet_per_task": {k: after[k]["relevance_mpnet_mean"] / before[k]["relevance_mpnet_mean"]
                                             for k in before}} if second is not None else {}),
        }
    else:
        before_of = {}
    t_out: list[str] = []
    t_rows: list[dict[str, Any]] = []
    if config.teacher:
        t_out, t_lat, about = run_teacher(config, requests)
        t_rows = judged_rows(requests, t_out, t_lat, judge, second)
        report["teacher"] = summarise(t_rows)
        report["teacher_model"] = about
        u, t = report["udrl"], report["teacher"]
        report["ratios"] = {
            "relevance_overall": u["overall"]["relevance_mean"] / t["overall"]["relevance_mean"],
            "relevance_per_task": {k: u["per_task"][k]["relevance_mean"] / t["per_task"][k]["relevance_mean"]
                                   for k in u["per_task"]},
            "teacher_latency_over_udrl": t["overall"]["latency_p50_s"] / u["overall"]["latency_p50_s"],
            "copy_matched_per_task": {k: (m / t["per_task"][k]["relevance_mean"]
                                          if (m := copy_matched(u["per_task"][k], t["per_task"][k])) is not None
                                          else None) for k in u["per_task"]},
        }
        if second is not None:
            report["ratios"]["relevance_mpnet_per_task"] = {
                k: u["per_task"][k]["relevance_mpnet_mean"] / t["per_task"][k]["relevance_mpnet_mean"]
                for k in u["per_task"]}
        if about.get("n_params") and report["n_params"]:
            report["ratios"]["teacher_over_udrl_parameters"] = about["n_params"] / report["n_params"]
        # Where the teacher's output was rejected (an echo of the request, a question, ...), it
        # scores near 0 and lifts the ratio above; the same ratio over the requests it answered:
        answered = [i for i, o in enumerate(t_out) if o]
        if answered:
            u_ans = summarise([u_rows[i] for i in answered])["per_task"]
            t_ans = summarise([t_rows[i] for i in answered])["per_task"]
            report["teacher_answered"] = {k: v["n"] for k, v in t_ans.items()}
            report["ratios"]["relevance_teacher_answered_per_task"] = {
                k: u_ans[k]["relevance_mean"] / t_ans[k]["relevance_mean"] for k in t_ans}
    report["examples"] = [{"query": r.query, "task": r.task, "length": r.length, "udrl": o}
                          for r, o in list(zip(requests, outputs))[:: max(1, len(requests) // 8)]]
    # Every output, so that a figure can be checked against what was written.
    report["outputs"] = [{"query": r.query, "task": r.task, "length": r.length, "udrl": o,
                          "udrl_relevance": round(u_rows[i]["relevance"], 6),
                          **({"before": before_of[r]} if r in before_of else {}),
                          **({"teacher": t_out[i], "teacher_relevance": round(t_rows[i]["relevance"], 6)}
                             if t_out else {})} for i, (r, o) in enumerate(zip(requests, outputs))]
    if config.out:
        Path(config.out).parent.mkdir(parents=True, exist_ok=True)
        write_atomic(Path(config.out), json.dumps(report, indent=2) + "\n")
    return report


def tasks_to_ask(config: EvalConfig, model_tasks: Sequence[str]) -> list[str]:
    """The tasks to ask, each one the model knows and the trainer can prompt the teacher for and
    check the format of (a task of one's own needs its task file, added with `TASKS.extended`)."""
    from ..errors import ConfigError
    from ..taskfile import TASKS

    tasks = list(config.tasks or model_tasks)
    unknown = [t for t in tasks if t not in model_tasks]
    if unknown:
        raise ConfigError(f"the model has no task {', '.join(map(repr, unknown))}; its tasks: {', '.join(model_tasks)}")
    unprompted = [t for t in tasks if t not in TASKS]
    if unprompted:
        raise ConfigError(f"no task file for {', '.join(map(repr, unprompted))}: pass the one the model was "
                          f"fine-tuned with as --task-file (the trainer knows: {', '.join(TASKS)})")
    return tasks


def markdown(report: dict[str, Any]) -> str:
    mpnet = "relevance_mpnet_mean" in report["udrl"]["overall"]
    degenerate = "degenerate" in report["udrl"]["overall"]
    lines = [f"Query set: {report.get('query_set', 'in-distribution')}, {report['requests']} requests over "
             f"{report['queries']} queries.", "",
             "| system | task | relevance mean | " + ("mpnet relevance | " if mpnet else "")
             + "relevance quartiles | within ±1 word | length MAE | format valid | "
             + ("degenerate | " if degenerate else "") + "distinct-2 | query-word share | latency p50 ms |",
             "|" + " --- |" * (10 + mpnet + degenerate)]
    for system in ("udrl", "udrl_focus_off", "before", "teacher"):
        if system not in report:
            continue
        parts = {**report[system]["per_task"], "all": report[system]["overall"]}
        for task, s in parts.items():
            quartiles = " / ".join(f"{q:.2f}" for q in s["relevance_quartiles"])
            lines.append(f"| {system} | {task} | {s['relevance_mean']:.3f} | "
                         + (f"{s['relevance_mpnet_mean']:.3f} | " if mpnet else "")
                         + f"{quartiles} | {s['length_within1']:.1%} | "
                         f"{s['length_mae']:.2f} | {s['format_valid']:.1%} | "
                         + (f"{s['degenerate']:.1%} | " if degenerate else "")
                         + f"{s['distinct_2']:.2f} | "
                         f"{s.get('query_word_share', float('nan')):.2f} | {s['latency_p50_s'] * 1e3:.1f} |")
    if "ratios" in report:
        r = report["ratios"]
        lines.append("")
        lines.append(f"udrl / teacher relevance: {r['relevance_overall']:.3f} overall; "
                     + ", ".join(f"{k} {v:.3f}" for k, v in r["relevance_per_task"].items())
                     + (". mpnet (reports only): " + ", ".join(f"{k} {v:.3f}" for k, v in
                                                              r["relevance_mpnet_per_task"].items())
                        if "relevance_mpnet_per_task" in r else "")
                     + f". Teacher latency / udrl: {r['teacher_latency_over_udrl']:.1f}x"
                     + (f"; teacher / udrl parameters: {r['teacher_over_udrl_parameters']:.1f}x."
                        if "teacher_over_udrl_parameters" in r else "."))
        if r.get("copy_matched_per_task"):
            lines.append("")
            lines.append("At the teacher's copying (udrl's relevance within bins of query-word share 0-0.2, 0.2-0.4, "
                         "... 0.8-1, weighted by the teacher's outputs per bin) / teacher relevance: "
                         + ", ".join(f"{k} {v:.3f}" if v is not None else f"{k} -"
                                     for k, v in r["copy_matched_per_task"].items()) + ".")
        if r.get("relevance_teacher_answered_per_task"):
            lines.append("")
            lines.append("Over the requests the teacher answered (its rejected outputs left out): "
                         + ", ".join(f"{k} {v:.3f} (n={report['teacher_answered'][k]})"
                                     for k, v in r["relevance_teacher_answered_per_task"].items()) + ".")
    if "after_over_before" in report:
        r = report["after_over_before"]
        lines.append("")
        lines.append(f"Relevance after / before ({report['before_model']}): "
                     + ", ".join(f"{k} {v:.3f}" for k, v in r["relevance_per_task"].items())
                     + (". mpnet: " + ", ".join(f"{k} {v:.3f}" for k, v in r["relevance_mpnet_per_task"].items())
                        if "relevance_mpnet_per_task" in r else "") + ".")
    return "\n".join(lines) + "\n"
