"""The artifact manifest: the one place where the command schema and prompt format are defined.

Every artifact (checkpoint directory, GGUF, ONNX, Core ML) carries the same JSON manifest. The
trainer writes it, converters copy it into their format's metadata, and the SDK and the native
layer read it to validate commands and build prompts. Nothing about tasks, lengths, reward levels,
control tokens or the prompt template is defined anywhere else.

Example:
    >>> m = Manifest.new(tasks=["image", "tags"], length_range=(1, 32), reward_edges=[0.3, 0.5])
    >>> m.control_tokens["task"]["image"]
    '<|task:image|>'
    >>> m.reward_levels
    3
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import string
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .errors import ManifestError
from .files import write_atomic

FORMAT_NAME = "udrl-manifest"
FORMAT_VERSION = 1
MANIFEST_FILENAME = "udrl.json"
# Where exported artifacts carry the manifest (as its JSON text): GGUF metadata key, ONNX
# metadata_props key, Core ML user_defined_metadata key. native/udrl.h mirrors this name.
METADATA_KEY = "udrl.manifest"
# Formats without a tokenizer of their own (ONNX, Core ML) carry the tokenizers JSON under this key.
TOKENIZER_METADATA_KEY = "udrl.tokenizer"

# Commands the policy can be conditioned on besides the task (which is always part of the prompt).
CONDITIONS = ("length", "reward")
DEFAULT_TASKS = ("image", "search", "headline", "tags")
# The space before the query and before the output makes a word the same BPE token ("Ġsummer")
# wherever it appears, so copying a request's words into the output is one token-identity step
# for the model instead of a mapping it must learn between two spellings of each word.
DEFAULT_TEMPLATE = "{task}{length}{reward} {query}{sep}"
OUTPUT_PREFIX = " "
SEP_TOKEN = "<|sep|>"
EOS_TOKEN = "<|endoftext|>"
# A query word counts as content for query focus (`rules.py`) from this many bytes; the tuned
# settings (bonus per task, stopword lists) travel in each model's manifest, set by the trainer.
FOCUS_MIN_BYTES = 3

_TASK_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
_TEMPLATE_FIELDS = ("task", "length", "reward", "query", "sep")
_SPELLING_WORDS = re.compile("[a-z]+(?: [a-z]+)*")


def focus_key(word: str) -> str:
    """How query focus compares words: ASCII punctuation stripped from both ends, ASCII letters
    lowered (bytes-wise, so the C layer computes the same key)."""
    return word.strip(string.punctuation).encode().lower().decode()


# A task's query-focus bonus: one number for every length, or per requested length a list of
# [length, bonus] points, lengths ascending, read between them on the straight line through the two
# around a length and held flat at the ends (`focus_at`).
FocusBias = float | tuple[tuple[int, float], ...]
FOCUS_BIAS_LIMIT = 1e30  # a bonus is below this (the C layer's limit too)


def focus_at(bias: FocusBias, length: int) -> float:
    """The bonus ``bias`` gives an output of ``length`` words: the number itself, or for points the
    line through the two around ``length``: a point's own bonus at its length, the first's before
    it, the last's after it. The C layer (`focus_at` in native/udrl.c) computes the same, step for
    step, checked by the decoding vectors."""
    if not isinstance(bias, (tuple, list)):
        return float(bias)
    for i, (l1, b1) in enumerate(bias):
        if length == l1 or (length < l1 and i == 0):
            return float(b1)
        if length < l1:
            l0, b0 = bias[i - 1]
            return float(b0) + (float(b1) - float(b0)) * float(length - l0) / float(l1 - l0)
    return float(bias[-1][1])


def describe_focus(bias: Any) -> str:
    """A bias as people read it: "2.875", or "2 at 3 words, 3.5 at 5, 5.25 at 7" for points
    (as a manifest holds them or as JSON gives them back)."""
    if isinstance(bias, (tuple, list)):
        return ", ".join(f"{b:g} at {n}" + (" words" if i == 0 else "") for i, (n, b) in enumerate(bias))
    return f"{bias:g}"


def focus_bias_from_json(value: Any) -> Any:
    """A bias as JSON holds it, as a manifest holds it: lists of points become tuples (a manifest is
    immutable); anything else is left for validation to name."""
    if isinstance(value, list):
        return tuple(tuple(p) if isinstance(p, list) else p for p in value)
    return value


def _focus_bias_problem(task: str, bias: Any, length_min: int, length_max: int) -> str | None:
    def number(x: Any) -> bool:  # below 1e30, so that no reading between two points overflows
        return not isinstance(x, bool) and isinstance(x, (int, float)) and 0 <= x < FOCUS_BIAS_LIMIT

    if number(bias):
        return None
    allowed = (f"a finite number >= 0 (0: off) below {FOCUS_BIAS_LIMIT:g}, or a list of [length, bonus] points, "
               f"lengths whole numbers from {length_min} to {length_max} in ascending order, bonuses such numbers")
    if not isinstance(bias, tuple) or not bias:
        return f"focus bias for {task!r} must be {allowed}; got {bias!r}"
    lengths = []
    for point in bias:
        if (not isinstance(point, tuple) or len(point) != 2 or isinstance(point[0], bool) or not isinstance(point[0], int)
                or not length_min <= point[0] <= length_max or not number(point[1])):
            return f"focus bias for {task!r} must be {allowed}; point {list(point) if isinstance(point, tuple) else point!r} is not"
        lengths.append(point[0])
    if lengths != sorted(set(lengths)):
        return f"focus bias for {task!r} must be {allowed}; lengths {lengths} are not ascending"
    return None


def task_token(task: str) -> str:
    return f"<|task:{task}|>"


def length_token(words: int) -> str:
    return f"<|len:{words}|>"


def reward_token(level: int) -> str:
    return f"<|rew:{level}|>"


@dataclasses.dataclass(frozen=True)
class Manifest:
    """What an artifact promises about its commands and prompt format.

    Attributes:
        tasks: task names, in the order of their control tokens.
        length_min, length_max: the range of target lengths (in words) the model was trained on.
        reward_edges: ascending judge-score edges between reward levels; level ``i`` covers scores
            in ``[edges[i-1], edges[i])``, so there are ``len(reward_edges) + 1`` levels, 0 lowest.
        reward_metric: what the score measures (the judge).
        conditioning: which commands besides the task appear in the prompt (an ablation may drop
            some); a command not conditioned on is still validated but does not reach the model.
        control_tokens: ``{"task": {name: token}, "length": {"n": token}, "reward": {"i": token}}``.
        sep_token, eos_token: the separator between request and output, and end of sequence.
        template: how a prompt is assembled from ``{task}{length}{reward}{query}{sep}``.
        output_prefix: text the model was trained to write before the output itself (after the
            separator); the SDK and the native layer drop it from what they return. Empty in
            manifests written before it existed.
        focus_bias: per task, the logit bonus for the query's content words the output does not
            contain yet (the default of `GenerationOptions.focus`): one number, or per requested
            length a list of (length, bonus) points (`focus_at`; `focus_for` answers for a command);
            0 turns query focus off for a task, an empty mapping for all (as in manifests written
            before it existed).
        focus_split_words: whether query focus also lifts the request words the tokenizer splits,
            and finishes those it starts (rules.py); False in manifests written before it existed,
            so that their bonus, chosen when focus lifted one-token words only, keeps its meaning.
        focus_push_function_words: whether query focus also pushes the end stopwords (articles,
            prepositions, conjunctions) down by its bonus (rules.py), so that the words it lifts take
            the place of the request's frame ("a book cover for a cover"); False in manifests written
            before it existed.
        focus_min_bytes, focus_stopwords: a query word counts as content when it has at least this
            many bytes (after stripping ASCII punctuation and lowering ASCII letters) and is not a
            stopword.
        end_stopwords: words (compared as query focus compares them) the length guard never lets an
            output end on; empty in manifests written before it existed.
        title_tasks: tasks whose outputs the model writes in lower case and the SDK and the C layer
            return in Title Case (casing.py); empty in manifests written before it existed.
        minor_words: words (compared as query focus compares them) Title Case leaves in lower case
            inside a phrase ("a", "of", "the").
        spelling_words: the words the whole-word rule (rules.py, spelling.py) lets an output's
            words be, besides the request's: ASCII lowercase letters, space-separated, in ascending
            order, each once (one string: a list of 160,000 strings would make every load slow);
            empty turns the rule off, as in manifests written before it existed.
        spelling_after_apostrophe: what the rule also lets a word be right after an apostrophe
            ("s", "t", "ll": "jam's", "don't", "we'll").
        token_ids: id of every special token in the artifact's tokenizer (empty until one exists).
        default_length: per task, the length used when a caller gives none (median of the data).
        data_hash, parent, quantization, model: provenance of the artifact.
    """

    tasks: tuple[str, ...]
    length_min: int
    length_max: int
    reward_edges: tuple[float, ...]
    control_tokens: Mapping[str, Mapping[str, str]]
    reward_metric: str = "minilm-cosine"
    conditioning: tuple[str, ...] = CONDITIONS
    sep_token: str = SEP_TOKEN
    eos_token: str = EOS_TOKEN
    template: str = DEFAULT_TEMPLATE
    output_prefix: str = ""
    focus_bias: Mapping[str, FocusBias] = dataclasses.field(default_factory=dict)
    focus_split_words: bool = False
    focus_push_function_words: bool = False
    focus_min_bytes: int = FOCUS_MIN_BYTES
    focus_stopwords: tuple[str, ...] = ()
    end_stopwords: tuple[str, ...] = ()
    title_tasks: tuple[str, ...] = ()
    minor_words: tuple[str, ...] = ()
    spelling_words: str = dataclasses.field(default="", repr=False)
    spelling_after_apostrophe: tuple[str, ...] = ()
    token_ids: Mapping[str, int] = dataclasses.field(default_factory=dict)
    default_length: Mapping[str, int] = dataclasses.field(default_factory=dict)
    data_hash: str | None = None
    parent: str | None = None
    quantization: str | None = None
    model: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    version: int = FORMAT_VERSION

    # -- construction -------------------------------------------------------------------------

    @classmethod
    def new(
        cls,
        tasks: Sequence[str] = DEFAULT_TASKS,
        length_range: tuple[int, int] = (1, 48),
        reward_edges: Sequence[float] = (),
        conditioning: Sequence[str] = CONDITIONS,
        **provenance: Any,
    ) -> Manifest:
        """A manifest for a new model, with control tokens named by the standard rule."""
        lo, hi = length_range
        provenance.setdefault("output_prefix", OUTPUT_PREFIX)
        control = {
            "task": {t: task_token(t) for t in tasks},
            "length": {str(n): length_token(n) for n in range(lo, hi + 1)} if lo <= hi else {},
            "reward": {str(i): reward_token(i) for i in range(len(reward_edges) + 1)},
        }
        manifest = cls(
            tasks=tuple(tasks),
            length_min=lo,
            length_max=hi,
            reward_edges=tuple(float(e) for e in reward_edges),
            control_tokens=control,
            conditioning=tuple(conditioning),
            **provenance,
        )
        manifest.validate()
        return manifest

    def replace(self, **changes: Any) -> Manifest:
        """A copy with some fields changed, validated."""
        manifest = dataclasses.replace(self, **changes)
        manifest.validate()
        return manifest

    # -- derived views ------------------------------------------------------------------------

    def focus_for(self, task: str, length: int) -> float:
        """The task's query-focus bonus for an output of ``length`` words (0.0: off or no bias)."""
        return focus_at(self.focus_bias.get(task, 0.0), length)

    @property
    def reward_levels(self) -> int:
        return len(self.reward_edges) + 1

    @property
    def special_tokens(self) -> list[str]:
        """Every token the tokenizer must keep whole: eos, sep, then all control tokens."""
        tokens = [self.eos_token, self.sep_token]
        for group in ("task", "length", "reward"):
            tokens.extend(self.control_tokens[group].values())
        return tokens

    @property
    def eos_id(self) -> int:
        return self._id(self.eos_token)

    @property
    def sep_id(self) -> int:
        return self._id(self.sep_token)

    def _id(self, token: str) -> int:
        try:
            return self.token_ids[token]
        except KeyError:
            raise ManifestError(
                f"manifest has no token id for {token!r}: it was written before a tokenizer existed"
            ) from None

    # -- validation and (de)serialisation --------------------------------------------------------

    def validate(self) -> None:
        """Raise `ManifestError` listing every problem found, or return None."""
        problems = _problems(self)
        if problems:
            raise ManifestError("invalid udrl manifest:\n  - " + "\n  - ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT_NAME,
            "version": self.version,
            "tasks": list(self.tasks),
            "length": {"min": self.length_min, "max": self.length_max},
            "reward": {"edges": list(self.reward_edges), "metric": self.reward_metric},
            "conditioning": list(self.conditioning),
            "control_tokens": {g: dict(v) for g, v in self.control_tokens.items()},
            "sep_token": self.sep_token,
            "eos_token": self.eos_token,
            "template": self.template,
            "output_prefix": self.output_prefix,
            "focus": {"bias": {t: [list(p) for p in b] if isinstance(b, tuple) else b
                               for t, b in self.focus_bias.items()}, "split_words": self.focus_split_words,
                      "push_function_words": self.focus_push_function_words,
                      "min_bytes": self.focus_min_bytes, "stopwords": list(self.focus_stopwords)},
            "length_guard": {"end_stopwords": list(self.end_stopwords)},
            "case": {"title": list(self.title_tasks), "minor_words": list(self.minor_words)},
            "spelling": {"words": self.spelling_words, "after_apostrophe": list(self.spelling_after_apostrophe)},
            "token_ids": dict(self.token_ids),
            "default_length": dict(self.default_length),
            "data_hash": self.data_hash,
            "parent": self.parent,
            "quantization": self.quantization,
            "model": dict(self.model),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "manifest") -> Manifest:
        """Parse and validate; raises `ManifestError` naming the source and every problem."""
        if not isinstance(data, Mapping):
            raise ManifestError(f"{source}: a manifest is a JSON object, got {type(data).__name__}")
        if data.get("format") != FORMAT_NAME:
            raise ManifestError(
                f"{source}: not a udrl manifest (field 'format' is {data.get('format')!r}, "
                f"expected {FORMAT_NAME!r})"
            )
        version = data.get("version")
        if version != FORMAT_VERSION:
            raise ManifestError(
                f"{source}: manifest version {version!r} is not supported; this udrl reads "
                f"version {FORMAT_VERSION}. Upgrade udrl-edge or re-export the artifact."
            )
        try:
            focus = data.get("focus", {})
            manifest = cls(
                tasks=tuple(data["tasks"]),
                length_min=data["length"]["min"],
                length_max=data["length"]["max"],
                reward_edges=tuple(data["reward"]["edges"]),
                reward_metric=data["reward"].get("metric", "minilm-cosine"),
                conditioning=tuple(data.get("conditioning", CONDITIONS)),
                control_tokens={g: dict(v) for g, v in data["control_tokens"].items()},
                sep_token=data.get("sep_token", SEP_TOKEN),
                eos_token=data.get("eos_token", EOS_TOKEN),
                template=data.get("template", DEFAULT_TEMPLATE),
                output_prefix=data.get("output_prefix", ""),
                focus_bias={t: focus_bias_from_json(b) for t, b in focus.get("bias", {}).items()},
                focus_split_words=focus.get("split_words", False),
                focus_push_function_words=focus.get("push_function_words", False),
                focus_min_bytes=focus.get("min_bytes", FOCUS_MIN_BYTES),
                focus_stopwords=tuple(focus.get("stopwords", ())),
                end_stopwords=tuple(data.get("length_guard", {}).get("end_stopwords", ())),
                title_tasks=tuple(data.get("case", {}).get("title", ())),
                minor_words=tuple(data.get("case", {}).get("minor_words", ())),
                spelling_words=data.get("spelling", {}).get("words", ""),
                spelling_after_apostrophe=tuple(data.get("spelling", {}).get("after_apostrophe", ())),
                token_ids=dict(data.get("token_ids", {})),
                default_length=dict(data.get("default_length", {})),
                data_hash=data.get("data_hash"),
                parent=data.get("parent"),
                quantization=data.get("quantization"),
                model=dict(data.get("model", {})),
                version=version,
            )
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise ManifestError(f"{source}: manifest is missing or mistypes field {exc}") from None
        try:
            manifest.validate()
        except ManifestError as exc:
            raise ManifestError(f"{source}: {exc}") from None
        except (TypeError, ValueError, AttributeError, KeyError) as exc:  # a field of the wrong shape
            raise ManifestError(f"{source}: manifest mistypes a field ({type(exc).__name__}: {exc})") from None
        return manifest

    @classmethod
    def from_json(cls, text: str, source: str = "manifest") -> Manifest:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ManifestError(f"{source}: manifest is not valid JSON ({exc})") from None
        except RecursionError:
            raise ManifestError(f"{source}: manifest JSON is nested too deeply to be a udrl manifest") from None
        return cls.from_dict(data, source)


def _problems(m: Manifest) -> list[str]:
    problems: list[str] = []
    if not m.tasks:
        problems.append("'tasks' is empty: at least one task is required")
    for task in m.tasks:
        if not isinstance(task, str) or not _TASK_NAME.match(task):
            problems.append(
                f"task name {task!r} is invalid: use 1-32 lowercase letters, digits, '_' or '-', "
                "starting with a letter"
            )
    if len(set(m.tasks)) != len(m.tasks):
        problems.append(f"'tasks' has duplicates: {list(m.tasks)}")
    if not (isinstance(m.length_min, int) and isinstance(m.length_max, int)):
        problems.append("length range must be integers")
    elif not 1 <= m.length_min <= m.length_max:
        problems.append(f"length range [{m.length_min}, {m.length_max}] must satisfy 1 <= min <= max")
    edges = list(m.reward_edges)
    if any(not isinstance(e, (int, float)) or not math.isfinite(e) for e in edges):
        problems.append(f"reward edges must be finite numbers, got {edges}")
    elif any(b <= a for a, b in zip(edges, edges[1:])):
        problems.append(f"reward edges must be strictly ascending, got {edges}")
    unknown = set(m.conditioning) - set(CONDITIONS)
    if unknown:
        problems.append(f"unknown conditioning {sorted(unknown)}; allowed: {list(CONDITIONS)}")
    if not isinstance(m.template, str) or "{query}" not in m.template or "{sep}" not in m.template:
        problems.append("template must contain {query} and {sep}")
    else:
        fields = re.findall(r"{(\w*)}", m.template)
        bad = [f for f in fields if f not in _TEMPLATE_FIELDS]
        if bad:
            problems.append(f"template has unknown fields {bad}; allowed: {list(_TEMPLATE_FIELDS)}")
    if not isinstance(m.output_prefix, str) or len(m.output_prefix) > 8 or m.output_prefix.strip():
        problems.append(f"output_prefix must be at most 8 whitespace characters, got {m.output_prefix!r}")
    if m.focus_bias and set(m.focus_bias) != set(m.tasks):
        problems.append(f"focus bias names tasks {sorted(m.focus_bias)}; it must name exactly {sorted(m.tasks)}")
    for task, bias in m.focus_bias.items():
        problem = _focus_bias_problem(task, bias, m.length_min, m.length_max)
        if problem:
            problems.append(problem)
    if not isinstance(m.focus_split_words, bool):
        problems.append(f"focus split_words must be true or false, got {m.focus_split_words!r}")
    if not isinstance(m.focus_push_function_words, bool):
        problems.append(f"focus push_function_words must be true or false, got {m.focus_push_function_words!r}")
    if isinstance(m.focus_min_bytes, bool) or not isinstance(m.focus_min_bytes, int) or m.focus_min_bytes < 1:
        problems.append(f"focus min_bytes must be an integer >= 1, got {m.focus_min_bytes!r}")
    unknown_title = [t for t in m.title_tasks if t not in m.tasks]
    if unknown_title or len(set(m.title_tasks)) != len(m.title_tasks):
        problems.append(f"case title names {list(m.title_tasks)}; it must name distinct tasks of {list(m.tasks)}")
    for name, words in (("focus stopwords", m.focus_stopwords), ("length_guard end_stopwords", m.end_stopwords),
                        ("case minor_words", m.minor_words)):
        if any(not isinstance(w, str) or not w or w != focus_key(w) or len(w.split()) != 1 for w in words):
            problems.append(f"{name} must be single non-empty words in the form query focus compares "
                            "(ASCII lowercase, no surrounding punctuation)")
    problems.extend(_spelling_problems(m))
    token_problems = _control_token_problems(m)
    problems.extend(token_problems)
    for task, n in m.default_length.items():
        if task not in m.tasks:
            problems.append(f"default_length names unknown task {task!r}")
        elif not isinstance(n, int) or not m.length_min <= n <= m.length_max:
            problems.append(f"default_length[{task!r}] = {n!r} is outside the length range")
    if m.token_ids and not token_problems:  # the special tokens are only known once the groups are sound
        missing = [t for t in m.special_tokens if t not in m.token_ids]
        if missing:
            problems.append(f"token_ids lacks ids for {missing[:5]}{'...' if len(missing) > 5 else ''}")
        ids = list(m.token_ids.values())
        if any(not isinstance(i, int) or i < 0 for i in ids):
            problems.append("token ids must be non-negative integers")
        elif len(set(ids)) != len(ids):
            problems.append("token ids are not unique")
    return problems


def _spelling_problems(m: Manifest) -> list[str]:
    words, endings = m.spelling_words, m.spelling_after_apostrophe
    if not isinstance(words, str) or (words and not _SPELLING_WORDS.fullmatch(words)):
        return ["spelling words must be one string of ASCII lowercase words one space apart"]
    previous = ""
    for match in re.finditer("[a-z]+", words):  # not a list: 160,000 strings cost a loader tens of MB
        if match.group(0) <= previous:
            return ["spelling words must be in ascending order, each once"]
        previous = match.group(0)
    if len(endings) > 64 or any(not isinstance(w, str) or not re.fullmatch("[a-z]+", w) for w in endings):
        return ["spelling after_apostrophe must be at most 64 ASCII lowercase words"]
    if endings and not words:
        return ["spelling after_apostrophe needs spelling words (without them the rule is off)"]
    return []


def _control_token_problems(m: Manifest) -> list[str]:
    ct = m.control_tokens
    if not isinstance(ct, Mapping) or set(ct) != {"task", "length", "reward"}:
        return ["control_tokens must have exactly the groups 'task', 'length', 'reward'"]
    problems = []
    expected = {
        "task": set(m.tasks),
        "length": {str(n) for n in range(m.length_min, m.length_max + 1)}
        if isinstance(m.length_min, int) and isinstance(m.length_max, int)
        else set(),
        "reward": {str(i) for i in range(m.reward_levels)},
    }
    for group, keys in expected.items():
        if set(ct[group]) != keys:
            problems.append(f"control_tokens[{group!r}] keys do not match the {group} schema")
    tokens = [t for g in ct.values() for t in g.values()] + [m.sep_token, m.eos_token]
    if any(not isinstance(t, str) or not t for t in tokens):
        problems.append("control tokens must be non-empty strings")
    elif len(set(tokens)) != len(tokens):
        problems.append("control tokens, sep and eos must all be distinct")
    return problems


# -- checkpoint directories -----------------------------------------------------------------------


def save_manifest(manifest: Manifest, directory: str | os.PathLike[str]) -> Path:
    """Write ``udrl.json`` into a checkpoint directory, atomically."""
    manifest.validate()
    path = Path(directory) / MANIFEST_FILENAME
    write_atomic(path, manifest.to_json())
    return path


def load_manifest(path: str | os.PathLike[str]) -> Manifest:
    """Read the manifest of a checkpoint directory (or of a ``udrl.json`` file).

    Raises `ManifestError` when it is missing or invalid, saying which.
    """
    path = Path(path)
    file = path / MANIFEST_FILENAME if path.is_dir() else path
    if not file.exists():
        where = f"directory {path}" if path.is_dir() else str(path)
        raise ManifestError(
            f"no udrl manifest in {where}: expected {MANIFEST_FILENAME}. Only artifacts written "
            "by the udrl trainer or converters can be loaded."
        )
    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ManifestError(
            f"{file} is not a udrl.json manifest (not UTF-8 text); to read the manifest an artifact "
            "(.gguf, .onnx, .mlpackage) carries, use udrl.read_manifest"
        ) from None
    except OSError as exc:
        raise ManifestError(f"cannot read {file}: {exc.strerror or exc}") from exc
    return Manifest.from_json(text, source=str(file))
