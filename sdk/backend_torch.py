"""PyTorch (transformers) for checkpoint directories: the reference backend, batch-capable."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .backends import Backend, BackendOptions, TokenPieces, left_pad, register
from .manifest import Manifest


@register
class TorchBackend(Backend):
    name = "torch"
    kind = "checkpoint"
    extra = "train"
    requires = ("torch", "transformers")
    can_batch = True

    def __init__(self, path: Path, manifest: Manifest, options: BackendOptions):
        import torch

        from .checkpoint import load_checkpoint

        self.torch = torch
        if options.threads:
            torch.set_num_threads(options.threads)
        want = options.device
        if want == "auto":
            want = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(want)
        model, tokenizer, manifest = load_checkpoint(path)
        self._attach(model.to(self.device), tokenizer, manifest)

    @classmethod
    def from_model(cls, model, tokenizer, manifest: Manifest) -> TorchBackend:
        """Wrap a model already in memory (the trainer evaluates through this during training)."""
        import torch

        backend = cls.__new__(cls)
        backend.torch = torch
        backend.device = next(model.parameters()).device
        backend._attach(model, tokenizer, manifest)
        return backend

    def _attach(self, model, tokenizer, manifest: Manifest) -> None:
        self.model, self.tokenizer, self.manifest = model, tokenizer, manifest
        self._pieces = TokenPieces(tokenizer.backend_tokenizer, list(manifest.token_ids.values()))
        self.n_ctx = model.config.n_positions
        self._cache = None
        self._mask = None
        self._positions = None

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False)

    def token_bytes(self, token: int) -> bytes:
        return self._pieces(token)

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
        ids, mask, positions = (self.torch.from_numpy(a).to(self.device) for a in left_pad(prompts, self.manifest.eos_id))
        self._cache = None
        return self._run(ids, mask, positions)

    def step_batch(self, tokens: Sequence[int | None]) -> np.ndarray:
        tokens = [self.manifest.eos_id if t is None else t for t in tokens]  # left padding: every row steps
        t = self.torch
        ids = t.tensor(list(tokens), dtype=t.long, device=self.device)[:, None]
        mask = t.cat([self._mask, t.ones_like(ids)], dim=1)
        return self._run(ids, mask, self._positions + 1)

    def close(self) -> None:
        self.model = None
        self._cache = None
