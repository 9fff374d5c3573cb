"""Tasks as data: one TOML file per task says everything the trainer knows about it.

A task file gives the task's name (its control token is ``<|task:NAME|>``), what one output is
called (``noun``), the label and one-line instruction of the teacher's few-shot prompt, a few
request -> output examples, the range of lengths (words) the teacher is asked for, and the format
rules its outputs must keep, chosen from `FORMAT_RULES`; ``case = "title"`` has the model learn the
outputs in lower case and the SDK return them in Title Case (udrl.casing). The four shipped tasks live in
``trainer/tasks/*.toml``; `prompts.py` builds the teacher's prompts and cleans its outputs from
them, `formats.py` checks outputs against them, and ``udrl distill --task-file FILE`` adds one.

    name = "alt_text"
    noun = "alt text"
    label = "Alt text"
    instruction = "Alt text describing a design for screen readers, in the requested number of words."
    lengths = [6, 24]
    format = ["max_words", "not_a_question"]
    max_words = 30

    [[examples]]
    request = "poster for a jazz festival"
    output = "a saxophone player on a stage under warm orange lights, with the festival name above"
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from udrl.manifest import DEFAULT_TASKS, focus_key

from .decoding import END_STOPWORDS
from .errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

SHIPPED_DIR = Path(__file__).resolve().parent / "tasks"
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    name: str
    noun: str  # what one output is called in messages ("search query")
    label: str  # the few-shot line's label ("Search (4 words): ...")
    instruction: str  # the prompt's first line
    lengths: tuple[int, int]  # the spread of requested lengths, in words
    examples: tuple[tuple[str, str], ...]  # (request, output)
    format: tuple[str, ...] = ()  # rules of FORMAT_RULES
    max_words: int | None = None  # for the "max_words" rule
    max_item_words: int = 3  # for the "comma_list" rule
    strip_final_period: bool = False  # cleaning drops a final "." from the teacher's output
    case: str = "as_written"  # one of CASES: "title" trains on lower case, the SDK capitalises
    source: str = ""

    @property
    def is_list(self) -> bool:
        """Whether outputs are comma-separated lists (cleaned and checked item by item)."""
        return "comma_list" in self.format


def _not_a_question(spec: TaskSpec, text: str) -> list[str]:
    return [f"{_a(spec.noun)} is not a question"] if text.rstrip().endswith("?") else []


def _max_words(spec: TaskSpec, text: str) -> list[str]:
    limit = spec.max_words
    return [f"{_a(spec.noun)} has at most {limit} words"] if limit and len(text.split()) > limit else []


def _no_sentence_end(spec: TaskSpec, text: str) -> list[str]:
    return [f"{_a(spec.noun)} does not end like a sentence"] if text.rstrip().endswith((".", "!")) else []


def _no_dangling_punctuation(spec: TaskSpec, text: str) -> list[str]:
    return [f"{_a(spec.noun)} does not end mid-sentence"] if text.rstrip().endswith((",", ";", ":")) else []


def _comma_list(spec: TaskSpec, text: str) -> list[str]:
    items = [t.strip() for t in text.split(",")]
    problems = []
    if any(not t for t in items):
        problems.append("items are comma-separated, with no empty one")
    if any(len(t.split()) > spec.max_item_words for t in items):
        problems.append(f"each item has at most {spec.max_item_words} words")
    if len({t.lower() for t in items}) != len(items):
        problems.append("items are not repeated")
    if text.rstrip().endswith("."):
        problems.append(f"{_a(spec.noun)} does not end with a period")
    return problems


def common_problems(text: str) -> list[str]:
    """What every output of any task must avoid: empty, unfinished, several lines, no letters."""
    problems = []
    words = text.split()
    if not words:
        problems.append("empty output")
    elif focus_key(words[-1]) in END_STOPWORDS:
        problems.append(f"an output does not end on {focus_key(words[-1])!r}, which leaves it unfinished")
    if "\n" in text.strip():
        problems.append("more than one line")
    if not any(c.isalnum() for c in text):
        problems.append("no letters or digits")
    return problems


def problems_with(spec: TaskSpec, text: str) -> list[str]:
    """Everything wrong with ``text`` as an output of the task ``spec`` describes."""
    problems = common_problems(text)
    if not problems:
        for rule in spec.format:
            problems.extend(FORMAT_RULES[rule](spec, text))
    return problems


# The rules a task file may name, each a check of one output.
FORMAT_RULES: dict[str, Callable[[TaskSpec, str], list[str]]] = {
    "not_a_question": _not_a_question,
    "max_words": _max_words,
    "no_sentence_end": _no_sentence_end,
    "no_dangling_punctuation": _no_dangling_punctuation,
    "comma_list": _comma_list,
}


def _a(noun: str) -> str:
    return ("an " if noun[:1] in "aeiou" else "a ") + noun


_REQUIRED = ("name", "noun", "label", "instruction", "lengths", "examples")
_OPTIONAL = ("format", "max_words", "max_item_words", "strip_final_period", "case")
# How a task's outputs are spelt: as the teacher writes them, or in Title Case (udrl.casing), which
# the model learns in lower case and the SDK and the C layer restore.
CASES = ("as_written", "title")


def parse_task(data: Mapping[str, Any], source: str, taken: Mapping[str, Any] = {}) -> TaskSpec:
    """A `TaskSpec` from a task file's table; `ConfigError` naming the field at fault."""
    def fail(field: str, problem: str) -> ConfigError:
        return ConfigError(f"{source}: '{field}' {problem}")

    missing = [f for f in _REQUIRED if f not in data]
    if missing:
        raise fail(missing[0], f"is missing (a task file needs {', '.join(_REQUIRED)})")
    unknown = sorted(set(data) - set(_REQUIRED) - set(_OPTIONAL))
    if unknown:
        raise fail(unknown[0], f"is not a task file field; allowed: {', '.join(_REQUIRED + _OPTIONAL)}")
    name = data["name"]
    if not isinstance(name, str) or not _NAME.match(name):
        raise fail("name", "must be lowercase letters, digits and '_', starting with a letter (at most 32)")
    if name in taken:
        raise fail("name", f"{name!r} clashes with an existing task (from {getattr(taken[name], 'source', '?')})")
    for field in ("noun", "label", "instruction"):
        if not isinstance(data[field], str) or not data[field].strip() or "\n" in data[field]:
            raise fail(field, "must be one line of text")
    lengths = data["lengths"]
    if (not isinstance(lengths, list) or len(lengths) != 2 or not all(isinstance(n, int) for n in lengths)
            or not 1 <= lengths[0] <= lengths[1] <= 48):
        raise fail("lengths", f"must be [shortest, longest] words with 1 <= shortest <= longest <= 48, got {lengths!r}")
    examples = data["examples"]
    if not isinstance(examples, list) or not examples:
        raise fail("examples", "must be a list of at least one {request, output} table")
    pairs = []
    for i, ex in enumerate(examples):
        if not isinstance(ex, dict) or set(ex) != {"request", "output"} or not all(
                isinstance(ex[k], str) and ex[k].strip() and "\n" not in ex[k] for k in ("request", "output")):
            raise fail(f"examples[{i}]", "must have a one-line 'request' and 'output' and nothing else")
        pairs.append((ex["request"].strip(), ex["output"].strip()))
    rules = data.get("format", [])
    if not isinstance(rules, list) or not all(isinstance(r, str) for r in rules):
        raise fail("format", f"must be a list of rule names: {', '.join(FORMAT_RULES)}")
    bad = [r for r in rules if r not in FORMAT_RULES]
    if bad:
        raise fail("format", f"has unknown rule {bad[0]!r}; allowed: {', '.join(FORMAT_RULES)}")
    max_words = data.get("max_words")
    if "max_words" in rules and not (isinstance(max_words, int) and max_words >= lengths[1]):
        raise fail("max_words", f"must be a whole number of words of at least the longest length ({lengths[1]}) "
                                "when the 'max_words' rule is used")
    max_item_words = data.get("max_item_words", 3)
    if not isinstance(max_item_words, int) or max_item_words < 1:
        raise fail("max_item_words", "must be a whole number, at least 1")
    strip = data.get("strip_final_period", False)
    if not isinstance(strip, bool):
        raise fail("strip_final_period", "must be true or false")
    case = data.get("case", "as_written")
    if case not in CASES:
        raise fail("case", f"must be one of {', '.join(map(repr, CASES))}, got {case!r}")
    spec = TaskSpec(name=name, noun=data["noun"].strip(), label=data["label"].strip(),
                    instruction=data["instruction"].strip(), lengths=(lengths[0], lengths[1]),
                    examples=tuple(pairs), format=tuple(rules), max_words=max_words,
                    max_item_words=max_item_words, strip_final_period=strip, case=case, source=source)
    for request, output in spec.examples:  # an example that breaks its own rules would teach them wrong
        problems = problems_with(spec, output)
        if problems:
            raise fail("examples", f"output {output!r} breaks the task's own format: {problems[0]}")
    return spec


def load_task_file(path: str | Path, taken: Mapping[str, Any] = {}) -> TaskSpec:
    """Read and check one task file (``taken``: tasks its name may not clash with)."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"task file not found: {path}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} is not a valid TOML task file: {exc}") from exc
    return parse_task(data, str(path), taken)


class TaskRegistry(Mapping[str, TaskSpec]):
    """The tasks the trainer knows: the shipped ones, then any added from task files."""

    def __init__(self, directory: Path = SHIPPED_DIR):
        self._specs: dict[str, TaskSpec] = {}
        order = {name: i for i, name in enumerate(DEFAULT_TASKS)}  # the manifest's order first
        for path in sorted(directory.glob("*.toml"), key=lambda p: (order.get(p.stem, len(order)), p.stem)):
            spec = load_task_file(path, self._specs)
            self._specs[spec.name] = spec

    def add_file(self, path: str | Path) -> TaskSpec:
        """Load a task file and add its task (`ConfigError` if its name is taken by another file;
        the same file again is a no-op)."""
        again = [s for s in self._specs.values() if s.source and Path(s.source).resolve() == Path(path).resolve()]
        if again:
            return again[0]
        spec = load_task_file(path, self._specs)
        self._specs[spec.name] = spec
        return spec

    @contextlib.contextmanager
    def extended(self, paths: Iterable[str | Path]) -> Iterator[TaskRegistry]:
        """Add task files for the length of a ``with`` block (a distillation, a judging, an
        evaluation of a fine-tuned model); afterwards the registry holds what it held before, so
        that a library call leaves no task behind in the process."""
        before = dict(self._specs)
        try:
            for path in paths:
                self.add_file(path)
            yield self
        finally:
            self._specs = before

    def __getitem__(self, name: str) -> TaskSpec:
        return self._specs[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._specs)

    def __len__(self) -> int:
        return len(self._specs)


TASKS = TaskRegistry()
