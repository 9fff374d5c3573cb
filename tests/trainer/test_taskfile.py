"""Tasks as data: the shipped task files, and what a task file may not say."""

import json
import re
from pathlib import Path

import pytest
from udrl.trainer.errors import ConfigError
from udrl.trainer.formats import format_problems
from udrl.trainer.prompts import LENGTH_SPREAD, build_prompt, clean_output
from udrl.trainer.taskfile import TASKS, TaskRegistry, load_task_file, problems_with

# What the prompts, cleaning and format checks gave when the four tasks were code (prompts.py,
# formats.py), recorded before they moved into trainer/tasks/*.toml.
GOLDEN = json.loads((Path(__file__).parent / "data" / "task-golden.json").read_text(encoding="utf-8"))

ALT_TEXT = (Path(__file__).resolve().parents[2] / "data" / "tasks" / "alt_text.toml").read_text(encoding="utf-8")


def test_the_shipped_task_files_render_the_same_prompts_and_cleaning_as_before():
    assert list(TASKS) == ["image", "search", "headline", "tags"]
    assert {t: list(v) for t, v in LENGTH_SPREAD.items()} == GOLDEN["length_spread"]
    for key, prompt in GOLDEN["prompts"].items():
        task, query, words = key.split("|")
        assert build_prompt(task, query, int(words)) == prompt, key
    for key, cleaned in GOLDEN["clean"].items():
        task, raw = key.split("|", 1)
        assert list(clean_output(task, raw, "poster for a jazz night")) == cleaned, key


def test_the_shipped_format_checks_flag_the_same_outputs_as_before():
    """Same verdicts and as many problems per output; the messages now name the task's noun or
    "items" (for example "items are not repeated", before "tags are not repeated")."""
    for key, problems in GOLDEN["format"].items():
        task, text = key.split("|", 1)
        now = format_problems(task, text)
        assert bool(now) == bool(problems) and len(now) == len(problems), (key, problems, now)


def test_a_task_file_adds_a_task_with_its_prompt_and_rules(tmp_path):
    path = tmp_path / "alt_text.toml"
    path.write_text(ALT_TEXT)
    registry = TaskRegistry()
    spec = registry.add_file(path)
    assert list(registry)[-1] == "alt_text" and spec.lengths == (6, 24)
    assert "alt_text" not in TASKS  # a registry of its own; the module's is untouched
    assert spec.examples[0][0] == "poster for a jazz festival" and len(spec.examples) == 5
    assert problems_with(spec, "is this a photo of a cat?") == ["an alt text is not a question"]
    assert problems_with(spec, " ".join(["word"] * 31)) == ["an alt text has at most 30 words"]
    assert problems_with(spec, "a cat on a sofa") == []


@pytest.mark.parametrize("change, field", [
    (lambda t: t.replace('noun = "alt text"\n', ""), "noun"),
    (lambda t: t.replace('lengths = [6, 24]', 'lengths = [24, 6]'), "lengths"),
    (lambda t: t.replace('"not_a_question"]', '"no_emoji"]'), "format"),
    (lambda t: t.replace('name = "alt_text"', 'name = "tags"'), "name"),
    (lambda t: t.replace('name = "alt_text"', 'name = "Alt Text"'), "name"),
    (lambda t: t.replace("max_words = 30", "max_words = 10"), "max_words"),
    (lambda t: "colour = 'red'\n" + t, "colour"),
    (lambda t: t.replace("under warm orange lights", "is it jazz?"), "examples"),
    (lambda t: t.replace('request = "poster for a jazz festival"\n', ""), "examples[0]"),
    (lambda t: t.replace("lengths = [6, 24]", "lengths = 12"), "lengths"),
    (lambda t: 'case = "upper"\n' + t, "case"),
])
def test_a_bad_task_file_is_refused_naming_the_field(tmp_path, change, field):
    path = tmp_path / "task.toml"
    path.write_text(change(ALT_TEXT))
    with pytest.raises(ConfigError, match=re.escape(f"'{field}'")) as caught:
        load_task_file(path, TaskRegistry())
    assert str(path) in str(caught.value)
    if field == "format":
        assert "allowed: not_a_question, max_words" in str(caught.value)
    if field == "case":
        assert "'as_written', 'title'" in str(caught.value)
    if field == "name" and "tags" in path.read_text():
        assert "clashes with an existing task" in str(caught.value)


def test_unreadable_task_files_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="task file not found"):
        load_task_file(tmp_path / "none.toml")
    (tmp_path / "bad.toml").write_text("name = ")
    with pytest.raises(ConfigError, match="not a valid TOML task file"):
        load_task_file(tmp_path / "bad.toml")


def test_a_registry_extended_for_a_block_holds_what_it_held_before_afterwards(tmp_path):
    path = tmp_path / "alt_text.toml"
    path.write_text(ALT_TEXT)
    registry = TaskRegistry()
    with registry.extended([path]) as extended:
        assert extended is registry and list(registry)[-1] == "alt_text"
    assert "alt_text" not in registry
    with pytest.raises(RuntimeError), registry.extended([path]):
        raise RuntimeError("a job that fails half-way")
    assert list(registry) == ["image", "search", "headline", "tags"]
    broken = tmp_path / "broken.toml"
    broken.write_text(ALT_TEXT.replace('noun = "alt text"\n', ""))
    with pytest.raises(ConfigError, match="'noun'"), registry.extended([path, broken]):
        pass
    assert "alt_text" not in registry
