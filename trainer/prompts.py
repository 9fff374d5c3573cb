"""Few-shot prompts for the teacher, and the cleaning of what it writes.

Teachers are base (completion) models by default, so each task is a few-shot list that ends where
the teacher should continue: ``Prompt (N words):``. The requested length N is drawn from a per-task
spread; what matters for UDRL is the length the output *achieves*, which relabelling records.
"""

from __future__ import annotations

import re

# Requested lengths (words) per task: a spread, so the data covers the command range.
LENGTH_SPREAD: dict[str, tuple[int, int]] = {
    "image": (5, 32),
    "search": (2, 8),
    "headline": (3, 12),
    "tags": (3, 12),
}

_HEADERS = {
    "image": "Text-to-image prompts written for design requests. Each prompt describes the picture to "
             "generate in the requested number of words.",
    "search": "Search queries for a stock photo and template library, written for design requests. "
              "Each query has the requested number of words.",
    "headline": "Short headlines to put on a design, written for design requests. Each headline has the "
                "requested number of words.",
    "tags": "Comma-separated keyword tags for design requests. Each list has the requested number of words.",
}
_LABELS = {"image": "Prompt", "search": "Search", "headline": "Headline", "tags": "Tags"}

# (request, output) pairs; the word counts in the rendered prompt are computed, never typed.
_SHOTS: dict[str, list[tuple[str, str]]] = {
    "image": [
        ("minimalist poster for a coffee shop",
         "steaming espresso cup on a clean beige background, soft morning light"),
        ("flyer for a kids summer camp by the lake",
         "happy children canoeing on a sunny lake, pine trees, bright cartoon style, playful colors"),
        ("banner for a jazz festival", "saxophone silhouette against a glowing orange sunset"),
        ("elegant invitation for a winter wedding",
         "snowy pine branches framing golden rings, soft candlelight, watercolor texture, elegant serif "
         "lettering, white and gold palette, romantic mood"),
    ],
    "search": [
        ("minimalist poster for a coffee shop", "coffee cup minimal"),
        ("flyer for a kids summer camp by the lake", "kids canoe lake summer camp"),
        ("banner for a jazz festival", "jazz saxophone night concert stage"),
        ("elegant invitation for a winter wedding", "winter wedding"),
    ],
    "headline": [
        ("minimalist poster for a coffee shop", "Freshly Roasted Every Morning"),
        ("flyer for a kids summer camp by the lake", "Paddle, Play and Make Friends This Summer"),
        ("banner for a jazz festival", "Three Nights of Live Jazz"),
        ("elegant invitation for a winter wedding", "Join Us as We Say Yes"),
    ],
    "tags": [
        ("minimalist poster for a coffee shop", "coffee, espresso, minimal, cafe"),
        ("flyer for a kids summer camp by the lake", "kids, summer, camp, lake, canoe, outdoors, fun"),
        ("banner for a jazz festival", "jazz, music, festival"),
        ("elegant invitation for a winter wedding",
         "wedding, winter, elegant, invitation, snow, romance, gold, white, ceremony"),
    ],
}

STOP = ["\n", "Request:", "<start_of_image>", "<end_of_turn>"]


def build_prompt(task: str, query: str, words: int) -> str:
    """The few-shot prompt asking the teacher for a ``task`` output of ``words`` words."""
    label = _LABELS[task]
    parts = [_HEADERS[task], ""]
    for request, output in _SHOTS[task]:
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
    if task == "tags":
        items: dict[str, str] = {}  # lowercased -> first spelling, in order
        for tag in (t.strip(" .;") for t in line.split(",")):
            if tag:
                items.setdefault(tag.lower(), tag)
        line = ", ".join(items.values())
    elif task in ("search", "headline"):
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
    [r for shots in _SHOTS.values() for r, _ in shots] + [r for _, rs in _QUERY_SHOTS for r in rs]
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
