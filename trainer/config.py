"""The training run's configuration: one dataclass, saved with every checkpoint."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from udrl.errors import ConfigError
from udrl.manifest import CONDITIONS

from .model import PRESETS


@dataclasses.dataclass
class TrainConfig:
    # data
    data: list[str] = dataclasses.field(default_factory=list)  # JSONL(.gz) files
    out_dir: str = "runs/udrl"
    skip_invalid: bool = False  # skip (and count) malformed lines instead of stopping
    val_fraction: float = 0.05  # share of distinct queries held out for validation
    # command schema (written into the manifest)
    # None: the --init model's tasks (else the four shipped ones), then any other task of the data.
    tasks: list[str] | None = None
    length_min: int = 1
    length_max: int = 48
    reward_levels: int = 3
    reward_edges: list[float] | None = None  # default: the --init model's, else quantiles of the scores
    conditioning: list[str] = dataclasses.field(default_factory=lambda: list(CONDITIONS))
    # model and tokenizer
    preset: str = "tiny"
    # Start from: a udrl checkpoint or GGUF ("default": the bundled model), or a local pretrained GPT-2.
    init: str | None = None
    # With --init a udrl model and data of new tasks: the share of records from its own tasks kept beside
    # the new ones (replayed, so that they do not degrade); None keeps all.
    replay: float | None = None
    tokenizer: str | None = None  # local GPT-2 tokenizer directory (default: train a BPE)
    vocab_size: int = 8192
    # The BPE also learns from wordfreq's N most frequent English words, so that ordinary words the data
    # never has are whole tokens or a few pieces, never single letters (0: the data alone).
    tokenizer_words: int = 0
    dropout: float = 0.0
    # optimisation
    max_steps: int = 2000
    batch_size: int = 32  # per process, per micro-step
    grad_accum: int = 1
    lr: float = 1e-3
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio
    warmup_steps: int = 100
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    # bookkeeping
    log_interval: int = 10
    eval_interval: int = 250
    eval_batches: int = 20
    adherence_samples: int = 64  # validation requests generated at each evaluation
    checkpoint_interval: int = 250
    keep_checkpoints: int = 2
    seed: int = 1337
    device: str = "auto"  # auto | cpu | cuda | mps
    threads: int | None = None  # torch CPU threads (default: torch's choice)
    resume: bool = False

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainConfig:
        """Build from a dict, refusing unknown keys (a typo would otherwise be silently ignored)."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown training option(s) {unknown}; known options: {sorted(known)}")
        config = cls(**data)
        config.validate()
        return config

    @classmethod
    def from_json_file(cls, path: str | Path) -> TrainConfig:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"cannot read training config {path}: {exc}") from None
        return cls.from_dict(data)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self) -> None:
        problems = []
        if self.preset not in PRESETS:
            problems.append(f"preset {self.preset!r} is unknown; choose one of {list(PRESETS)}")
        if not 1 <= self.length_min <= self.length_max:
            problems.append(f"length range [{self.length_min}, {self.length_max}] needs 1 <= min <= max")
        if self.reward_levels < 1:
            problems.append("reward_levels must be at least 1")
        bad = set(self.conditioning) - set(CONDITIONS)
        if bad:
            problems.append(f"conditioning {sorted(bad)} is unknown; allowed: {list(CONDITIONS)}")
        if not 0 <= self.val_fraction < 1:
            problems.append("val_fraction must be in [0, 1)")
        positive = ("max_steps", "batch_size", "grad_accum", "log_interval", "eval_interval",
                    "checkpoint_interval", "vocab_size")
        for name in positive:
            if getattr(self, name) < 1:
                problems.append(f"{name} must be at least 1")
        if self.replay is not None and not 0 <= self.replay < 1:
            problems.append(f"replay is a share of the records, in [0, 1); got {self.replay}")
        if self.tasks is not None and (not self.tasks or len(set(self.tasks)) != len(self.tasks)):
            problems.append("tasks must be a non-empty list without repeats")
        if self.tokenizer_words < 0:
            problems.append("tokenizer_words must be 0 (the data alone) or more")
        if self.lr <= 0 or self.warmup_steps < 0 or self.grad_clip < 0:
            problems.append("lr must be positive, warmup_steps and grad_clip non-negative")
        if self.device not in ("auto", "cpu", "cuda", "mps"):
            problems.append(f"device {self.device!r} is unknown; use auto, cpu, cuda or mps")
        if problems:
            raise ConfigError("invalid training config: " + "; ".join(problems))
