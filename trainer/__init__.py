"""udrl.trainer: distil a teacher into a small GPT-2 policy with upside-down RL.

Three pipelines, one folder each: ``distill/`` makes the data (composed requests, the teacher's
answers, copy augmentation, judging), ``training/`` trains the policy, ``evaluate/`` measures it
(``udrl eval``, query focus, the card); what they share (tasks, teachers, judges, job logs) sits
here, and ``recipe.py`` runs them for the shipped model.

Needs the ``train`` extra (torch, transformers, tokenizers). The SDK never imports this package.
Names are imported lazily so that ``udrl --help`` does not pay for torch.

Example:
    >>> from udrl.trainer import TrainConfig, train               # doctest: +SKIP
    >>> train(TrainConfig(data=["data.jsonl"], out_dir="runs/demo", preset="tiny", max_steps=300))
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {"TrainConfig": ".training.config", "PRESETS": ".training.config", "train": ".training.loop"}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
