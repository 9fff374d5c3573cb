"""A synthetic dataset in the trainer's record format, for tests and the tiny end-to-end demo.

It is not a substitute for distilled data: outputs are assembled from per-topic word lists. But it
has the structure UDRL needs: lengths spread over a range per task, and a relevance score that
depends on how many words are on-topic, so both the length and the reward command are learnable.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from udrl.files import write_atomic

TOPICS: dict[str, list[str]] = {
    "coffee shop": ["espresso", "latte", "beans", "roast", "barista", "mug", "aroma", "crema", "cozy", "morning"],
    "jazz night": ["saxophone", "trumpet", "smoky", "club", "rhythm", "bass", "melody", "spotlight", "swing", "velvet"],
    "yoga studio": ["calm", "stretch", "breath", "mat", "balance", "lotus", "serene", "sunrise", "mindful", "flow"],
    "bakery": ["bread", "croissant", "flour", "oven", "golden", "crust", "pastry", "sweet", "dough", "butter"],
    "tech conference": ["keynote", "innovation", "code", "network", "startup", "future", "digital", "stage", "cloud", "robot"],
    "summer festival": ["sunshine", "music", "crowd", "beach", "colorful", "dance", "lights", "tropical", "party", "waves"],
    "winter sale": ["snow", "discount", "cozy", "scarf", "frost", "gift", "holiday", "bargain", "sparkle", "warm"],
    "pet adoption": ["puppy", "kitten", "paws", "rescue", "friendly", "home", "fluffy", "loyal", "shelter", "playful"],
    "hiking club": ["mountain", "trail", "forest", "summit", "backpack", "pine", "adventure", "boots", "river", "campfire"],
    "bookstore": ["novel", "shelves", "reading", "pages", "library", "author", "poetry", "quiet", "bookmark", "story"],
    "fitness gym": ["workout", "strength", "dumbbell", "sweat", "energy", "muscle", "cardio", "power", "training", "athlete"],
    "wedding": ["bride", "rings", "flowers", "romance", "vows", "elegant", "lace", "champagne", "celebration", "love"],
}
STYLES = ["minimalist", "vintage", "bold", "playful", "elegant", "modern", "retro", "watercolor"]
DESIGNS = ["poster", "flyer", "banner", "social media post", "invitation", "menu cover", "logo", "billboard"]
OFF_TOPIC = ["spreadsheet", "invoice", "asphalt", "gearbox", "tax", "plumbing", "printer", "cement", "spam", "static"]

# Target length ranges in words per task, like the spread a teacher is asked for.
LENGTHS = {"image": (4, 16), "search": (2, 6), "headline": (3, 9), "tags": (2, 8)}


def _words(rng: random.Random, topic: str, style: str, n: int, noise: float) -> list[str]:
    pool = TOPICS[topic] + [style]
    return [rng.choice(OFF_TOPIC) if rng.random() < noise else rng.choice(pool) for _ in range(n)]


def make_record(rng: random.Random, task: str) -> dict:
    """One record: a design request and an output of a random length and relevance."""
    topic = rng.choice(list(TOPICS))
    style = rng.choice(STYLES)
    query = f"{style} {rng.choice(DESIGNS)} for a {topic}"
    n = rng.randint(*LENGTHS[task])
    noise = rng.choice([0.0, 0.0, 0.3, 0.7])
    words = _words(rng, topic, style, n, noise)
    if task == "tags":
        output = ", ".join(words)
    elif task == "headline":
        output = " ".join(w.capitalize() for w in words)
    else:
        output = " ".join(words)
    on_topic = sum(w not in OFF_TOPIC for w in words) / n
    score = round(0.2 + 0.6 * on_topic + rng.uniform(-0.05, 0.05), 4)
    return {"query": query, "task": task, "output": output, "words": n, "score": score}


def write_synthetic(path: str | Path, n: int = 2000, seed: int = 0, tasks: tuple[str, ...] = tuple(LENGTHS)) -> Path:
    """Write ``n`` synthetic records (tasks in rotation) to a JSONL file, atomically."""
    unknown = [t for t in tasks if t not in LENGTHS]
    if unknown:
        raise ValueError(f"synthetic data has no generator for tasks {unknown}; known: {list(LENGTHS)}")
    rng = random.Random(seed)
    lines = [json.dumps(make_record(rng, tasks[i % len(tasks)])) for i in range(n)]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, "\n".join(lines) + "\n")
    return path
