"""The policy: a Hugging Face ``GPT2LMHeadModel``, built from a preset or a local pretrained GPT-2."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast
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


def init_from_pretrained(directory: str | Path, vocab_size: int | None, dropout: float = 0.0) -> GPT2LMHeadModel:
    """A local pretrained GPT-2, its embeddings resized to ``vocab_size`` (the control tokens; None:
    as it is)."""
    check_gpt2_dir(directory)
    model = GPT2LMHeadModel.from_pretrained(
        str(directory), local_files_only=True, resid_pdrop=dropout, embd_pdrop=dropout, attn_pdrop=dropout
    )
    if vocab_size is not None and vocab_size != model.config.vocab_size:
        # mean_resizing starts the new rows at the mean embedding, which trains faster than noise.
        model.resize_token_embeddings(vocab_size, mean_resizing=True)
    return model


def transplant_vocabulary(model: GPT2LMHeadModel, old: PreTrainedTokenizerFast,
                          new: PreTrainedTokenizerFast) -> int:
    """Give ``model`` (trained with ``old``) the vocabulary of ``new``: a token both hold keeps its
    embedding row; any other starts at the mean of the rows of the old tokens that spell it. So a
    trained model moves to a tokenizer that keeps more words whole without learning its embeddings
    from noise (the rows are tied, so the output layer moves with them). Returns how many of the
    new tokens the old vocabulary held."""
    old_rows = model.get_input_embeddings().weight.detach().clone()
    old_ids = old.get_vocab()
    spell = old.backend_tokenizer.model  # BPE on byte-level strings: both tokenizers' token alphabet
    model.resize_token_embeddings(len(new), mean_resizing=False)
    weight = model.get_input_embeddings().weight
    kept = 0
    with torch.no_grad():
        for token, new_id in new.get_vocab().items():
            if token in old_ids:
                weight[new_id] = old_rows[old_ids[token]]
                kept += 1
            else:
                weight[new_id] = old_rows[[piece.id for piece in spell.tokenize(token)]].mean(dim=0)
    return kept


def count_parameters(model: GPT2LMHeadModel) -> int:
    """Unique parameters (tied input/output embeddings counted once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
