"""`udrl eval`: how well a shipped artifact writes prompts on command, beside the teacher.

On held-out queries (the same split the trainer holds out, so the model never saw them), every
task is requested at lengths spread over what the data covers. Both the artifact (through the SDK)
and the teacher (few-shot, as in distillation, greedy) answer the same requests, and both are
scored the same way: relevance (the MiniLM judge), length adherence (share within ±1 word, mean
absolute error), format validity, diversity (distinct-2), how much of the output is words of the
request (query-word share: the judge rewards copying, so a system that copies more than the
teacher is not better for it) and latency per request. A model with query focus (see
`udrl.generate`) is also run with it off, so the report shows what the decoding rule adds.

    udrl eval runs/mini/model-q8_0.gguf --data data/udrl-gemma.jsonl.gz --queries 100
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
from udrl.manifest import focus_key, write_atomic

from .dataset import read_records, split_by_query
from .formats import is_valid_format
from .judge import Judge


@dataclasses.dataclass
class EvalConfig:
    model: str
    data: list[str]
    queries: int = 100  # held-out queries to use (each asked for every task at several lengths)
    first_query: int = 0  # skip this many held-out queries (`udrl focus` tunes on the ones after eval's)
    lengths_per_task: int = 3
    val_fraction: float = 0.05  # must match the training run's, so the queries are truly held out
    teacher: bool = True
    length_guard: bool = True
    threads: int = 2
    out: str | None = None  # JSON report path


@dataclasses.dataclass(frozen=True)
class EvalRequest:
    query: str
    task: str
    length: int


def plan_requests(config: EvalConfig, tasks: Sequence[str], length_range: tuple[int, int]) -> list[EvalRequest]:
    """Held-out queries x tasks x lengths at even quantiles of each task's achieved lengths."""
    records = read_records(config.data, tasks, length_range, skip_invalid=True).records
    _, held_out = split_by_query(records, config.val_fraction)
    queries = sorted({r.query for r in held_out})[config.first_query : config.first_query + config.queries]
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


def query_word_share(query: str, output: str) -> float:
    """Share of the output's words that are words of the query (compared as query focus does)."""
    words = [focus_key(w) for w in output.split()]
    asked = {focus_key(w) for w in query.split()}
    return sum(w in asked for w in words) / len(words) if words else 0.0


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
          judge: Judge) -> dict[str, Any]:
    """Per-task and overall figures for one system's outputs."""
    relevance = judge.relevance([r.query for r in requests], [o or " " for o in outputs])
    rows = []
    for r, o, rel, lat in zip(requests, outputs, relevance, latencies):
        error = abs(count_words(o) - r.length)
        rows.append({"task": r.task, "relevance": float(rel), "error": error,
                     "valid": bool(o) and is_valid_format(r.task, o), "latency": lat, "text": o,
                     "copied": query_word_share(r.query, o)})

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
            "latency_p50_s": statistics.median(x["latency"] for x in part),
        }

    tasks = sorted({x["task"] for x in rows})
    return {"overall": summary(rows), "per_task": {t: summary([x for x in rows if x["task"] == t]) for t in tasks}}


def run_model(config: EvalConfig, requests: Sequence[EvalRequest],
              focus: float | None = None) -> tuple[list[str], list[float]]:
    import udrl

    with udrl.load(config.model, threads=config.threads) as model:
        results = [model.generate(r.query, task=r.task, length=r.length, length_guard=config.length_guard,
                                  focus=focus) for r in requests]
    return [r.text for r in results], [r.total_s for r in results]


def run_teacher(config: EvalConfig, requests: Sequence[EvalRequest]) -> tuple[list[str], list[float], dict[str, Any]]:
    from .prompts import STOP, build_prompt, clean_output
    from .teachers import Sampling, make_teacher

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
    """Run the evaluation; returns (and writes, with ``out``) the report."""
    from udrl.artifacts import read_manifest

    manifest = read_manifest(config.model)
    requests = plan_requests(config, manifest.tasks, (manifest.length_min, manifest.length_max))
    judge = judge or Judge(threads=config.threads)
    outputs, latencies = run_model(config, requests)
    report: dict[str, Any] = {"model": config.model, "requests": len(requests),
                              "queries": len({r.query for r in requests}), "length_guard": config.length_guard,
                              "n_params": manifest.model.get("n_params"),
                              "focus": dict(manifest.focus_bias),
                              "udrl": score(requests, outputs, latencies, judge)}
    if any(manifest.focus_bias.values()):
        report["udrl_focus_off"] = score(requests, *run_model(config, requests, focus=0.0), judge)
    if config.teacher:
        t_out, t_lat, about = run_teacher(config, requests)
        report["teacher"] = score(requests, t_out, t_lat, judge)
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
        if about.get("n_params") and report["n_params"]:
            report["ratios"]["teacher_over_udrl_parameters"] = about["n_params"] / report["n_params"]
    report["examples"] = [{"query": r.query, "task": r.task, "length": r.length, "udrl": o}
                          for r, o in list(zip(requests, outputs))[:: max(1, len(requests) // 8)]]
    if config.out:
        Path(config.out).parent.mkdir(parents=True, exist_ok=True)
        write_atomic(Path(config.out), json.dumps(report, indent=2) + "\n")
    return report


def markdown(report: dict[str, Any]) -> str:
    lines = ["| system | task | relevance mean | relevance quartiles | within ±1 word | length MAE | format valid "
             "| distinct-2 | query-word share | latency p50 ms |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for system in ("udrl", "udrl_focus_off", "teacher"):
        if system not in report:
            continue
        parts = {**report[system]["per_task"], "all": report[system]["overall"]}
        for task, s in parts.items():
            quartiles = " / ".join(f"{q:.2f}" for q in s["relevance_quartiles"])
            lines.append(f"| {system} | {task} | {s['relevance_mean']:.3f} | {quartiles} | {s['length_within1']:.1%} | "
                         f"{s['length_mae']:.2f} | {s['format_valid']:.1%} | {s['distinct_2']:.2f} | "
                         f"{s.get('query_word_share', float('nan')):.2f} | {s['latency_p50_s'] * 1e3:.1f} |")
    if "ratios" in report:
        r = report["ratios"]
        lines.append("")
        lines.append(f"udrl / teacher relevance: {r['relevance_overall']:.3f} overall; "
                     + ", ".join(f"{k} {v:.3f}" for k, v in r["relevance_per_task"].items())
                     + f". Teacher latency / udrl: {r['teacher_latency_over_udrl']:.1f}x"
                     + (f"; teacher / udrl parameters: {r['teacher_over_udrl_parameters']:.1f}x."
                        if "teacher_over_udrl_parameters" in r else "."))
        if r.get("copy_matched_per_task"):
            lines.append("")
            lines.append("At the teacher's copying (udrl's relevance within bins of query-word share 0-0.2, 0.2-0.4, "
                         "... 0.8-1, weighted by the teacher's outputs per bin) / teacher relevance: "
                         + ", ".join(f"{k} {v:.3f}" if v is not None else f"{k} -"
                                     for k, v in r["copy_matched_per_task"].items()) + ".")
    return "\n".join(lines) + "\n"
