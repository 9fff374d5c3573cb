"""PyTorch (transformers) for checkpoint directories: the reference backend, batch-capable."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .backends import Backend, BackendOptions, register, require
from .manifest import Manifest


@register
class TorchBackend(Backend):
    name = "torch"
    kind = "checkpoint"
    extra = "train"
    can_batch = True

    def __init__(self, path: Path, manifest: Manifest, options: BackendOptions):
        require("torch", "train")
        require("transformers", "train")
        import torch

        from .checkpoint import load_checkpoint

        self.torch = torch
        if options.threads:
            torch.set_num_threads(options.threads)
        want = options.device
        if want == "auto":
            want = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(want)
        model, self.tokenizer, self.manifest = load_checkpoint(path)
        self.model = model.to(self.device)
        self.n_ctx = model.config.n_positions
        self._cache = None
        self._mask = None
        self._positions = None

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False)

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)

    def _run(self, ids, mask, positions) -> np.ndarray:
        with self.torch.no_grad():
            out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, cache=self._cache,
                             use_cache=True, logits_to_keep=1)
        self._cache, self._mask, self._positions = out.cache, mask, positions[:, -1:]
        return out.logits[:, -1, :].float().cpu().numpy()

    def prefill(self, ids: Sequence[int]) -> np.ndarray:
        return self.prefill_batch([ids])[0]

    def step(self, token: int) -> np.ndarray:
        return self.step_batch([token])[0]

    def prefill_batch(self, prompts: Sequence[Sequence[int]]) -> np.ndarray:
        t = self.torch
        width = max(map(len, prompts))
        ids = t.full((len(prompts), width), self.manifest.eos_id, dtype=t.long)
        mask = t.zeros((len(prompts), width), dtype=t.long)
        for i, p in enumerate(prompts):
            ids[i, width - len(p):] = t.tensor(list(p))
            mask[i, width - len(p):] = 1
        self._cache = None
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        return self._run(ids.to(self.device), mask.to(self.device), positions.to(self.device))

    def step_batch(self, tokens: Sequence[int]) -> np.ndarray:
        t = self.torch
        ids = t.tensor(list(tokens), dtype=t.long, device=self.device)[:, None]
        mask = t.cat([self._mask, t.ones_like(ids)], dim=1)
        return self._run(ids, mask, self._positions + 1)

    def close(self) -> None:
        self.model = None
        self._cache = None
