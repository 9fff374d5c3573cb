"""The generation loop: prompt -> tokens -> text, with the length guard. Read it top to bottom.

One request is a `Job`: render the command and query into the prompt (`commands.render_prompt`),
prefill, then repeatedly pick a token from the logits (`Job.advance`: the decoding rules of
`_Decoder.mask`, then the sampler) and step; scheduler.py runs the prefills and steps of many Jobs
together. The **length guard** enforces the length
command at decode time: end-of-sequence is forbidden until the text has the requested number of
words, and generation stops before a token that would start one word too many; a separator it
leaves dangling ("jazz, night,") is dropped, so it is held back from the stream until the next
word comes. Where the model would end too early, the guard lets only tokens that start a new
word through: otherwise the best token after a forbidden end is glued-on junk ("Party!!s!)!").
And the last word it allows may not be one of the manifest's ``end_stopwords`` ("the", "and"):
cut at the requested count, a model that meant a longer phrase would stop on "Festival at the".
**Query focus** adds a bonus (the manifest's ``focus_bias`` for the task; ``focus=0`` turns it
off) to each content word of the query that is one token, spelled as the model writes a word
(" blueberry", " Blueberry"), for as long as the output does not contain that word (a word the
tokenizer splits gets none: lifting its first piece left fragments such as "t t shirt"): a small
policy's rare-word knowledge is weak, and this keeps it on the subject it was asked about without
letting it repeat a word to score. With the n-gram ban on, the next word may also not be the last
word again ("poster poster"). The text is the generated tokens' bytes decoded as UTF-8, so
characters split across tokens stream whole.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import re
import resource
import sys
import time
import weakref
from collections.abc import Sequence

import numpy as np

from .backends import Backend
from .commands import Command, count_words, render_prompt
from .errors import CommandError
from .manifest import Manifest, focus_key
from .sampling import Sampler, make_sampler

# What separates the items of a list output; one left at the end by the length guard's cut is dropped.
SEPARATORS = ",;:"
# A token starts a new word when its text begins with one of these and has more than whitespace.
WORD_START = b" \t\n\r\x0b\x0c"
_word_starts: weakref.WeakKeyDictionary[Backend, np.ndarray] = weakref.WeakKeyDictionary()


def word_start_tokens(backend: Backend, n_vocab: int) -> np.ndarray:
    """Per token id, whether the token starts a new word (computed once per backend)."""
    starts = _word_starts.get(backend)
    if starts is None or len(starts) != n_vocab:
        pieces = (backend.token_bytes(t) for t in range(n_vocab))
        starts = np.array([p[:1] != b"" and p[0] in WORD_START and p.strip(WORD_START) != b"" for p in pieces])
        _word_starts[backend] = starts
    return starts


_end_words: weakref.WeakKeyDictionary[Backend, np.ndarray] = weakref.WeakKeyDictionary()


def end_word_tokens(backend: Backend, n_vocab: int) -> np.ndarray:
    """Per token id, whether the token starts a new word that is whole one of the manifest's
    ``end_stopwords`` (compared as query focus compares words); computed once per backend."""
    ends = _end_words.get(backend)
    if ends is None or len(ends) != n_vocab:
        words = set(backend.manifest.end_stopwords)
        starts = word_start_tokens(backend, n_vocab)
        ends = np.array([bool(words) and bool(start) and focus_key(
            backend.token_bytes(t).strip(WORD_START).decode("utf-8", errors="replace")) in words
            for t, start in enumerate(starts)])
        _end_words[backend] = ends
    return ends


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


_word_keys: weakref.WeakKeyDictionary[Backend, dict[str, list[int]]] = weakref.WeakKeyDictionary()


def word_start_keys(backend: Backend, n_vocab: int) -> dict[str, list[int]]:
    """For each ASCII word key (as query focus compares words), the tokens that start a new word
    which is that whole key (" poster", " Poster", " poster,"); computed once per backend."""
    keys = _word_keys.get(backend)
    if keys is None:
        keys = {}
        for t, start in enumerate(word_start_tokens(backend, n_vocab)):
            if start:
                key = focus_key(backend.token_bytes(t).strip(WORD_START).decode("utf-8", errors="replace"))
                if key and key.isascii():
                    keys.setdefault(key, []).append(t)
        _word_keys[backend] = keys
    return keys


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
    no_repeat_ngram: int = 2  # forbid repeating any n generated tokens in a row (0: off); as native/
    focus: float | None = None  # query focus bonus; None: the manifest's focus_bias for the task, 0: off

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
        if self.focus is not None:
            checked["focus"] = _real("focus", self.focus, ">= 0 (0 turns query focus off)", low=0)
        for name, value in checked.items():
            object.__setattr__(self, name, value)

    def sampler(self, offset: int = 0) -> Sampler:
        seed = None if self.seed is None else self.seed + offset
        return make_sampler(self.temperature, self.top_k, self.top_p, seed)


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


def result_of(job: Job) -> GenerationResult:
    """The `GenerationResult` of a `Job` that has ended."""
    stats, text = job.stats, job.stats["text"]
    return GenerationResult(text=text, query=job.query, command=job.command, words=count_words(text),
                            prompt_tokens=stats["prompt_tokens"], completion_tokens=stats["completion_tokens"],
                            finish_reason=stats["finish_reason"], prompt_s=stats["prompt_s"],
                            first_token_s=stats["first_token_s"], total_s=stats["total_s"],
                            peak_rss_mb=peak_rss_mb())


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


def focus_words(manifest: Manifest, query: str) -> list[str]:
    """The query's content words, as query focus compares them, in order, without repeats.

    >>> focus_words(Manifest.new(), "Poster for the Blueberry-latte launch!")
    ['poster', 'blueberry-latte', 'launch']
    """
    words: list[str] = []
    for raw in query.split():
        word = focus_key(raw)
        if len(word.encode()) >= manifest.focus_min_bytes and word not in manifest.focus_stopwords \
                and word not in words:
            words.append(word)
    return words


def focus_tokens(backend: Backend, query: str) -> dict[str, list[int]]:
    """For each content word of the query, its spellings " word" and " Word" that are one token
    each. A word the tokenizer splits gets no bonus: lifting its first piece alone made the model
    start the word and not finish it ("t t shirt", "studio her"), most of the shipped model's
    degenerate tags on hand-written requests."""
    tokens = {}
    for word in focus_words(backend.manifest, query):
        first = word[0].upper() if word[0].isascii() else word[0]  # ASCII only, as the C layer
        spellings = (" " + word, " " + first + word[1:])
        tokens[word] = sorted({ids[0] for ids in map(backend.encode, spellings) if len(ids) == 1})
    return tokens


def _without_dangling_end(text: str) -> str:
    """``text`` without the whitespace and separators at its end."""
    end = len(text)
    while end and (text[end - 1] in SEPARATORS or text[end - 1].isspace()):
        end -= 1
    return text[:end].lstrip()


class _Decoder:
    """Per-sequence state: generated ids, text so far, and the length guard's and query focus's
    decisions."""

    def __init__(self, backend: Backend, query: str, command: Command, options: GenerationOptions):
        self.backend, self.command, self.guard = backend, command, options.length_guard
        self.no_repeat_ngram = options.no_repeat_ngram
        by_task = backend.manifest.focus_bias.get(command.task, 0.0)
        self.focus_bias = by_task if options.focus is None else options.focus
        self.focus = focus_tokens(backend, query) if self.focus_bias > 0 else {}
        self.eos = backend.manifest.eos_id
        self.prefix = backend.manifest.output_prefix
        self.ids: list[int] = []
        self.data = b""
        self.text = ""
        self.emitted = ""
        self.finish: str | None = None

    def mask(self, logits: np.ndarray) -> np.ndarray:
        logits = logits.copy()
        if self.focus:
            written = {focus_key(w) for w in self.text.split()}
            wanted = sorted({t for word, ids in self.focus.items() if word not in written for t in ids})
            if wanted:
                logits[wanted] += self.focus_bias
        banned = self.repeats()
        if banned:
            logits[banned] = -np.inf
        if self.no_repeat_ngram:
            self.ban_word_again(logits)
            self.ban_item_again(logits)
        words = count_words(self.text) if self.guard else 0
        if self.guard and words < self.command.length:
            if words == self.command.length - 1:  # the next word is the last
                self.ban_end_words(logits)
            if int(np.argmax(logits)) == self.eos:  # the model would end: ask for a word, not junk
                starts = word_start_tokens(self.backend, len(logits))
                if np.isfinite(logits[starts]).any():
                    logits[~starts] = -np.inf
            logits[self.eos] = -np.inf
        return logits

    def ban_word_again(self, logits: np.ndarray) -> None:
        """The next word may not be the last one again ("poster poster", "Party Party"): the token
        n-gram ban cannot see a repeated single-token word, and on hand-written requests such
        doublings were most of the shipped model's degenerate outputs."""
        words = self.text.split()
        if words:
            again = word_start_keys(self.backend, len(logits)).get(focus_key(words[-1]))
            if again:
                logits[again] = -np.inf

    def ban_item_again(self, logits: np.ndarray) -> None:
        """After a list separator, the next item may not be a one-word item already written
        ("label, homemade, label"): the n-gram ban cannot see it (the first item has no separator
        before it), and on hand-written requests such repeats were most of the degenerate tags
        left once query focus stopped lifting pieces of words."""
        text = self.text.rstrip(WORD_START.decode())  # ASCII whitespace, as the C layer
        if not text or text[-1] not in SEPARATORS:
            return
        keys = word_start_keys(self.backend, len(logits))
        for item in re.split(f"[{re.escape(SEPARATORS)}]", text[:-1]):
            words = item.split()
            if len(words) == 1:
                again = keys.get(focus_key(words[0]))
                if again:
                    logits[again] = -np.inf

    def ban_end_words(self, logits: np.ndarray) -> None:
        """The last word may not be one that leaves the output unfinished ("at the", "colors and"),
        unless nothing else is left."""
        ends = end_word_tokens(self.backend, len(logits))
        others = np.isfinite(logits) & ~ends
        others[self.eos] = False
        if ends.any() and others.any():
            logits[ends] = -np.inf

    def repeats(self) -> list[int]:
        """Tokens that would complete an n-gram already generated (small models loop without this)."""
        n, ids = self.no_repeat_ngram, self.ids
        if n < 1 or len(ids) < n - 1:
            return []
        tail = ids[len(ids) - n + 1 :] if n > 1 else []
        return [ids[i + n - 1] for i in range(len(ids) - n + 1) if ids[i : i + n - 1] == tail]

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
        whitespace before the first word (the result is the text stripped) and separators and
        whitespace at the end (the guard may leave a separator dangling)."""
        if self.text.endswith("\ufffd"):
            return ""
        ready = _without_dangling_end(self.text)
        new = ready[len(self.emitted):]
        self.emitted = ready
        return new

    def result(self) -> str:
        """The text as returned: stripped, without the separators a cut by the length guard left."""
        return _without_dangling_end(self.text) if self.finish == "length" else self.text.strip()


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
        self.stats: dict = dict(prompt_tokens=len(self.prompt), prompt_s=0.0, first_token_s=0.0)

    def prefilled(self) -> None:
        """Note the end of the prompt's forward pass (for ``prompt_s``)."""
        self.stats["prompt_s"] = time.perf_counter() - self.start

    def advance(self, logits: np.ndarray) -> int | None:
        """Pick the next token from the logits of the last one fed; return the token to feed next,
        or None when the request has ended (its figures are then in ``stats``)."""
        decoder = self.decoder
        token = self.sample(decoder.mask(logits))
        if not decoder.accept(token):
            self.finish()
            return None
        if len(decoder.ids) == 1:
            self.stats["first_token_s"] = time.perf_counter() - self.start
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
        self.stats.update(text=decoder.result(), completion_tokens=len(decoder.ids),
                          finish_reason=decoder.finish or "max_tokens", total_s=time.perf_counter() - self.start)

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
                          options: GenerationOptions) -> list[dict]:
    """Several requests through `decode_batch` (request ``i`` samples with seed offset ``i``);
    each one's figures as `Job.stats`."""
    jobs = [Job(backend, q, c, options, sampler_offset=i) for i, (q, c) in enumerate(requests)]
    decode_batch(backend, jobs)
    return [j.stats for j in jobs]
