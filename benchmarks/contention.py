"""Per-request latency while other processes keep the CPUs busy (``udrl bench --contention``).

Phones and laptops always run something else. For each count of busy processes (pure-Python spin
loops, each ended after ``busy_limit_s`` whatever happens), the same request is timed through the
SDK with the default threads (chosen per request from the free CPUs) and with fixed 1 and 2
threads, all in one run; each figure is a median, and the table gives each setting's latency
against the default's idle latency.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

QUERY = "minimalist poster for a summer jazz festival by the sea"
_SPIN = "import time\nend = time.time() + {limit}\nwhile time.time() < end:\n    pass\n"


@dataclasses.dataclass
class ContentionConfig:
    artifact: str
    busy: tuple[int, ...] = (0, 1, 2, 3, 4)
    threads: tuple[int | None, ...] = (None, 1, 2)  # None: the SDK's default
    task: str = "image"
    length: int = 20
    reps: int = 7
    rounds: int = 3  # each setting is measured this many times per busy count, interleaved
    busy_limit_s: float = 300.0
    out: str | None = None


def busy_processes(n: int, limit_s: float) -> list[subprocess.Popen]:
    """Start ``n`` processes that each keep one CPU busy for at most ``limit_s`` seconds."""
    return [subprocess.Popen([sys.executable, "-c", _SPIN.format(limit=limit_s)]) for _ in range(n)]


def _median_latency(model: Any, config: ContentionConfig) -> float:
    times = []
    for _ in range(config.reps):
        start = time.perf_counter()
        model.generate(QUERY, task=config.task, length=config.length)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def run_contention(config: ContentionConfig) -> dict[str, Any]:
    """Median per-request latency for every (busy count, threads) pair, and ratios to idle."""
    import udrl

    models = {t: udrl.load(config.artifact, threads=t) for t in config.threads}
    try:
        for model in models.values():
            _median_latency(model, dataclasses.replace(config, reps=2))  # warm-up
        rows = []
        for n in config.busy:
            procs = busy_processes(n, config.busy_limit_s)
            try:
                time.sleep(0.5)  # let the spinners reach the scheduler
                samples: dict[int | None, list[float]] = {t: [] for t in config.threads}
                for _ in range(config.rounds):
                    for t, model in models.items():
                        samples[t].append(_median_latency(model, config))
            finally:
                for p in procs:
                    p.kill()
                    p.wait()
            rows.append({"busy": n, "latency_s": {_label(t): statistics.median(v) for t, v in samples.items()}})
    finally:
        for model in models.values():
            model.close()
    idle = next((r["latency_s"] for r in rows if r["busy"] == 0), None)
    for r in rows if idle else []:
        base = idle.get("default")
        r["vs_default_idle"] = {k: v / base for k, v in r["latency_s"].items()} if base else {}
        r["vs_own_idle"] = {k: v / idle[k] for k, v in r["latency_s"].items()}
    result = {"config": dataclasses.asdict(config), "rows": rows}
    if config.out:
        Path(config.out).parent.mkdir(parents=True, exist_ok=True)
        Path(config.out + ".json").write_text(json.dumps(result, indent=2) + "\n")
        Path(config.out + ".md").write_text(markdown(result) + "\n")
    return result


def _label(threads: int | None) -> str:
    return "default" if threads is None else f"{threads} threads"


def markdown(result: dict[str, Any]) -> str:
    """The contention table: latency per setting, and its ratio to the default's idle latency."""
    labels = [_label(t) for t in result["config"]["threads"]]
    cfg = result["config"]
    title = (f"Per-request latency, one {cfg['task']} request of {cfg['length']} words, medians of "
             f"{cfg['reps']} x {cfg['rounds']} rounds; in brackets: against the default's idle latency.")
    lines = [title, "",
             "| busy processes | " + " | ".join(labels) + " |", "| --- |" + " --- |" * len(labels)]
    for r in result["rows"]:
        cells = []
        for k in labels:
            ratio = r.get("vs_default_idle", {}).get(k)
            cells.append(f"{r['latency_s'][k] * 1000:.1f} ms" + (f" ({ratio:.2f}x)" if ratio else ""))
        lines.append(f"| {r['busy']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
