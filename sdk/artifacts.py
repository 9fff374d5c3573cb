"""Recognise an artifact by its form and read the manifest it carries.

| artifact | where the manifest is | read with |
| --- | --- | --- |
| checkpoint directory | ``udrl.json`` | nothing extra |
| ``.gguf`` | metadata key ``udrl.manifest`` | the header, read here (no weights, no llama.cpp) |
| ``.onnx`` | ``metadata_props`` ``udrl.manifest`` | onnx |
| ``.mlpackage`` | ``user_defined_metadata`` ``udrl.manifest`` | coremltools (spec only, any OS) |
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from .errors import ManifestError, UdrlError
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


# GGUF value types (gguf spec): sizes of the fixed-width ones; 8 is string, 9 is array.
_GGUF_FIXED = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_GGUF_STRING, _GGUF_ARRAY = 8, 9


def gguf_metadata_string(path: str | os.PathLike[str], key: str) -> str | None:
    """A string value from a GGUF file's metadata, read from its header alone (no weights, no
    llama.cpp): the same walk native/udrl.c does."""
    import struct

    with open(path, "rb") as f:
        def read(fmt: str) -> tuple:
            size = struct.calcsize(fmt)
            data = f.read(size)
            if len(data) != size:
                raise ManifestError(f"{path} is truncated: its GGUF header ends early")
            return struct.unpack(fmt, data)

        def read_string() -> bytes:
            (n,) = read("<Q")
            data = f.read(n)
            if len(data) != n:
                raise ManifestError(f"{path} is truncated: its GGUF header ends early")
            return data

        def skip(vtype: int) -> None:
            if vtype in _GGUF_FIXED:
                f.seek(_GGUF_FIXED[vtype], 1)
            elif vtype == _GGUF_STRING:
                (n,) = read("<Q")
                f.seek(n, 1)
            elif vtype == _GGUF_ARRAY:
                item, count = read("<IQ")
                if item in _GGUF_FIXED:
                    f.seek(_GGUF_FIXED[item] * count, 1)
                else:
                    for _ in range(count):
                        skip(item)
            else:
                raise ManifestError(f"{path}: unknown GGUF value type {vtype}; the file is corrupted")

        if f.read(4) != b"GGUF":
            raise ManifestError(f"{path} is not a GGUF file (bad magic)")
        version, _tensors, kv_count = read("<IQQ")
        if version < 2:
            raise ManifestError(f"{path} is GGUF version {version}; llama.cpp needs version 2 or later")
        for _ in range(kv_count):
            name = read_string().decode("utf-8", errors="replace")
            (vtype,) = read("<I")
            if name == key and vtype == _GGUF_STRING:
                return read_string().decode("utf-8")
            skip(vtype)
    return None


def artifact_size(path: str | os.PathLike[str]) -> int:
    """Bytes on disk of an artifact: a file, or every file under a directory (checkpoint, .mlpackage)."""
    p = Path(path)
    if p.is_file():
        return p.stat().st_size
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())


def _gguf_manifest(path: Path) -> str | None:
    return gguf_metadata_string(path, METADATA_KEY)


def _onnx_manifest(path: Path) -> str | None:
    try:
        import onnx
        from google.protobuf.message import DecodeError
    except ImportError:
        raise UdrlError("reading ONNX needs the 'convert' extra: pip install 'udrl-edge[convert]'") from None
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except (DecodeError, ValueError, OSError) as exc:
        raise ManifestError(f"{path} is not a readable ONNX file ({type(exc).__name__}: {exc})") from None
    return next((p.value for p in proto.metadata_props if p.key == METADATA_KEY), None)


def _coreml_manifest(path: Path) -> str | None:
    try:
        import coremltools as ct
    except ImportError:
        raise UdrlError("reading Core ML needs the 'coreml' extra: pip install 'udrl-edge[coreml]'") from None
    spec = ct.utils.load_spec(str(path))
    return dict(spec.description.metadata.userDefined).get(METADATA_KEY)


_READERS: dict[str, Callable[[Path], str | None]] = {
    "gguf": _gguf_manifest,
    "onnx": _onnx_manifest,
    "coreml": _coreml_manifest,
}


def read_manifest(path: str | os.PathLike[str]) -> Manifest:
    """The manifest of any udrl artifact; `ManifestError` if it has none or an invalid one."""
    p = Path(path)
    kind = artifact_kind(p)
    if kind == "checkpoint":
        return load_manifest(p)
    text = _READERS[kind](p)
    if text is None:
        raise ManifestError(
            f"{p} carries no udrl manifest (no {METADATA_KEY!r} metadata): export it with `udrl export`"
        )
    return Manifest.from_json(text, source=str(p))
