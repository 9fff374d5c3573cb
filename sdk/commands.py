"""Commands: what the caller asks of the policy (task, target length, relevance level).

Everything here is parameterised by a `Manifest`; the allowed tasks, the length range, the reward
levels and the prompt template all come from it.

Example:
    >>> from udrl.manifest import Manifest
    >>> m = Manifest.new(tasks=["image", "tags"], length_range=(1, 32), reward_edges=[0.3, 0.5])
    >>> cmd = make_command(m, task="image", length=12)
    >>> cmd
    Command(task='image', length=12, reward=2)
    >>> render_prompt(m, "poster for a jazz night", cmd)
    '<|task:image|><|len:12|><|rew:2|> poster for a jazz night<|sep|>'
"""

from __future__ import annotations

import bisect
import dataclasses
import unicodedata
from collections.abc import Sequence

from .errors import CommandError
from .manifest import Manifest


@dataclasses.dataclass(frozen=True)
class Command:
    """A validated command: which task, how many words, which reward level (0 is lowest)."""

    task: str
    length: int
    reward: int


def count_words(text: str) -> int:
    """The length measure of every command: whitespace-separated words."""
    return len(text.split())


def make_command(
    manifest: Manifest, task: str, length: int | None = None, reward: int | None = None
) -> Command:
    """Validate a request against the manifest and fill in defaults.

    ``length=None`` takes the task's default length from the manifest (the middle of the range
    when it has none); ``reward=None`` takes the highest level. Raises `CommandError` naming the
    allowed values.
    """
    if task not in manifest.tasks:
        raise CommandError(f"unknown task {task!r}; this model knows: {', '.join(manifest.tasks)}")
    if length is None:
        length = manifest.default_length.get(task, (manifest.length_min + manifest.length_max) // 2)
    if isinstance(length, bool) or not isinstance(length, int):
        raise CommandError(f"length must be an integer number of words, got {length!r}")
    if not manifest.length_min <= length <= manifest.length_max:
        raise CommandError(
            f"length {length} is outside the range this model was trained on: "
            f"{manifest.length_min} to {manifest.length_max} words"
        )
    top = manifest.reward_levels - 1
    if reward is None:
        reward = top
    if isinstance(reward, bool) or not isinstance(reward, int) or not 0 <= reward <= top:
        raise CommandError(f"reward must be an integer level from 0 (lowest) to {top}, got {reward!r}")
    return Command(task=task, length=length, reward=reward)


def reward_level(manifest: Manifest, score: float) -> int:
    """The reward level a judge score falls in, given the manifest's bucket edges."""
    return reward_level_for(manifest.reward_edges, score)


def reward_level_for(edges: Sequence[float], score: float) -> int:
    """Bucket index of ``score`` for ascending ``edges`` (``len(edges) + 1`` buckets)."""
    return bisect.bisect_right(list(edges), score)


def check_query(manifest: Manifest, query: str) -> str:
    """Return the query stripped; refuse an empty one or one that smuggles in control tokens."""
    if not isinstance(query, str):
        raise CommandError(f"query must be a string, got {type(query).__name__}")
    for i, ch in enumerate(query):
        if "\ud800" <= ch <= "\udfff":
            raise CommandError(f"query is not valid Unicode: a lone surrogate U+{ord(ch):04X} at character {i} "
                               "(decode the text as UTF-8 before passing it)")
        if unicodedata.category(ch) == "Cc" and not ch.isspace():
            raise CommandError(f"query contains the control character U+{ord(ch):04X} at character {i}; "
                               "only printable text, spaces, tabs and newlines are allowed")
    stripped = " ".join(query.split())
    if not any(unicodedata.category(ch)[0] not in "CZ" for ch in stripped):  # nothing visible
        raise CommandError("query is empty: give the design request the prompt is for")
    for token in manifest.special_tokens:
        if token in stripped:
            raise CommandError(f"query contains the reserved control token {token!r}; remove it")
    return stripped


def render_prompt(manifest: Manifest, query: str, command: Command) -> str:
    """The prompt text for a request: control tokens, the query, then the separator.

    Commands the model was not conditioned on (an ablation) render as nothing.
    """
    query = check_query(manifest, query)
    tokens = manifest.control_tokens
    conditioned = set(manifest.conditioning)
    return manifest.template.format(
        task=tokens["task"][command.task],
        length=tokens["length"][str(command.length)] if "length" in conditioned else "",
        reward=tokens["reward"][str(command.reward)] if "reward" in conditioned else "",
        query=query,
        sep=manifest.sep_token,
    )
