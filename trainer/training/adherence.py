"""Command adherence of a torch checkpoint: greedy generation and the figures it yields.

Used at every validation step of training (length error, share within one word of the request,
format validity) so that a run shows whether the model obeys its commands, not just its loss.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch
from transformers import GPT2LMHeadModel, PreTrainedTokenizerFast
from udrl.backend_torch import TorchBackend
from udrl.commands import Command, count_words
from udrl.generate import GenerationOptions, generate_batch_tokens
from udrl.manifest import Manifest

from ..formats import is_valid_format


@dataclasses.dataclass(frozen=True)
class Request:
    query: str
    command: Command


@torch.no_grad()
def greedy_generate(
    model: GPT2LMHeadModel,
    tokenizer: PreTrainedTokenizerFast,
    manifest: Manifest,
    requests: Sequence[Request],
    max_new_tokens: int | None = None,
    batch_size: int = 32,
) -> list[str]:
    """Greedy outputs for ``requests`` through the SDK's own batched loop, without the length
    guard: what the model does by itself is what training should measure."""
    was_training = model.training
    model.eval()
    backend = TorchBackend.from_model(model, tokenizer, manifest)
    options = GenerationOptions(max_tokens=max_new_tokens, length_guard=False)
    outputs: list[str] = []
    try:
        for start in range(0, len(requests), batch_size):
            chunk = [(r.query, r.command) for r in requests[start : start + batch_size]]
            outputs += [s.text for s in generate_batch_tokens(backend, chunk, options)]
    finally:
        model.train(was_training)
    return outputs


def adherence(requests: Sequence[Request], outputs: Sequence[str]) -> dict[str, float]:
    """Length error and format validity of outputs against the commands that asked for them."""
    if not requests:
        return {}
    errors = [abs(count_words(o) - r.command.length) for r, o in zip(requests, outputs)]
    valid = [is_valid_format(r.command.task, o) for r, o in zip(requests, outputs)]
    n = len(errors)
    return {
        "len_mae": sum(errors) / n,
        "len_within1": sum(e <= 1 for e in errors) / n,
        "len_exact": sum(e == 0 for e in errors) / n,
        "format_valid": sum(valid) / n,
    }
