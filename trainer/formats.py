"""Per-task format checks: is an output shaped like the prompt kind it claims to be?

Used to score command adherence during training and evaluation, and to filter teacher outputs.
A task without a checker of its own (tasks are extensible) gets only the common checks.
"""

from __future__ import annotations

from collections.abc import Callable

from udrl.manifest import END_STOPWORDS, focus_key

FormatCheck = Callable[[str], list[str]]
FORMAT_CHECKS: dict[str, FormatCheck] = {}


def register(task: str) -> Callable[[FormatCheck], FormatCheck]:
    def decorator(fn: FormatCheck) -> FormatCheck:
        FORMAT_CHECKS[task] = fn
        return fn

    return decorator


def _common(text: str) -> list[str]:
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


@register("image")
def _image(text: str) -> list[str]:
    problems = []
    if text.rstrip().endswith("?"):
        problems.append("an image prompt describes a picture; it is not a question")
    return problems


@register("search")
def _search(text: str) -> list[str]:
    problems = []
    if len(text.split()) > 12:
        problems.append("a search query has at most 12 words")
    if text.rstrip().endswith((".", "!")):
        problems.append("a search query does not end like a sentence")
    return problems


@register("headline")
def _headline(text: str) -> list[str]:
    problems = []
    if len(text.split()) > 16:
        problems.append("a headline has at most 16 words")
    if text.rstrip().endswith((",", ";", ":")):
        problems.append("a headline does not end mid-sentence")
    return problems


@register("tags")
def _tags(text: str) -> list[str]:
    items = [t.strip() for t in text.split(",")]
    problems = []
    if any(not t for t in items):
        problems.append("tags are comma-separated keywords, with no empty item")
    if any(len(t.split()) > 3 for t in items):
        problems.append("each tag has at most 3 words")
    if len({t.lower() for t in items}) != len(items):
        problems.append("tags are not repeated")
    if text.rstrip().endswith("."):
        problems.append("tags do not end with a period")
    return problems


def format_problems(task: str, text: str) -> list[str]:
    """Everything wrong with the shape of ``text`` as an output of ``task`` (empty list: valid)."""
    problems = _common(text)
    check = FORMAT_CHECKS.get(task)
    if check is not None and not problems:
        problems.extend(check(text))
    return problems


def is_valid_format(task: str, text: str) -> bool:
    return not format_problems(task, text)
