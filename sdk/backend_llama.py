"""llama.cpp (through llama-cpp-python) for GGUF artifacts."""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .backends import Backend, BackendOptions, register
from .errors import BackendError
from .manifest import Manifest

_GGML_LOG_LEVEL_ERROR = 4  # ggml.h, enum ggml_log_level
_LOG_CALLBACK = None


def quiet_llama_logs(llama_cpp) -> None:
    """Route llama.cpp's own log lines (context sizes, loader notes) away; keep its errors."""
    global _LOG_CALLBACK
    if _LOG_CALLBACK is None:

        @llama_cpp.llama_log_callback
        def callback(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
            if level == _GGML_LOG_LEVEL_ERROR:
                sys.stderr.write(text.decode("utf-8", errors="replace"))

        _LOG_CALLBACK = callback  # a module reference keeps ctypes from freeing it
        llama_cpp.llama_log_set(_LOG_CALLBACK, ctypes.c_void_p(0))


_OPEN_LOCK = threading.Lock()
MAX_AUTO_THREADS = 4  # a model this small gains nothing from more


def other_runnable_threads() -> int | None:
    """How many threads of other processes are runnable right now (Linux: /proc/loadavg's running
    count less this process's own running threads, which include llama.cpp workers still spinning
    after the last step); None where the system does not say."""
    try:
        with open("/proc/loadavg", encoding="ascii") as f:
            total = int(f.read().split()[3].split("/")[0])
        own = 0
        for task in os.scandir("/proc/self/task"):
            try:
                with open(os.path.join(task.path, "stat"), encoding="ascii", errors="replace") as f:
                    own += f.read().rsplit(")", 1)[1].split()[0] == "R"
            except (OSError, IndexError):
                continue
    except (OSError, ValueError, IndexError):
        return None
    return max(0, total - own)


def auto_threads(cpus: int | None = None) -> int:
    """Threads for the next request when the caller chose none: every CPU that nothing else wants,
    at least 1, at most `MAX_AUTO_THREADS`. llama.cpp's threads meet at a barrier after every
    operation, so a thread that has to share its core with another process stalls its partner:
    on two busy cores, two threads took 3 to 100 times longer per request than one (README)."""
    cpus = cpus or os.cpu_count() or 1
    others = other_runnable_threads()
    free = cpus if others is None else cpus - others
    return max(1, min(MAX_AUTO_THREADS, free))


def cpu_repacks_for_amx(llama_cpp) -> bool:
    """Whether llama.cpp would move weights into its AMX buffers on this CPU. Its AMX matrix
    kernel segfaults on the first decode (llama.cpp issue 20824, seen here on a Sapphire Rapids
    VM with q8_0 and f32 models), so udrl loads models without llama.cpp's extra buffer types
    there: the plain CPU kernels, a little slower, never crash. native/udrl.c applies the same rule."""
    return b"AMX_INT8 = 1" in (llama_cpp.llama_print_system_info() or b"")


@contextlib.contextmanager
def plain_weight_buffers(llama_cpp) -> Iterator[None]:
    """While active, every ``llama_cpp.Llama`` made in this process keeps its weights out of the
    AMX buffers where `cpu_repacks_for_amx` (a no-op elsewhere); wraps, e.g., llama-cpp-python's server."""
    # llama_cpp.Llama builds its model parameters inside __init__ from llama_model_default_params;
    # wrapping that one call is the only way to set use_extra_bufts through the high-level object.
    if not cpu_repacks_for_amx(llama_cpp):
        yield
        return
    module = llama_cpp.llama_cpp
    original = module.llama_model_default_params

    def without_extra_buffers():
        params = original()
        params.use_extra_bufts = False
        return params

    with _OPEN_LOCK:
        module.llama_model_default_params = without_extra_buffers
        try:
            yield
        finally:
            module.llama_model_default_params = original


def open_llama(model_path: str | os.PathLike[str], **kwargs: Any):
    """``llama_cpp.Llama(model_path, **kwargs)``, safe on CPUs whose AMX kernels crash
    (`cpu_repacks_for_amx`). Every udrl module that opens a GGUF with llama-cpp-python uses this."""
    import llama_cpp

    with plain_weight_buffers(llama_cpp):
        return llama_cpp.Llama(model_path=str(model_path), **kwargs)


def token_piece(llama_cpp: Any, vocab: Any, token: int) -> bytes:
    """The bytes token ``token`` adds to the text (llama_token_to_piece, special tokens as "")."""
    buffer = ctypes.create_string_buffer(64)  # per call: requests are prepared on several threads
    n = llama_cpp.llama_token_to_piece(vocab, token, buffer, len(buffer), 0, False)
    if n < 0:  # longer than the buffer: llama.cpp says how long
        buffer = ctypes.create_string_buffer(-n)
        n = llama_cpp.llama_token_to_piece(vocab, token, buffer, len(buffer), 0, False)
    return buffer.raw[:n]


_GOMP: Any = None


def openmp_runtime(llama_cpp) -> Any:
    """libgomp, where this llama.cpp build uses OpenMP (None elsewhere, e.g. Apple builds).
    libgomp keeps a team of worker threads per thread that ever ran llama.cpp; with more of them
    than CPUs it stops spinning at barriers, and every token gets about 3 times slower
    (`udrl bench --serve` measures it), so a thread that hands the computing over frees its team
    (`omp_pause_resource_all`, OpenMP 5.0)."""
    global _GOMP
    if _GOMP is None:
        _GOMP = False
        if b"OPENMP = 1" in (llama_cpp.llama_print_system_info() or b""):
            import ctypes.util

            name = ctypes.util.find_library("gomp")
            try:
                lib = ctypes.CDLL(name or "libgomp.so.1")
                lib.omp_pause_resource_all.argtypes = [ctypes.c_int]
                _GOMP = lib
            except (OSError, AttributeError):
                pass
    return _GOMP or None


class LlamaSequences:
    """A llama.cpp context holding ``n_seq`` sequences of up to ``n_ctx`` tokens each, decoded
    together: the SDK's KV-cache slots and the batched teacher both run on it.

    Each sequence has its own cells, and attention is flash attention, which visits a sequence's
    cells in order: a sequence's logits then do not depend on who else is in the batch (200 of 200
    greedy texts equal to one by one), and native/udrl.c uses the same kernels, so both layers break
    a near-tie between two tokens the same way. Flash attention made one request faster (59.0 to
    80.5 requests/s one after another in the serve benchmark); a cache shared by the sequences
    would add speed (1.56x against 1.28x for a batch, once) but changed 10 of 200 texts with the
    batch's company."""

    def __init__(self, llama_cpp: Any, model: Any, n_seq: int, n_ctx: int, threads: int):
        lc = self._lc = llama_cpp
        params = lc.llama_context_default_params()
        params.n_seq_max = n_seq
        params.n_ctx = n_ctx * n_seq
        params.n_batch = params.n_ubatch = n_ctx * n_seq
        params.n_threads = params.n_threads_batch = threads
        params.kv_unified = False
        params.flash_attn_type = lc.LLAMA_FLASH_ATTN_TYPE_ENABLED
        self.ctx = lc.llama_init_from_model(model, params)
        if not self.ctx:
            raise BackendError("llama.cpp could not create a context for parallel sequences (out of memory?)")
        self.n_ctx, self.n_vocab = n_ctx, lc.llama_vocab_n_tokens(lc.llama_model_get_vocab(model))
        self.positions = [0] * n_seq

    def set_threads(self, threads: int) -> None:
        self._lc.llama_set_n_threads(self.ctx, threads, threads)

    def clear(self, seq: int) -> None:
        """Forget sequence ``seq``, so that a new one can start in it."""
        self._lc.llama_memory_seq_rm(self._lc.llama_get_memory(self.ctx), seq, -1, -1)
        self.positions[seq] = 0

    def copy(self, source: int, target: int) -> None:
        """Make sequence ``target`` a copy of ``source`` (its cached tokens), to go on from there."""
        self.clear(target)
        self._lc.llama_memory_seq_cp(self._lc.llama_get_memory(self.ctx), source, target, -1, -1)
        self.positions[target] = self.positions[source]

    def decode(self, work: Sequence[tuple[int, Sequence[int]]]) -> np.ndarray:
        """Each (sequence, tokens) appends ``tokens`` to that sequence; returns the logits after each
        item's last token, [len(work), vocab]. The single tokens of running sequences go through one
        forward pass together; each prompt through one of its own: llama.cpp splits a batch whose
        sequences bring different token counts into chunks of equal counts, and a prompt cut into
        chunks beside others came out with different logits (up to 0.65 on the Gemma teacher) than
        the same prompt alone."""
        steps = [i for i, (_, tokens) in enumerate(work) if len(tokens) == 1]
        prompts = [i for i, (_, tokens) in enumerate(work) if len(tokens) != 1]
        out = np.empty((len(work), self.n_vocab), np.float32)
        for group in [[i] for i in prompts] + ([steps] if steps else []):
            out[group] = self._forward([work[i] for i in group])
        return out

    def _forward(self, work: Sequence[tuple[int, Sequence[int]]]) -> np.ndarray:
        lc = self._lc
        n_tokens = sum(len(tokens) for _, tokens in work)
        batch = lc.llama_batch_init(n_tokens, 0, 1)
        try:
            rows, j = [], 0
            for seq, tokens in work:
                pos = self.positions[seq]
                if pos + len(tokens) > self.n_ctx:  # the callers' budgets prevent this; llama.cpp would abort
                    raise BackendError(f"sequence {seq} would run past its {self.n_ctx}-token context")
                for k, token in enumerate(tokens):
                    batch.token[j], batch.pos[j], batch.n_seq_id[j] = token, pos + k, 1
                    batch.seq_id[j][0] = seq
                    batch.logits[j] = k == len(tokens) - 1
                    j += 1
                rows.append(j - 1)
                self.positions[seq] = pos + len(tokens)
            batch.n_tokens = n_tokens
            rc = lc.llama_decode(self.ctx, batch)
            if rc != 0:
                raise BackendError(f"llama_decode failed on {len(work)} sequences, {n_tokens} tokens (code {rc})")
        finally:
            lc.llama_batch_free(batch)
        out = np.empty((len(work), self.n_vocab), np.float32)
        for i, j in enumerate(rows):
            out[i] = np.ctypeslib.as_array(lc.llama_get_logits_ith(self.ctx, j), shape=(self.n_vocab,))
        return out

    def close(self) -> None:
        if self.ctx:
            self._lc.llama_free(self.ctx)
            self.ctx = None


@register
class LlamaCppBackend(Backend):
    name = "llama"
    kind = "gguf"
    extra = ""  # llama-cpp-python is a core dependency
    requires = ("llama_cpp",)

    def __init__(self, path: Path, manifest: Manifest, options: BackendOptions):
        import llama_cpp

        self._llama_cpp = llama_cpp
        quiet_llama_logs(llama_cpp)
        self.manifest = manifest
        self.n_ctx = int(manifest.model.get("n_ctx") or 512)
        # threads=None: chosen per request from the CPUs other processes leave free (`auto_threads`).
        self._auto = options.threads is None
        threads = options.threads or min(MAX_AUTO_THREADS, os.cpu_count() or 1)
        gpu_layers = 0 if options.device == "cpu" else -1  # offload everything where a GPU build exists
        try:
            self.llm = open_llama(path, n_ctx=self.n_ctx, n_batch=self.n_ctx,
                                       n_threads=threads, n_threads_batch=threads, n_gpu_layers=gpu_layers,
                                       logits_all=False, verbose=False)
        except ValueError as exc:
            raise BackendError(f"llama.cpp cannot load {path}: {exc}") from None
        self._n_vocab = self.llm.n_vocab()
        self._special = set(manifest.token_ids.values())
        self._vocab = llama_cpp.llama_model_get_vocab(self.llm.model)
        self._pieces: dict[int, bytes] = {i: b"" for i in self._special}
        self._threads = threads
        # A second context with one KV-cache sequence per parallel request, made on first use.
        self.slots = options.parallel
        self._slot_ctx: LlamaSequences | None = None

    def encode(self, text: str) -> list[int]:
        return self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)

    def token_bytes(self, token: int) -> bytes:
        piece = self._pieces.get(token)
        if piece is None:
            piece = self._pieces[token] = token_piece(self._llama_cpp, self._vocab, token)
        return piece

    def _last_logits(self) -> np.ndarray:
        ptr = self._llama_cpp.llama_get_logits_ith(self.llm.ctx, -1)
        return np.ctypeslib.as_array(ptr, shape=(self._n_vocab,)).copy()

    def _choose_threads(self) -> None:
        if not self._auto:
            return
        threads = auto_threads()
        if threads != self._threads:
            self._threads = threads
            self._llama_cpp.llama_set_n_threads(self.llm.ctx, threads, threads)
            if self._slot_ctx is not None:
                self._slot_ctx.set_threads(threads)

    def prefill(self, ids: Sequence[int]) -> np.ndarray:
        self._choose_threads()
        self.llm.reset()
        self.llm.eval(list(ids))
        return self._last_logits()

    def step(self, token: int) -> np.ndarray:
        self.llm.eval([token])
        return self._last_logits()

    # -- slots: llama.cpp sequences, one per request, decoded together (continuous batching) -------

    def _sequences(self) -> LlamaSequences:
        if self._slot_ctx is None:
            self._slot_ctx = LlamaSequences(self._llama_cpp, self.llm.model, self.slots, self.n_ctx, self._threads)
        return self._slot_ctx

    def clear_slot(self, slot: int) -> None:
        self._sequences().clear(slot)

    def decode_slots(self, work: Sequence[tuple[int, Sequence[int]]]) -> np.ndarray:
        sequences = self._sequences()
        if any(len(tokens) > 1 for _, tokens in work):  # as prefill: per request that joins, not per token
            self._choose_threads()
        return sequences.decode(work)

    def release_threads(self) -> None:
        gomp = openmp_runtime(self._llama_cpp)
        if gomp is not None:
            gomp.omp_pause_resource_all(1)  # omp_pause_soft: this thread's team of workers exits

    def close(self) -> None:
        if self._slot_ctx is not None:
            self._slot_ctx.close()
            self._slot_ctx = None
        if getattr(self, "llm", None) is not None:
            self.llm.close()
            self.llm = None
