"""Teacher throughput for distillation (``udrl bench --teacher``).

The same distillation prompts (few-shot, one per training query and task, the distillation's
sampling) through the Gemma 3 270M teacher two ways in one run: as distillation ran before
(llama-cpp-python's ``create_completion``, one prompt at a time, its default of one thread on two
CPUs), and through `LlamaCppTeacher.complete_many` (up to 8 sequences per forward pass, every
CPU, the few-shot prefix's cache shared, as `udrl distill` runs it). Samples per second for
each, and their ratio.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

DATA = Path(__file__).resolve().parents[1] / "data"


@dataclasses.dataclass
class TeacherBenchConfig:
    samples: int = 48
    temperature: float = 0.8  # as `udrl distill`
    max_tokens: int = 80
    parallel: int = 8
    prefix_cache: bool = True  # as `udrl distill`
    out: str | None = None


def distill_prompts(n: int) -> list[str]:
    """``n`` distillation prompts over the committed training queries, the tasks in turn."""
    from udrl.trainer.prompts import LENGTH_SPREAD, build_prompt

    lines = (DATA / "udrl-gemma.queries.txt").read_text(encoding="utf-8").splitlines()
    queries = [q.strip() for q in lines if q.strip()][:n]
    tasks = list(LENGTH_SPREAD)
    return [build_prompt(tasks[i % len(tasks)], q, LENGTH_SPREAD[tasks[i % len(tasks)]][0])
            for i, q in enumerate(queries)]


def run_teacher_bench(config: TeacherBenchConfig) -> dict[str, Any]:
    """Samples/s before and after, same prompts and seeds, same run."""
    import os

    from udrl.backend_llama import open_llama
    from udrl.trainer.prompts import STOP
    from udrl.trainer.teachers import Sampling, gemma_path, make_teacher

    prompts = distill_prompts(config.samples)
    sampling = Sampling(max_tokens=config.max_tokens, temperature=config.temperature, stop=tuple(STOP))
    before_threads = max((os.cpu_count() or 1) // 2, 1)  # llama-cpp-python's default
    llm = open_llama(gemma_path(), n_ctx=2048, n_threads=before_threads, n_threads_batch=before_threads,
                     verbose=False)
    try:
        start = time.perf_counter()
        for seed, prompt in enumerate(prompts):
            llm.create_completion(prompt, max_tokens=sampling.max_tokens, temperature=sampling.temperature,
                                  top_p=sampling.top_p, repeat_penalty=sampling.repeat_penalty,
                                  stop=list(sampling.stop), seed=seed)
        before = len(prompts) / (time.perf_counter() - start)
    finally:
        llm.close()
    teacher = make_teacher("gemma", parallel=config.parallel, prefix_cache=config.prefix_cache)
    try:
        start = time.perf_counter()
        texts = teacher.complete_many(prompts, sampling, list(range(len(prompts))))
        after = len(prompts) / (time.perf_counter() - start)
        threads = teacher.threads
    finally:
        teacher.close()
    result = {"config": dataclasses.asdict(config), "before_samples_s": before, "before_threads": before_threads,
              "after_samples_s": after, "after_threads": threads, "speedup": after / before,
              "empty_outputs": sum(not t.strip() for t in texts)}
    if config.out:
        Path(config.out).parent.mkdir(parents=True, exist_ok=True)
        Path(config.out + ".json").write_text(json.dumps(result, indent=2) + "\n")
        Path(config.out + ".md").write_text(markdown(result) + "\n")
    return result


def markdown(result: dict[str, Any]) -> str:
    cfg = result["config"]
    return (f"Teacher throughput on {cfg['samples']} distillation prompts (temperature {cfg['temperature']}, "
            f"up to {cfg['max_tokens']} tokens), one run:\n\n"
            "| teacher | threads | samples/s |\n| --- | --- | --- |\n"
            f"| create_completion, one at a time (before) | {result['before_threads']} | "
            f"{result['before_samples_s']:.2f} |\n"
            f"| complete_many, {cfg['parallel']} sequences per forward pass"
            f"{', prefix cache' if cfg['prefix_cache'] else ''} | {result['after_threads']} | "
            f"{result['after_samples_s']:.2f} |\n\n"
            f"Speed-up: {result['speedup']:.2f}x.")
