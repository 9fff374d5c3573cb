"""`load` and `Model`: the SDK's one entry point and one object.

Example:
    >>> import udrl
    >>> with udrl.load("model-q8_0.gguf") as model:                       # doctest: +SKIP
    ...     result = model.generate("poster for a jazz night", task="image", length=12)
    ...     print(result.text, result.words, result.decode_tok_s)
"""

from __future__ import annotations

import dataclasses
import os
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from .backends import Backend, BackendOptions, open_backend
from .commands import Command, count_words, make_command
from .errors import UdrlError
from .generate import GenerationOptions, GenerationResult, generate_batch_tokens, peak_rss_mb, stream_tokens
from .manifest import Manifest

DEFAULT_MODEL_DIR = Path(__file__).parent / "models"


def default_model_path() -> Path:
    """The model bundled inside the package (the first ``.gguf`` in ``udrl/models``)."""
    found = sorted(DEFAULT_MODEL_DIR.glob("*.gguf")) if DEFAULT_MODEL_DIR.is_dir() else []
    if not found:
        raise UdrlError(
            "this installation carries no bundled default model (udrl/models/*.gguf); "
            "pass the path of a .gguf, .onnx, .mlpackage or checkpoint directory to udrl.load()"
        )
    return found[0]


@dataclasses.dataclass(frozen=True)
class Request:
    """One item of `Model.generate_batch`."""

    query: str
    task: str = "image"
    length: int | None = None
    reward: int | None = None


@dataclasses.dataclass(frozen=True)
class CommandSpace:
    """What a model can be asked: its tasks, length range, reward levels and defaults."""

    tasks: tuple[str, ...]
    length_min: int
    length_max: int
    reward_levels: int
    default_length: dict[str, int]

    @property
    def reward_default(self) -> int:
        return self.reward_levels - 1


class Model:
    """A loaded artifact. Thread-safe: calls are serialised by a lock (one generation at a time per
    Model); for parallel generation open one Model per thread. Use as a context manager or call
    `close` to release native memory."""

    def __init__(self, backend: Backend, path: Path):
        self._backend: Backend | None = backend
        self.path = path
        self.manifest: Manifest = backend.manifest
        self._lock = threading.Lock()

    # -- introspection ---------------------------------------------------------------------------

    @property
    def backend(self) -> str:
        return self._live().name

    @property
    def commands(self) -> CommandSpace:
        m = self.manifest
        return CommandSpace(m.tasks, m.length_min, m.length_max, m.reward_levels, dict(m.default_length))

    def _live(self) -> Backend:
        if self._backend is None:
            raise UdrlError("this model is closed")
        return self._backend

    def __repr__(self) -> str:
        return f"Model({str(self.path)!r}, backend={self._backend.name if self._backend else 'closed'!r})"

    # -- generation --------------------------------------------------------------------------------

    def stream(self, query: str, *, task: str = "image", length: int | None = None, reward: int | None = None,
               temperature: float = 0.0, top_p: float = 1.0, top_k: int = 0, seed: int | None = None,
               max_tokens: int | None = None, length_guard: bool = True,
               no_repeat_ngram: int = 2, focus: float | None = None) -> Iterator[str]:
        """Yield the output's text in pieces as it decodes (same text as `generate`)."""
        command = make_command(self.manifest, task, length, reward)
        options = GenerationOptions(temperature, top_k, top_p, seed, max_tokens, length_guard, no_repeat_ngram,
                                    focus)
        with self._lock:
            yield from stream_tokens(self._live(), query, command, options, {})

    def generate(self, query: str, *, task: str = "image", length: int | None = None, reward: int | None = None,
                 temperature: float = 0.0, top_p: float = 1.0, top_k: int = 0, seed: int | None = None,
                 max_tokens: int | None = None, length_guard: bool = True,
                 no_repeat_ngram: int = 2, focus: float | None = None) -> GenerationResult:
        """Write a prompt for ``query``: ``task`` (see `commands`), ``length`` in words (default: the
        task's usual length), ``reward`` relevance level (default: the highest). Greedy unless
        ``temperature`` > 0; the same ``seed`` gives the same output on the same backend.
        ``no_repeat_ngram=n`` forbids repeating any n tokens already generated: the default 2 stops
        the loops a small model falls into, such as a tag list repeating one tag; 0 turns it off.
        ``focus`` is the query-focus bonus for the request's content words the output lacks (see
        `generate`; None: the model's default from its manifest, 0: off)."""
        command = make_command(self.manifest, task, length, reward)
        options = GenerationOptions(temperature, top_k, top_p, seed, max_tokens, length_guard, no_repeat_ngram,
                                    focus)
        stats: dict[str, Any] = {}
        with self._lock:
            for _ in stream_tokens(self._live(), query, command, options, stats):
                pass
        return self._result(query, command, stats)

    def generate_batch(self, requests: Sequence[Request | dict], *, temperature: float = 0.0, top_p: float = 1.0,
                       top_k: int = 0, seed: int | None = None, max_tokens: int | None = None,
                       length_guard: bool = True, no_repeat_ngram: int = 2,
                       focus: float | None = None) -> list[GenerationResult]:
        """Several requests at once: one batched forward pass per step on backends that batch (ONNX,
        torch); one after another elsewhere. Greedy results equal one-by-one `generate`."""
        items = [r if isinstance(r, Request) else Request(**r) for r in requests]
        if not items:
            return []
        commands = [make_command(self.manifest, r.task, r.length, r.reward) for r in items]
        options = GenerationOptions(temperature, top_k, top_p, seed, max_tokens, length_guard, no_repeat_ngram,
                                    focus)
        backend = self._live()
        with self._lock:
            if backend.can_batch and len(items) > 1:
                pairs = [(r.query, c) for r, c in zip(items, commands)]
                size = backend.max_batch or len(pairs)
                stats = []
                for start in range(0, len(pairs), size):
                    chunk = dataclasses.replace(options, seed=None if seed is None else seed + start)
                    stats += generate_batch_tokens(backend, pairs[start : start + size], chunk)
            else:
                stats = []
                for i, (r, c) in enumerate(zip(items, commands)):
                    s: dict[str, Any] = {}
                    one = dataclasses.replace(options, seed=None if seed is None else seed + i)
                    for _ in stream_tokens(backend, r.query, c, one, s):
                        pass
                    stats.append(s)
        return [self._result(r.query, c, s) for r, c, s in zip(items, commands, stats)]

    def _result(self, query: str, command: Command, stats: dict[str, Any]) -> GenerationResult:
        text = stats["text"]
        return GenerationResult(text=text, query=query, command=command, words=count_words(text),
                                prompt_tokens=stats["prompt_tokens"], completion_tokens=stats["completion_tokens"],
                                finish_reason=stats["finish_reason"], prompt_s=stats["prompt_s"],
                                first_token_s=stats["first_token_s"], total_s=stats["total_s"],
                                peak_rss_mb=peak_rss_mb())

    # -- lifetime ------------------------------------------------------------------------------------

    def close(self) -> None:
        """Release the runtime's memory. Further calls raise `UdrlError`."""
        with self._lock:
            if self._backend is not None:
                self._backend.close()
                self._backend = None

    def __enter__(self) -> Model:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        backend = getattr(self, "_backend", None)
        if backend is not None:
            backend.close()


def load(path: str | os.PathLike[str] | None = None, backend: str = "auto", threads: int | None = None,
         device: str = "auto") -> Model:
    """Open an artifact (``.gguf``, ``.onnx``, ``.mlpackage`` or checkpoint directory; None: the
    bundled default) with ``backend`` ``auto`` | ``llama`` | ``onnx`` | ``torch`` | ``coreml``."""
    p = Path(path) if path is not None else default_model_path()
    if device not in ("auto", "cpu", "cuda", "metal"):
        raise UdrlError(f"device {device!r} is unknown; choose auto, cpu, cuda or metal")
    if threads is not None and threads < 1:
        raise UdrlError(f"threads must be at least 1, got {threads}")
    return Model(open_backend(p, backend, BackendOptions(threads, device)), p)
