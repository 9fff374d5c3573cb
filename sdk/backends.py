"""Runtimes behind one protocol: llama.cpp (GGUF), ONNX Runtime (ONNX), torch (checkpoint
directory) and Core ML (``.mlpackage``, macOS only).

A backend owns a model and its tokenizer and exposes the few operations the generation loop in
`generate.py` needs: encode, decode, prefill a prompt, step one token, each returning the logits
of the last position. Backends with a batch axis (ONNX, torch) also implement `prefill_batch` /
`step_batch`; backends with several KV-cache sequences (llama.cpp) implement `decode_slots` /
`clear_slot`, which the continuous-batching `Scheduler` (scheduler.py) drives.
Backends register by name; `open_backend` picks one for an artifact.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from .artifacts import artifact_kind, read_manifest
from .errors import BackendError, ManifestError
from .manifest import Manifest


@dataclasses.dataclass(frozen=True)
class BackendOptions:
    """How to run: CPU threads (None: the runtime's choice), device (auto, cpu, cuda, metal), and
    how many requests a backend with KV-cache slots decodes together."""

    threads: int | None = None
    device: str = "auto"
    parallel: int = 8


class Backend:
    """The protocol every runtime implements (see the module docstring)."""

    name: ClassVar[str]
    kind: ClassVar[str]  # the artifact kind it opens: gguf, onnx, checkpoint, coreml
    extra: ClassVar[str]  # pip extra that installs the runtime ("" for a core dependency)
    requires: ClassVar[tuple[str, ...]] = ()  # modules the runtime needs, checked before it loads
    can_batch: ClassVar[bool] = False  # a batch axis: prefill_batch / step_batch
    max_batch: ClassVar[int | None] = None  # most requests per such batch (None: no limit)
    slots: int = 0  # KV-cache sequences that decode together (decode_slots); 0: none

    manifest: Manifest
    n_ctx: int

    @classmethod
    def unavailable(cls) -> str | None:
        """Why this runtime cannot run here (None when it can): checked before anything loads."""
        return None

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``, control tokens parsed as single tokens."""
        raise NotImplementedError

    def token_bytes(self, token: int) -> bytes:
        """The bytes a generated token adds to the text (b"" for special tokens). Generation joins
        them and decodes UTF-8 once per step, so a character split over tokens comes out whole."""
        raise NotImplementedError

    def prefill(self, ids: Sequence[int]) -> np.ndarray:
        """Forget any previous sequence, run the prompt, return the last position's logits."""
        raise NotImplementedError

    def step(self, token: int) -> np.ndarray:
        """Append one token, return the logits for the next."""
        raise NotImplementedError

    def prefill_batch(self, prompts: Sequence[Sequence[int]]) -> np.ndarray:
        """Batched prefill: logits [batch, vocab]. Only where ``can_batch``."""
        raise NotImplementedError

    def step_batch(self, tokens: Sequence[int | None]) -> np.ndarray:
        """One token per sequence of the batch (None for a finished one): logits [batch, vocab];
        a finished sequence's row is meaningless."""
        raise NotImplementedError

    def decode_slots(self, work: Sequence[tuple[int, Sequence[int]]]) -> np.ndarray:
        """Several sequences at once: each (slot, tokens) appends ``tokens`` to that slot's sequence
        (a whole prompt for a slot just cleared, one token for a running one). Returns the logits
        after each item's last token, [len(work), vocab]. Only where ``slots``."""
        raise NotImplementedError

    def clear_slot(self, slot: int) -> None:
        """Forget a slot's sequence, so that a new request can start in it."""
        raise NotImplementedError

    def release_threads(self) -> None:
        """Free the runtime's worker threads that belong to the calling thread (before another
        thread computes in its place); a no-op where the runtime keeps none."""

    def batch_room(self, prompt_lengths: Sequence[int]) -> list[int]:
        """Per prompt of a batch, how many tokens it may generate. Left padding aligns every
        prompt's end, so by default the longest prompt bounds them all."""
        room = self.n_ctx - max(prompt_lengths)
        return [room] * len(prompt_lengths)

    def close(self) -> None:
        """Release native memory; the backend cannot be used afterwards."""


def left_pad(prompts: Sequence[Sequence[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ids, attention mask, position ids) [batch, width] with every prompt ending in the last column,
    so that a batch decodes one new column per step."""
    width = max(map(len, prompts))
    ids = np.full((len(prompts), width), pad_id, np.int64)
    mask = np.zeros((len(prompts), width), np.int64)
    for i, p in enumerate(prompts):
        ids[i, width - len(p):] = p
        mask[i, width - len(p):] = 1
    return ids, mask, np.clip(mask.cumsum(-1) - 1, 0, None)


def _gpt2_byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level alphabet (printable stand-ins for the 256 bytes), inverted."""
    kept = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = {b: chr(b) for b in kept}
    extra = 0
    for b in range(256):
        if b not in chars:
            chars[b] = chr(256 + extra)
            extra += 1
    return {c: b for b, c in chars.items()}


class TokenPieces:
    """Bytes of single tokens of a byte-level BPE ``tokenizers.Tokenizer``, cached."""

    _decoder = _gpt2_byte_decoder()

    def __init__(self, tokenizer: Any, special_ids: Sequence[int]):
        self.tokenizer = tokenizer
        self.cache: dict[int, bytes] = {i: b"" for i in special_ids}

    def __call__(self, token: int) -> bytes:
        piece = self.cache.get(token)
        if piece is None:
            text = self.tokenizer.id_to_token(token) or ""
            if all(c in self._decoder for c in text):
                piece = bytes(self._decoder[c] for c in text)
            else:  # not a byte-level vocabulary: let the tokenizer's decoder say
                piece = self.tokenizer.decode([token], skip_special_tokens=True).encode("utf-8")
            self.cache[token] = piece
        return piece


BACKENDS: dict[str, type[Backend]] = {}
_MODULES = {"llama": ".backend_llama", "onnx": ".backend_onnx", "torch": ".backend_torch", "coreml": ".backend_coreml"}
_DEFAULT_FOR_KIND = {"gguf": "llama", "onnx": "onnx", "checkpoint": "torch", "coreml": "coreml"}


def register(cls: type[Backend]) -> type[Backend]:
    BACKENDS[cls.name] = cls
    return cls


def _backend_class(name: str) -> type[Backend]:
    if name not in _MODULES:
        raise BackendError(f"unknown backend {name!r}; choose one of: auto, {', '.join(_MODULES)}")
    if name not in BACKENDS:
        import importlib

        importlib.import_module(_MODULES[name], __package__)
    return BACKENDS[name]


def open_backend(path: str | os.PathLike[str], backend: str = "auto",
                 options: BackendOptions = BackendOptions()) -> Backend:
    """Open an artifact with the named backend (``auto``: the one its format needs)."""
    p = Path(path)
    kind = artifact_kind(p)
    name = _DEFAULT_FOR_KIND[kind] if backend == "auto" else backend
    cls = _backend_class(name)
    reason = cls.unavailable()
    if reason:
        raise BackendError(reason)
    for module in cls.requires:
        require(module, cls.extra)
    if cls.kind != kind:
        raise BackendError(f"backend {name!r} runs {cls.kind} artifacts, but {p} is {kind}; "
                           f"use backend='auto' (which picks {_DEFAULT_FOR_KIND[kind]!r})")
    manifest = read_manifest(p)  # refuses artifacts without a valid manifest, before loading weights
    opener: Callable[..., Backend] = cls  # each backend's __init__(path, manifest, options)
    opened = opener(p, manifest, options)
    try:
        check_control_tokens(opened, p)
    except BaseException:
        opened.close()
        raise
    return opened


def check_control_tokens(backend: Backend, path: Path) -> None:
    """Every control string must encode to its one manifest id: a tokenizer that splits them
    (a control token typed as a normal word) would feed the model text instead of commands."""
    for token in backend.manifest.special_tokens:
        got = backend.encode(token)
        want = backend.manifest.token_ids.get(token)
        if got != [want]:
            raise ManifestError(f"{path}: the tokenizer encodes the control token {token!r} as {got[:8]}, not as "
                                f"its manifest id [{want}]; the file is corrupted or was not written by "
                                "`udrl export`: export it again")


def require(module: str, extra: str) -> None:
    """Raise `BackendError` naming the pip extra when a runtime package is missing."""
    import importlib.util

    if importlib.util.find_spec(module) is None:
        how = f"pip install 'udrl-edge[{extra}]'" if extra else "pip install udrl-edge (a core dependency is missing)"
        raise BackendError(f"this backend needs {module}: {how}")
