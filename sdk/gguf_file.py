"""The project's one GGUF reader: a file's header, checked before llama.cpp sees it, and its
tensors' bytes for the converters (no llama.cpp, nothing loaded until asked for).

llama.cpp trusts much of a GGUF header: a block count of 1000, a NaN layer-norm epsilon or a
control token typed as a normal word aborts the process or decodes garbage instead of failing
with an error. An app cannot catch an abort, so the SDK reads the header itself (memory-mapped,
every length bounded by the file's size) and checks it against the manifest the file carries:
`read_gguf_header` parses, `check_gpt2_header` cross-checks. Both raise `ManifestError` naming
the field and what is allowed. `tensor_bytes` maps one tensor's data (the converters dequantize it
with gguf-py's ``gguf.quants``).

Why not gguf-py's ``GGUFReader`` here too: on the bundled model it takes about 15 times as long
(0.47 s against 0.03 s, measured once on two cores beside a training run), and on corrupted
files it raises IndexError, ValueError or UnicodeDecodeError (87 of 155 of the hardening tests'
mutated files) or accepts them, where an app needs one typed error. Tests still use gguf-py to
write and mutate files, so a header this module misreads fails them.

Constants follow the GGUF specification (ggml/docs/gguf.md) and ggml's type table.
"""

from __future__ import annotations

import dataclasses
import math
import mmap
import os
import struct
from collections.abc import Mapping
from typing import Any

import numpy as np

from .errors import ManifestError
from .manifest import Manifest

MAGIC = b"GGUF"
VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32
# Bounds well above any real file, below what would exhaust memory or time while parsing.
MAX_KV = 1 << 16
MAX_TENSORS = 1 << 20
MAX_DIMS = 4
MAX_ARRAY_ITEMS = 1 << 24

# Value types: struct format of the fixed-width ones; 8 is a string, 9 an array.
_FIXED = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
STRING, ARRAY = 8, 9

# ggml tensor types llama.cpp can load a gpt2 model in: (elements per block, bytes per block).
GGML_TYPES = {
    0: (1, 4),  # F32
    1: (1, 2),  # F16
    2: (32, 18),  # Q4_0
    3: (32, 20),  # Q4_1
    6: (32, 22),  # Q5_0
    7: (32, 24),  # Q5_1
    8: (32, 34),  # Q8_0
    10: (256, 84),  # Q2_K
    11: (256, 110),  # Q3_K
    12: (256, 144),  # Q4_K
    13: (256, 176),  # Q5_K
    14: (256, 210),  # Q6_K
    30: (1, 2),  # BF16
}

TOKEN_TYPE_CONTROL = 3  # llama.cpp's LLAMA_TOKEN_TYPE_CONTROL: parsed whole, never written as text

# The manifest's model fields and the GGUF keys that must agree with them.
GPT2_HPARAMS = {
    "n_layer": "gpt2.block_count",
    "n_head": "gpt2.attention.head_count",
    "n_embd": "gpt2.embedding_length",
    "n_ctx": "gpt2.context_length",
}
# Ranges llama.cpp handles (LLAMA_MAX_LAYERS is 512) and that a small policy can have.
HPARAM_RANGES = {
    "gpt2.block_count": (1, 512),
    "gpt2.attention.head_count": (1, 256),
    "gpt2.embedding_length": (1, 1 << 16),
    "gpt2.context_length": (2, 1 << 20),
    "gpt2.feed_forward_length": (1, 1 << 18),
}
EPSILON_KEY = "gpt2.attention.layer_norm_epsilon"


@dataclasses.dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]  # ggml order: the fastest-varying dimension first
    ggml_type: int
    offset: int  # from the start of the data section

    @property
    def nbytes(self) -> int:
        block, size = GGML_TYPES[self.ggml_type]
        return math.prod(self.shape) // block * size


@dataclasses.dataclass(frozen=True)
class GGUFHeader:
    """A GGUF file's metadata (key -> value; arrays as lists) and tensor table."""

    path: str
    version: int
    metadata: Mapping[str, Any]
    tensors: tuple[TensorInfo, ...]
    data_offset: int
    file_size: int


class _Cursor:
    """Bounded reads from a memory-mapped file: every failure is a `ManifestError`."""

    def __init__(self, data: mmap.mmap | bytes, path: str):
        self.data, self.pos, self.path = data, 0, path

    def fail(self, what: str) -> ManifestError:
        return ManifestError(f"{self.path} is not a valid GGUF file: {what} (at byte {self.pos}); "
                             "the file is truncated or corrupted: export it again")

    def take(self, n: int) -> bytes:
        if n < 0 or n > len(self.data) - self.pos:
            raise self.fail(f"a field of {n} bytes runs past the end of the file ({len(self.data)} bytes)")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def unpack(self, fmt: str) -> Any:
        (value,) = struct.unpack(fmt, self.take(struct.calcsize(fmt)))
        return value

    def string(self) -> str:
        raw = self.take(self.unpack("<Q"))
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise self.fail("a string is not valid UTF-8") from exc

    def value(self, vtype: int) -> Any:
        if vtype in _FIXED:
            return self.unpack(_FIXED[vtype])
        if vtype == STRING:
            return self.string()
        if vtype == ARRAY:
            item, count = self.unpack("<I"), self.unpack("<Q")
            if item == ARRAY:
                raise self.fail("an array of arrays is not allowed")
            least = struct.calcsize(_FIXED[item]) if item in _FIXED else 8 if item == STRING else None
            if least is None:
                raise self.fail(f"unknown array item type {item}")
            if count > MAX_ARRAY_ITEMS or count * least > len(self.data) - self.pos:
                raise self.fail(f"an array of {count} items does not fit in the file")
            if item in _FIXED:
                fmt = "<" + str(count) + _FIXED[item][1]
                return list(struct.unpack(fmt, self.take(struct.calcsize(fmt))))
            return [self.string() for _ in range(count)]
        raise self.fail(f"unknown value type {vtype}")


def read_gguf_header(path: str | os.PathLike[str]) -> GGUFHeader:
    """Parse a GGUF file's header: metadata and tensor table, every length checked against the
    file's size; raises `ManifestError` saying what is wrong."""
    p = str(path)
    try:
        with open(p, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size < 24:
                data: mmap.mmap | bytes = f.read()
            else:
                data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except OSError as exc:
        raise ManifestError(f"cannot read {p}: {exc.strerror or exc}") from exc
    try:
        return _parse(_Cursor(data, p), size)
    finally:
        if isinstance(data, mmap.mmap):
            data.close()


def _parse(cur: _Cursor, size: int) -> GGUFHeader:
    if bytes(cur.data[:4]) != MAGIC:
        raise ManifestError(f"{cur.path} is not a GGUF file (bad magic)")
    cur.pos = 4
    try:
        version, n_tensors, n_kv = cur.unpack("<I"), cur.unpack("<Q"), cur.unpack("<Q")
    except ManifestError:
        raise ManifestError(f"{cur.path} is truncated: its GGUF header ends early") from None
    if version not in VERSIONS:
        raise ManifestError(f"{cur.path} is GGUF version {version}; udrl reads versions "
                            f"{', '.join(map(str, VERSIONS))}")
    if n_kv > MAX_KV or n_tensors > MAX_TENSORS:
        raise cur.fail(f"{n_kv} metadata keys and {n_tensors} tensors exceed what a GGUF file holds")
    metadata: dict[str, Any] = {}
    for _ in range(n_kv):
        key = cur.string()
        if key in metadata:
            raise cur.fail(f"metadata key {key!r} appears twice")
        metadata[key] = cur.value(cur.unpack("<I"))
    tensors = []
    for _ in range(n_tensors):
        name = cur.string()
        n_dims = cur.unpack("<I")
        if not 1 <= n_dims <= MAX_DIMS:
            raise cur.fail(f"tensor {name!r} has {n_dims} dimensions; 1 to {MAX_DIMS} are allowed")
        shape = tuple(cur.unpack("<Q") for _ in range(n_dims))
        ggml_type, offset = cur.unpack("<I"), cur.unpack("<Q")
        if ggml_type not in GGML_TYPES:
            raise cur.fail(f"tensor {name!r} has ggml type {ggml_type}, which udrl does not load")
        if any(d < 1 or d > 1 << 32 for d in shape) or shape[0] % GGML_TYPES[ggml_type][0]:
            raise cur.fail(f"tensor {name!r} has an impossible shape {list(shape)}")
        tensors.append(TensorInfo(name, shape, ggml_type, offset))
    alignment = metadata.get("general.alignment", DEFAULT_ALIGNMENT)
    if not isinstance(alignment, int) or alignment < 1 or alignment & (alignment - 1) or alignment > 1 << 16:
        raise cur.fail(f"general.alignment {alignment!r} is not a power of two up to 65536")
    data_offset = -(-cur.pos // alignment) * alignment
    names = set()
    for t in tensors:
        if t.name in names:
            raise cur.fail(f"tensor {t.name!r} appears twice")
        names.add(t.name)
        if t.offset % alignment or data_offset + t.offset + t.nbytes > size:
            raise cur.fail(f"tensor {t.name!r} ({t.nbytes} bytes at offset {t.offset}) lies outside the file")
    return GGUFHeader(cur.path, version, metadata, tuple(tensors), data_offset, size)


def tensor_bytes(header: GGUFHeader, tensor: TensorInfo) -> np.ndarray:
    """One tensor's data as read-only bytes, one row per innermost dimension (shape: the product of
    the outer dimensions x the row's bytes), as ``gguf.quants.dequantize`` takes it."""
    rows = math.prod(tensor.shape[1:])
    data = np.memmap(header.path, dtype=np.uint8, mode="r", offset=header.data_offset + tensor.offset,
                     shape=(tensor.nbytes,))
    return data.reshape(rows, tensor.nbytes // rows)


def gguf_metadata_string(path: str | os.PathLike[str], key: str) -> str | None:
    """A string value from a GGUF file's metadata (None when absent or not a string)."""
    value = read_gguf_header(path).metadata.get(key)
    return value if isinstance(value, str) else None


def _int_field(header: GGUFHeader, key: str) -> int:
    value = header.metadata.get(key)
    lo, hi = HPARAM_RANGES[key]
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ManifestError(f"{header.path}: GGUF key {key} is {value!r}; it must be an integer from {lo} to {hi}")
    return value


def check_gpt2_header(header: GGUFHeader, manifest: Manifest) -> None:
    """Refuse a GGUF whose hyperparameters, tokenizer or tensors llama.cpp would abort on or run
    wrongly: the architecture, hyperparameters within range and equal to the manifest's, a finite
    layer-norm epsilon, the token embedding's size, and every control token typed CONTROL with the
    string and id the manifest gives it."""
    meta, where = header.metadata, header.path
    arch = meta.get("general.architecture")
    if arch != "gpt2":
        raise ManifestError(f"{where}: GGUF architecture is {arch!r}; udrl models are 'gpt2'")
    hparams = {key: _int_field(header, key) for key in HPARAM_RANGES}
    for field, key in GPT2_HPARAMS.items():
        want = manifest.model.get(field)
        if want is not None and want != hparams[key]:
            raise ManifestError(f"{where}: GGUF key {key} is {hparams[key]}, but the manifest says "
                                f"{field} = {want}; the file is corrupted: export it again")
    if hparams["gpt2.embedding_length"] % hparams["gpt2.attention.head_count"]:
        raise ManifestError(f"{where}: embedding length {hparams['gpt2.embedding_length']} is not a multiple "
                            f"of the head count {hparams['gpt2.attention.head_count']}")
    eps = meta.get(EPSILON_KEY)
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not (math.isfinite(eps) and 0 < eps <= 0.1):
        raise ManifestError(f"{where}: GGUF key {EPSILON_KEY} is {eps!r}; it must be a number in (0, 0.1]")
    tokens, types = meta.get("tokenizer.ggml.tokens"), meta.get("tokenizer.ggml.token_type")
    if not isinstance(tokens, list) or not tokens or not all(isinstance(t, str) for t in tokens):
        raise ManifestError(f"{where}: GGUF has no token list (tokenizer.ggml.tokens)")
    if not isinstance(types, list) or len(types) != len(tokens):
        raise ManifestError(f"{where}: tokenizer.ggml.token_type must list one type per token ({len(tokens)})")
    merges = meta.get("tokenizer.ggml.merges")
    if meta.get("tokenizer.ggml.model") != "gpt2" or not isinstance(merges, list) or not all(
            isinstance(m, str) and len(m.split(" ")) == 2 for m in merges):
        raise ManifestError(f"{where}: the GGUF tokenizer is not a GPT-2 BPE with merges")
    embd = {t.name: t for t in header.tensors}.get("token_embd.weight")
    if embd is None or embd.shape != (hparams["gpt2.embedding_length"], len(tokens)):
        raise ManifestError(f"{where}: token_embd.weight must have shape "
                            f"[{hparams['gpt2.embedding_length']}, {len(tokens)}], got {embd and list(embd.shape)}")
    for key in ("tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id", "tokenizer.ggml.padding_token_id"):
        value = meta.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or not 0 <= value < len(tokens)):
            raise ManifestError(f"{where}: GGUF key {key} is {value!r}; it must be a token id below {len(tokens)}")
    for token, token_id in manifest.token_ids.items():
        if not 0 <= token_id < len(tokens) or tokens[token_id] != token:
            raise ManifestError(f"{where}: the manifest gives {token!r} id {token_id}, but the GGUF token list "
                                "does not have it there; the file is corrupted: export it again")
        if types[token_id] != TOKEN_TYPE_CONTROL:
            raise ManifestError(f"{where}: control token {token!r} (id {token_id}) is typed {types[token_id]} in "
                                f"tokenizer.ggml.token_type, not CONTROL ({TOKEN_TYPE_CONTROL}): llama.cpp would "
                                "split it into text; export the file again")
