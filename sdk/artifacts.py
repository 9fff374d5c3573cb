"""Recognise an artifact by its form and read the manifest it carries.

| artifact | where the manifest is | read with |
| --- | --- | --- |
| checkpoint directory | ``udrl.json`` | nothing extra |
| ``.gguf`` | metadata key ``udrl.manifest`` | the header, read by `gguf_file` (no weights, no llama.cpp) |
| ``.onnx`` | ``metadata_props`` ``udrl.manifest`` | onnx |
| ``.mlpackage`` | ``user_defined_metadata`` ``udrl.manifest`` | coremltools (spec only, any OS) |
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from .errors import ManifestError, UdrlError
from .gguf_file import check_gpt2_header, read_gguf_header
from .manifest import METADATA_KEY, Manifest, load_manifest


def artifact_kind(path: str | os.PathLike[str]) -> str:
    """``checkpoint``, ``gguf``, ``onnx`` or ``coreml``; raises `UdrlError` for anything else."""
    p = Path(path)
    if not p.exists():
        raise UdrlError(f"no such artifact: {p}")
    if p.suffix == ".mlpackage":
        return "coreml"
    if p.is_dir():
        return "checkpoint"
    if p.suffix in (".gguf", ".onnx"):
        return p.suffix[1:]
    raise UdrlError(f"{p} is not a udrl artifact: expected a checkpoint directory, .gguf, .onnx or .mlpackage")


def artifact_size(path: str | os.PathLike[str]) -> int:
    """Bytes on disk of an artifact: a file, or every file under a directory (checkpoint, .mlpackage)."""
    p = Path(path)
    if p.is_file():
        return p.stat().st_size
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())


def read_checked_gguf(path: str | os.PathLike[str]) -> Manifest:
    """The manifest of a GGUF file whose header has been checked against it (`gguf_file`), so
    that llama.cpp is never handed a file it would abort on."""
    header = read_gguf_header(path)
    text = header.metadata.get(METADATA_KEY)
    if not isinstance(text, str):
        raise ManifestError(
            f"{path} carries no udrl manifest (no {METADATA_KEY!r} metadata): export it with `udrl export`"
        )
    manifest = Manifest.from_json(text, source=str(path))
    check_gpt2_header(header, manifest)
    return manifest


def _onnx_manifest(path: Path) -> str | None:
    try:
        import onnx
        from google.protobuf.message import DecodeError
    except ImportError as exc:
        raise UdrlError("reading ONNX needs the 'convert' extra: pip install 'udrl-edge[convert]'") from exc
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except (DecodeError, ValueError, OSError) as exc:
        raise ManifestError(f"{path} is not a readable ONNX file ({type(exc).__name__}: {exc})") from None
    return next((p.value for p in proto.metadata_props if p.key == METADATA_KEY), None)


def _coreml_manifest(path: Path) -> str | None:
    try:
        import coremltools as ct
    except ImportError as exc:
        raise UdrlError("reading Core ML needs the 'coreml' extra: pip install 'udrl-edge[coreml]'") from exc
    spec = ct.utils.load_spec(str(path))
    return dict(spec.description.metadata.userDefined).get(METADATA_KEY)


_READERS: dict[str, Callable[[Path], str | None]] = {
    "onnx": _onnx_manifest,
    "coreml": _coreml_manifest,
}


def read_manifest(path: str | os.PathLike[str]) -> Manifest:
    """The manifest of any udrl artifact; `ManifestError` if it has none or an invalid one."""
    p = Path(path)
    kind = artifact_kind(p)
    if kind == "checkpoint":
        return load_manifest(p)
    if kind == "gguf":
        return read_checked_gguf(p)
    text = _READERS[kind](p)
    if text is None:
        raise ManifestError(
            f"{p} carries no udrl manifest (no {METADATA_KEY!r} metadata): export it with `udrl export`"
        )
    return Manifest.from_json(text, source=str(p))
