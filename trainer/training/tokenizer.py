"""Tokenizers: our own byte-level BPE, or a local GPT-2 tokenizer, with every control token whole.

Both paths give a ``PreTrainedTokenizerFast`` whose special tokens are exactly the manifest's
(eos, sep and the control tokens), each encoding to a single id; `attach_token_ids` records
those ids in the manifest so that converters, the SDK and the native layer use the same ones.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast
from udrl.errors import CheckpointError
from udrl.manifest import Manifest

from ..errors import ConfigError

# How often a listed word counts for the BPE. At 3 or 10 (of 30,000 words, beside the 26,143-record data)
# the merges of "mr" or "rpg" still lost to the data's; at 30 no letter word of the hand-written requests
# was spelt letter by letter, for about 5% more tokens. On the 105,252-record data a vocabulary of 8,192
# leaves "mr" spelt at any count (a two-letter word's one merge loses to the pieces many words share).
_WORD_COUNT = 30
# Each listed word also counts this often in Title Case, as headlines write it: with lower case alone,
# 14.6% of the teacher's capitalised headline words came out in three or more pieces (" Eggs" as
# " E" "gg" "s"), and the model trained on them wrote headline fragments ("Fresh Bat &"). On the
# 105,252-record data at 14,336 tokens: 1.9% (1.31 pieces a word against 1.57), no hand-written word
# spelt, 0.8% more tokens (with no word list at all: 3.8%). A count of 30, or a 12,288 vocabulary,
# leaves "mr" spelt again.
_TITLE_CASE_COUNT = 20


def english_word_list(n: int) -> list[str]:
    """wordfreq's ``n`` most frequent English words of letters and digits ("diy", "bbq", "5k")."""
    from wordfreq import top_n_list

    return [w for w in top_n_list("en", n) if w.isascii() and w.isalnum()]


def train_bpe(texts: Iterable[str], manifest: Manifest, vocab_size: int = 8192,
              words: Sequence[str] = ()) -> PreTrainedTokenizerFast:
    """Train a GPT-2-style byte-level BPE on ``texts`` and a word list (each word seen as an
    output word is, after a space, in lower and in Title Case, often enough to be merged); special
    tokens take the first ids."""
    special = manifest.special_tokens
    least = 256 + len(special) + 1
    if vocab_size < least:
        raise ConfigError(f"vocab_size {vocab_size} is too small for a new tokenizer: it needs at least {least} "
                          f"(256 bytes, {len(special)} special tokens and one merge); pass --vocab-size {least} or more")
    tok = Tokenizer(models.BPE())
    # GPT-2's pre-tokenizer regex, so that llama.cpp's "gpt2" pre-tokenizer splits identically.
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        min_frequency=2,
        show_progress=False,
    )
    listed = itertools.chain.from_iterable(
        [f" {w}"] * _WORD_COUNT + [f" {w.capitalize()}"] * _TITLE_CASE_COUNT for w in words)
    tok.train_from_iterator(itertools.chain(texts, listed), trainer=trainer)
    return wrap_tokenizer(tok, manifest)


def wrap_tokenizer(tok: Tokenizer, manifest: Manifest) -> PreTrainedTokenizerFast:
    """A ``tokenizers`` BPE as the ``PreTrainedTokenizerFast`` checkpoints hold, with the manifest's
    special tokens (eos doubles as bos, unk and pad)."""
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=manifest.eos_token,
        bos_token=manifest.eos_token,
        unk_token=manifest.eos_token,
        pad_token=manifest.eos_token,
    )
    fast.add_special_tokens({"additional_special_tokens": manifest.special_tokens[1:]})
    return fast


def load_gpt2_tokenizer(directory: str | Path, manifest: Manifest) -> PreTrainedTokenizerFast:
    """A GPT-2 tokenizer from a local directory, with the manifest's special tokens added."""
    directory = Path(directory)
    if not (directory / "tokenizer.json").exists() and not (directory / "vocab.json").exists():
        raise CheckpointError(
            f"no tokenizer in {directory}: expected tokenizer.json or vocab.json + merges.txt"
        )
    tok = AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
    if not isinstance(tok, PreTrainedTokenizerFast):
        raise CheckpointError(f"{directory}: need a fast (tokenizers) tokenizer, got {type(tok).__name__}")
    tok.add_special_tokens(
        {
            "eos_token": manifest.eos_token,
            "pad_token": manifest.eos_token,
            "additional_special_tokens": manifest.special_tokens[1:],
        }
    )
    return tok


def attach_token_ids(manifest: Manifest, tokenizer: PreTrainedTokenizerFast) -> Manifest:
    """Record each special token's id, after checking it really encodes to that single id."""
    ids: dict[str, int] = {}
    broken = []
    for token in manifest.special_tokens:
        encoded = tokenizer.encode(token, add_special_tokens=False)
        if len(encoded) != 1:
            broken.append(token)
        else:
            ids[token] = encoded[0]
    if broken:
        raise CheckpointError(f"tokenizer splits control tokens {broken[:5]}: they must be special tokens")
    return manifest.replace(token_ids=ids)
