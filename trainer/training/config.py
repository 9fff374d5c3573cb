"""The training run's configuration: one dataclass, saved with every checkpoint."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from udrl.manifest import CONDITIONS

from ..errors import ConfigError

# The tokenizer trainer allocates for the size asked before it learns anything (a size in the billions
# aborts the process); four times Gemma 3's 262,144 tokens is more than any device model wants.
MAX_VOCAB_SIZE = 1 << 20
# Each target length is a control token, and an output must fit the largest preset's context.
MAX_LENGTH = 256

# The model architectures by name (`model.build_model`). n_positions bounds prompt + output; requests
# are short design briefs and outputs at most ~48 words.
PRESETS: dict[str, dict[str, int]] = {
    # For tests: trains in seconds on a laptop CPU.
    "tiny": {"n_layer": 2, "n_head": 2, "n_embd": 64, "n_positions": 128},
    # The shipped default: about 26M parameters with a 14k vocabulary (at most 26.8M: 10x under the teacher's 268M).
    "mini": {"n_layer": 6, "n_head": 8, "n_embd": 512, "n_positions": 256},
    # The paper's scale: GPT-2 small's shape (124M with GPT-2's 50k vocabulary).
    "gpt2-124m": {"n_layer": 12, "n_head": 12, "n_embd": 768, "n_positions": 1024},
}


def _option(default: Any = None, help: str = "", factory: Any = None, **flag: Any) -> Any:
    """A field with its command-line flag's help (and any argparse settings: ``flag`` for another
    flag name, ``choices``, ``metavar``, ``nargs``); `add_flags` reads them."""
    metadata = {"help": help, **flag}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


@dataclasses.dataclass
class TrainConfig:
    """Every setting of a training run (``udrl train`` has one flag per field; ``--config`` reads a
    JSON file of them); saved with every checkpoint."""

    # data
    data: list[str] = _option(factory=list, help="JSONL(.gz) records; repeatable", metavar="FILE", nargs="append")
    out_dir: str = _option("runs/udrl", "run directory", flag="--out", metavar="DIR")
    skip_invalid: bool = _option(False, "skip (and count) malformed lines instead of stopping")
    val_fraction: float = _option(0.05, "share of distinct queries held out for validation")
    # command schema (written into the manifest)
    tasks: list[str] | None = _option(None, "tasks to train (default: the --init model's, else the four shipped "
                                      "ones, then any other task in the data)", metavar="TASK")
    length_min: int = _option(1, "smallest target length in words")
    length_max: int = _option(48, "largest target length in words")
    reward_levels: int = _option(3, "relevance levels of the reward command")
    reward_edges: list[float] | None = _option(None, "the levels' score edges (default: the --init model's, "
                                               "else quantiles of the scores)", metavar="EDGE")
    conditioning: list[str] = _option(factory=lambda: list(CONDITIONS), nargs="*", choices=list(CONDITIONS),
                                      help="commands besides the task to condition on (ablations: give fewer)")
    # model and tokenizer
    preset: str = _option("tiny", "model size", choices=list(PRESETS))
    init: str | None = _option(None, "start from a udrl checkpoint or GGUF ('default': the bundled model; new "
                               "tasks of the data get control tokens) or a local pretrained GPT-2 directory",
                               metavar="MODEL")
    replay: float | None = _option(None, "with --init a udrl model: keep its own tasks' records at this share "
                                   "beside a new task's (or the --copy-adjusted tasks'), so that they do not degrade "
                                   "(default: all)", metavar="SHARE")
    copy_adjusted: list[str] = _option(factory=list, metavar="TASK",
                                       help="tasks whose reward level counts the relevance that copying the request "
                                       "does not explain (score minus a line fitted on copied share over the "
                                       "task's records); with --replay, the tasks being taught")
    rank_matched: list[str] = _option(factory=list, metavar="TASK",
                                      help="tasks whose records are re-scored by rank (after --copy-adjusted): the "
                                      "record at quantile q of its task's scores takes the whole data's score at "
                                      "quantile q, so each reward level holds the same share of the task as of the "
                                      "data")
    tokenizer: str | None = _option(None, "use a local GPT-2 tokenizer instead of training a BPE", metavar="DIR")
    retokenize: bool = _option(False, "with --init: train a new BPE (--vocab-size, --tokenizer-words) on the data "
                               "instead of keeping the model's; each new token starts at the mean embedding of "
                               "the old tokens that spell it")
    vocab_size: int = _option(8192, "BPE vocabulary size")
    tokenizer_words: int = _option(0, "the BPE also learns wordfreq's N most frequent English words, so that "
                                   "ordinary words the data lacks are never spelt letter by letter (0: the data "
                                   "alone)", metavar="N")
    spelling_words: int = _option(200_000, "decoding lets an output's words be only words of wordfreq's N most "
                                  "frequent English words or of the request (0: the whole-word rule off)",
                                  metavar="N")
    focus_split_words: bool = _option(False, "query focus of the model trained also lifts, and finishes, the "
                                      "request words the tokenizer splits (docs/decoding.md), where its --init "
                                      "model's manifest predates that rule (a new model always does; otherwise "
                                      "a run keeps its parent's rule, which its bonus was chosen under)")
    focus_push_function_words: bool = _option(False, "query focus of the model trained also pushes the end "
                                              "stopwords (articles, prepositions, conjunctions) down by its "
                                              "bonus (docs/decoding.md); otherwise a run keeps its parent's rule")
    dropout: float = _option(0.0, "dropout of residual, embedding and attention")
    # optimisation
    max_steps: int = _option(2000, "optimizer steps", flag="--steps")
    batch_size: int = _option(32, "records per process and micro-step")
    grad_accum: int = _option(1, "micro-steps per optimizer step")
    group_by_length: bool = _option(False, "batch records of similar token length together (within groups of 50 "
                                    "shuffled batches), so that less of each batch is padding")
    lr: float = _option(1e-3, "peak learning rate")
    min_lr_ratio: float = _option(0.1, "the cosine decays to lr * this")
    warmup_steps: int = _option(100, "linear warm-up steps")
    weight_decay: float = _option(0.1, "AdamW weight decay")
    grad_clip: float = _option(1.0, "gradient norm clip (0: off)")
    # bookkeeping
    log_interval: int = _option(10, "steps between log lines")
    eval_interval: int = _option(250, "steps between evaluations")
    eval_batches: int = _option(20, "validation batches per evaluation")
    adherence_samples: int = _option(64, "validation requests generated at each evaluation")
    checkpoint_interval: int = _option(250, "steps between checkpoints")
    keep_checkpoints: int = _option(2, "checkpoints kept")
    seed: int = _option(1337, "seed of the data order and initialisation")
    device: str = _option("auto", "where to train", choices=["auto", "cpu", "cuda", "mps"])
    threads: int | None = _option(None, "torch CPU threads (default: torch's choice)")
    resume: bool = _option(False, "continue the run in --out from its latest checkpoint")

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
        """The fields as a dict (what ``--config`` reads and a checkpoint saves)."""
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
        if len(set(self.copy_adjusted)) != len(self.copy_adjusted):
            problems.append(f"copy_adjusted lists a task twice: {self.copy_adjusted}")
        if len(set(self.rank_matched)) != len(self.rank_matched):
            problems.append(f"rank_matched lists a task twice: {self.rank_matched}")
        if self.tasks is not None and (not self.tasks or len(set(self.tasks)) != len(self.tasks)):
            problems.append("tasks must be a non-empty list without repeats")
        if self.vocab_size > MAX_VOCAB_SIZE:
            problems.append(f"vocab_size must be at most {MAX_VOCAB_SIZE:,}; got {self.vocab_size:,}")
        if self.tokenizer_words < 0:
            problems.append("tokenizer_words must be 0 (the data alone) or more")
        if self.spelling_words < 0:
            problems.append("spelling_words must be 0 (the whole-word rule off) or more")
        if self.retokenize and (not self.init or self.tokenizer):
            problems.append("retokenize moves an --init model to a new BPE: it needs --init and no --tokenizer")
        if not (0 < self.lr < math.inf) or self.warmup_steps < 0 or not (0 <= self.grad_clip < math.inf):
            problems.append("lr must be positive, warmup_steps and grad_clip non-negative (and finite)")
        if not (0 <= self.weight_decay < math.inf) or not 0 <= self.min_lr_ratio <= 1:
            problems.append("weight_decay must be non-negative and finite, min_lr_ratio in [0, 1]")
        if not 0 <= self.dropout < 1:
            problems.append(f"dropout must be in [0, 1); got {self.dropout}")
        if self.length_max > MAX_LENGTH:
            problems.append(f"length_max must be at most {MAX_LENGTH} words; got {self.length_max}")
        if self.device not in ("auto", "cpu", "cuda", "mps"):
            problems.append(f"device {self.device!r} is unknown; use auto, cpu, cuda or mps")
        if problems:
            raise ConfigError("invalid training config: " + "; ".join(problems))


def add_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per `TrainConfig` field (``--vocab-size`` for ``vocab_size``, unless the field names
    another), typed from its annotation, with its help and default shown. Every flag defaults to
    None (a switch to False), so that only the flags given override a ``--config`` file."""
    hints = typing.get_type_hints(TrainConfig)
    for field in dataclasses.fields(TrainConfig):
        meta = dict(field.metadata)
        flag = meta.pop("flag", "--" + field.name.replace("_", "-"))
        nargs = meta.pop("nargs", None)
        default = field.default_factory() if field.default_factory is not dataclasses.MISSING else field.default
        meta["help"] = f"{meta['help']} (default: {default})" if default not in (None, False, []) else meta["help"]
        kind = hints[field.name]
        if kind is bool:
            parser.add_argument(flag, dest=field.name, action="store_true", **meta)
            continue
        if type(None) in typing.get_args(kind):  # X | None: the flag takes an X
            kind = next(a for a in typing.get_args(kind) if a is not type(None))
        if typing.get_origin(kind) is list:
            item = typing.get_args(kind)[0]
            if nargs == "append":
                parser.add_argument(flag, dest=field.name, type=item, action="append", **meta)
            else:
                parser.add_argument(flag, dest=field.name, type=item, nargs=nargs or "+", **meta)
        else:
            parser.add_argument(flag, dest=field.name, type=kind, **meta)
