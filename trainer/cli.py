"""``udrl train`` and ``udrl synth``: registered into the ``udrl`` command through an entry point.

Nothing heavy is imported here, so ``udrl --help`` stays fast and works without the train extra;
torch and transformers load when a training subcommand actually runs.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from udrl.errors import UdrlError

_NEEDS = "the trainer needs the 'train' extra: pip install 'udrl-edge[train]'"


def _config_from_args(args: argparse.Namespace) -> Any:
    from .config import TrainConfig

    base = TrainConfig.from_json_file(args.config).to_dict() if args.config else {}
    for field in dataclasses.fields(TrainConfig):
        value = getattr(args, field.name, None)
        if value is not None and value is not False:
            base[field.name] = value
    return TrainConfig.from_dict(base)


def _cmd_train(args: argparse.Namespace) -> int:
    try:
        from .training import train
    except ImportError as exc:
        raise UdrlError(f"{_NEEDS} ({exc})") from None
    config = _config_from_args(args)
    if not config.data and not config.resume:
        raise UdrlError("no training data: pass --data FILE (JSONL records), or --resume")
    train(config)
    return 0


def _cmd_synth(args: argparse.Namespace) -> int:
    from .synthetic import write_synthetic

    path = write_synthetic(args.out, n=args.n, seed=args.seed)
    print(f"wrote {args.n} synthetic records to {path}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add the trainer's subcommands to the ``udrl`` parser."""
    p = sub.add_parser("train", help="train a command-conditioned GPT-2 policy (UDRL)")
    p.add_argument("--data", action="append", metavar="FILE", help="JSONL(.gz) records; repeatable")
    p.add_argument("--out", dest="out_dir", metavar="DIR", help="run directory (default runs/udrl)")
    p.add_argument("--config", metavar="JSON", help="TrainConfig as JSON; flags override it")
    p.add_argument("--preset", help="model size: tiny, mini (shipped default) or gpt2-124m")
    p.add_argument("--init", metavar="DIR", help="start from a local pretrained GPT-2 directory")
    p.add_argument("--tokenizer", metavar="DIR", help="use a local GPT-2 tokenizer instead of training a BPE")
    p.add_argument("--vocab-size", type=int)
    p.add_argument("--steps", dest="max_steps", type=int, help="optimizer steps")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--grad-accum", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--warmup-steps", type=int)
    p.add_argument("--eval-interval", type=int)
    p.add_argument("--checkpoint-interval", type=int)
    p.add_argument("--length-max", type=int, help="largest target length in words")
    p.add_argument("--reward-levels", type=int)
    p.add_argument("--conditioning", nargs="*", choices=["length", "reward"],
                   help="commands besides the task to condition on (ablations: give fewer)")
    p.add_argument("--seed", type=int)
    p.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"])
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--skip-invalid", action="store_true", help="skip and count malformed lines")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its latest checkpoint")
    p.set_defaults(func=_cmd_train)

    s = sub.add_parser("synth", help="write a synthetic dataset (tests and the tiny demo)")
    s.add_argument("out", help="JSONL file to write")
    s.add_argument("--n", type=int, default=2000, help="number of records")
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=_cmd_synth)
