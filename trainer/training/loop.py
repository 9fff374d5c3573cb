"""UDRL training of a GPT-2 policy: read the loop top to bottom in `train`.

Each record becomes ``<task><len:achieved words><rew:achieved level> query <sep> output <eos>``
with the loss on the output tokens only: the model learns what output goes with which achieved
command, so at inference a caller can ask for the command it wants (upside-down RL).

The same function runs on one process or under ``torchrun --nproc_per_node=N`` (DDP: gloo on CPU,
nccl on CUDA); rank 0 evaluates, logs and writes checkpoints.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from tqdm import tqdm
from transformers import GPT2LMHeadModel, PreTrainedTokenizerFast
from transformers.utils import logging as hf_logging
from udrl.casing import fold_title_case
from udrl.checkpoint import verify_checkpoint
from udrl.commands import make_command, render_prompt, reward_level
from udrl.files import file_digest, write_atomic
from udrl.manifest import DEFAULT_TASKS, MANIFEST_FILENAME, Manifest, load_manifest
from udrl.model import named_model_path

from ..decoding import starting_settings
from ..errors import ConfigError, DatasetError
from ..figures import save_figure
from ..taskfile import TASKS
from . import checkpoint as ckpt
from .adherence import Request, adherence, greedy_generate
from .config import TrainConfig
from .dataset import (
    Record,
    copy_adjusted,
    iter_texts,
    median_lengths,
    open_text,
    quantile_edges,
    rank_matched,
    read_records,
    replay_mix,
    split_by_query,
)
from .model import build_model, count_parameters, init_from_pretrained, transplant_vocabulary
from .tokenizer import attach_token_ids, english_word_list, load_gpt2_tokenizer, train_bpe

IGNORE = -100


@dataclasses.dataclass(frozen=True)
class Example:
    prompt: list[int]
    output: list[int]  # ends with eos


@dataclasses.dataclass
class Distributed:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()


def _start_distributed(config: TrainConfig) -> tuple[Distributed, torch.device]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    want = config.device
    if want == "auto":
        want = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    if want == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' requested but torch sees no CUDA device")
    if world > 1:
        if want == "mps":
            want = "cpu"  # torch.distributed has no MPS backend
        dist.init_process_group(backend="nccl" if want == "cuda" else "gloo")
    device = torch.device(f"cuda:{local_rank}" if want == "cuda" else want)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return Distributed(rank, world, local_rank), device


# -- data --------------------------------------------------------------------------------------


def _encode(
    records: Sequence[Record], manifest: Manifest, tokenizer: PreTrainedTokenizerFast, n_ctx: int
) -> tuple[list[Example], int]:
    """Tokenize records with their achieved commands; returns examples and how many were too long.
    The outputs of the manifest's title-case tasks are learnt in lower case (udrl.casing)."""
    examples, too_long = [], 0
    for r in records:
        command = make_command(manifest, r.task, r.words, reward_level(manifest, r.score))
        prompt = tokenizer.encode(render_prompt(manifest, r.query, command), add_special_tokens=False)
        text = fold_title_case(r.output) if r.task in manifest.title_tasks else r.output
        output = tokenizer.encode(manifest.output_prefix + text, add_special_tokens=False) + [manifest.eos_id]
        if len(prompt) + len(output) > n_ctx:
            too_long += 1
            continue
        examples.append(Example(prompt, output))
    return examples, too_long


def _collate(examples: Sequence[Example], pad_id: int) -> dict[str, torch.Tensor]:
    width = max(len(e.prompt) + len(e.output) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for i, e in enumerate(examples):
        seq = e.prompt + e.output
        ids[i, : len(seq)] = torch.tensor(seq)
        labels[i, len(e.prompt) : len(seq)] = torch.tensor(e.output)
        mask[i, : len(seq)] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


# Records per length group (in batches): large enough that a group's batches are nearly the same
# length, small enough that the order stays shuffled (Hugging Face's group_by_length uses 50 too).
LENGTH_GROUP_BATCHES = 50


def _micro_batch(n: int, micro: int, batch: int, d: Distributed, seed: int,
                 lengths: Sequence[int] | None = None) -> list[int]:
    """Indices of this rank's share of global micro-batch ``micro``: a pure function of its number,
    so a resumed run sees exactly the batches the interrupted one would have. With ``lengths``
    (one per record), each run of LENGTH_GROUP_BATCHES batches of the epoch's shuffled order is
    sorted by length, cut into batches and those batches shuffled again: every record is still
    seen once an epoch, but a batch pads to a length near its records' own."""
    global_batch = batch * d.world
    per_epoch = max(1, n // global_batch)
    epoch, j = divmod(micro, per_epoch)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
    if n < global_batch:
        perm = perm.repeat(math.ceil(global_batch / n))
    if lengths is not None:
        group, k = divmod(j, LENGTH_GROUP_BATCHES)
        first = group * LENGTH_GROUP_BATCHES
        count = min(LENGTH_GROUP_BATCHES, per_epoch - first)
        group_records = perm[first * global_batch : (first + count) * global_batch].tolist()
        members = sorted(group_records, key=lengths.__getitem__)
        order = torch.randperm(count, generator=torch.Generator().manual_seed((seed * 100_003 + epoch) * 7919 + group))
        b = int(order[k])
        chunk = members[b * global_batch : (b + 1) * global_batch]
    else:
        chunk = perm[j * global_batch : (j + 1) * global_batch].tolist()
    return chunk[d.rank :: d.world]


def _lr_at(step: int, config: TrainConfig) -> float:
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    span = max(1, config.max_steps - config.warmup_steps)
    progress = min(1.0, (step - config.warmup_steps) / span)
    floor = config.lr * config.min_lr_ratio
    return floor + 0.5 * (config.lr - floor) * (1 + math.cos(math.pi * progress))


# -- evaluation and logging --------------------------------------------------------------------


@torch.no_grad()
def _val_loss(model: GPT2LMHeadModel, val: Sequence[Example], config: TrainConfig, pad_id: int,
              device: torch.device, autocast: Any) -> float:
    model.eval()
    total, count = 0.0, 0
    for start in range(0, min(len(val), config.eval_batches * config.batch_size), config.batch_size):
        batch = {k: v.to(device) for k, v in _collate(val[start : start + config.batch_size], pad_id).items()}
        with autocast():
            out = model(**batch)
        n = int((batch["labels"][:, 1:] != IGNORE).sum())
        total += float(out.loss) * n
        count += n
    model.train()
    return total / max(count, 1)


def _append_metrics(run_dir: Path, row: dict[str, Any]) -> None:
    with open(run_dir / ckpt.METRICS, "a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / ckpt.METRICS
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # the last line of a killed run may be cut short
    return rows


def _truncate_metrics(run_dir: Path, step: int) -> None:
    """Drop rows logged after the checkpoint a run resumes from (they will be logged again)."""
    rows = [r for r in _read_metrics(run_dir) if r["step"] <= step]
    write_atomic(run_dir / ckpt.METRICS, "".join(json.dumps(r) + "\n" for r in rows))


def plot_losses(run_dir: Path) -> Path:
    """Draw train and validation loss (and length adherence) against step into loss.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = _read_metrics(run_dir)
    train = [(r["step"], r["train_loss"]) for r in rows if "train_loss" in r]
    val = [(r["step"], r["val_loss"]) for r in rows if "val_loss" in r]
    within = [(r["step"], r["len_within1"]) for r in rows if "len_within1" in r]
    fig, ax = plt.subplots(figsize=(7, 4))
    if train:
        ax.plot(*zip(*train), label="train loss", lw=1, alpha=0.7)
    if val:
        ax.plot(*zip(*val), "o-", label="validation loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (output tokens)")
    ax.grid(alpha=0.3)
    if within:
        ax2 = ax.twinx()
        ax2.plot(*zip(*within), "s--", color="tab:green", label="length within ±1 word")
        ax2.set_ylim(0, 1)
        ax2.set_ylabel("share within ±1 word")
        ax2.legend(loc="center right")
    ax.legend(loc="upper right")
    ax.set_title(run_dir.name)
    fig.tight_layout()
    return save_figure(fig, run_dir / ckpt.LOSS_FIGURE)


# -- the run -----------------------------------------------------------------------------------


def _resolve_config(config: TrainConfig) -> TrainConfig:
    """A resumed run uses the configuration it was started with (device and threads aside)."""
    run_dir = Path(config.out_dir)
    saved = run_dir / ckpt.RUN_CONFIG
    if config.resume:
        if not saved.exists():
            raise ConfigError(f"nothing to resume in {run_dir}: it holds no {ckpt.RUN_CONFIG}")
        original = TrainConfig.from_json_file(saved)
        return dataclasses.replace(original, resume=True, device=config.device, threads=config.threads)
    if saved.exists() or (run_dir / "checkpoints").exists():
        raise ConfigError(
            f"{run_dir} already holds a training run; pass --resume to continue it, "
            "or choose another --out directory"
        )
    return config


def _prepare_tokenizer(config: TrainConfig, manifest: Manifest, train_records: Sequence[Record],
                       run_dir: Path, d: Distributed) -> PreTrainedTokenizerFast:
    """Rank 0 builds (or reuses) the run's tokenizer under run/tokenizer; the others load it."""
    tok_dir = run_dir / ckpt.TOKENIZER_DIR
    if d.main and not (tok_dir / "tokenizer.json").exists():
        source = config.tokenizer or (None if config.retokenize else config.init)
        tok = load_gpt2_tokenizer(source, manifest) if source else train_bpe(
            iter_texts(train_records, manifest), manifest, config.vocab_size,
            english_word_list(config.tokenizer_words) if config.tokenizer_words else (),
        )
        tmp = run_dir / f".tokenizer.tmp-{os.getpid()}"
        tok.save_pretrained(tmp)
        os.rename(tmp, tok_dir)
    d.barrier()
    return PreTrainedTokenizerFast.from_pretrained(str(tok_dir), local_files_only=True)


def _parent_manifest(config: TrainConfig) -> Manifest | None:
    """The manifest of the udrl checkpoint a later stage starts from (None: no --init, or a foreign GPT-2)."""
    parent = Path(config.init) / MANIFEST_FILENAME if config.init else None
    return load_manifest(parent) if parent is not None and parent.exists() else None


def _preset_of(config: TrainConfig, parent: Manifest | None) -> str | None:
    """The architecture preset of the model a run trains: a second stage (``--init`` a udrl checkpoint)
    keeps its parent's; a foreign pretrained GPT-2 has none."""
    if not config.init:
        return config.preset
    return parent.model.get("preset") if parent else None


def _parent_edges(config: TrainConfig, parent: Manifest | None) -> list[float] | None:
    """A later stage keeps its parent's reward edges, so each reward level keeps its meaning: added data
    (a rollout's records, relabelled on the parent's edges) would otherwise move the quantiles."""
    edges = list(parent.reward_edges) if parent else []
    return edges if edges and len(edges) + 1 == config.reward_levels else None


def _materialise_init(config: TrainConfig) -> TrainConfig:
    """``--init`` a udrl GGUF (``default``: the bundled model) starts from a checkpoint made from it
    in the run directory (``RUN/init``), with its weights, tokenizer and manifest."""
    if not config.init or config.resume:
        return config
    source = named_model_path(config.init)
    if source.suffix != ".gguf":
        return config
    target = Path(config.out_dir) / ckpt.INIT_DIR
    if not (target / MANIFEST_FILENAME).exists():
        from udrl.converters.from_gguf import checkpoint_from_gguf

        checkpoint_from_gguf(source, target)
    return dataclasses.replace(config, init=str(target))


def _resolve_tasks(config: TrainConfig, parent: Manifest | None) -> TrainConfig:
    """Unless given, the tasks are the ``--init`` model's (or the shipped four), then every other
    task the data holds, in the order it first appears."""
    if config.tasks is not None:
        return config
    tasks = list(parent.tasks) if parent else list(DEFAULT_TASKS)
    for path in map(Path, config.data):
        if path.is_file():
            with open_text(path) as f:
                for line in f:
                    try:
                        task = json.loads(line).get("task")
                    except (json.JSONDecodeError, AttributeError):
                        continue  # read_records reports malformed lines with their place
                    if isinstance(task, str) and task not in tasks:
                        tasks.append(task)
    return dataclasses.replace(config, tasks=tasks)


def _title_tasks(parent: Manifest | None) -> list[str]:
    """The tasks learnt in lower case and returned in Title Case: those whose task file says so, and
    those the ``--init`` model already returns so."""
    return [name for name, spec in TASKS.items() if spec.case == "title"] + list(parent.title_tasks if parent else ())


def _start_new_tasks_at_the_old(model: GPT2LMHeadModel, parent: Manifest | None, manifest: Manifest) -> None:
    """A task new to a udrl parent starts with the mean embedding of the parent's task tokens: a
    "this is a task" vector the model already routes, rather than the mean of every token."""
    if parent is None:
        return
    # The parent's task tokens by the new manifest's ids: the same tokens, at other ids after --retokenize.
    old = [manifest.token_ids[t] for t in parent.control_tokens["task"].values()]
    new = [manifest.token_ids[t] for name, t in manifest.control_tokens["task"].items() if name not in parent.tasks]
    if new:
        with torch.no_grad():
            weight = model.get_input_embeddings().weight
            weight[new] = weight[old].mean(dim=0)


def _forget_unstarted_run(run_dir: Path) -> None:
    """Data or a setting refused before the first checkpoint: remove what this start wrote, so that the
    corrected command neither is told to --resume nor reuses a tokenizer or --init made for the old
    settings (`_resolve_config` has made sure that no earlier run was there)."""
    if ckpt.latest_checkpoint(run_dir) is not None:
        return
    for name in (ckpt.RUN_CONFIG, ckpt.METRICS, ckpt.LOSS_FIGURE):
        (run_dir / name).unlink(missing_ok=True)
    for name in (ckpt.TOKENIZER_DIR, ckpt.INIT_DIR):
        shutil.rmtree(run_dir / name, ignore_errors=True)


def train(config: TrainConfig) -> Path:
    """Train (or resume) a run; returns the directory of the final checkpoint (``run/model``)."""
    config = _materialise_init(_resolve_config(config))
    parent = _parent_manifest(config)
    config = _resolve_tasks(config, parent)
    config.validate()
    d, device = _start_distributed(config)
    try:
        try:
            return _train(config, parent, d, device)
        except (torch.OutOfMemoryError, RuntimeError) as e:
            if not isinstance(e, torch.OutOfMemoryError) and "can't allocate memory" not in str(e):
                raise
            raise ConfigError(f"out of memory on {device} at batch_size {config.batch_size}: start again with a "
                              "smaller --batch-size (--grad-accum keeps the records per optimizer step; a "
                              "resumed run keeps the batch size it started with)") from e
    except (ConfigError, DatasetError):
        if d.main and not config.resume:
            _forget_unstarted_run(Path(config.out_dir))
        raise
    finally:
        if d.world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def _train(config: TrainConfig, parent: Manifest | None, d: Distributed, device: torch.device) -> Path:
    hf_logging.disable_progress_bar()  # our own bar is enough; theirs would print per checkpoint
    run_dir = Path(config.out_dir)
    log = print if d.main else (lambda *a, **k: None)
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    if d.main:
        run_dir.mkdir(parents=True, exist_ok=True)
        ckpt.clean_stale(run_dir, config.keep_checkpoints)
        if not config.resume:
            write_atomic(run_dir / ckpt.RUN_CONFIG, json.dumps(config.to_dict(), indent=2) + "\n")
    d.barrier()

    # 1. Data, command schema and tokenizer.
    lo_hi = (config.length_min, config.length_max)
    report = read_records(config.data, config.tasks, lo_hi, config.skip_invalid)
    if report.skipped:
        log(f"skipped {len(report.skipped)} invalid line(s); first: {report.skipped[0]}")
    records = report.records
    if config.copy_adjusted:
        records, fits = copy_adjusted(records, config.copy_adjusted)
        for task, fit in fits.items():
            log(f"copy-adjusted reward for {task}: score - {fit.slope:.3f} x (copied share - {fit.mean_share:.3f}), "
                f"fitted over its {fit.records} records")
    if config.rank_matched:
        records = rank_matched(records, config.rank_matched)
        log(f"rank-matched reward for {', '.join(config.rank_matched)}: each task's scores mapped by rank onto "
            "the whole data's")
    rehearsed = [t for t in parent.tasks if t not in config.copy_adjusted] if parent is not None else []
    records = (replay_mix(records, rehearsed, config.replay, config.seed)
               if parent is not None and config.replay is not None else records)
    if len(records) < len(report.records):
        log(f"replay: {len(records)} of {len(report.records)} records, the tasks not being taught "
            f"{config.replay:.0%} of them")
    elif parent is not None and config.replay is not None:
        if {r.task for r in records} <= set(rehearsed):
            # Continuing a fine-tune: every task is already the model's, so there is nothing to mix
            # around; say so, or the task being taught silently drowns in the others' records.
            log(f"replay: all {len(records)} records kept: the data has no task that the --init model "
                "lacks and none is --copy-adjusted; to rehearse the old tasks beside one of them, pass a "
                "sample of their records as --data")
        else:
            log(f"replay: all {len(records)} records kept: the old tasks have fewer records than a "
                f"{config.replay:.0%} share")
    train_records, val_records = split_by_query(records, config.val_fraction)
    edges = config.reward_edges or _parent_edges(config, parent)
    if edges is None:
        # Over the whole dataset, as `udrl judge` does, so the buckets match the relabelled data.
        edges = quantile_edges([r.score for r in records], config.reward_levels)
    resume_from = ckpt.latest_checkpoint(run_dir) if config.resume else None
    if resume_from is not None:
        manifest = verify_checkpoint(resume_from)
        data_hash = file_digest(config.data)
        if manifest.data_hash != data_hash:
            raise DatasetError(
                f"the data files changed since this run started ({manifest.data_hash} then, "
                f"{data_hash} now): resuming would train on different data; start a new run"
            )
    else:
        manifest = Manifest.new(
            tasks=config.tasks,
            length_range=lo_hi,
            reward_edges=edges,
            conditioning=config.conditioning,
            data_hash=file_digest(config.data),
            parent=config.init,
            **starting_settings(config.tasks, _title_tasks(parent), parent.focus_bias if parent else None,
                                config.spelling_words,
                                config.focus_split_words or parent is None or parent.focus_split_words,
                                config.focus_push_function_words or (parent is not None and
                                                                     parent.focus_push_function_words)),
        ).replace(default_length=median_lengths(train_records))
    tokenizer = _prepare_tokenizer(config, manifest, train_records, run_dir, d)
    manifest = attach_token_ids(manifest, tokenizer)

    # 2. Model and optimiser.
    vocab = len(tokenizer)
    if resume_from is not None:
        model = GPT2LMHeadModel.from_pretrained(str(resume_from), local_files_only=True)
    elif config.init and config.retokenize:
        model = init_from_pretrained(config.init, None, config.dropout)
        parent_tokenizer = PreTrainedTokenizerFast.from_pretrained(config.init, local_files_only=True)
        kept = transplant_vocabulary(model, parent_tokenizer, tokenizer)
        log(f"retokenize: {kept} of {vocab} tokens kept from the --init model's vocabulary of "
            f"{len(parent_tokenizer)}; the others start at the mean of the old tokens that spell them")
        _start_new_tasks_at_the_old(model, parent, manifest)
    elif config.init:
        model = init_from_pretrained(config.init, vocab, config.dropout)
        _start_new_tasks_at_the_old(model, parent, manifest)
    else:
        model = build_model(config.preset, vocab, manifest.eos_id, config.dropout)
    model.loss_type = "ForCausalLM"  # transformers cannot infer it from our class name and warns
    model.to(device)
    n_ctx = model.config.n_positions
    manifest = manifest.replace(model={
        "architecture": "gpt2",
        "preset": _preset_of(config, parent),
        "n_params": count_parameters(model),
        "n_layer": model.config.n_layer,
        "n_head": model.config.n_head,
        "n_embd": model.config.n_embd,
        "n_ctx": n_ctx,
        "vocab_size": model.config.vocab_size,
    })
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=config.lr, betas=(0.9, 0.95), fused=device.type == "cuda",
    )
    step = 0
    if resume_from is not None:
        state = torch.load(resume_from / ckpt.STATE, map_location="cpu", weights_only=False)
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"])
        step = state["step"]
        if d.main:
            _truncate_metrics(run_dir, step)
        log(f"resuming {run_dir} from {resume_from.name} (step {step} of {config.max_steps})")
    elif config.resume and d.main:
        _truncate_metrics(run_dir, -1)  # killed before its first checkpoint: start over
    ddp_model = model
    if d.world > 1:
        ddp_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    autocast = (
        (lambda: torch.autocast("cuda", dtype=torch.bfloat16))
        if device.type == "cuda" and torch.cuda.is_bf16_supported()
        else contextlib.nullcontext
    )

    train_set, too_long = _encode(train_records, manifest, tokenizer, n_ctx)
    val_set, val_too_long = _encode(val_records, manifest, tokenizer, n_ctx)
    if too_long + val_too_long:
        log(f"left out {too_long + val_too_long} record(s) longer than the context ({n_ctx} tokens)")
    if not train_set:
        raise DatasetError("no training example fits the model's context")
    lengths = [len(e.prompt) + len(e.output) for e in train_set] if config.group_by_length else None
    probe = [
        Request(r.query, make_command(manifest, r.task, r.words, reward_level(manifest, r.score)))
        for r in val_records[: config.adherence_samples]
    ]
    log(
        f"data: {len(records)} records ({len(train_set)} train, {len(val_set)} validation "
        f"over {len({r.query for r in val_records})} held-out queries); reward edges {list(manifest.reward_edges)}\n"
        f"model: {config.init or config.preset}, {count_parameters(model) / 1e6:.2f}M parameters, "
        f"vocab {vocab}, context {n_ctx}; device {device}, {d.world} process(es)"
    )

    def evaluate(at: int) -> dict[str, Any]:
        row: dict[str, Any] = {"step": at}
        if val_set:
            row["val_loss"] = _val_loss(model, val_set, config, manifest.eos_id, device, autocast)
        if probe:
            row.update(adherence(probe, greedy_generate(model, tokenizer, manifest, probe)))
        _append_metrics(run_dir, row)
        plot_losses(run_dir)
        return row

    def save(at: int) -> Path:
        state = {"step": at, "optimizer": optimizer.state_dict(), "rng": torch.get_rng_state()}
        target = run_dir / "checkpoints" / f"step-{at:07d}"
        if target.exists():  # written by a run killed before it could move `latest`
            shutil.rmtree(target)
        ckpt.write_checkpoint_dir(target, model, tokenizer, manifest, config.to_dict(), state)
        ckpt.set_latest(run_dir, target)
        ckpt.clean_stale(run_dir, config.keep_checkpoints)
        return target

    # 3. The loop.
    if step == 0 and d.main:
        first = evaluate(0)
        log("step 0: " + ", ".join(f"{k} {v:.3f}" for k, v in first.items() if k != "step"))
    d.barrier()
    model.train()
    bar = tqdm(total=config.max_steps, initial=step, disable=not d.main, desc="train",
               mininterval=1.0 if sys.stderr.isatty() else 30.0, dynamic_ncols=True)
    tokens_seen, t0 = 0, time.perf_counter()
    while step < config.max_steps:
        lr = _lr_at(step, config)
        for group in optimizer.param_groups:
            group["lr"] = lr
        loss_sum = 0.0
        for k in range(config.grad_accum):
            micro = step * config.grad_accum + k
            idx = _micro_batch(len(train_set), micro, config.batch_size, d, config.seed, lengths)
            batch = {key: v.to(device) for key, v in _collate([train_set[i] for i in idx], manifest.eos_id).items()}
            sync = contextlib.nullcontext() if d.world == 1 or k == config.grad_accum - 1 else ddp_model.no_sync()
            with sync:
                with autocast():
                    loss = ddp_model(**batch).loss / config.grad_accum
                loss.backward()
            loss_sum += loss.item()
            tokens_seen += int(batch["attention_mask"].sum()) * d.world
        if config.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        if d.main:
            elapsed = time.perf_counter() - t0
            bar.update(1)
            bar.set_postfix(loss=f"{loss_sum:.3f}", tok_s=f"{tokens_seen / max(elapsed, 1e-9):.0f}",
                            lr=f"{lr:.1e}", refresh=False)
            if step % config.log_interval == 0:
                _append_metrics(run_dir, {"step": step, "train_loss": loss_sum, "lr": lr,
                                          "tok_s": tokens_seen / max(elapsed, 1e-9)})
        is_eval = step % config.eval_interval == 0 or step == config.max_steps
        is_save = step % config.checkpoint_interval == 0 or step == config.max_steps
        if d.main and is_eval:
            row = evaluate(step)
            bar.write(f"step {step}: " + ", ".join(f"{k} {v:.3f}" for k, v in row.items() if k != "step"))
        if d.main and is_save:
            save(step)
        if is_eval or is_save:
            d.barrier()
    bar.close()

    final = run_dir / "model"
    if d.main:
        latest = ckpt.latest_checkpoint(run_dir)
        if latest is None or latest.name != f"step-{config.max_steps:07d}":
            latest = save(config.max_steps)
        ckpt.publish_dir(latest, final)
        samples = list({r.command.task: r for r in reversed(probe)}.values())
        for request, text in zip(samples, greedy_generate(model, tokenizer, manifest, samples)):
            c = request.command
            log(f"  [{c.task} len={c.length} reward={c.reward}] {request.query!r} -> {text!r}")
        log(f"done: final checkpoint in {final} (loss curve {run_dir / ckpt.LOSS_FIGURE})")
    d.barrier()
    return final

