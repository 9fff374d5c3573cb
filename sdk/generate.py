"""The generation loop: prompt -> tokens -> text, with the length guard. Read it top to bottom.

One request is a `Job`: render the command and query into the prompt (`commands.render_prompt`),
prefill, then repeatedly pick a token from the logits (`Job.advance`: the decoding rules of
rules.py, then the sampler) and step; scheduler.py runs the prefills and steps of many Jobs
together. The **length guard** enforces the length command at decode time: rules.py holds back
the end of sequence until the text has the requested number of words, and `_Decoder.accept` stops
before a token that would start one word too many; a separator it leaves dangling ("jazz,
night,") is dropped, so it is held back from the stream until the next word comes. The text is the
generated tokens' bytes decoded as UTF-8, so characters split across tokens stream whole.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import resource
import sys
import time
from collections.abc import Collection, Sequence

import numpy as np

from .backends import Backend
from .casing import title_case
from .commands import Command, count_words, render_prompt
from .errors import CommandError
from .rules import SEPARATORS, DecodeState, apply_rules, focus_tokens, vocabulary
from .sampling import Sampler, make_sampler


def _integer(name: str, value: object, low: int, none_ok: bool = False, hint: str = "") -> int | None:
    if value is None and none_ok:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        allowed = f"an integer >= {low}" + (" or None" if none_ok else "")
        raise CommandError(f"{name} must be {allowed}{hint}, got {value!r}")
    return int(value)


def _real(name: str, value: object, hint: str, low: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) \
            or (low is not None and value < low):
        raise CommandError(f"{name} must be a finite number {hint}, got {value!r}")
    return float(value)


@dataclasses.dataclass(frozen=True)
class GenerationOptions:
    """How to decode; every field is checked here, at the boundary, with a `CommandError` that
    names it and what is allowed."""

    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int | None = None
    max_tokens: int | None = None  # default: 3 tokens per requested word + 8, within the context
    length_guard: bool = True
    # forbid repeating any n generated tokens in a row, a word twice in a row or a content word three
    # times (0: off); as native/
    no_repeat_ngram: int = 2
    focus: float | None = None  # query focus bonus; None: the manifest's for the task and length, 0: off
    whole_words: bool = True  # only words of the manifest's spelling list or the request (rules.whole_words)

    def __post_init__(self) -> None:
        checked = dict(
            temperature=_real("temperature", self.temperature, ">= 0 (0 is greedy)", low=0),
            top_k=_integer("top_k", self.top_k, 0, hint=" (0 disables it)"),
            top_p=_real("top_p", self.top_p, "in (0, 1]"),
            seed=_integer("seed", self.seed, 0, none_ok=True),
            max_tokens=_integer("max_tokens", self.max_tokens, 1, none_ok=True),
            no_repeat_ngram=_integer("no_repeat_ngram", self.no_repeat_ngram, 0, hint=" (0 disables it)"),
        )
        if not 0 < checked["top_p"] <= 1:
            raise CommandError(f"top_p must be in (0, 1], got {self.top_p!r}")
        if not isinstance(self.length_guard, bool):
            raise CommandError(f"length_guard must be True or False, got {self.length_guard!r}")
        if not isinstance(self.whole_words, bool):
            raise CommandError(f"whole_words must be True or False, got {self.whole_words!r}")
        if self.focus is not None:
            checked["focus"] = _real("focus", self.focus, ">= 0 (0 turns query focus off)", low=0)
        for name, value in checked.items():
            object.__setattr__(self, name, value)

    def sampler(self, offset: int = 0) -> Sampler:
        seed = None if self.seed is None else self.seed + offset
        return make_sampler(self.temperature, self.top_k, self.top_p, seed)


DEFAULTS = GenerationOptions()  # the one place the options' defaults are read from (SDK, CLI, server)


@dataclasses.dataclass
class GenerationResult:
    """What one request produced, with the figures the benchmarks read."""

    text: str
    query: str
    command: Command
    words: int
    prompt_tokens: int
    completion_tokens: int
    # "stop" (end of sequence), "length" (guard reached the word count), "max_tokens" (token budget),
    # "cancelled" (a scheduled request its caller cancelled: the text so far)
    finish_reason: str
    prompt_s: float  # prefill time
    first_token_s: float  # from the start of the request to the first generated token
    total_s: float
    peak_rss_mb: float

    @property
    def prompt_tok_s(self) -> float:
        return self.prompt_tokens / self.prompt_s if self.prompt_s > 0 else 0.0

    @property
    def decode_tok_s(self) -> float:
        decode_s = self.total_s - self.first_token_s
        return (self.completion_tokens - 1) / decode_s if self.completion_tokens > 1 and decode_s > 0 else 0.0

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d.update(prompt_tok_s=self.prompt_tok_s, decode_tok_s=self.decode_tok_s)
        return d


@dataclasses.dataclass
class JobStats:
    """What a `Job` records as it runs; ``text`` and the counts after the end are filled by `Job.finish`."""

    prompt_tokens: int
    prompt_s: float = 0.0
    first_token_s: float = 0.0
    text: str = ""
    completion_tokens: int = 0
    finish_reason: str | None = None  # None while it runs
    total_s: float = 0.0


def result_of(job: Job) -> GenerationResult:
    """The `GenerationResult` of a `Job` that has ended."""
    stats = job.stats
    assert stats.finish_reason is not None, "result_of a job that has not ended"
    return GenerationResult(text=stats.text, query=job.query, command=job.command, words=count_words(stats.text),
                            prompt_tokens=stats.prompt_tokens, completion_tokens=stats.completion_tokens,
                            finish_reason=stats.finish_reason, prompt_s=stats.prompt_s,
                            first_token_s=stats.first_token_s, total_s=stats.total_s, peak_rss_mb=peak_rss_mb())


def peak_rss_mb() -> float:
    """This process's peak resident memory. On Linux from /proc (VmHWM), because getrusage's maxrss
    carries over a parent's peak into a child process started from it."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB elsewhere


def prepare(backend: Backend, query: str, command: Command, max_tokens: int | None) -> tuple[list[int], int]:
    """Prompt ids and the token budget; refuses a prompt that leaves no room in the context."""
    prompt = backend.encode(render_prompt(backend.manifest, query, command))
    room = backend.n_ctx - len(prompt)
    if room < 2:
        raise CommandError(
            f"query too long: the prompt is {len(prompt)} tokens and this model's context holds "
            f"{backend.n_ctx}; shorten the query (udrl does not cut it silently)"
        )
    # Default budget from the requested length: room for long words, and a bound on a model that,
    # with end-of-sequence forbidden by the guard, runs on without adding words.
    budget = max_tokens if max_tokens is not None else 3 * command.length + 8
    if budget < 1:
        raise CommandError(f"max_tokens must be at least 1, got {budget}")
    return prompt, min(budget, room)


def _without_dangling_end(text: str) -> str:
    """``text`` without the whitespace and separators at its end."""
    end = len(text)
    while end and (text[end - 1] in SEPARATORS or text[end - 1].isspace()):
        end -= 1
    return text[:end].lstrip()


def stream_ready(text: str, minor_words: Collection[str] | None = None) -> str:
    """How much of the output ``text`` a stream may hand out: stripped, without separators and
    whitespace at the end (the guard may leave a separator dangling) and, for a title-case task
    (``minor_words`` given), without a last word that may go on, in Title Case (casing.py)."""
    ready = _without_dangling_end(text)
    if minor_words is None:
        return ready
    if ready and not text[-1].isspace():  # whether a word is minor depends on all of it
        ready = _without_dangling_end(ready[: len(ready) - len(ready.split()[-1])])
    return title_case(ready, minor_words)


class _Decoder:
    """Per-sequence state: generated ids, text so far, and the length guard's and query focus's
    decisions."""

    def __init__(self, backend: Backend, query: str, command: Command, options: GenerationOptions):
        self.backend, self.command, self.guard = backend, command, options.length_guard
        default = backend.manifest.focus_for(command.task, command.length)
        self.focus_bias = default if options.focus is None else options.focus
        self.focus = focus_tokens(backend, query) if self.focus_bias > 0 else {}
        self.query = query if options.whole_words else None
        self.no_repeat_ngram = options.no_repeat_ngram
        self.state: DecodeState | None = None  # made at the first step, when the vocabulary size is known
        self.eos = backend.manifest.eos_id
        self.prefix = backend.manifest.output_prefix
        # Title Case (casing.py) for the manifest's title-case tasks: None leaves the text as written.
        self.minor_words = (frozenset(backend.manifest.minor_words) if command.task in backend.manifest.title_tasks
                            else None)
        self.ids: list[int] = []
        self.data = b""
        self.text = ""
        self.emitted = ""
        self.finish: str | None = None

    def mask(self, logits: np.ndarray) -> np.ndarray:
        """The logits with the decoding rules (rules.py) applied for this step."""
        if self.state is None:
            vocab = vocabulary(self.backend, len(logits))
            self.state = DecodeState(vocab, self.command.length, self.guard, self.no_repeat_ngram, self.focus_bias,
                                     self.focus, vocab.spelling.request(self.query)
                                     if vocab.spelling and self.query is not None else None,
                                     push_function_words=self.backend.manifest.focus_push_function_words)
        self.state.ids, self.state.text = self.ids, self.text
        return apply_rules(logits, self.state)

    def accept(self, token: int) -> bool:
        """Take a sampled token; False (and a finish reason) when the sequence ends before it."""
        if token == self.eos:
            self.finish = "stop"
            return False
        data = self.data + self.backend.token_bytes(token)
        text = data.decode("utf-8", errors="replace")
        text = text.removeprefix(self.prefix)
        if self.guard and count_words(text) > self.command.length:
            self.finish = "length"
            return False
        self.ids.append(token)
        self.data, self.text = data, text
        return True

    def piece(self) -> str:
        """New text since the last piece, holding back an incomplete multi-byte character, any
        whitespace before the first word (the result is the text stripped), separators and
        whitespace at the end (the guard may leave a separator dangling) and, for a title-case
        task, a word that may go on (whether it is a minor word depends on all of it)."""
        if self.text.endswith("\ufffd"):
            return ""
        ready = stream_ready(self.text, self.minor_words)
        new = ready[len(self.emitted):]
        self.emitted = ready
        return new

    def result(self) -> str:
        """The text as returned: stripped, without the separators a cut by the length guard left,
        in Title Case for a title-case task."""
        return self._cased(_without_dangling_end(self.text) if self.finish == "length" else self.text.strip())

    def _cased(self, text: str) -> str:
        return text if self.minor_words is None else title_case(text, self.minor_words)


class Job:
    """One request being decoded: its prompt, token budget, decoder and sampler, and the pieces and
    figures it produces. The continuous-batching `Scheduler` (scheduler.py) runs Jobs side by
    side, each in its own KV-cache sequence, feeding `advance` the logits of its last token. The request is
    checked here (`prepare`), so a bad one raises `CommandError` before any work is queued."""

    def __init__(self, backend: Backend, query: str, command: Command, options: GenerationOptions,
                 sampler_offset: int = 0):
        self.start = time.perf_counter()
        self.query, self.command = query, command
        self.prompt, self.budget = prepare(backend, query, command, options.max_tokens)
        self.decoder = _Decoder(backend, query, command, options)
        self.sample = options.sampler(sampler_offset)
        self.pieces: list[str] = []  # text pieces not yet taken by the caller
        self.next_token: int | None = None  # the token to feed next; None before prefill and once done
        self.done = False
        self.stats = JobStats(prompt_tokens=len(self.prompt))

    def prefilled(self) -> None:
        """Note the end of the prompt's forward pass (for ``prompt_s``)."""
        self.stats.prompt_s = time.perf_counter() - self.start

    def advance(self, logits: np.ndarray) -> int | None:
        """Pick the next token from the logits of the last one fed; return the token to feed next,
        or None when the request has ended (its figures are then in ``stats``)."""
        decoder = self.decoder
        token = self.sample(decoder.mask(logits))
        if not decoder.accept(token):
            self.finish()
            return None
        if len(decoder.ids) == 1:
            self.stats.first_token_s = time.perf_counter() - self.start
        piece = decoder.piece()
        if piece:
            self.pieces.append(piece)
        if len(decoder.ids) >= self.budget:
            decoder.finish = "max_tokens"
            self.finish()
            return None
        self.next_token = token
        return token

    def finish(self, reason: str | None = None) -> None:
        """End the request (``reason`` overrides the decoder's, e.g. "cancelled"): the tail the
        stream held back becomes the last piece, and ``stats`` gets the text and counts."""
        decoder = self.decoder
        if reason is not None:
            decoder.finish = reason
        tail = decoder.result()[len(decoder.emitted):]
        if tail and decoder.finish != "cancelled":
            self.pieces.append(tail)
        self.next_token, self.done = None, True
        self.stats.text, self.stats.completion_tokens = decoder.result(), len(decoder.ids)
        self.stats.finish_reason = decoder.finish or "max_tokens"
        self.stats.total_s = time.perf_counter() - self.start

    def take_pieces(self) -> list[str]:
        """The pieces produced since the last call."""
        pieces, self.pieces = self.pieces, []
        return pieces


def batch_fits(backend: Backend, prepared: Sequence[tuple[list[int], int]]) -> list[bool]:
    """Per request of a batch, given as `prepare` returns it (prompt ids, token budget), whether its
    whole budget fits beside the others (on a left-padded backend every sequence shares the longest
    prompt's width; on llama.cpp each sequence has its own context). A request that does not fit
    runs alone, with its full budget."""
    rooms = backend.batch_room([len(p) for p, _ in prepared])
    return [budget <= room for (_, budget), room in zip(prepared, rooms)]


def decode_batch(backend: Backend, jobs: Sequence[Job]) -> None:
    """Run ``jobs`` to their end through one left-padded batched prefill and batched decode steps,
    for backends with a batch axis (``can_batch``: ONNX, torch); a finished job stops stepping."""
    short = [i for i, fits in enumerate(batch_fits(backend, [(j.prompt, j.budget) for j in jobs])) if not fits]
    if short:  # the caller runs such requests alone (`batch_fits`): a batch never cuts a budget silently
        raise CommandError(f"requests {short} need more tokens than this batch leaves them; run them alone")
    logits = backend.prefill_batch([j.prompt for j in jobs])
    for j in jobs:
        j.prefilled()
    tokens = [j.advance(row) for j, row in zip(jobs, logits)]
    while any(t is not None for t in tokens):
        logits = backend.step_batch(tokens)
        tokens = [None if t is None else j.advance(row) for j, t, row in zip(jobs, tokens, logits)]


def generate_batch_tokens(backend: Backend, requests: Sequence[tuple[str, Command]],
                          options: GenerationOptions) -> list[JobStats]:
    """Several requests through `decode_batch` (request ``i`` samples with seed offset ``i``);
    each one's figures as `Job.stats`."""
    jobs = [Job(backend, q, c, options, sampler_offset=i) for i, (q, c) in enumerate(requests)]
    decode_batch(backend, jobs)
    return [j.stats for j in jobs]
