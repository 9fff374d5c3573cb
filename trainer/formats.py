"""Format checks: is an output shaped like the kind of prompt its task asks for?

Used to score command adherence during training and evaluation, and to filter teacher outputs.
Every output must be one finished line with letters or digits; beyond that, each task's file names
the rules its outputs keep (`taskfile.FORMAT_RULES`). A task no file describes gets the common
checks alone.
"""

from __future__ import annotations

from .taskfile import TASKS, common_problems, problems_with


def format_problems(task: str, text: str) -> list[str]:
    """Everything wrong with the shape of ``text`` as an output of ``task`` (empty list: valid)."""
    spec = TASKS.get(task)
    return problems_with(spec, text) if spec is not None else common_problems(text)


def is_valid_format(task: str, text: str) -> bool:
    """True when `format_problems` finds nothing."""
    return not format_problems(task, text)
