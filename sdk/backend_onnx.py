"""ONNX Runtime for ONNX artifacts exported by udrl (KV cache inputs/outputs, batch axis)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .backends import Backend, BackendOptions, TokenPieces, left_pad, register
from .errors import BackendError
from .manifest import TOKENIZER_METADATA_KEY, Manifest


@register
class OnnxBackend(Backend):
    name = "onnx"
    kind = "onnx"
    extra = "onnx"
    requires = ("onnxruntime", "tokenizers")
    can_batch = True

    def __init__(self, path: Path, manifest: Manifest, options: BackendOptions):
        import onnxruntime as ort
        from tokenizers import Tokenizer

        so = ort.SessionOptions()
        if options.threads:
            so.intra_op_num_threads = options.threads
        providers = ["CPUExecutionProvider"]
        if options.device in ("auto", "cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        try:
            self.session = ort.InferenceSession(str(path), so, providers=providers)
        except Exception as exc:  # onnxruntime raises its own pybind classes (Fail, InvalidGraph, ...)
            raise BackendError(f"ONNX Runtime cannot load {path}: {exc}") from exc
        meta = self.session.get_modelmeta().custom_metadata_map
        if TOKENIZER_METADATA_KEY not in meta:
            raise BackendError(f"{path} has no embedded tokenizer ({TOKENIZER_METADATA_KEY}); re-export it")
        self.tokenizer = Tokenizer.from_str(meta[TOKENIZER_METADATA_KEY])
        self.manifest = manifest
        self._pieces = TokenPieces(self.tokenizer, list(manifest.token_ids.values()))
        m = manifest.model
        self.n_ctx = int(m["n_ctx"])
        self.n_layer, self.n_head = int(m["n_layer"]), int(m["n_head"])
        self.head_dim = int(m["n_embd"]) // self.n_head
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.dtype = np.float16 if self.session.get_inputs()[3].type == "tensor(float16)" else np.float32
        self._past: list[np.ndarray] = []
        self._mask = np.zeros((1, 0), np.int64)
        self._positions = np.zeros((1, 0), np.int64)

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def token_bytes(self, token: int) -> bytes:
        return self._pieces(token)

    def _run(self, ids: np.ndarray, mask: np.ndarray, positions: np.ndarray) -> np.ndarray:
        out = self.session.run(None, dict(zip(self.inputs, [ids, mask, positions, *self._past])))
        self._past = out[1:]
        self._mask, self._positions = mask, positions[:, -1:]
        return out[0][:, -1, :].astype(np.float32)

    def prefill(self, ids: Sequence[int]) -> np.ndarray:
        return self.prefill_batch([ids])[0]

    def step(self, token: int) -> np.ndarray:
        return self.step_batch([token])[0]

    def prefill_batch(self, prompts: Sequence[Sequence[int]]) -> np.ndarray:
        ids, mask, positions = left_pad(prompts, self.manifest.eos_id)
        shape = (len(prompts), self.n_head, 0, self.head_dim)
        self._past = [np.zeros(shape, self.dtype) for _ in range(2 * self.n_layer)]
        return self._run(ids, mask, positions)

    def step_batch(self, tokens: Sequence[int | None]) -> np.ndarray:
        tokens = [self.manifest.eos_id if t is None else t for t in tokens]  # left padding: every row steps
        ids = np.array(tokens, np.int64)[:, None]
        mask = np.concatenate([self._mask, np.ones_like(ids)], axis=1)
        return self._run(ids, mask, self._positions + 1)

    def close(self) -> None:
        self.session = None
        self._past = []
