"""Throughput and latency of `udrl serve` under concurrent clients (``udrl bench --serve``).

One run: the same mixed requests (hand-written requests of the tuning half, the four tasks at
their default lengths) served by the SDK one after another in this process (the baseline), then
by a `udrl serve` process to 1, 4, 8 and 16 concurrent HTTP clients, in interleaved rounds;
then `Model.generate_batch` of 32 mixed requests against the same requests one by one. Figures
are medians over rounds; latency percentiles are over every request of every round.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

TASKS = ("image", "search", "headline", "tags")


@dataclasses.dataclass
class ServeBenchConfig:
    artifact: str
    clients: tuple[int, ...] = (1, 4, 8, 16)
    requests: int = 96  # per round and setting
    rounds: int = 3
    threads: int = 2
    parallel: int = 16  # slots of the server: every client of the largest setting decodes at once
    batch: int = 32  # generate_batch size for the second target
    out: str | None = None


def bench_requests(n: int) -> list[dict[str, Any]]:
    """``n`` requests: hand-written tuning-half queries across the four tasks, default lengths."""
    from udrl.trainer.handwritten import load_split

    queries = load_split("tune")
    return [{"query": queries[i % len(queries)], "task": TASKS[i % len(TASKS)]} for i in range(n)]


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def _clients(url: str, requests: list[dict[str, Any]], concurrency: int) -> tuple[float, list[float]]:
    """Wall time and per-request latencies of ``requests`` sent by ``concurrency`` clients."""
    import httpx

    pending = list(reversed(requests))
    latencies: list[float] = []

    async def client(http: httpx.AsyncClient) -> None:
        while pending:
            body = pending.pop()
            start = time.perf_counter()
            reply = await http.post(url + "/v1/generate", json=body)
            reply.raise_for_status()
            latencies.append(time.perf_counter() - start)

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=300) as http:
        await http.get(url + "/health")
        start = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(concurrency)))
        return time.perf_counter() - start, latencies


def _start_server(config: ServeBenchConfig) -> tuple[subprocess.Popen, str]:
    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "udrl", "serve", "--model", config.artifact, "--port", str(port),
                             "--threads", str(config.threads), "--parallel", str(config.parallel)],
                            stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"udrl serve exited with {proc.returncode}")
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("udrl serve did not answer within 120 s")
        time.sleep(0.2)


def kernel_rates(artifact: str, threads: int, requests: list[dict[str, Any]], width: int = 8,
                 reps: int = 5) -> dict[str, float]:
    """What batching can save on this machine: llama.cpp's prompt and decode tokens/s with one
    sequence per forward pass and with ``width``, through the backend's slots directly (no
    scheduler, no HTTP), on the prompts of ``requests``; and their share of prompt tokens."""
    from udrl.backends import BackendOptions, open_backend
    from udrl.commands import make_command
    from udrl.generate import prepare

    backend = open_backend(artifact, "llama", BackendOptions(threads=threads, parallel=width))
    try:
        prompts = [prepare(backend, r["query"], make_command(backend.manifest, r["task"], None, None), None)
                   for r in requests[:width]]
        rates: dict[str, float] = {}
        for n in (1, width):
            prefill, step = [], []
            for _ in range(reps):
                for slot in range(n):
                    backend.clear_slot(slot)
                start = time.perf_counter()
                backend.decode_slots([(slot, prompts[slot][0]) for slot in range(n)])
                prefill.append(sum(len(prompts[slot][0]) for slot in range(n)) / (time.perf_counter() - start))
                start = time.perf_counter()
                for k in range(8):
                    backend.decode_slots([(slot, [prompts[slot][0][-1]]) for slot in range(n)])
                step.append(8 * n / (time.perf_counter() - start))
            rates[f"prompt_tok_s_{n}"] = statistics.median(prefill)
            rates[f"decode_tok_s_{n}"] = statistics.median(step)
        return rates
    finally:
        backend.close()


def second_thread_slowdown(artifact: str, threads: int, reps: int = 20) -> dict[str, float]:
    """Why a Model computes on one thread at a time (scheduler.Batcher): the same prefill and 8
    decode steps with llama-cpp-python, on the thread that first ran llama.cpp and then on a second
    thread while the first one's OpenMP workers still exist."""
    import threading

    from udrl.backend_llama import open_llama

    llm = open_llama(artifact, n_ctx=256, n_batch=256, n_threads=threads, n_threads_batch=threads, verbose=False)
    prompt = llm.tokenize(b"poster for a summer jazz festival by the sea", add_bos=False)

    def once() -> float:
        times = []
        for _ in range(reps):
            start = time.perf_counter()
            llm.reset()
            llm.eval(prompt)
            for k in range(8):
                llm.eval([prompt[k]])
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    try:
        first = once()
        box: dict[str, float] = {}
        other = threading.Thread(target=lambda: box.update(second=once()))
        other.start()
        other.join()
        return {"first_thread_ms": first * 1e3, "second_thread_ms": box["second"] * 1e3,
                "slowdown": box["second"] / first}
    finally:
        llm.close()


def run_serve_bench(config: ServeBenchConfig) -> dict[str, Any]:
    """The figures described in the module docstring, as a dict (and files under ``config.out``)."""
    import udrl

    requests = bench_requests(config.requests)
    with udrl.load(config.artifact, threads=config.threads) as model:
        for r in requests[:8]:
            model.generate(r["query"], task=r["task"])  # warm-up
        sdk_rates = []
        for _ in range(config.rounds):
            start = time.perf_counter()
            for r in requests:
                model.generate(r["query"], task=r["task"])
            sdk_rates.append(len(requests) / (time.perf_counter() - start))
        batch = [udrl.Request(r["query"], r["task"]) for r in bench_requests(config.batch)]
        one_by_one, batched = [], []
        for _ in range(config.rounds):
            start = time.perf_counter()
            alone = [model.generate(r.query, task=r.task).text for r in batch]
            one_by_one.append(time.perf_counter() - start)
            start = time.perf_counter()
            together = [r.text for r in model.generate_batch(batch)]
            batched.append(time.perf_counter() - start)
        same = sum(a == b for a, b in zip(alone, together))
        results = model.generate_batch([udrl.Request(r["query"], r["task"]) for r in requests])
        prompt_tokens = sum(r.prompt_tokens for r in results)
        completion_tokens = sum(r.completion_tokens for r in results)
    kernels = kernel_rates(config.artifact, config.threads, bench_requests(8))
    kernels["prompt_share"] = prompt_tokens / (prompt_tokens + completion_tokens)
    threads_check = second_thread_slowdown(config.artifact, config.threads)

    proc, url = _start_server(config)
    try:
        asyncio.run(_clients(url, requests[:16], 4))  # warm-up
        rates: dict[int, list[float]] = {c: [] for c in config.clients}
        latencies: dict[int, list[float]] = {c: [] for c in config.clients}
        for _ in range(config.rounds):
            for c in config.clients:
                wall, lat = asyncio.run(_clients(url, requests, c))
                rates[c].append(len(requests) / wall)
                latencies[c] += lat
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    sdk_rate = statistics.median(sdk_rates)
    rows = [{"clients": c, "requests_s": statistics.median(rates[c]),
             "vs_sdk_one_after_another": statistics.median(rates[c]) / sdk_rate,
             "p50_ms": _percentile(latencies[c], 0.5) * 1e3, "p95_ms": _percentile(latencies[c], 0.95) * 1e3}
            for c in config.clients]
    result = {
        "config": dataclasses.asdict(config),
        "sdk_one_after_another_requests_s": sdk_rate,
        "rows": rows,
        "generate_batch": {"size": config.batch, "one_by_one_s": statistics.median(one_by_one),
                           "batch_s": statistics.median(batched),
                           "speedup": statistics.median(one_by_one) / statistics.median(batched),
                           "same_greedy_texts": same},
        "kernels": kernels,
        "second_thread": threads_check,
        "server_exit_code": proc.returncode,
    }
    if config.out:
        Path(config.out).parent.mkdir(parents=True, exist_ok=True)
        Path(config.out + ".json").write_text(json.dumps(result, indent=2) + "\n")
        Path(config.out + ".md").write_text(markdown(result) + "\n")
        plot(result, config.out + ".png")
    return result


def markdown(result: dict[str, Any]) -> str:
    """The serve table and the generate_batch line."""
    cfg, b = result["config"], result["generate_batch"]
    lines = [f"`udrl serve` on {Path(cfg['artifact']).name}, {cfg['threads']} threads, {cfg['parallel']} slots; "
             f"{cfg['requests']} mixed requests per setting, medians of {cfg['rounds']} rounds. Baseline: the "
             f"SDK one request after another in one process, {result['sdk_one_after_another_requests_s']:.1f} "
             "requests/s.", "",
             "| concurrent clients | requests/s | vs one after another | p50 ms | p95 ms |",
             "| --- | --- | --- | --- | --- |"]
    for r in result["rows"]:
        lines.append(f"| {r['clients']} | {r['requests_s']:.1f} | {r['vs_sdk_one_after_another']:.2f}x | "
                     f"{r['p50_ms']:.1f} | {r['p95_ms']:.1f} |")
    lines += ["", f"`generate_batch` of {b['size']} mixed requests: {b['batch_s'] * 1e3:.0f} ms against "
              f"{b['one_by_one_s'] * 1e3:.0f} ms one by one ({b['speedup']:.2f}x); greedy texts equal: "
              f"{b['same_greedy_texts']}/{b['size']}."]
    k = result.get("kernels")
    if k:
        lines += ["", f"What batching can save here (llama.cpp alone, same run): prompt tokens "
                  f"{k['prompt_tok_s_1']:.0f}/s with one sequence per forward pass and {k['prompt_tok_s_8']:.0f}/s "
                  f"with 8 ({k['prompt_tok_s_8'] / k['prompt_tok_s_1']:.2f}x); decode tokens "
                  f"{k['decode_tok_s_1']:.0f}/s and {k['decode_tok_s_8']:.0f}/s "
                  f"({k['decode_tok_s_8'] / k['decode_tok_s_1']:.2f}x); prompts are {k['prompt_share']:.0%} of "
                  "these requests' tokens."]
    t = result.get("second_thread")
    if t:
        lines += ["", f"One request's prefill and 8 steps with llama-cpp-python: {t['first_thread_ms']:.1f} ms on the "
                  f"thread that first ran llama.cpp, {t['second_thread_ms']:.1f} ms on a second thread "
                  f"({t['slowdown']:.2f}x): why a Model computes on one thread at a time, and a thread frees its "
                  "llama.cpp workers when it hands the computing to another."]
    return "\n".join(lines)


def plot(result: dict[str, Any], path: str) -> None:
    """Throughput and latency against concurrent clients."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    clients = [r["clients"] for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.plot(clients, [r["requests_s"] for r in rows], marker="o", label="udrl serve")
    left.axhline(result["sdk_one_after_another_requests_s"], color="grey", linestyle="--",
                 label="SDK, one after another")
    left.set(xlabel="concurrent clients", ylabel="requests/s", title="throughput")
    left.legend()
    right.plot(clients, [r["p50_ms"] for r in rows], marker="o", label="p50")
    right.plot(clients, [r["p95_ms"] for r in rows], marker="o", label="p95")
    right.set(xlabel="concurrent clients", ylabel="ms per request", title="latency")
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
