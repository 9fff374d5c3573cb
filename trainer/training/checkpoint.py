"""Checkpoints: safetensors weights + tokenizer + manifest + run config, written atomically.

A run directory looks like::

    run/
      checkpoints/step-000400/   model.safetensors config.json tokenizer.json udrl.json
                                 train_config.json train_state.pt (optimizer, scheduler, RNG)
      latest                     name of the newest complete checkpoint (replaced atomically)
      model/                     the final checkpoint without training state (what you export)
      metrics.jsonl, loss.png
      tokenizer/, init/          the run's tokenizer, and the checkpoint an --init GGUF became

Each checkpoint is written into a hidden temporary directory and renamed into place, and
``latest`` is replaced only after that, so a run killed at any instant (kill -9 included) leaves
either the previous checkpoint or the new one, never a half-written one.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from transformers import GPT2LMHeadModel, PreTrainedTokenizerFast
from udrl.errors import CheckpointError
from udrl.files import write_atomic
from udrl.manifest import Manifest, save_manifest

STATE = "train_state.pt"
RUN_CONFIG = "train_config.json"
METRICS = "metrics.jsonl"
LOSS_FIGURE = "loss.png"
TOKENIZER_DIR = "tokenizer"
INIT_DIR = "init"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(path: Path) -> None:
    for p in path.rglob("*"):
        if p.is_file():
            with open(p, "rb") as f:
                os.fsync(f.fileno())
    _fsync_dir(path)


def write_checkpoint_dir(
    target: Path,
    model: GPT2LMHeadModel,
    tokenizer: PreTrainedTokenizerFast,
    manifest: Manifest,
    run_config: dict[str, Any],
    state: dict[str, Any] | None = None,
) -> Path:
    """Write a complete checkpoint at ``target`` (which must not exist), all or nothing."""
    if target.exists():
        raise CheckpointError(f"{target} already exists; refusing to overwrite a checkpoint")
    tmp = target.parent / f".{target.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        save_manifest(manifest, tmp)
        (tmp / RUN_CONFIG).write_text(json.dumps(run_config, indent=2) + "\n")
        if state is not None:
            torch.save(state, tmp / STATE)
        _fsync_tree(tmp)
        os.rename(tmp, target)
        _fsync_dir(target.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def publish_dir(source: Path, target: Path) -> None:
    """Copy a checkpoint to ``target`` without training state, replacing any previous copy."""
    tmp = target.parent / f".{target.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(source, tmp, ignore=shutil.ignore_patterns(STATE))
    _fsync_tree(tmp)
    old = target.parent / f".{target.name}.old-{os.getpid()}"
    if target.exists():
        os.rename(target, old)
    os.rename(tmp, target)
    shutil.rmtree(old, ignore_errors=True)
    _fsync_dir(target.parent)


def set_latest(run_dir: Path, checkpoint: Path) -> None:
    write_atomic(run_dir / "latest", checkpoint.name + "\n")


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete checkpoint of a run, or None if it has none."""
    pointer = run_dir / "latest"
    if not pointer.exists():
        return None
    path = run_dir / "checkpoints" / pointer.read_text().strip()
    if not path.is_dir():
        raise CheckpointError(f"{pointer} names {path.name}, which does not exist: the run dir was edited")
    return path


def clean_stale(run_dir: Path, keep: int) -> None:
    """Remove temporary directories left by a killed run and all but the ``keep`` newest checkpoints."""
    ckpts = run_dir / "checkpoints"
    for parent in (run_dir, ckpts):
        if parent.is_dir():
            for p in parent.glob(".*.tmp-*"):
                shutil.rmtree(p, ignore_errors=True)
            for p in parent.glob(".*.old-*"):
                shutil.rmtree(p, ignore_errors=True)
    latest = latest_checkpoint(run_dir)
    if not ckpts.is_dir():
        return
    steps = sorted(p for p in ckpts.iterdir() if p.is_dir() and p.name.startswith("step-"))
    for p in steps[:-keep] if keep > 0 else []:
        if latest is None or p.name != latest.name:
            shutil.rmtree(p, ignore_errors=True)

