"""Mutated copies of a GGUF file for the hardening tests: truncations, flipped header bytes,
hyperparameters out of range, control tokens retyped, lengths that overflow. Each is written with
gguf-py's reader in read-write mode, so that every mutation lands on the field it names."""

from __future__ import annotations

import random
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
from gguf import GGUFReader


def _scalar(key: str, value) -> Callable[[GGUFReader], None]:
    def mutate(reader: GGUFReader) -> None:
        field = reader.fields[key]
        part = field.parts[field.data[0]]
        part[0] = np.array(value).astype(part.dtype)
    return mutate


def _control_type(token_id: int, new_type: int) -> Callable[[GGUFReader], None]:
    def mutate(reader: GGUFReader) -> None:
        field = reader.fields["tokenizer.ggml.token_type"]
        field.parts[field.data[token_id]][0] = new_type
    return mutate


def _string_length(key: str, length: int) -> Callable[[GGUFReader], None]:
    def mutate(reader: GGUFReader) -> None:
        field = reader.fields[key]
        field.parts[3 if len(field.parts) == 5 else 0][0] = length  # the value's length, else the key's
    return mutate


def _tensor_field(index: int, part: int, value: int) -> Callable[[GGUFReader], None]:
    def mutate(reader: GGUFReader) -> None:
        reader.tensors[index].field.parts[part][...] = value
    return mutate


def field_mutations(reader: GGUFReader, rng: random.Random) -> list[tuple[str, Callable[[GGUFReader], None]]]:
    """Named in-place mutations of a file's metadata and tensor table."""
    out = []
    for key, values in {
        "gpt2.block_count": [0, 1, 1000, 2**31],
        "gpt2.attention.head_count": [0, 3, 1000],
        "gpt2.embedding_length": [0, 7, 1 << 20],
        "gpt2.context_length": [0, 1, 1 << 30],
        "gpt2.feed_forward_length": [0, 1 << 30],
        "gpt2.attention.layer_norm_epsilon": [float("nan"), float("inf"), 0.0, -1.0, 1e30],
        "tokenizer.ggml.eos_token_id": [2**31, 10**6],
        "tokenizer.ggml.bos_token_id": [2**31 - 1],
    }.items():
        if key in reader.fields:
            out += [(f"{key}={v}", _scalar(key, v)) for v in values]
    types = reader.fields["tokenizer.ggml.token_type"]
    control = [i for i, part in enumerate(types.data) if types.parts[part][0] == 3]
    for token_id in rng.sample(control, min(8, len(control))):
        for new_type in (1, 4, 5):
            out.append((f"token {token_id} typed {new_type}", _control_type(token_id, new_type)))
    for key in ("udrl.manifest", "general.name", "tokenizer.ggml.pre", "gpt2.block_count"):
        for length in (2**62, 2**40, 0):
            out.append((f"{key} length {length}", _string_length(key, length)))
    for _ in range(12):
        i = rng.randrange(len(reader.tensors))
        # A tensor's parts: name length, name, n_dims, dims, type, offset.
        choice = rng.choice([(2, rng.choice([0, 5, 2**31])), (3, rng.choice([0, 2**40, 3])),
                             (4, rng.choice([4, 99, 2**31])), (5, rng.choice([1, 2**50, 64]))])
        out.append((f"tensor {reader.tensors[i].name} part {choice[0]} = {choice[1]}", _tensor_field(i, *choice)))
    return out


def mutated_files(source: Path, out_dir: Path, seed: int = 0, n_flips: int = 100,
                  n_truncations: int = 40) -> Iterator[tuple[str, Path]]:
    """Yield (what was done, path) for each mutated copy of ``source``."""
    rng = random.Random(seed)
    reader = GGUFReader(source)
    header_end = int(reader.data_offset)
    size = source.stat().st_size
    mutations = field_mutations(reader, rng)
    del reader
    n = 0

    def fresh(name: str) -> Path:
        nonlocal n
        n += 1
        path = out_dir / f"m{n:04d}.gguf"
        shutil.copyfile(source, path)
        return path

    for name, mutate in mutations:
        path = fresh(name)
        writable = GGUFReader(path, "r+")
        mutate(writable)
        writable.data.flush()
        del writable
        yield name, path
    for _ in range(n_flips):
        path = fresh("flip")
        data = bytearray(path.read_bytes())
        flips = [(rng.randrange(header_end), rng.randrange(1, 256)) for _ in range(rng.choice([1, 1, 2, 8]))]
        for at, mask in flips:
            data[at] ^= mask
        path.write_bytes(bytes(data))
        yield f"flipped header bytes {[a for a, _ in flips]}", path
    cuts = sorted({rng.randrange(1, header_end) for _ in range(n_truncations // 2)}
                  | {rng.randrange(header_end, size) for _ in range(n_truncations // 2)} | {0, 3, 8, 23})
    for cut in cuts:
        path = fresh("cut")
        with open(source, "rb") as f:
            path.write_bytes(f.read(cut))
        yield f"truncated at {cut} of {size}", path
