"""How the tree is put together: no private names across modules, and an SDK that stays light."""

import ast
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("sdk", "trainer", "converters", "benchmarks")


def test_no_module_imports_a_private_name_from_another():
    found = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.ImportFrom):
                    found += [f"{path.relative_to(ROOT)}: {alias.name} from {node.module}"
                              for alias in node.names if alias.name.startswith("_") and alias.name != "__version__"]
    assert found == []


def test_importing_the_sdk_loads_neither_trainer_converters_nor_torch():
    code = ("import json, sys, udrl; print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('torch', 'transformers') or m.startswith(('udrl.trainer', 'udrl.converters', 'udrl.benchmarks')))))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert json.loads(done.stdout) == []


def test_the_readme_layout_table_matches_the_folders():
    """Every tracked top-level folder has a row (or rows for its subfolders), every row's folder
    exists, and every file the table names (`name.py`, `sub/`) is in that row's folder."""
    import re

    text = (ROOT / "README.md").read_text(encoding="utf-8")
    table = text[text.index("## Layout"):]
    table = table[: table.index("\n\n", table.index("| folder"))]
    rows = [line.split("|")[1:4] for line in table.splitlines() if line.startswith("| `")]
    folders = {re.match(r"\s*`([^`/]+)/", folder).group(1) for folder, _, _ in rows}
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    top = {p.split("/")[0] for p in tracked if "/" in p and not p.startswith(".")}
    assert folders == top
    packages = {p.rsplit("/", 1)[0] for p in tracked if p.count("/") == 2 and p.endswith("/__init__.py")}
    assert packages <= {re.match(r"\s*`([^`]+)/`", folder).group(1) for folder, _, _ in rows}  # trainer/distill ...
    missing = []
    for folder, _, holds in rows:
        base = ROOT / re.match(r"\s*`([^`]+)/`", folder).group(1)  # a row's names are inside its folder
        for name in re.findall(r"`([\w./*-]+)`", holds.replace("over `llama.h`", "")):  # llama.cpp's
            if name.endswith((".py", ".c", ".h", ".md", ".json")) or name.endswith("/"):
                if not any(base.glob(name.rstrip("/"))) and not (ROOT / name).exists():
                    missing.append(f"{base.name}/{name}")
    assert missing == []
