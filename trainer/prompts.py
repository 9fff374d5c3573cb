"""Few-shot prompts for the teacher, and the cleaning of what it writes.

Teachers are base (completion) models by default, so each task is a few-shot list that ends where
the teacher should continue: ``Prompt (N words):``. What each task's prompt says, and how its
outputs are cleaned, comes from its task file (`taskfile.py`). The requested length N is drawn
from a per-task spread; what matters for UDRL is the length the output *achieves*, which
relabelling records.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping

from .taskfile import TASKS


class _LengthSpread(Mapping[str, tuple[int, int]]):
    """Requested lengths (words) per task, from the task files: a spread, so the data covers the
    command range."""

    def __getitem__(self, task: str) -> tuple[int, int]:
        return TASKS[task].lengths

    def __iter__(self) -> Iterator[str]:
        return iter(TASKS)

    def __len__(self) -> int:
        return len(TASKS)


LENGTH_SPREAD: Mapping[str, tuple[int, int]] = _LengthSpread()

STOP = ["\n", "Request:", "<start_of_image>", "<end_of_turn>"]


def build_prompt(task: str, query: str, words: int) -> str:
    """The few-shot prompt asking the teacher for a ``task`` output of ``words`` words."""
    spec = TASKS[task]
    label = spec.label
    parts = [spec.instruction, ""]
    for request, output in spec.examples:
        parts += [f"Request: {request}", f"{label} ({len(output.split())} words): {output}", ""]
    parts += [f"Request: {query}", f"{label} ({words} words):"]
    return "\n".join(parts)


_SPECIAL = re.compile(r"<[a-z_]+>|<\|[^|>]*\|>")
_LABEL_PREFIX = re.compile(r"^(prompt|search|headline|tags|output|answer)\s*(\(\d+ words\))?\s*:\s*", re.I)


def _normal(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", " ", text.lower()).strip()


def clean_output(task: str, text: str, query: str) -> tuple[str | None, str]:
    """One clean line from a teacher completion, or ``(None, reason)`` when it must be rejected."""
    if _SPECIAL.search(text):
        text = text[: _SPECIAL.search(text).start()]
    line = text.strip().splitlines()[0].strip() if text.strip() else ""
    line = _LABEL_PREFIX.sub("", line).strip().strip('"').strip("'").strip()
    line = " ".join(line.split())
    spec = TASKS[task]
    if spec.is_list:
        items: dict[str, str] = {}  # lowercased -> first spelling, in order
        for item in (t.strip(" .;") for t in line.split(",")):
            if item:
                items.setdefault(item.lower(), item)
        line = ", ".join(items.values())
    elif spec.strip_final_period:
        line = line.rstrip(".")
    if not line or not any(c.isalpha() for c in line):
        return None, "empty"
    if _normal(line) == _normal(query) or (len(query.split()) >= 4 and _normal(query) in _normal(line)):
        return None, "echoes the query"
    return line, ""


# -- queries ------------------------------------------------------------------------------------

_QUERY_SHOTS = [
    ("bakery", ["cheerful poster announcing a weekend croissant sale",
                "minimalist logo for an artisan sourdough bakery",
                "instagram story for a new cinnamon roll flavor"]),
    ("fitness", ["bold banner for a january gym membership discount",
                 "flyer for a free outdoor yoga class in the park",
                 "motivational quote post for a personal trainer"]),
]


def build_query_prompt(topic: str) -> str:
    """A few-shot prompt that makes the teacher list design requests about ``topic``."""
    parts = ["Design requests that people type into a graphic design app.", ""]
    for t, requests in _QUERY_SHOTS:
        parts.append(f"Topic: {t}")
        parts += [f"- {r}" for r in requests]
        parts.append("")
    parts += [f"Topic: {topic}", "-"]
    return "\n".join(parts)


# Requests that appear in the few-shot prompts: a teacher that copies them does not make new data.
SHOWN_REQUESTS = frozenset(
    [r for spec in TASKS.values() for r, _ in spec.examples] + [r for _, rs in _QUERY_SHOTS for r in rs]
)

QUERY_STOP = ["\n\n", "Topic:", "<start_of_image>", "<end_of_turn>"]


def clean_query(text: str) -> str | None:
    """A usable design request (3 to 20 words, mostly letters), or None."""
    if _SPECIAL.search(text):
        return None
    q = " ".join(text.strip().lstrip("-*•0123456789.) ").split()).strip(" .\"'")
    words = q.split()
    if not 3 <= len(words) <= 20:
        return None
    letters = sum(c.isalpha() for c in q)
    if letters < 0.7 * len(q.replace(" ", "")):
        return None
    return q


def split_query_list(completion: str) -> list[str]:
    """The requests in a completion that continues a ``- request`` list."""
    return [line for line in ("-" + completion).split("\n") if line.strip().startswith("-")]
