"""Composed design requests: artefact x subject x details, beyond what the teacher thinks of.

The teacher's queries (grown from seed topics) cover what a 270M model imagines a request to be;
these cover the combinations users actually type: every artefact kind in
``data/compose/artefacts.txt`` for subjects across 58 domains (``subjects.txt``), people's trades
(Faker's en_US job titles), companies and themes (wordfreq's English list), with the specifics that
make a request real: names, cities and streets, days, dates and times, prices, percentages, ages,
colours (Faker), audiences, styles and offers (``details.txt``).

Word lists live in data files and packages, never in this module; the module only says how a
request is put together. The hand-written request set (data/handwritten) is never produced, nor is
any query of the files given as ``exclude``.

>>> queries = compose_queries(ComposeConfig(n=3, seed=1))
>>> len(queries), all(3 <= len(q.split()) <= 20 for q in queries)
(3, True)
"""

from __future__ import annotations

import dataclasses
import random
import re
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

from ..decoding import END_STOPWORDS, FOCUS_STOPWORDS
from ..errors import DatasetError
from ..handwritten import query_key, read_requests

COMPOSE_DIR = Path(__file__).resolve().parents[2] / "data" / "compose"


@dataclasses.dataclass
class ComposeConfig:
    n: int = 24000  # distinct requests to compose
    seed: int = 0
    compose_dir: str = str(COMPOSE_DIR)
    exclude: list[str] = dataclasses.field(default_factory=list)  # files of queries never to produce
    max_tries_per_query: int = 20  # give up (DatasetError) when the lists cannot make n distinct ones


def _lines(path: Path) -> list[str]:
    if not path.is_file():
        raise DatasetError(f"composition word list not found: {path}")
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip() and not line.startswith("#")]


def _pairs(path: Path) -> list[tuple[str, str]]:
    out = []
    for n, line in enumerate(_lines(path), 1):
        kind, sep, phrase = line.partition("|")
        if not sep or not kind.strip() or not phrase.strip():
            raise DatasetError(f"{path}: entry {n}: expected 'kind | phrase', got {line!r}")
        out.append((kind.strip(), " ".join(phrase.split())))
    return out


@lru_cache(maxsize=8)
def english_words(first_rank: int = 1500, last_rank: int = 40000, min_len: int = 4) -> tuple[str, ...]:
    """Ordinary English words from wordfreq's frequency list, ranks ``first_rank``..``last_rank``
    (the most frequent ones are function words), letters only, no stopwords."""
    from wordfreq import top_n_list

    common = set(FOCUS_STOPWORDS) | set(END_STOPWORDS)
    words = top_n_list("en", last_rank)[first_rank:]
    return tuple(w for w in words if w.isascii() and w.isalpha() and len(w) >= min_len and w not in common)


def _job_title(raw: str) -> str:
    """Faker writes titles as "Engineer, civil (contracting)": as a person says it, "civil engineer"."""
    title = re.sub(r"\s*\([^)]*\)", "", raw)
    head, _, qualifier = title.partition(",")
    return " ".join(f"{qualifier.strip()} {head.strip()}".split()).lower()


def _colour_names(fake) -> list[str]:
    """Faker's colour names (CSS camel case, "DarkSlateGray") as words ("dark slate gray")."""
    from faker.providers.color import Provider as ColorProvider

    return sorted({re.sub(r"(?<!^)(?=[A-Z])", " ", name).lower() for name in ColorProvider.all_colors})


def _article(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


class _Composer:
    """One request at a time from the word lists, each choice from one seeded random stream."""

    def __init__(self, config: ComposeConfig):
        from faker import Faker

        directory = Path(config.compose_dir)
        self.rng = random.Random(config.seed)
        self.fake = Faker("en_US")
        self.fake.seed_instance(config.seed)
        self.artefacts = _lines(directory / "artefacts.txt")
        self.subjects = [s for _, s in _pairs(directory / "subjects.txt")]
        details = _pairs(directory / "details.txt")
        self.by_kind = {kind: [p for k, p in details if k == kind] for kind in ("style", "audience", "offer")}
        missing = [k for k, v in self.by_kind.items() if not v]
        if missing or not self.artefacts or not self.subjects:
            raise DatasetError(f"{directory}: the composition lists need artefacts, subjects and details of "
                               f"every kind (style, audience, offer); missing: {missing or 'artefacts/subjects'}")
        self.colours = _colour_names(self.fake)
        self.themes = english_words(last_rank=15000)  # common enough to theme a request on
        # (weight, group, make): a request takes at most one detail of a group (one time, one date).
        self.details: list[tuple[float, str, Callable[[], str]]] = [
            (3, "place", lambda: f"in {self.fake.city().lower()}"),
            (1, "place", lambda: f"on {self.fake.street_name().lower()}"),
            (2, "date", lambda: f"on {self.fake.day_of_week().lower()}"),
            (1, "date", lambda: f"this {self.fake.day_of_week().lower()}"),
            (2, "date", lambda: f"on {self.fake.month_name().lower()} {self.rng.randint(1, 28)}"),
            (1, "date", lambda: f"in {self.fake.month_name().lower()}"),
            (2, "time", lambda: f"at {self.rng.randint(1, 11)}{self.rng.choice(['am', 'pm', 'pm'])}"),
            (1, "time", lambda: f"from {self.rng.randint(6, 11)}am to {self.rng.randint(1, 9)}pm"),
            (2, "price", lambda: f"{self.rng.choice([10, 15, 20, 25, 30, 40, 50, 70])}% off"),
            (1, "price", lambda: f"tickets ${self.rng.choice([5, 10, 12, 15, 20, 25, 35, 50])}"),
            (1, "price", lambda: f"only ${self.rng.randint(2, 99)}"),
            (2, "colour", lambda: f"in {self.rng.choice(self.colours)} and {self.rng.choice(self.colours)}"),
            (2, "audience", lambda: self.rng.choice(self.by_kind["audience"])),
            (2, "offer", lambda: self.rng.choice(self.by_kind["offer"])),
            (2, "theme", lambda: f"with a {self.rng.choice(self.themes)} theme"),
            (1, "theme", lambda: f"featuring {self.rng.choice(self.themes)}"),
            (1, "name", lambda: f"named {self.fake.first_name().lower()}"),
            (1, "years", lambda: f"celebrating {self.rng.randint(2, 60)} years"),
            (1, "years", lambda: f"since {self.rng.randint(1950, 2024)}"),
        ]

    def subject(self) -> str:
        roll = self.rng.random()
        subject = self.rng.choice(self.subjects)
        if roll < 0.45:
            return _article(subject)
        if roll < 0.60:
            return f"{self.fake.first_name().lower()}'s {subject}"
        if roll < 0.70:
            name = self.rng.choice([self.fake.last_name(), self.rng.choice(self.themes)]).lower()
            return f"{_article(subject)} called {name}"
        if roll < 0.85:
            return _article(_job_title(self.fake.job()))
        if roll < 0.95:
            return f"{_article(self.rng.choice(self.themes))} themed {subject}"
        return self.fake.company().lower().replace(",", "")

    def request(self) -> str:
        artefact = self.rng.choice(self.artefacts)
        if self.rng.random() < 0.35:
            style = self.rng.choice(self.by_kind["style"])
            # "80s poster" would lose its digits to the query cleaner's list-marker stripping.
            artefact = f"{artefact} in {style} style" if style[0].isdigit() else f"{style} {artefact}"
        parts = [artefact, "for", self.subject()]
        count = self.rng.choices([0, 1, 2, 3], weights=[3, 5, 3, 1])[0]
        groups: set[str] = set()
        while len(groups) < count:
            weight_of = [w if g not in groups else 0 for w, g, _ in self.details]
            _, group, make = self.rng.choices(self.details, weights=weight_of)[0]
            groups.add(group)
            detail = make()
            # An offer reads as a tag line after a comma; the rest continue the sentence.
            parts.append(f", {detail}" if group == "offer" else detail)
        return " ".join(parts).replace(" ,", ",")


def compose_topics(config: ComposeConfig, jobs: int = 300) -> list[str]:
    """Seed topics for the teacher to write requests about (``udrl distill --topics``): every
    subject of the lists and ``jobs`` of Faker's trades, distinct."""
    # A composer of its own, freshly seeded: the topics never depend on how many queries were drawn.
    composer = _Composer(config)
    trades = [_job_title(composer.fake.job()) for _ in range(jobs * 3)]
    return list(dict.fromkeys(composer.subjects + trades))[: len(set(composer.subjects)) + jobs]


def compose_queries(config: ComposeConfig) -> list[str]:
    """``config.n`` distinct composed requests (3 to 20 words), none of them hand-written or excluded."""
    from ..prompts import clean_query
    from .distill import read_lines

    if config.n < 1:
        raise DatasetError(f"n must be at least 1, got {config.n}")
    composer = _Composer(config)
    banned = {query_key(r.query) for r in read_requests()}
    for path in config.exclude:
        banned.update(query_key(q) for q in read_lines(path))
    out: list[str] = []
    seen = set(banned)
    for _ in range(config.n * config.max_tries_per_query):
        if len(out) == config.n:
            break
        query = clean_query(composer.request())
        if query and query_key(query) not in seen:
            seen.add(query_key(query))
            out.append(query)
    if len(out) < config.n:
        raise DatasetError(f"composed only {len(out)} distinct requests of the {config.n} asked for; "
                           f"add to the lists in {config.compose_dir}")
    return out
