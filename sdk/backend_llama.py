"""llama.cpp (through llama-cpp-python) for GGUF artifacts."""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .backends import Backend, BackendOptions, register
from .errors import BackendError
from .manifest import Manifest


_GGML_LOG_LEVEL_ERROR = 4  # ggml.h, enum ggml_log_level
_LOG_CALLBACK = None


def _quiet_llama_logs(llama_cpp) -> None:
    """Route llama.cpp's own log lines (context sizes, loader notes) away; keep its errors."""
    global _LOG_CALLBACK
    if _LOG_CALLBACK is None:

        @llama_cpp.llama_log_callback
        def callback(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
            if level == _GGML_LOG_LEVEL_ERROR:
                sys.stderr.write(text.decode("utf-8", errors="replace"))

        _LOG_CALLBACK = callback  # a module reference keeps ctypes from freeing it
        llama_cpp.llama_log_set(_LOG_CALLBACK, ctypes.c_void_p(0))


@register
class LlamaCppBackend(Backend):
    name = "llama"
    kind = "gguf"
    extra = "llama-cpp-python"

    def __init__(self, path: Path, manifest: Manifest, options: BackendOptions):
        import llama_cpp

        self._llama_cpp = llama_cpp
        _quiet_llama_logs(llama_cpp)
        self.manifest = manifest
        self.n_ctx = int(manifest.model.get("n_ctx") or 512)
        threads = options.threads or min(4, os.cpu_count() or 1)
        gpu_layers = 0 if options.device == "cpu" else -1  # offload everything where a GPU build exists
        try:
            self.llm = llama_cpp.Llama(model_path=str(path), n_ctx=self.n_ctx, n_batch=self.n_ctx,
                                       n_threads=threads, n_threads_batch=threads, n_gpu_layers=gpu_layers,
                                       logits_all=False, verbose=False)
        except ValueError as exc:
            raise BackendError(f"llama.cpp cannot load {path}: {exc}") from None
        self._n_vocab = self.llm.n_vocab()
        self._special = set(manifest.token_ids.values())

    def encode(self, text: str) -> list[int]:
        return self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)

    def decode(self, ids: Sequence[int]) -> str:
        ids = [i for i in ids if i not in self._special]
        return self.llm.detokenize(ids).decode("utf-8", errors="replace")

    def _last_logits(self) -> np.ndarray:
        ptr = self._llama_cpp.llama_get_logits_ith(self.llm.ctx, -1)
        return np.ctypeslib.as_array(ptr, shape=(self._n_vocab,)).copy()

    def prefill(self, ids: Sequence[int]) -> np.ndarray:
        self.llm.reset()
        self.llm.eval(list(ids))
        return self._last_logits()

    def step(self, token: int) -> np.ndarray:
        self.llm.eval([token])
        return self._last_logits()

    def close(self) -> None:
        if getattr(self, "llm", None) is not None:
            self.llm.close()
            self.llm = None
