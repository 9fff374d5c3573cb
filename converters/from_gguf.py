"""A checkpoint directory from a udrl GGUF (f32, f16 or a quantized variant), so that every other
format can be exported from the file that ships.

The header and weights are read with the SDK's GGUF reader (``udrl.gguf_file``, the project's
one) and dequantized with gguf-py's ``gguf.quants``; names map back through gguf-py's GPT-2
tensor-name map; the tokenizer is rebuilt from the GGUF's token list and merges as the byte-level BPE the trainer writes; the manifest is the one the file
carries. A q8_0 source gives the q8_0 weights in fp32: exports from it are as close to the shipped
file as its quantization allows, and `export` checks them against the source through the SDK.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import gguf
import numpy as np
from udrl.artifacts import read_manifest
from udrl.errors import CheckpointError
from udrl.gguf_file import GGUFHeader, read_gguf_header, tensor_bytes
from udrl.manifest import Manifest

# HF GPT-2 Conv1D weights are [in, out]; GGUF stores them [out, in] (to_gguf transposes them).
_CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


def _field(header: GGUFHeader, key: str):
    if key not in header.metadata:
        raise CheckpointError(f"the GGUF lacks metadata key {key}; it is not a udrl GPT-2 export")
    return header.metadata[key]


def gguf_state_dict(header: GGUFHeader, names: Iterable[str], n_layer: int) -> dict[str, np.ndarray]:
    """The GGUF's tensors as a Hugging Face GPT-2 state dict (fp32) with the keys ``names`` (the
    model's own), named through gguf-py's map; the tied output head is left to the model."""
    tmap = gguf.get_tensor_name_map(gguf.MODEL_ARCH.GPT2, n_layer)
    tensors = {}
    for t in header.tensors:
        data = gguf.quants.dequantize(tensor_bytes(header, t), gguf.GGMLQuantizationType(t.ggml_type))
        tensors[t.name] = data.astype(np.float32).reshape([int(d) for d in reversed(t.shape)])
    state = {}
    for hf_name in names:
        if hf_name == "lm_head.weight":
            continue  # tied to the token embedding
        name = tmap.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if name not in tensors:
            raise CheckpointError(f"the GGUF has no tensor {name} (for {hf_name}); it is not a udrl GPT-2 export")
        value = tensors[name]
        state[hf_name] = np.ascontiguousarray(value.T if hf_name.endswith(_CONV1D) else value)
    return state


def gguf_tokenizer(header: GGUFHeader, manifest: Manifest):
    """The byte-level BPE the GGUF carries, as the trainer's ``PreTrainedTokenizerFast``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from udrl.trainer.training.tokenizer import wrap_tokenizer

    tokens = _field(header, "tokenizer.ggml.tokens")
    merges = [tuple(m.split(" ")) for m in _field(header, "tokenizer.ggml.merges")]
    tok = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.add_special_tokens(manifest.special_tokens)
    fast = wrap_tokenizer(tok, manifest)
    split = [t for t in manifest.special_tokens
             if fast.encode(t, add_special_tokens=False) != [manifest.token_ids[t]]]
    if split or len(fast) != len(tokens):
        raise CheckpointError(f"the GGUF's tokenizer does not rebuild with the manifest's ids ({split[:3]})")
    return fast


def checkpoint_from_gguf(path: str | Path, target: str | Path) -> Path:
    """Write a checkpoint directory at ``target`` from a udrl GGUF; raises `CheckpointError` /
    `ManifestError` for a file that is not one."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel
    from udrl.trainer.training.checkpoint import write_checkpoint_dir

    path = Path(path)
    manifest = read_manifest(path)  # checks the header against the manifest first
    header = read_gguf_header(path)
    n_layer = int(_field(header, "gpt2.block_count"))
    vocab = len(_field(header, "tokenizer.ggml.tokens"))
    config = GPT2Config(
        vocab_size=vocab, n_positions=int(_field(header, "gpt2.context_length")),
        n_embd=int(_field(header, "gpt2.embedding_length")), n_layer=n_layer,
        n_head=int(_field(header, "gpt2.attention.head_count")),
        n_inner=int(_field(header, "gpt2.feed_forward_length")),
        layer_norm_epsilon=float(_field(header, "gpt2.attention.layer_norm_epsilon")),
        bos_token_id=manifest.eos_id, eos_token_id=manifest.eos_id, pad_token_id=manifest.eos_id,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, tie_word_embeddings=True,
    )
    model = GPT2LMHeadModel(config)
    state = gguf_state_dict(header, model.state_dict(), n_layer)  # every key but the tied head, or an error
    model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=False)
    model.tie_weights()
    tokenizer = gguf_tokenizer(header, manifest)
    # The lineage stays readable: this GGUF, then what it was exported from.
    parent = f"{path} <- {manifest.parent}" if manifest.parent else str(path)
    plain = manifest.replace(quantization=None, parent=parent)
    return write_checkpoint_dir(Path(target), model.eval(), tokenizer, plain, {"from_gguf": str(path)})


@contextmanager
def checkpoint_for(source: Path) -> Iterator[Path]:
    """``source`` itself when it is a checkpoint directory; for a ``.gguf``, a temporary checkpoint
    made from it (removed afterwards)."""
    if source.suffix != ".gguf":
        yield source
        return
    tmp = Path(tempfile.mkdtemp(prefix="udrl-from-gguf-"))
    try:
        yield checkpoint_from_gguf(source, tmp / "model")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
