"""The hand-written request set: design requests as users type them, never training data.

``data/handwritten/requests.txt`` holds them ("domain | request", one a line); the split into a
tuning half (for `udrl focus` and any decoding, checkpoint or recipe choice) and an evaluation half
(that no choice ever looks at) was drawn once and is committed as ``data/handwritten/split.json``,
so it never moves. The teacher wrote every training query (6,600 grown from 203 seed topics); these
were written by hand across many more kinds of artefact and domain, so `udrl eval` on the
evaluation half measures the model off its own distribution.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

from .errors import DatasetError

HANDWRITTEN_DIR = Path(__file__).resolve().parents[1] / "data" / "handwritten"
SPLITS = ("tune", "eval")


@dataclasses.dataclass(frozen=True)
class HandwrittenRequest:
    domain: str
    query: str


def query_key(text: str) -> str:
    """The form in which two requests count as the same one: lower case, punctuation dropped, spaces
    collapsed. Every source of training queries bans the hand-written set (and its own repeats) by it."""
    return " ".join("".join(c for c in text.lower() if c.isalnum() or c == " ").split())


def read_requests(directory: Path = HANDWRITTEN_DIR) -> list[HandwrittenRequest]:
    """Every request of ``requests.txt``, in file order; `DatasetError` naming a malformed line."""
    path = directory / "requests.txt"
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        domain, sep, query = line.partition("|")
        if not sep or not domain.strip() or not query.strip():
            raise DatasetError(f"{path}:{n}: expected 'domain | request', got {line!r}")
        out.append(HandwrittenRequest(domain.strip(), " ".join(query.split())))
    return out


def draw_split(requests: list[HandwrittenRequest]) -> dict[str, list[str]]:
    """Half of each domain's requests to tuning and half to evaluation, by the order of their
    sha256 (what was run once to write split.json)."""
    split: dict[str, list[str]] = {s: [] for s in SPLITS}
    domains = sorted({r.domain for r in requests})
    placed = 0  # alternating across the whole file, so that odd-sized domains do not all lean one way
    for domain in domains:
        ranked = sorted((r.query for r in requests if r.domain == domain),
                        key=lambda q: hashlib.sha256(q.encode()).hexdigest())
        for query in ranked:
            split[SPLITS[placed % 2]].append(query)
            placed += 1
    return split


def load_split(name: str, directory: Path = HANDWRITTEN_DIR) -> list[str]:
    """The queries of one half (``tune`` or ``eval``) of the committed split, checked against the
    request file: the halves are disjoint and together hold every request."""
    if name not in SPLITS:
        raise DatasetError(f"unknown hand-written split {name!r}; choose one of: {', '.join(SPLITS)}")
    split = json.loads((directory / "split.json").read_text(encoding="utf-8"))
    queries = [r.query for r in read_requests(directory)]
    halves = [set(split[s]) for s in SPLITS]
    if halves[0] & halves[1] or halves[0] | halves[1] != set(queries) or sum(map(len, halves)) != len(queries):
        raise DatasetError(f"{directory / 'split.json'} does not split {directory / 'requests.txt'} into two "
                           "disjoint halves; the split is drawn once (draw_split) and never redrawn")
    return list(split[name])
