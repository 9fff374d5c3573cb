"""Checkpoint directories (Hugging Face GPT-2 + tokenizer + ``udrl.json``): check and load them.

Shared by the trainer, the converters and the SDK's torch backend. torch and transformers are
imported only when a checkpoint is actually loaded.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .errors import CheckpointError, ManifestError
from .manifest import MANIFEST_FILENAME, Manifest, load_manifest

WEIGHTS = "model.safetensors"
REQUIRED_FILES = ("config.json", WEIGHTS, "tokenizer.json", MANIFEST_FILENAME)


def check_gpt2_dir(directory: str | Path) -> dict[str, Any]:
    """The config.json of a local model directory, refusing anything but GPT-2."""
    directory = Path(directory)
    config_file = directory / "config.json"
    if not config_file.exists():
        raise CheckpointError(f"{directory} has no config.json: not a Hugging Face model directory")
    try:
        config = json.loads(config_file.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{config_file} is not valid JSON ({exc.msg})") from None
    if config.get("model_type") != "gpt2":
        raise CheckpointError(
            f"{directory} holds a {config.get('model_type')!r} model; udrl trains and ships GPT-2 only"
        )
    return config


def verify_checkpoint(directory: str | Path) -> Manifest:
    """Check that a checkpoint directory is complete and its manifest valid; return the manifest."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"checkpoint directory not found: {directory}")
    missing = [f for f in REQUIRED_FILES if not (directory / f).exists()]
    if MANIFEST_FILENAME in missing:
        raise ManifestError(
            f"no udrl manifest in {directory} (expected {MANIFEST_FILENAME}); "
            "only checkpoints written by `udrl train` carry one"
        )
    if missing:
        raise CheckpointError(f"checkpoint {directory} is incomplete: missing {', '.join(missing)}")
    check_gpt2_dir(directory)
    return load_manifest(directory)


def load_checkpoint(directory: str | Path) -> tuple[Any, Any, Manifest]:
    """(GPT2LMHeadModel in eval mode, PreTrainedTokenizerFast, Manifest) of a checkpoint directory.

    Refuses incomplete or corrupted checkpoints with `CheckpointError` / `ManifestError`.
    """
    from safetensors import SafetensorError
    from transformers import GPT2LMHeadModel, PreTrainedTokenizerFast

    directory = Path(directory)
    manifest = verify_checkpoint(directory)
    try:
        model = GPT2LMHeadModel.from_pretrained(str(directory), local_files_only=True)
    except (OSError, SafetensorError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"cannot load weights from {directory / WEIGHTS}: {exc}") from None
    try:
        json.loads((directory / "tokenizer.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"tokenizer.json in {directory} is corrupted: {exc}") from None
    tokenizer = PreTrainedTokenizerFast.from_pretrained(str(directory), local_files_only=True)
    if len(tokenizer) > model.config.vocab_size:
        raise CheckpointError(
            f"{directory}: tokenizer has {len(tokenizer)} tokens but the model only {model.config.vocab_size}"
        )
    model.loss_type = "ForCausalLM"  # transformers cannot infer it from our class name and warns
    return model.eval(), tokenizer, manifest
