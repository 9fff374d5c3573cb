"""Token sampling from a logits vector: greedy, or temperature with top-k / top-p, seeded.

Example:
    >>> import numpy as np
    >>> pick = make_sampler(temperature=0.0)
    >>> pick(np.array([0.1, 2.0, -1.0]))
    1
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from .errors import CommandError

Sampler = Callable[[np.ndarray], int]


def make_sampler(temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0, seed: int | None = None) -> Sampler:
    """A function from logits to a token id. ``temperature=0`` is greedy (and ignores the rest);
    ``top_k=0`` and ``top_p=1`` disable those filters. The same seed gives the same choices."""
    if not math.isfinite(temperature) or temperature < 0:
        raise CommandError(f"temperature must be a finite number >= 0, got {temperature}")
    if top_k < 0:
        raise CommandError(f"top_k must be >= 0 (0 disables it), got {top_k}")
    if seed is not None and seed < 0:
        raise CommandError(f"seed must be an integer >= 0, got {seed}")
    if not 0 < top_p <= 1:
        raise CommandError(f"top_p must be in (0, 1], got {top_p}")
    if temperature == 0:
        return lambda logits: int(np.argmax(logits))
    rng = np.random.default_rng(seed)

    def sample(logits: np.ndarray) -> int:
        scaled = logits.astype(np.float64) / temperature
        if top_k and top_k < scaled.shape[0]:
            kth = np.partition(scaled, -top_k)[-top_k]
            scaled = np.where(scaled < kth, -np.inf, scaled)
        probs = np.exp(scaled - np.max(scaled))
        probs /= probs.sum()
        if top_p < 1.0:
            order = np.argsort(-probs)
            cumulative = np.cumsum(probs[order])
            keep = order[: int(np.searchsorted(cumulative, top_p)) + 1]
            mask = np.zeros_like(probs)
            mask[keep] = probs[keep]
            probs = mask / mask.sum()
        return int(rng.choice(probs.shape[0], p=probs))

    return sample
