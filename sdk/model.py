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
import queue
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from .backends import Backend, BackendOptions, open_backend
from .commands import Command, make_command
from .errors import BackendError, CommandError, UdrlError
from .generate import (
    DEFAULTS,
    GenerationOptions,
    GenerationResult,
    Job,
    batch_fits,
    decode_batch,
    result_of,
)
from .manifest import Manifest
from .scheduler import Batcher, Ticket

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


def named_model_path(name: str | os.PathLike[str]) -> Path:
    """A model named on a command line (``udrl train --init``, ``udrl eval --before``): ``default``
    is the bundled model, anything else a path."""
    return default_model_path() if str(name) == "default" else Path(name)


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


_END = object()  # a stream's queue ends with this


class Stream:
    """The text of one request in pieces, as `Model.stream` returns it: iterate it, and read
    `result` (a `GenerationResult`) once it is exhausted. Reading it computes (for every request
    of the Model, when no other thread is computing); a stream that is not read to the end blocks
    nothing, and others' calls carry it along. `close()` or a ``with`` block cancels it."""

    def __init__(self, model: Model, submit: Callable[..., Ticket]):
        self.result: GenerationResult | None = None
        self._model = model
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._ticket = submit(on_piece=self._queue.put, on_done=lambda _: self._queue.put(_END))
        self._ended = False

    def __iter__(self) -> Stream:
        return self

    def __next__(self) -> str:
        if self._ended:
            raise StopIteration
        _, batcher = self._model._engine()  # a closed Model's streams end with an error, not buffered text
        batcher.drive(lambda: not self._queue.empty())
        item = self._queue.get()
        if item is _END:
            self._ended = True
            self.result = self._ticket.result()  # raises what stopped the request, if anything did
            raise StopIteration
        return item

    def close(self) -> None:
        """Stop the stream (its request is cancelled); further iteration ends at once."""
        if not self._ended:
            self._ended = True
            self._ticket.cancel()

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Model:
    """A loaded artifact. Thread-safe, and batching: every request (`generate`, `stream`,
    `generate_batch`, `submit`) goes to the Model's continuous-batching scheduler (scheduler.py),
    where requests from any number of threads decode side by side, up to ``parallel`` per forward
    pass on llama.cpp (one at a time elsewhere). The thread that waits for a result computes, for
    every request in flight, while no other thread does; after `start_batching_thread`, a thread of
    the Model's own does. Use as a context manager or call `close` to release native memory."""

    def __init__(self, backend: Backend, path: Path):
        self._backend: Backend | None = backend
        self.path = path
        self.manifest: Manifest = backend.manifest
        self._lock = threading.Lock()  # guards starting the batching thread and closing
        self._batcher: Batcher | None = None  # started by the first request

    # -- introspection ---------------------------------------------------------------------------

    @property
    def backend(self) -> str:
        return self._live().name

    @property
    def commands(self) -> CommandSpace:
        m = self.manifest
        return CommandSpace(m.tasks, m.length_min, m.length_max, m.reward_levels, dict(m.default_length))

    @property
    def in_flight(self) -> int:
        """Requests submitted and not yet ended (waiting for a slot or decoding)."""
        batcher = self._batcher
        return batcher.pending if batcher is not None else 0

    def _live(self) -> Backend:
        if self._backend is None:
            raise UdrlError("this model is closed")
        return self._backend

    def _engine(self) -> tuple[Backend, Batcher]:
        with self._lock:
            return self._engine_locked()

    def _engine_locked(self) -> tuple[Backend, Batcher]:
        backend = self._live()
        if self._batcher is None:
            self._batcher = Batcher(backend)
        return backend, self._batcher

    def _jobs(self, requests: Sequence[tuple[str, Command, GenerationOptions]],
              indexed: bool) -> tuple[Backend, Batcher, list[Job]]:
        """Prepared requests (tokenized under the lock, so that `close` cannot free the tokenizer
        meanwhile); with ``indexed``, a bad one's `CommandError` names its index."""
        with self._lock:
            backend, batcher = self._engine_locked()
            jobs = []
            for i, (query, command, options) in enumerate(requests):
                try:
                    jobs.append(Job(backend, query, command, options))
                except CommandError as exc:
                    if not indexed:
                        raise
                    raise CommandError(f"request {i}: {exc}", index=i) from exc
        return backend, batcher, jobs

    def _wait(self, ticket: Ticket) -> GenerationResult:
        _, batcher = self._engine()
        if batcher.computing_here:
            ticket.cancel()
            raise UdrlError("the Model cannot be waited on inside its own on_piece or on_done callback; "
                            "use submit() there")
        return ticket.result()

    def start_batching_thread(self) -> None:
        """From now on, compute on a thread of the Model's own, so that requests from `submit`
        decode with nobody waiting for them (`udrl serve` does this). Without it, the threads that
        wait for results compute; prefer that where the program also calls llama.cpp itself (see
        `scheduler.Batcher`)."""
        self._engine()[1].start_thread()

    def __repr__(self) -> str:
        return f"Model({str(self.path)!r}, backend={self._backend.name if self._backend else 'closed'!r})"

    # -- generation --------------------------------------------------------------------------------

    def submit(self, query: str, *, task: str = "image", length: int | None = None, reward: int | None = None,
               temperature: float = DEFAULTS.temperature, top_k: int = DEFAULTS.top_k,
               top_p: float = DEFAULTS.top_p, seed: int | None = DEFAULTS.seed,
               max_tokens: int | None = DEFAULTS.max_tokens, length_guard: bool = DEFAULTS.length_guard,
               no_repeat_ngram: int = DEFAULTS.no_repeat_ngram, focus: float | None = DEFAULTS.focus,
               whole_words: bool = DEFAULTS.whole_words,
               on_piece: Callable[[str], None] | None = None,
               on_done: Callable[[Ticket], None] | None = None) -> Ticket:
        """Queue a request for **continuous batching** and return at once with a `Ticket`
        (``ticket.result()`` waits for the `GenerationResult`; ``ticket.cancel()`` frees its slot at
        the next token). Requests submitted from any number of threads decode together, up to
        ``parallel`` per forward pass (see `load`), joining and leaving at token boundaries; each
        keeps its own budget and decoding rules. Options as `generate`; a bad request raises
        `CommandError` here. It decodes while some thread waits on this Model (a ticket's
        ``result()``, `generate`, a stream) or, after `start_batching_thread`, on the Model's own
        thread. ``on_piece(text)`` receives the text in pieces and ``on_done(ticket)`` the end, on
        the computing thread: keep them short."""
        command = make_command(self.manifest, task, length, reward)
        options = GenerationOptions(temperature=temperature, top_k=top_k, top_p=top_p, seed=seed,
                                    max_tokens=max_tokens, length_guard=length_guard,
                                    no_repeat_ngram=no_repeat_ngram, focus=focus, whole_words=whole_words)
        _, batcher, (job,) = self._jobs([(query, command, options)], indexed=False)
        return batcher.submit(job, on_piece, on_done)

    def stream(self, query: str, *, task: str = "image", length: int | None = None, reward: int | None = None,
               temperature: float = DEFAULTS.temperature, top_k: int = DEFAULTS.top_k,
               top_p: float = DEFAULTS.top_p, seed: int | None = DEFAULTS.seed,
               max_tokens: int | None = DEFAULTS.max_tokens, length_guard: bool = DEFAULTS.length_guard,
               no_repeat_ngram: int = DEFAULTS.no_repeat_ngram, focus: float | None = DEFAULTS.focus,
               whole_words: bool = DEFAULTS.whole_words) -> Stream:
        """Yield the output's text in pieces as it decodes (same text as `generate`). Returns a
        `Stream`: iterate it; ``close()`` or ``with`` ends it early; its ``result`` holds the
        `GenerationResult` once it is exhausted. The request is checked before the first piece."""
        options = dict(task=task, length=length, reward=reward, temperature=temperature, top_k=top_k, top_p=top_p,
                       seed=seed, max_tokens=max_tokens, length_guard=length_guard,
                       no_repeat_ngram=no_repeat_ngram, focus=focus, whole_words=whole_words)
        return Stream(self, lambda **callbacks: self.submit(query, **options, **callbacks))

    def generate(self, query: str, *, task: str = "image", length: int | None = None, reward: int | None = None,
                 temperature: float = DEFAULTS.temperature, top_k: int = DEFAULTS.top_k,
                 top_p: float = DEFAULTS.top_p, seed: int | None = DEFAULTS.seed,
                 max_tokens: int | None = DEFAULTS.max_tokens, length_guard: bool = DEFAULTS.length_guard,
                 no_repeat_ngram: int = DEFAULTS.no_repeat_ngram,
                 focus: float | None = DEFAULTS.focus, whole_words: bool = DEFAULTS.whole_words) -> GenerationResult:
        """Write a prompt for ``query``: ``task`` (see `commands`), ``length`` in words (default: the
        task's usual length), ``reward`` relevance level (default: the highest). Greedy unless
        ``temperature`` > 0; the same ``seed`` gives the same output on the same backend.
        ``no_repeat_ngram=n`` forbids repeating any n tokens already generated, starting the last
        word again and a content word a third time: the default 2 stops the loops a small model
        falls into, such as a tag list repeating one tag or "poster poster"; 0 turns all three off.
        ``focus`` is the query-focus bonus for the request's content words the output lacks (see
        `udrl.generate`; None: the model's default from its manifest for the task and length, 0: off). Every word of the
        output is one the manifest's spelling list or the request spells, when the manifest has one
        (docs/decoding.md, "Whole words"); ``whole_words=False`` lets the model spell freely. Options of the wrong type or out of range raise
        `CommandError` naming the option. Calls from several threads at once decode together."""
        return self._wait(self.submit(query, task=task, length=length, reward=reward, temperature=temperature,
                                      top_k=top_k, top_p=top_p, seed=seed, max_tokens=max_tokens,
                                      length_guard=length_guard, no_repeat_ngram=no_repeat_ngram, focus=focus,
                                      whole_words=whole_words))

    def generate_batch(self, requests: Sequence[Request | dict], *,
                       temperature: float = DEFAULTS.temperature, top_k: int = DEFAULTS.top_k,
                       top_p: float = DEFAULTS.top_p, seed: int | None = DEFAULTS.seed,
                       max_tokens: int | None = DEFAULTS.max_tokens, length_guard: bool = DEFAULTS.length_guard,
                       no_repeat_ngram: int = DEFAULTS.no_repeat_ngram,
                       focus: float | None = DEFAULTS.focus,
                       whole_words: bool = DEFAULTS.whole_words) -> list[GenerationResult]:
        """Several requests at once. On llama.cpp, **continuous batching** (scheduler.py): one
        KV-cache sequence per request, up to ``parallel`` (see `load`) per ``llama_decode``; a
        request that ends frees its slot for the next at once, so nobody waits for the longest.
        ONNX and torch: static batches on a batch axis with left padding (up to ``max_batch``);
        elsewhere one after another. Every request keeps its own token budget (on a left-padded
        batch, one that would not fit beside the others runs alone). A bad request raises
        `CommandError` naming its index before anything runs. Request ``i`` samples with seed
        ``seed + i``. Greedy results match one-by-one `generate` except where two tokens are
        nearly tied and a batched matrix product rounds differently (measured in the README)."""
        items = [_request(i, r) for i, r in enumerate(_sequence_of_requests(requests))]
        if not items:
            return []
        options = GenerationOptions(temperature=temperature, top_k=top_k, top_p=top_p, seed=seed,
                                    max_tokens=max_tokens, length_guard=length_guard,
                                    no_repeat_ngram=no_repeat_ngram, focus=focus, whole_words=whole_words)
        commands = []
        for i, r in enumerate(items):
            try:
                commands.append(make_command(self.manifest, r.task, r.length, r.reward))
            except CommandError as exc:
                raise CommandError(f"request {i}: {exc}", index=i) from exc
        seeded = [options if seed is None else dataclasses.replace(options, seed=seed + i) for i in range(len(items))]
        backend, batcher, jobs = self._jobs([(r.query, c, o) for r, c, o in zip(items, commands, seeded)],
                                            indexed=True)
        alone = jobs
        if backend.can_batch and not backend.slots and len(jobs) > 1:
            alone = batcher.call(lambda: _static_batches(backend, jobs))
        for ticket in [batcher.submit(job) for job in alone]:
            self._wait(ticket)
        return [result_of(job) for job in jobs]

    # -- lifetime ------------------------------------------------------------------------------------

    def close(self) -> None:
        """Release the runtime's memory. Requests in flight end with `UdrlError`, as do further
        calls (and further pieces of open streams). Waits for the token step in progress."""
        with self._lock:
            batcher, self._batcher = self._batcher, None
            backend, self._backend = self._backend, None
        if batcher is not None:
            batcher.close(drain=False)
        if backend is not None:
            backend.close()

    def __enter__(self) -> Model:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        batcher = getattr(self, "_batcher", None)
        if batcher is not None:
            batcher.close(drain=False)
        backend = getattr(self, "_backend", None)
        if backend is not None:
            backend.close()


def _static_batches(backend: Backend, jobs: Sequence[Job]) -> list[Job]:
    """On a backend with a batch axis, run the jobs in left-padded chunks of ``max_batch``; return
    those that would not fit beside the others of their chunk (they run alone)."""
    alone: list[Job] = []
    size = backend.max_batch or len(jobs)
    for start in range(0, len(jobs), size):
        chunk = jobs[start:start + size]
        fits = batch_fits(backend, [(j.prompt, j.budget) for j in chunk])
        together = [j for j, ok in zip(chunk, fits) if ok]
        if len(together) > 1:
            decode_batch(backend, together)
        else:
            together = []
        alone += [j for j in chunk if j not in together]
    return alone


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
         device: str = "auto", parallel: int = 8) -> Model:
    """Open an artifact (``.gguf``, ``.onnx``, ``.mlpackage`` or checkpoint directory; None: the
    bundled default) with ``backend`` ``auto`` | ``llama`` | ``onnx`` | ``torch`` | ``coreml``.
    ``parallel``: on llama.cpp, how many requests `Model.generate_batch` and `Model.submit` decode
    together (each holds a KV-cache sequence of the model's context; memory is taken on first use)."""
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
    if isinstance(parallel, bool) or not isinstance(parallel, numbers.Integral) or not 1 <= parallel <= MAX_PARALLEL:
        raise UdrlError(f"parallel must be an integer from 1 to {MAX_PARALLEL}, got {parallel!r}")
    options = BackendOptions(None if threads is None else int(threads), device, int(parallel))
    return Model(open_backend(p, backend, options), p)


MAX_PARALLEL = 64  # KV-cache sequences per model; llama.cpp's own limit is 256


def max_threads() -> int:
    """The most CPU threads `load` accepts: more than 4 per CPU only slows a runtime down, and
    llama.cpp hangs or crashes when asked for thousands."""
    return 4 * (os.cpu_count() or 1)
