"""The export entry point and the registry of formats (``format name -> Exporter``).

Each format lives in its own module (``to_gguf``, ``to_onnx``, ``to_coreml``) as an `Exporter`
subclass registered under its name. `export` does what every format shares: validate the request,
load the checkpoint, write into a hidden temporary path, verify against the PyTorch model, and
only then move the artifact into place. A failed verification leaves nothing behind.

Example:
    >>> export("runs/mini/model", "gguf", quant="q8_0")          # doctest: +SKIP
    ExportResult(path=PosixPath('runs/mini/model-q8_0.gguf'), ...)
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from udrl.artifacts import artifact_size, read_manifest
from udrl.checkpoint import load_checkpoint, verify_checkpoint
from udrl.errors import UdrlError
from udrl.manifest import Manifest


class ExportError(UdrlError):
    """An export was refused (bad request) or its artifact failed verification."""


@dataclasses.dataclass
class Source:
    """What an exporter works from: the checkpoint's model, tokenizer and manifest."""

    directory: Path
    model: Any  # transformers GPT2LMHeadModel, eval mode, fp32
    tokenizer: Any  # PreTrainedTokenizerFast
    manifest: Manifest

    def manifest_for(self, quant: str) -> Manifest:
        """The manifest the artifact carries: the checkpoint's, with provenance and quantization
        (from a GGUF: that file, then the lineage its own manifest gave)."""
        if self.directory.suffix == ".gguf":
            return self.manifest.replace(quantization=quant)  # from_gguf set the parent chain
        return self.manifest.replace(parent=str(self.directory), quantization=quant)


@dataclasses.dataclass
class ExportResult:
    path: Path
    format: str
    quant: str
    size_bytes: int
    checkpoint_bytes: int
    checks: dict[str, Any]
    source: Path | None = None  # what it was exported from: a checkpoint directory or a GGUF

    @property
    def compression(self) -> float:
        """The source's bytes (the checkpoint's safetensors, or the GGUF) over the artifact's."""
        return self.checkpoint_bytes / max(self.size_bytes, 1)

    def summary(self) -> str:
        head = f"{self.path}  {self.format}/{self.quant}  {self.size_bytes / 1e6:.2f} MB  "
        if self.source is not None and self.source.suffix == ".gguf":
            return head + f"({self.size_bytes / max(self.checkpoint_bytes, 1):.2f}x the size of the source GGUF)"
        return head + f"({self.compression:.2f}x smaller than the safetensors checkpoint)"


class Exporter:
    """One artifact format. Subclasses set the class attributes and implement `write` and `verify`."""

    format: ClassVar[str]
    suffix: ClassVar[str]  # file name ending, e.g. ".gguf"; a directory format ends in its suffix too
    quants: ClassVar[tuple[str, ...]]
    default_quant: ClassVar[str]

    def write(self, source: Source, quant: str, path: Path) -> None:
        """Write the artifact at ``path`` (a temporary name next to the final one)."""
        raise NotImplementedError

    def verify(self, source: Source, quant: str, path: Path) -> dict[str, Any]:
        """Check the written artifact against the PyTorch model; return figures, raise `ExportError`
        listing every failed check."""
        raise NotImplementedError


EXPORTERS: dict[str, type[Exporter]] = {}


def register(cls: type[Exporter]) -> type[Exporter]:
    EXPORTERS[cls.format] = cls
    return cls


def get_exporter(fmt: str) -> Exporter:
    _load_builtin()
    if fmt not in EXPORTERS:
        raise ExportError(f"unknown format {fmt!r}; known formats: {', '.join(sorted(EXPORTERS))}")
    return EXPORTERS[fmt]()


def _load_builtin() -> None:
    from . import to_gguf, to_onnx  # noqa: F401  (registration happens on import)

    try:
        from . import to_coreml  # noqa: F401
    except ImportError:
        pass  # coremltools missing: the format is listed as unknown, and the CLI names the extra


def default_output(source: Path, fmt: str, quant: str) -> Path:
    """Next to the source: ``model-q8_0.gguf`` for a checkpoint ``model``; for a GGUF source
    ``udrl-mini-q8_0.gguf``, ``udrl-mini-q8_0-int8.onnx``."""
    exporter = EXPORTERS[fmt]
    stem = source.stem if source.suffix == ".gguf" else source.name
    return source.parent / f"{stem}-{quant}{exporter.suffix}"


# Requests every parity check runs: each task at a short and a realistic length.
PARITY_QUERIES = (
    "minimalist poster for a summer jazz festival by the sea", "logo for a family owned vegan bakery",
    "flyer for a lost golden retriever named biscuit", "menu for a mexican taqueria with vegetarian options",
    "thumbnail for a beginner guitar lesson", "invitation to a winter wedding in the mountains",
)


def parity_with_gguf(gguf_path: Path, artifact: Path) -> dict[str, Any]:
    """The artifact against the GGUF it was made from, through the SDK: greedy texts on a fixed
    request set, and top-1 agreement on the GGUF's own greedy tokens (teacher-forced). Formats the
    SDK cannot run on this machine (Core ML off macOS) are skipped with the reason."""
    import udrl
    from udrl.commands import make_command, render_prompt

    try:
        candidate = udrl.load(artifact)
    except UdrlError as exc:
        return {"parity with the source GGUF": f"skipped: {exc}"}
    with udrl.load(gguf_path) as reference, candidate:
        m = reference.manifest
        requests = [(q, task, min(max(n, m.length_min), m.length_max))
                    for q in PARITY_QUERIES for task in m.tasks for n in (4, 12)]
        same = agree = total = 0
        ref_backend, cand_backend = reference._live(), candidate._live()
        for q, task, n in requests:
            want = reference.generate(q, task=task, length=n)
            got = candidate.generate(q, task=task, length=n)
            same += want.text == got.text
            prompt = ref_backend.encode(render_prompt(m, q, make_command(m, task, n)))
            ids = ref_backend.encode(m.output_prefix + want.text)
            logits = cand_backend.prefill(prompt)
            expected = ref_backend.prefill(prompt)
            for token in ids:
                agree += int(np.argmax(logits)) == int(np.argmax(expected))
                total += 1
                logits, expected = cand_backend.step(token), ref_backend.step(token)
    return {"greedy texts equal to the source GGUF": f"{same}/{len(requests)}",
            "top-1 agreement with the source GGUF": f"{agree / max(total, 1):.1%} of {total} tokens"}


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def export(checkpoint: str | Path, fmt: str, quant: str | None = None, out: str | Path | None = None,
           force: bool = False, verify: bool = True, log: Callable[[str], None] = print) -> ExportResult:
    """Export a checkpoint directory, or a udrl GGUF (f32, f16, q8_0, ...), to one artifact; see the
    module docstring. From a GGUF, the artifact is also checked against that file through the SDK."""
    from .from_gguf import checkpoint_for

    exporter = get_exporter(fmt)
    quant = quant or exporter.default_quant
    if quant not in exporter.quants:
        raise ExportError(f"{fmt} has no quantization {quant!r}; choose one of: {', '.join(exporter.quants)}")
    origin = Path(checkpoint)
    if origin.suffix == ".gguf":
        if not origin.is_file():
            raise ExportError(f"no such GGUF: {origin}")
        read_manifest(origin)  # a corrupted or foreign GGUF is refused before anything heavy runs
    else:
        verify_checkpoint(origin)  # cheap checks before anything heavy is loaded
    target = Path(out) if out else default_output(origin, fmt, quant)
    if target.exists() and not force:
        raise ExportError(f"{target} already exists; pass --force to replace it")
    if not target.parent.is_dir():
        raise ExportError(f"output directory {target.parent} does not exist")
    if target.resolve() == origin.resolve():
        raise ExportError(f"{target} is the source itself; choose another --out")
    with checkpoint_for(origin) as directory:
        return _export(origin, directory, exporter, fmt, quant, target, verify, log)


def _export(origin: Path, checkpoint: Path, exporter: Exporter, fmt: str, quant: str, target: Path, verify: bool,
            log: Callable[[str], None]) -> ExportResult:
    model, tokenizer, manifest = load_checkpoint(checkpoint)
    source = Source(origin, model, tokenizer, manifest)
    # Keep the suffix: some writers (Core ML) insist on it.
    tmp = target.with_name(f".{target.stem}.tmp-{os.getpid()}{target.suffix}")
    _remove(tmp)
    try:
        exporter.write(source, quant, tmp)
        checks = exporter.verify(source, quant, tmp) if verify else {"verified": False}
        if verify and origin.suffix == ".gguf":
            checks.update(parity_with_gguf(origin, tmp))
        for key, value in checks.items():
            log(f"  {key}: {value}")
        if target.exists():
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            os.rename(target, old)
            os.rename(tmp, target)
            _remove(old)
        else:
            os.rename(tmp, target)
    finally:
        _remove(tmp)
    checkpoint_bytes = (origin if origin.suffix == ".gguf" else checkpoint / "model.safetensors").stat().st_size
    result = ExportResult(target, fmt, quant, artifact_size(target), checkpoint_bytes, checks, origin)
    log(result.summary())
    return result
