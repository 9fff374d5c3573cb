"""udrl.trainer: distil a teacher into a small GPT-2 policy with upside-down RL.

Needs the ``train`` extra (torch, transformers, tokenizers). The SDK never imports this package.
Names are imported lazily so that ``udrl --help`` does not pay for torch.

Example:
    >>> from udrl.trainer import TrainConfig, train               # doctest: +SKIP
    >>> train(TrainConfig(data=["data.jsonl"], out_dir="runs/demo", preset="tiny", max_steps=300))
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {"TrainConfig": ".config", "PRESETS": ".model", "train": ".training"}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
