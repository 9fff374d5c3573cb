"""The benchmark harness: every artifact and baseline measured the same way, in one run.

Each measurement runs in its own subprocess (a "worker"), so load times are cold, peak RSS belongs
to that backend alone, and one runtime's threads never share a process with another's. The
request set is the same for all: every task at a realistic length, a fixed list of design requests.

Rows:
- ``udrl``: an artifact through the SDK (`udrl.load`) on a backend and device;
- ``raw-llama``: the same GGUF through plain llama-cpp-python, generating the same number of tokens
  per request as the SDK did (no udrl code in the loop);
- ``hf-eager``: the checkpoint through transformers' eager ``generate``, same token counts;
- ``teacher``: Gemma 3 270M via llama.cpp with the distillation's few-shot prompts: the LLM you
  would otherwise call.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

QUERIES = [
    "minimalist poster for a summer jazz festival by the sea",
    "logo for a family owned vegan bakery",
    "instagram story announcing a weekend yoga retreat",
    "banner for a tech conference about artificial intelligence",
    "flyer for a neighborhood bike repair workshop",
    "invitation to a winter wedding in the mountains",
    "thumbnail for a cooking video about street tacos",
    "menu cover for a rooftop cocktail bar",
]
REALISTIC_LENGTH = {"image": 20, "search": 4, "headline": 7, "tags": 6}
PROMPT_WORDS = (4, 16, 48)  # query lengths for the prefill curve


@dataclasses.dataclass
class BenchConfig:
    artifacts: list[str]
    checkpoint: str | None = None  # for the hf-eager baseline; default: the artifacts' parent checkpoint
    backends: dict[str, str] = dataclasses.field(default_factory=dict)  # artifact -> backend (default auto)
    teacher: bool = True
    raw_llama: bool = True
    hf_eager: bool = True
    threads: int = 2
    reps: int = 3
    queries_per_task: int = 4
    batch_size: int = 8
    decode_tokens: int = 64
    quick: bool = False
    out: str = "benchmarks/results/latest"

    def __post_init__(self) -> None:
        if self.quick:
            self.reps, self.queries_per_task, self.batch_size, self.decode_tokens = 1, 1, 4, 32


# -- machine -------------------------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {"system": f"{platform.system()} {platform.release()}", "arch": platform.machine(),
                            "cores": os.cpu_count(), "python": platform.python_version()}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
        mem = Path("/proc/meminfo").read_text().split("\n")[0].split()[1]
        info["memory_gb"] = round(int(mem) / 1024**2, 1)
    except OSError:
        info["cpu"] = platform.processor() or platform.machine()
    info["gpu"] = detect_devices()["gpu"]
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for name in ("udrl-edge", "llama-cpp-python", "onnxruntime", "torch", "transformers", "numpy", "coremltools"):
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            continue
    info["packages"] = versions
    return info


def detect_devices() -> dict[str, Any]:
    """Accelerators present, and the reason each absent one is skipped."""
    found: dict[str, Any] = {"gpu": None, "skipped": {}}
    try:
        import torch

        if torch.cuda.is_available():
            found["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    if found["gpu"] is None:
        found["skipped"]["cuda"] = "no CUDA device visible to torch"
    if platform.system() == "Darwin" and platform.machine() == "arm64":
        found["gpu"] = found["gpu"] or "Apple Silicon"
    else:
        found["skipped"]["metal"] = "not Apple Silicon"
        found["skipped"]["coreml"] = "Core ML prediction needs macOS"
    return found


def memory_bandwidth_gbs(size_mb: int = 256, reps: int = 5) -> float:
    """Copy bandwidth (read + write) of a large array, GB/s: the roofline's ceiling."""
    import numpy as np

    a = np.ones(size_mb * 1024 * 1024 // 8)
    b = np.empty_like(a)
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        np.copyto(b, a)
        best = min(best, time.perf_counter() - t)
    return 2 * a.nbytes / best / 1e9


# -- workers (run in subprocesses) -----------------------------------------------------------------


def _requests(manifest: Any, queries_per_task: int) -> list[tuple[str, str, int]]:
    out = []
    for task in manifest.tasks:
        length = min(max(REALISTIC_LENGTH.get(task, 8), manifest.length_min), manifest.length_max)
        out += [(q, task, length) for q in QUERIES[:queries_per_task]]
    return out


def _peak_rss_mb() -> float:
    from udrl.generate import peak_rss_mb

    return peak_rss_mb()


def _summary(xs: Sequence[float]) -> dict[str, float]:
    xs = sorted(xs)
    if not xs:
        return {}
    p95 = xs[min(len(xs) - 1, int(round(0.95 * (len(xs) - 1))))]
    return {"median": statistics.median(xs), "p95": p95, "min": xs[0], "max": xs[-1], "n": len(xs)}


def worker_udrl(spec: dict[str, Any]) -> dict[str, Any]:
    import udrl

    t = time.perf_counter()
    model = udrl.load(spec["path"], backend=spec.get("backend", "auto"), threads=spec["threads"],
                      device=spec.get("device", "auto"))
    load_s = time.perf_counter() - t
    m = model.manifest
    requests = _requests(m, spec["queries_per_task"])
    model.generate(requests[0][0], task=requests[0][1], length=requests[0][2])  # warm-up
    latency: dict[str, list[float]] = {}
    prefill, ttft, tokens = [], [], []
    for _ in range(spec["reps"]):
        for q, task, length in requests:
            r = model.generate(q, task=task, length=length)
            latency.setdefault(task, []).append(r.total_s)
            prefill.append(r.prompt_s)
            ttft.append(r.first_token_s)
            tokens.append(r.completion_tokens)
    decode = []
    for _ in range(spec["reps"]):
        r = model.generate(QUERIES[0], task=m.tasks[0], length=m.length_max, max_tokens=spec["decode_tokens"])
        decode.append(r.decode_tok_s)
    curve = {}
    for words in PROMPT_WORDS:
        query = " ".join((QUERIES[1].split() * words)[:words])
        r = model.generate(query, task=m.tasks[0], length=m.length_min, max_tokens=1)
        curve[words] = {"prompt_tokens": r.prompt_tokens, "prefill_s": r.prompt_s}
    batch = [udrl.Request(q, task, length) for q, task, length in (requests * spec["batch_size"])[: spec["batch_size"]]]
    throughput = []
    for _ in range(spec["reps"]):
        t = time.perf_counter()
        model.generate_batch(batch)
        throughput.append(len(batch) / (time.perf_counter() - t))
    out = {
        "load_s": load_s, "backend": model.backend,
        "latency_s": {task: _summary(v) for task, v in latency.items()},
        "latency_all_s": _summary([x for v in latency.values() for x in v]),
        "prefill_s": _summary(prefill), "ttft_s": _summary(ttft), "decode_tok_s": _summary(decode),
        "batch_requests_s": _summary(throughput), "batch_size": len(batch), "prefill_curve": curve,
        "tokens_per_request": [sum(tokens[i::len(requests)]) // spec["reps"] for i in range(len(requests))],
        "n_params": m.model.get("n_params"), "quantization": m.quantization, "peak_rss_mb": _peak_rss_mb(),
    }
    model.close()
    return out


def worker_raw_llama(spec: dict[str, Any]) -> dict[str, Any]:
    """Plain llama-cpp-python: no udrl code in the generation loop (udrl only renders the prompt text;
    `open_llama` only chooses the model's weight buffers where llama.cpp's AMX kernels crash)."""
    from udrl.artifacts import read_manifest
    from udrl.backend_llama import open_llama
    from udrl.commands import make_command, render_prompt

    m = read_manifest(spec["path"])
    t = time.perf_counter()
    llm = open_llama(spec["path"], n_ctx=int(m.model["n_ctx"]), n_threads=spec["threads"],
                n_threads_batch=spec["threads"], verbose=False)
    load_s = time.perf_counter() - t
    ban_eos = {m.eos_id: float("-inf")}

    def run(prompt: str, n: int) -> tuple[float, float, float, int]:
        start, first, count = time.perf_counter(), None, 0
        for _ in llm.create_completion(prompt, max_tokens=n, temperature=0.0, stream=True, logit_bias=ban_eos):
            count += 1
            first = first or time.perf_counter()
        end = time.perf_counter()
        decode = (count - 1) / (end - first) if count > 1 else 0.0
        return end - start, (first or end) - start, decode, count

    requests = _requests(m, spec["queries_per_task"])
    counts = spec["tokens_per_request"]
    prompts = [render_prompt(m, q, make_command(m, task, length)) for q, task, length in requests]
    run(prompts[0], 4)  # warm-up
    latency: dict[str, list[float]] = {}
    ttft = []
    for _ in range(spec["reps"]):
        for (_, task, _), prompt, n in zip(requests, prompts, counts):
            total, first, _, _ = run(prompt, max(n, 1))
            latency.setdefault(task, []).append(total)
            ttft.append(first)
    long_prompt = render_prompt(m, QUERIES[0], make_command(m, m.tasks[0], m.length_max))
    decode = [run(long_prompt, spec["decode_tokens"])[2] for _ in range(spec["reps"])]
    llm.close()
    return {"load_s": load_s, "latency_s": {k: _summary(v) for k, v in latency.items()},
            "latency_all_s": _summary([x for v in latency.values() for x in v]), "ttft_s": _summary(ttft),
            "decode_tok_s": _summary(decode), "n_params": m.model.get("n_params"), "quantization": m.quantization,
            "peak_rss_mb": _peak_rss_mb()}


def worker_hf_eager(spec: dict[str, Any]) -> dict[str, Any]:
    import torch
    from transformers import GPT2LMHeadModel, PreTrainedTokenizerFast
    from udrl.commands import make_command, render_prompt
    from udrl.manifest import load_manifest

    torch.set_num_threads(spec["threads"])
    t = time.perf_counter()
    model = GPT2LMHeadModel.from_pretrained(spec["path"], attn_implementation="eager").eval()
    tok = PreTrainedTokenizerFast.from_pretrained(spec["path"])
    load_s = time.perf_counter() - t
    m = load_manifest(spec["path"])
    requests = _requests(m, spec["queries_per_task"])
    counts = spec["tokens_per_request"]

    def run(prompt: str, n: int) -> tuple[float, float]:
        ids = torch.tensor([tok.encode(prompt, add_special_tokens=False)])
        with torch.no_grad():
            t0 = time.perf_counter()
            model(ids)  # the prefill alone, for the decode rate
            t1 = time.perf_counter()
            model.generate(ids, max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=m.eos_id)
            t2 = time.perf_counter()
        return t2 - t1, (n - 1) / max((t2 - t1) - (t1 - t0), 1e-9)

    prompts = [render_prompt(m, q, make_command(m, task, length)) for q, task, length in requests]
    run(prompts[0], 4)
    latency: dict[str, list[float]] = {}
    for _ in range(spec["reps"]):
        for (_, task, _), prompt, n in zip(requests, prompts, counts):
            latency.setdefault(task, []).append(run(prompt, max(n, 1))[0])
    long_prompt = render_prompt(m, QUERIES[0], make_command(m, m.tasks[0], m.length_max))
    decode = [run(long_prompt, spec["decode_tokens"])[1] for _ in range(spec["reps"])]
    return {"load_s": load_s, "latency_s": {k: _summary(v) for k, v in latency.items()},
            "latency_all_s": _summary([x for v in latency.values() for x in v]), "decode_tok_s": _summary(decode),
            "n_params": m.model.get("n_params"), "peak_rss_mb": _peak_rss_mb()}


def worker_teacher(spec: dict[str, Any]) -> dict[str, Any]:
    import llama_cpp
    from udrl.backend_llama import open_llama
    from udrl.trainer.prompts import STOP, build_prompt
    from udrl.trainer.teachers import gemma_path

    path = gemma_path()
    t = time.perf_counter()
    llm = open_llama(path, n_ctx=1024, n_threads=spec["threads"], n_threads_batch=spec["threads"],
                verbose=False)
    load_s = time.perf_counter() - t
    latency: dict[str, list[float]] = {}
    decode = []
    tasks = spec["tasks"]
    requests = [(q, task, REALISTIC_LENGTH.get(task, 8)) for task in tasks for q in QUERIES[: spec["queries_per_task"]]]
    q0, task0, length0 = requests[0]
    llm.create_completion(build_prompt(task0, q0, length0), max_tokens=4, temperature=0.0)
    for _ in range(spec["reps"]):
        for q, task, length in requests:
            start, first, count = time.perf_counter(), None, 0
            for _ in llm.create_completion(build_prompt(task, q, length), max_tokens=3 * length + 8, temperature=0.0,
                                           stop=STOP, stream=True):
                count += 1
                first = first or time.perf_counter()
            end = time.perf_counter()
            latency.setdefault(task, []).append(end - start)
            if count > 1:
                decode.append((count - 1) / (end - first))
    n_params = int(llama_cpp.llama_model_n_params(llm.model))
    llm.close()
    return {"load_s": load_s, "latency_s": {k: _summary(v) for k, v in latency.items()},
            "latency_all_s": _summary([x for v in latency.values() for x in v]), "decode_tok_s": _summary(decode),
            "n_params": n_params, "size_bytes": path.stat().st_size, "peak_rss_mb": _peak_rss_mb()}


# What each kind of row has to import before it can load anything (timed in a fresh interpreter,
# since a worker runs inside the udrl package and has imported it already).
IMPORTS = {"udrl": "udrl", "raw-llama": "llama_cpp", "hf-eager": "torch, transformers", "teacher": "llama_cpp"}


def import_seconds(modules: str, reps: int = 3) -> float:
    code = f"import time; t = time.perf_counter(); import {modules}; print(time.perf_counter() - t)"
    times = [float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
             for _ in range(reps)]
    return statistics.median(times)


WORKERS = {"udrl": worker_udrl, "raw-llama": worker_raw_llama, "hf-eager": worker_hf_eager, "teacher": worker_teacher}


def run_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one measurement in a fresh interpreter; returns its JSON (or the error it reported)."""
    env = {**os.environ, "OMP_NUM_THREADS": str(spec["threads"])}
    proc = subprocess.run([sys.executable, "-m", "udrl.benchmarks.harness", json.dumps(spec)], capture_output=True,
                          text=True, env=env, timeout=1800)
    if proc.returncode != 0:
        return {"error": (proc.stderr or proc.stdout).strip().splitlines()[-1] if (proc.stderr or proc.stdout) else
                f"exit {proc.returncode}"}
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["import_s"] = import_seconds(IMPORTS[spec["kind"]])
    return result


# -- the run ---------------------------------------------------------------------------------------


def run(config: BenchConfig, log: Any = print) -> dict[str, Any]:
    """Measure every artifact and baseline; write JSON, a markdown table and plots; return the result."""
    from udrl.artifacts import artifact_kind, artifact_size, read_manifest

    started = time.time()
    devices = detect_devices()
    base = {"threads": config.threads, "reps": config.reps, "queries_per_task": config.queries_per_task,
            "batch_size": config.batch_size, "decode_tokens": config.decode_tokens}
    rows: list[dict[str, Any]] = []
    bandwidth = memory_bandwidth_gbs()
    parents: dict[str, str] = {}  # artifact -> the checkpoint it was exported from (hf-eager baseline)
    tasks: list[str] = []
    for path in config.artifacts:
        kind = artifact_kind(path)
        manifest = read_manifest(path)
        tasks = tasks or list(manifest.tasks)
        parent = config.checkpoint or manifest.parent
        if parent and Path(parent).is_dir():
            parents[path] = parent
        backend = config.backends.get(path, "auto")
        device_list = ["cpu"] + (["cuda"] if devices["gpu"] and "cuda" not in devices["skipped"] else [])
        for device in device_list:
            if kind == "coreml" and "coreml" in devices["skipped"]:
                rows.append({"name": Path(path).name, "kind": "udrl", "skipped": devices["skipped"]["coreml"]})
                break
            log(f"measuring {Path(path).name} ({backend}, {device}) ...")
            spec = {**base, "kind": "udrl", "path": str(path), "backend": backend, "device": device}
            result = run_worker(spec)
            size = artifact_size(path)
            row = {"name": Path(path).name, "path": str(path), "kind": "udrl", "format": kind, "device": device,
                   "size_bytes": size, **result}
            if kind == "gguf" and "decode_tok_s" in result:
                # Each decoded token reads every weight once: bytes/token x tok/s against the measured ceiling.
                achieved = size * result["decode_tok_s"]["median"] / 1e9
                row["roofline"] = {"weights_gb_s": achieved, "bandwidth_gb_s": bandwidth,
                                   "fraction": achieved / bandwidth}
            rows.append(row)
            if kind == "gguf" and config.raw_llama and device == "cpu" and "tokens_per_request" in result:
                log(f"measuring raw llama-cpp-python on {Path(path).name} ...")
                raw = run_worker({**base, "kind": "raw-llama", "path": str(path),
                                  "tokens_per_request": result["tokens_per_request"]})
                rows.append({"name": Path(path).name, "kind": "raw-llama", "format": "gguf", "device": "cpu",
                             "size_bytes": size, **raw})
    for checkpoint in dict.fromkeys(parents.values()) if config.hf_eager else []:
        sdk_row = next((r for r in rows if r["kind"] == "udrl" and "tokens_per_request" in r
                        and parents.get(r["path"]) == checkpoint), None)
        if sdk_row is None:
            continue
        log(f"measuring HF transformers eager on {checkpoint} ...")
        hf = run_worker({**base, "kind": "hf-eager", "path": str(checkpoint),
                         "tokens_per_request": sdk_row["tokens_per_request"]})
        size = (Path(checkpoint) / "model.safetensors").stat().st_size
        rows.append({"name": Path(checkpoint).name, "kind": "hf-eager", "format": "checkpoint", "device": "cpu",
                     "size_bytes": size, **hf})
    if config.teacher:
        log("measuring the teacher (Gemma 3 270M, few-shot, llama.cpp) ...")
        teacher = run_worker({**base, "kind": "teacher", "tasks": tasks or list(REALISTIC_LENGTH)})
        rows.append({"name": "gemma-3-270m-q4_k_m", "kind": "teacher", "format": "gguf", "device": "cpu", **teacher})
    result = {"schema": "udrl-bench/1", "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "duration_s": time.time() - started, "machine": machine_info(), "devices": devices,
              "config": dataclasses.asdict(config), "memory_bandwidth_gb_s": bandwidth, "rows": rows,
              "ratios": ratios(rows)}
    from .report import write_report

    write_report(result, Path(config.out))
    return result


def ratios(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The headline numbers: SDK vs raw llama.cpp, best udrl backend vs HF eager, udrl vs teacher."""
    def med(row: dict, key: str) -> float | None:
        return (row.get(key) or {}).get("median")

    out: dict[str, Any] = {}
    by_name = {}
    for r in rows:
        by_name.setdefault(r["name"], {})[r["kind"]] = r
    sdk_vs_raw = {}
    for name, kinds in by_name.items():
        if "udrl" in kinds and "raw-llama" in kinds and med(kinds["udrl"], "decode_tok_s") and med(kinds["raw-llama"], "decode_tok_s"):
            sdk_vs_raw[name] = med(kinds["udrl"], "decode_tok_s") / med(kinds["raw-llama"], "decode_tok_s")
    if sdk_vs_raw:
        out["sdk_over_raw_llama_decode"] = sdk_vs_raw
    udrl_rows = [r for r in rows if r["kind"] == "udrl" and med(r, "decode_tok_s")]
    hf = next((r for r in rows if r["kind"] == "hf-eager" and med(r, "decode_tok_s")), None)
    if udrl_rows and hf:
        best = max(udrl_rows, key=lambda r: med(r, "decode_tok_s"))
        out["best_udrl_over_hf_eager_decode"] = {"artifact": best["name"],
                                                 "ratio": med(best, "decode_tok_s") / med(hf, "decode_tok_s")}
        fastest = min(udrl_rows, key=lambda r: med(r, "latency_all_s") or 1e9)
        if med(hf, "latency_all_s"):
            out["hf_eager_over_best_udrl_latency"] = med(hf, "latency_all_s") / med(fastest, "latency_all_s")
    teacher = next((r for r in rows if r["kind"] == "teacher" and med(r, "latency_all_s")), None)
    if teacher and udrl_rows:
        fastest = min(udrl_rows, key=lambda r: med(r, "latency_all_s") or 1e9)
        out["teacher_over_udrl_latency_per_request"] = {
            "artifact": fastest["name"], "ratio": med(teacher, "latency_all_s") / med(fastest, "latency_all_s")}
        if teacher.get("n_params") and fastest.get("n_params"):
            out["teacher_over_udrl_parameters"] = teacher["n_params"] / fastest["n_params"]
    return out


def main_worker(argv: Sequence[str]) -> None:
    spec = json.loads(argv[0])
    print(json.dumps(WORKERS[spec["kind"]](spec)))


if __name__ == "__main__":
    main_worker(sys.argv[1:])
