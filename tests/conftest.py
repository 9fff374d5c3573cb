"""Shared fixtures: a synthetic dataset and one short `tiny` training run reused by many tests."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

# Tests use small models; two threads keep them fast and results reproducible on shared CI.
os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(scope="session")
def synthetic_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from udrl.trainer.distill.synthetic import write_synthetic

    return write_synthetic(tmp_path_factory.mktemp("data") / "synthetic.jsonl", n=2400, seed=0)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory, synthetic_data: Path) -> Path:
    """A finished 300-step `tiny` run on the synthetic data; returns its run directory."""
    from udrl.trainer import TrainConfig, train

    run = tmp_path_factory.mktemp("runs") / "tiny"
    train(TrainConfig(
        data=[str(synthetic_data)], out_dir=str(run), preset="tiny", length_max=16,
        max_steps=300, eval_interval=100, checkpoint_interval=100, adherence_samples=16,
        threads=2,
    ))
    return run


@pytest.fixture(scope="session")
def tiny_second_stage(tmp_path_factory: pytest.TempPathFactory, synthetic_data: Path, tiny_run: Path) -> Path:
    """A 40-step second stage of the tiny run, started from its final model; returns its run directory."""
    from udrl.trainer import TrainConfig, train

    run = tmp_path_factory.mktemp("runs") / "tiny-stage2"
    train(TrainConfig(
        data=[str(synthetic_data)], out_dir=str(run), init=str(tiny_run / "model"), length_max=16,
        max_steps=40, lr=5e-4, warmup_steps=10, eval_interval=20, checkpoint_interval=20, adherence_samples=16,
        threads=2,
    ))
    return run


@pytest.fixture(scope="session")
def tiny_artifacts(tiny_run, tmp_path_factory) -> dict[str, Path]:
    """The tiny run exported to f32 GGUF and fp32 ONNX, next to a copy of its checkpoint."""
    import shutil

    from udrl.converters import export

    base = tmp_path_factory.mktemp("artifacts")
    ckpt = base / "model"
    shutil.copytree(tiny_run / "model", ckpt)
    quiet = lambda _: None  # noqa: E731
    return {
        "torch": ckpt,
        "llama": export(ckpt, "gguf", "f32", log=quiet).path,
        "onnx": export(ckpt, "onnx", "fp32", log=quiet).path,
    }


@pytest.fixture
def kill9_when() -> Callable[[subprocess.Popen, Callable[[], bool], float, str], None]:
    """Kill a process with SIGKILL as soon as ``ready()`` holds; fail the test (``what``) after ``timeout`` s."""

    def kill(proc: subprocess.Popen, ready: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.time() + timeout
        while not ready():
            if time.time() > deadline:
                proc.kill()
                pytest.fail(what)
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()

    return kill


@pytest.fixture(scope="session")
def tiny_finetuned(tmp_path_factory: pytest.TempPathFactory, synthetic_data: Path, tiny_artifacts) -> dict[str, Path]:
    """The tiny run's GGUF fine-tuned 30 steps on a new task (alt_text, from data/tasks/alt_text.toml's
    name) beside half as many of its own tasks' records; its run directory and its f32 GGUF."""
    import json
    import random

    from udrl.converters import export
    from udrl.trainer import TrainConfig, train

    base = tmp_path_factory.mktemp("finetune")
    rng = random.Random(0)
    words = ["warm", "light", "stage", "people", "colour", "sign", "glowing", "crowd", "poster", "night"]
    rows = []
    for i in range(300):
        subject = rng.choice(["jazz", "yoga", "bakery", "wedding", "hiking"])
        output = f"a {subject} " + " ".join(rng.choice(words) for _ in range(rng.randint(5, 12)))
        rows.append({"query": f"poster for a {subject} night {i}", "task": "alt_text", "output": output,
                     "words": len(output.split()), "score": round(rng.uniform(0.2, 0.8), 3)})
    data = base / "alt_text.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    run = base / "run"
    train(TrainConfig(data=[str(synthetic_data), str(data)], out_dir=str(run), init=str(tiny_artifacts["llama"]),
                      replay=0.5, length_max=16, max_steps=30, lr=2e-3, warmup_steps=5, eval_interval=30,
                      checkpoint_interval=30, adherence_samples=0, threads=2))
    return {"run": run, "llama": export(run / "model", "gguf", "f32", log=lambda _: None).path}
