"""`load` and `Model`: the SDK's one entry point and one object.

Example:
    >>> import udrl
    >>> with udrl.load("model-q8_0.gguf") as model:                       # doctest: +SKIP
    ...     result = model.generate("poster for a jazz night", task="image", length=12)
    ...     print(result.text, result.words, result.decode_tok_s)
"""

from __future__ import annotations

import dataclasses
import numbers
import os
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from .backends import Backend, BackendOptions, open_backend
from .commands import Command, count_words, make_command
from .errors import BackendError, CommandError, UdrlError
from .generate import (
    GenerationOptions,
    GenerationResult,
    batch_fits,
    generate_batch_tokens,
    peak_rss_mb,
    prepare,
    stream_tokens,
)
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


class _SharedSequence:
    """One request's token sequence on a Model's backend, which holds one sequence at a time. When
    another request has used the backend since this one's last step (a paused stream), the next
    step prefills the whole sequence again, so streams can be paused, interleaved and abandoned
    without holding the Model."""

    def __init__(self, model: Model, backend: Backend):
        self.model, self.backend, self.ids = model, backend, []

    def prefill(self, ids: Sequence[int]) -> Any:
        self.ids = list(ids)
        self.model._owner = self
        return self.backend.prefill(self.ids)

    def step(self, token: int) -> Any:
        self.ids.append(token)
        if self.model._owner is not self:
            return self.prefill(self.ids)
        return self.backend.step(token)


class Stream:
    """The text of one request in pieces, as `Model.stream` returns it: iterate it, and read
    `result` (a `GenerationResult`) once it is exhausted. It holds the Model only while it computes
    a piece, never between pieces, so a stream that is not read to the end blocks nothing; `close()`
    or a ``with`` block ends it early."""

    def __init__(self, pieces: Callable[[Stream], Iterator[str]]):
        self.result: GenerationResult | None = None
        self._pieces = pieces(self)  # a generator that sets ``result`` when it ends

    def __iter__(self) -> Stream:
        return self

    def __next__(self) -> str:
        return next(self._pieces)

    def close(self) -> None:
        """Stop the stream; further iteration ends at once."""
        self._pieces.close()

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Model:
    """A loaded artifact. Thread-safe: a lock serialises the backend's work (one token step at a
    time per Model; streams hold it only while computing a piece), so for parallel generation
    open one Model per thread. Use as a context manager or call `close` to release native memory."""

    def __init__(self, backend: Backend, path: Path):
        self._backend: Backend | None = backend
        self.path = path
        self.manifest: Manifest = backend.manifest
        # Re-entrant: a caller may generate, or close the Model, from inside its own stream loop.
        self._lock = threading.RLock()
        self._owner: _SharedSequence | None = None  # whose sequence the backend's cache holds

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
               no_repeat_ngram: int = 2, focus: float | None = None) -> Stream:
        """Yield the output's text in pieces as it decodes (same text as `generate`). Returns a
        `Stream`: iterate it; ``close()`` or ``with`` ends it early; its ``result`` holds the
        `GenerationResult` once it is exhausted. The request is checked before the first piece."""
        command = make_command(self.manifest, task, length, reward)
        options = GenerationOptions(temperature, top_k, top_p, seed, max_tokens, length_guard, no_repeat_ngram,
                                    focus)
        with self._lock:
            prepare(self._live(), query, command, options.max_tokens)  # refuse a bad query now, not at next()
        return Stream(lambda stream: self._pieces(stream, query, command, options))

    def _pieces(self, stream: Stream, query: str, command: Command, options: GenerationOptions) -> Iterator[str]:
        stats: dict[str, Any] = {}
        inner: Iterator[str] | None = None
        while True:
            with self._lock:  # only while computing a piece: between pieces the Model is free
                backend = self._live()
                if inner is None:
                    inner = stream_tokens(backend, query, command, options, stats, _SharedSequence(self, backend))
                piece = next(inner, None)
            if piece is None:
                stream.result = self._result(query, command, stats)
                return
            yield piece

    def generate(self, query: str, *, task: str = "image", length: int | None = None, reward: int | None = None,
                 temperature: float = 0.0, top_p: float = 1.0, top_k: int = 0, seed: int | None = None,
                 max_tokens: int | None = None, length_guard: bool = True,
                 no_repeat_ngram: int = 2, focus: float | None = None) -> GenerationResult:
        """Write a prompt for ``query``: ``task`` (see `commands`), ``length`` in words (default: the
        task's usual length), ``reward`` relevance level (default: the highest). Greedy unless
        ``temperature`` > 0; the same ``seed`` gives the same output on the same backend.
        ``no_repeat_ngram=n`` forbids repeating any n tokens already generated, and starting the
        last word again: the default 2 stops the loops a small model falls into, such as a tag list
        repeating one tag or "poster poster"; 0 turns both off. ``focus`` is the query-focus bonus
        for the request's content words the output lacks (see `udrl.generate`; None: the model's
        default from its manifest, 0: off). Options of the wrong type or out of range raise
        `CommandError` naming the option."""
        command = make_command(self.manifest, task, length, reward)
        options = GenerationOptions(temperature, top_k, top_p, seed, max_tokens, length_guard, no_repeat_ngram,
                                    focus)
        stats: dict[str, Any] = {}
        with self._lock:
            backend = self._live()
            for _ in stream_tokens(backend, query, command, options, stats, _SharedSequence(self, backend)):
                pass
        return self._result(query, command, stats)

    def generate_batch(self, requests: Sequence[Request | dict], *, temperature: float = 0.0, top_p: float = 1.0,
                       top_k: int = 0, seed: int | None = None, max_tokens: int | None = None,
                       length_guard: bool = True, no_repeat_ngram: int = 2,
                       focus: float | None = None) -> list[GenerationResult]:
        """Several requests at once. On backends that batch (llama.cpp: one KV-cache sequence per
        request, up to 8 per ``llama_decode``; ONNX and torch: a batch axis with left padding), one
        forward pass per step for the whole batch; elsewhere one after another. Every request keeps
        its own token budget: one that would not fit beside the others runs alone. A bad request
        raises `CommandError` naming its index before anything runs. Greedy results match
        one-by-one `generate` except where two tokens are nearly tied and a batched matrix product
        rounds differently (measured in the README)."""
        items = [_request(i, r) for i, r in enumerate(_sequence_of_requests(requests))]
        if not items:
            return []
        options = GenerationOptions(temperature, top_k, top_p, seed, max_tokens, length_guard, no_repeat_ngram,
                                    focus)
        with self._lock:
            backend = self._live()
            commands, prepared = [], []
            for i, r in enumerate(items):
                try:
                    commands.append(make_command(self.manifest, r.task, r.length, r.reward))
                    prepared.append(prepare(backend, r.query, commands[-1], options.max_tokens))
                except CommandError as exc:
                    raise CommandError(f"request {i}: {exc}", index=i) from exc
            pairs = [(r.query, c) for r, c in zip(items, commands)]
            stats: list[dict[str, Any] | None] = [None] * len(items)
            alone = list(range(len(items)))
            if backend.can_batch and len(items) > 1:
                size = backend.max_batch or len(pairs)
                alone = []
                for start in range(0, len(pairs), size):
                    chunk = list(range(start, min(start + size, len(pairs))))
                    fits = batch_fits(backend, [prepared[i] for i in chunk])
                    together = [i for i, ok in zip(chunk, fits) if ok]
                    alone += [i for i, ok in zip(chunk, fits) if not ok]
                    if len(together) > 1:
                        one = dataclasses.replace(options, seed=None if seed is None else seed + start)
                        for i, s in zip(together, generate_batch_tokens(backend, [pairs[i] for i in together], one)):
                            stats[i] = s
                    else:
                        alone += together
                self._owner = None  # a batch reuses the backend's buffers: paused streams prefill again
            for i in sorted(alone):
                s: dict[str, Any] = {}
                one = dataclasses.replace(options, seed=None if seed is None else seed + i)
                for _ in stream_tokens(backend, pairs[i][0], pairs[i][1], one, s, _SharedSequence(self, backend)):
                    pass
                stats[i] = s
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
        """Release the runtime's memory. Further calls (and further pieces of open streams) raise
        `UdrlError`. Waits for a token step in progress on another thread, never for a stream."""
        with self._lock:
            if self._backend is not None:
                self._backend.close()
                self._backend = None
                self._owner = None

    def __enter__(self) -> Model:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        backend = getattr(self, "_backend", None)
        if backend is not None:
            backend.close()


def _sequence_of_requests(requests: object) -> Sequence[object]:
    if isinstance(requests, (str, bytes, Mapping, Request)) or not isinstance(requests, Sequence):
        raise CommandError("generate_batch takes a list of udrl.Request (or dicts with query, task, length, "
                           f"reward), got {type(requests).__name__}")
    return requests


def _request(index: int, item: object) -> Request:
    """A batch item as a `Request`; `CommandError` naming the item otherwise."""
    if isinstance(item, Request):
        return item
    if isinstance(item, Mapping):
        unknown = set(item) - {f.name for f in dataclasses.fields(Request)}
        if unknown or "query" not in item:
            raise CommandError(f"request {index}: a request dict has the keys query (required), task, length, "
                               f"reward; got {sorted(map(str, item))}", index=index)
        return Request(**item)
    raise CommandError(f"request {index} must be a udrl.Request or a dict, got {type(item).__name__}", index=index)


def load(path: str | os.PathLike[str] | None = None, backend: str = "auto", threads: int | None = None,
         device: str = "auto") -> Model:
    """Open an artifact (``.gguf``, ``.onnx``, ``.mlpackage`` or checkpoint directory; None: the
    bundled default) with ``backend`` ``auto`` | ``llama`` | ``onnx`` | ``torch`` | ``coreml``."""
    if path is not None and not isinstance(path, (str, os.PathLike)):
        raise UdrlError(f"path must be a file or directory path (str or os.PathLike), got {type(path).__name__}")
    p = Path(path) if path is not None else default_model_path()
    if not isinstance(backend, str):
        raise BackendError(f"backend must be a name (auto, llama, onnx, torch, coreml), got {backend!r}")
    if device not in ("auto", "cpu", "cuda", "metal"):
        raise UdrlError(f"device {device!r} is unknown; choose auto, cpu, cuda or metal")
    most = max_threads()
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, numbers.Integral)
                                or not 1 <= threads <= most):
        raise UdrlError(f"threads must be an integer from 1 to {most} (4 per CPU of this machine) or None "
                        f"(udrl's choice), got {threads!r}")
    return Model(open_backend(p, backend, BackendOptions(None if threads is None else int(threads), device)), p)


def max_threads() -> int:
    """The most CPU threads `load` accepts: more than 4 per CPU only slows a runtime down, and
    llama.cpp hangs or crashes when asked for thousands."""
    return 4 * (os.cpu_count() or 1)
