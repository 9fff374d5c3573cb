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

from udrl.artifacts import artifact_size
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
        """The manifest the artifact carries: the checkpoint's, with provenance and quantization."""
        return self.manifest.replace(parent=str(self.directory), quantization=quant)


@dataclasses.dataclass
class ExportResult:
    path: Path
    format: str
    quant: str
    size_bytes: int
    checkpoint_bytes: int
    checks: dict[str, Any]

    @property
    def compression(self) -> float:
        return self.checkpoint_bytes / max(self.size_bytes, 1)

    def summary(self) -> str:
        return (f"{self.path}  {self.format}/{self.quant}  {self.size_bytes / 1e6:.2f} MB  "
                f"({self.compression:.2f}x smaller than the safetensors checkpoint)")


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


def default_output(checkpoint: Path, fmt: str, quant: str) -> Path:
    exporter = EXPORTERS[fmt]
    return checkpoint.parent / f"{checkpoint.name}-{quant}{exporter.suffix}"


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def export(checkpoint: str | Path, fmt: str, quant: str | None = None, out: str | Path | None = None,
           force: bool = False, verify: bool = True, log: Callable[[str], None] = print) -> ExportResult:
    """Export a checkpoint directory to one artifact; see the module docstring."""
    exporter = get_exporter(fmt)
    quant = quant or exporter.default_quant
    if quant not in exporter.quants:
        raise ExportError(f"{fmt} has no quantization {quant!r}; choose one of: {', '.join(exporter.quants)}")
    checkpoint = Path(checkpoint)
    verify_checkpoint(checkpoint)  # cheap checks before anything heavy is loaded
    target = Path(out) if out else default_output(checkpoint, fmt, quant)
    if target.exists() and not force:
        raise ExportError(f"{target} already exists; pass --force to replace it")
    if not target.parent.is_dir():
        raise ExportError(f"output directory {target.parent} does not exist")
    model, tokenizer, manifest = load_checkpoint(checkpoint)
    source = Source(checkpoint, model, tokenizer, manifest)
    # Keep the suffix: some writers (Core ML) insist on it.
    tmp = target.with_name(f".{target.stem}.tmp-{os.getpid()}{target.suffix}")
    _remove(tmp)
    try:
        exporter.write(source, quant, tmp)
        checks = exporter.verify(source, quant, tmp) if verify else {"verified": False}
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
    checkpoint_bytes = (checkpoint / "model.safetensors").stat().st_size
    result = ExportResult(target, fmt, quant, artifact_size(target), checkpoint_bytes, checks)
    log(result.summary())
    return result
