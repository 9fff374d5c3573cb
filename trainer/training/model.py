"""The policy: a Hugging Face ``GPT2LMHeadModel``, built from a preset or a local pretrained GPT-2."""

from __future__ import annotations

from pathlib import Path

from transformers import GPT2Config, GPT2LMHeadModel
from udrl.checkpoint import check_gpt2_dir

from ..errors import ConfigError
from .config import PRESETS


def build_model(preset: str, vocab_size: int, eos_id: int, dropout: float = 0.0) -> GPT2LMHeadModel:
    """A freshly initialised GPT-2 of the named preset."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown model preset {preset!r}; choose one of: {', '.join(PRESETS)}")
    config = GPT2Config(
        vocab_size=vocab_size,
        bos_token_id=eos_id,
        eos_token_id=eos_id,
        pad_token_id=eos_id,
        resid_pdrop=dropout,
        embd_pdrop=dropout,
        attn_pdrop=dropout,
        tie_word_embeddings=True,
        **PRESETS[preset],
    )
    return GPT2LMHeadModel(config)


def init_from_pretrained(directory: str | Path, vocab_size: int, dropout: float = 0.0) -> GPT2LMHeadModel:
    """A local pretrained GPT-2, its embeddings resized to ``vocab_size`` (the control tokens)."""
    check_gpt2_dir(directory)
    model = GPT2LMHeadModel.from_pretrained(
        str(directory), local_files_only=True, resid_pdrop=dropout, embd_pdrop=dropout, attn_pdrop=dropout
    )
    if vocab_size != model.config.vocab_size:
        # mean_resizing starts the new rows at the mean embedding, which trains faster than noise.
        model.resize_token_embeddings(vocab_size, mean_resizing=True)
    return model


def count_parameters(model: GPT2LMHeadModel) -> int:
    """Unique parameters (tied input/output embeddings counted once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
