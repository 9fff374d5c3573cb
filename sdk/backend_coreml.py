"""Core ML for ``.mlpackage`` artifacts (macOS only: Core ML prediction does not exist elsewhere).

Uses the stateful variant's KV cache when the package has one, else re-runs the sequence.
"""

from __future__ import annotations

import platform
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .backends import Backend, BackendOptions, TokenPieces, register
from .manifest import TOKENIZER_METADATA_KEY, Manifest


@register
class CoreMLBackend(Backend):
    name = "coreml"
    kind = "coreml"
    extra = "coreml"
    requires = ("coremltools", "tokenizers")

    @classmethod
    def unavailable(cls) -> str | None:
        if platform.system() != "Darwin":
            return (f"Core ML runs only on macOS/iOS; on {platform.system()} use the GGUF (backend 'llama') "
                    "or ONNX (backend 'onnx') export of the same model")
        return None

    def __init__(self, path: Path, manifest: Manifest, options: BackendOptions):
        import coremltools as ct
        from tokenizers import Tokenizer

        units = ct.ComputeUnit.CPU_ONLY if options.device == "cpu" else ct.ComputeUnit.ALL
        self.mlmodel = ct.models.MLModel(str(path), compute_units=units)
        spec = self.mlmodel.get_spec()
        self.tokenizer = Tokenizer.from_str(dict(spec.description.metadata.userDefined)[TOKENIZER_METADATA_KEY])
        self.stateful = len(spec.description.state) > 0
        self.manifest = manifest
        self._pieces = TokenPieces(self.tokenizer, list(manifest.token_ids.values()))
        self.n_ctx = int(manifest.model["n_ctx"])
        self._ids: list[int] = []
        self._state = None

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def token_bytes(self, token: int) -> bytes:
        return self._pieces(token)

    def _predict(self, new: list[int]) -> np.ndarray:
        if self.stateful:
            past = len(self._ids) - len(new)
            mask = np.zeros((len(new), past + len(new)), np.float16)
            rows, cols = np.triu_indices(len(new), k=1)
            mask[rows, past + cols] = -1e4
            out = self.mlmodel.predict({"input_ids": np.array([new], np.int32), "causal_mask": mask[None, None]},
                                       state=self._state)
        else:
            out = self.mlmodel.predict({"input_ids": np.array([self._ids], np.int32)})
        return np.asarray(out["logits"], np.float32)[0, -1]

    def prefill(self, ids: Sequence[int]) -> np.ndarray:
        self._ids = list(ids)
        self._state = self.mlmodel.make_state() if self.stateful else None
        return self._predict(list(ids))

    def step(self, token: int) -> np.ndarray:
        self._ids.append(token)
        return self._predict([token])

    def close(self) -> None:
        self.mlmodel = None
        self._state = None
