"""What every exported artifact is checked against: the PyTorch model on a fixed prompt set.

The prompt set renders real requests (every task, several lengths and reward levels) with queries
that exercise the tokenizer: punctuation, accents, CJK, emoji, runs of spaces. Exporters compare
their runtime's token ids, logits and greedy generations with the reference computed here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np
import torch
from udrl.commands import make_command, render_prompt
from udrl.manifest import Manifest

QUERIES = [
    "minimalist poster for a coffee shop",
    "Café crème & croissants: naïve façade, 50% off!",
    "東京の夜景 ポスター for a travel agency",
    "🎉 birthday party flyer 🎈 for Zoë (age 7)",
    "banner   for a   jazz festival -- \"Blue Note\" night, 9pm",
    "logo for a bike-repair shop in São Paulo",
]


def prompt_set(manifest: Manifest) -> list[str]:
    """Rendered prompts covering every task, the length range's ends and middle, and all rewards."""
    lengths = sorted({manifest.length_min, (manifest.length_min + manifest.length_max) // 2, manifest.length_max})
    prompts = []
    for i, query in enumerate(QUERIES):
        task = manifest.tasks[i % len(manifest.tasks)]
        length = lengths[i % len(lengths)]
        reward = i % manifest.reward_levels
        prompts.append(render_prompt(manifest, query, make_command(manifest, task, length, reward)))
    return prompts


def tokenizer_corpus(manifest: Manifest) -> list[str]:
    """Texts whose token ids every runtime must reproduce: prompts, outputs and odd strings."""
    return prompt_set(manifest) + QUERIES + [
        "neon city, rain, night" + manifest.eos_token,
        " leading space and trailing space ",
        "tabs\tand\nnewlines",
        "don't stop; it's 3.14 — or ~π?",
    ]


@torch.no_grad()
def reference_logits(model: torch.nn.Module, ids: Sequence[int]) -> np.ndarray:
    """Logits [len(ids), vocab] of the PyTorch model, fp32."""
    return model(torch.tensor([list(ids)])).logits[0].float().numpy()


@torch.no_grad()
def reference_greedy(model: torch.nn.Module, ids: Sequence[int], eos: int, max_new: int) -> list[int]:
    out: list[int] = []
    seq = list(ids)
    for _ in range(max_new):
        nxt = int(model(torch.tensor([seq])).logits[0, -1].argmax())
        if nxt == eos:
            break
        out.append(nxt)
        seq.append(nxt)
    return out


@dataclasses.dataclass
class LogitReport:
    max_abs_diff: float = 0.0
    scale: float = 0.0  # largest |logit| of the reference
    top1_agree: float = 0.0  # share of positions whose argmax matches
    positions: int = 0


def compare_logits(pairs: Sequence[tuple[np.ndarray, np.ndarray]]) -> LogitReport:
    diffs, scale, agree, n = [], 0.0, 0, 0
    for ref, got in pairs:
        diffs.append(float(np.max(np.abs(ref - got))))
        scale = max(scale, float(np.max(np.abs(ref))))
        agree += int(np.sum(ref.argmax(-1) == got.argmax(-1)))
        n += ref.shape[0]
    return LogitReport(max(diffs), scale, agree / max(n, 1), n)


def logit_checks(report: LogitReport, quant: str, tolerance: dict[str, float],
                 min_top1: dict[str, float]) -> tuple[dict[str, str], list[str]]:
    """The figures to print, and the failures: exact variants must keep logits within
    ``tolerance[quant]`` of the logit scale, quantized ones a top-1 agreement of ``min_top1[quant]``."""
    checks = {
        "logits max |diff|": f"{report.max_abs_diff:.2e} (max |logit| {report.scale:.1f})",
        "top-1 agreement": f"{report.top1_agree:.1%} of {report.positions} positions",
    }
    failures = []
    if quant in tolerance:
        limit = tolerance[quant] * max(1.0, report.scale)
        if report.max_abs_diff > limit:
            failures.append(f"logits differ by {report.max_abs_diff:.2e} > {limit:.2e} from PyTorch")
    elif quant in min_top1 and report.top1_agree < min_top1[quant]:
        failures.append(f"top-1 agreement {report.top1_agree:.1%} < {min_top1[quant]:.0%} required for {quant}")
    return checks, failures


def greedy_agreement(model: torch.nn.Module, prompts_ids: Sequence[Sequence[int]], eos: int,
                     generate: Callable[[Sequence[int], int], list[int]], max_new: int = 24) -> float:
    """Share of prompts whose greedy continuation is token-for-token the PyTorch model's."""
    same = 0
    for ids in prompts_ids:
        same += generate(ids, max_new) == reference_greedy(model, ids, eos, max_new)
    return same / max(len(prompts_ids), 1)
