"""Command adherence of a torch checkpoint: greedy generation and the figures it yields.

Used at every validation step of training (length error, share within one word of the request,
format validity) so that a run shows whether the model obeys its commands, not just its loss.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch
from transformers import GPT2LMHeadModel, PreTrainedTokenizerFast

from udrl.commands import Command, count_words, render_prompt
from udrl.manifest import Manifest

from .formats import is_valid_format


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
    """Greedy outputs for ``requests``, batched with left padding and a KV cache."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    eos = manifest.eos_id
    n_ctx = model.config.n_positions
    if max_new_tokens is None:
        max_new_tokens = 3 * manifest.length_max + 8
    outputs: list[str] = []
    for start in range(0, len(requests), batch_size):
        chunk = requests[start : start + batch_size]
        prompts = [
            tokenizer.encode(render_prompt(manifest, r.query, r.command), add_special_tokens=False)
            for r in chunk
        ]
        prompts = [p[-(n_ctx - 1) :] for p in prompts]
        width = max(map(len, prompts))
        budget = min(max_new_tokens, n_ctx - width)
        ids = torch.full((len(chunk), width), eos, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for i, p in enumerate(prompts):
            ids[i, width - len(p) :] = torch.tensor(p)
            mask[i, width - len(p) :] = 1
        ids, mask = ids.to(device), mask.to(device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        generated = [[] for _ in chunk]
        done = torch.zeros(len(chunk), dtype=torch.bool, device=device)
        cache = None
        step_ids = ids
        for _ in range(budget):
            out = model(
                input_ids=step_ids,
                attention_mask=mask,
                position_ids=positions,
                cache=cache,
                use_cache=True,
                logits_to_keep=1,
            )
            cache = out.cache
            nxt = out.logits[:, -1, :].argmax(-1)
            for i in range(len(chunk)):
                if not done[i]:
                    if nxt[i].item() == eos:
                        done[i] = True
                    else:
                        generated[i].append(nxt[i].item())
            if bool(done.all()):
                break
            step_ids = nxt.unsqueeze(-1)
            mask = torch.cat([mask, torch.ones_like(step_ids)], dim=-1)
            positions = positions[:, -1:] + 1
        outputs.extend(tokenizer.decode(g, skip_special_tokens=True).strip() for g in generated)
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
