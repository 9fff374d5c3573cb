"""Every make target the README names expands to commands without empty arguments (`make -n`)."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TARGETS = sorted(set(re.findall(r"`make ([a-z][a-z-]*)`", (ROOT / "README.md").read_text(encoding="utf-8")))
                 | set(re.findall(r"^make ([a-z][a-z-]*)", (ROOT / "README.md").read_text(encoding="utf-8"), re.M)))
OPTIONS_WITH_VALUES = ("--out", "--model", "--data", "--init", "--config", "--report", "--write", "--eval",
                       "--topics", "--queries", "--data-card", "--notes", "--shipped-run", "--focus", "--run",
                       "--ablation", "--export")

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="no make on this machine")


def test_the_readme_names_the_targets_it_documents():
    assert {"run", "test", "demo", "model", "data", "bench"} <= set(TARGETS)


@pytest.mark.parametrize("target", TARGETS)
def test_a_readme_target_expands_without_empty_arguments(target):
    done = subprocess.run(["make", "-n", "-C", str(ROOT), target], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    commands = done.stdout
    for option in OPTIONS_WITH_VALUES:
        empty = re.search(rf"{re.escape(option)}(\s+--|\s*;|\s*$|\s*&&|\s*\\\n)", commands, re.M)
        assert not empty, f"make {target}: {option} without a value in: {commands[max(0, empty.start() - 80):empty.end() + 40]}"
    assert not re.search(r"rm -rf\s*($|;|&&|/\s)", commands, re.M), f"make {target} removes an empty path"
    stray = re.findall(r"(?<=\s)/(?:model|runs|data|sdk)\b\S*", commands)
    assert not stray, f"make {target}: a path that lost its directory variable: {stray}"


@pytest.mark.slow
def test_make_demo_runs_end_to_end(tmp_path):
    done = subprocess.run(["make", "-C", str(ROOT), "demo", f"DEMO={tmp_path / 'demo'}"], capture_output=True,
                          text=True, timeout=1800)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert (tmp_path / "demo" / "model-q8_0.gguf").is_file()
    assert done.stdout.count("\n") > 4
