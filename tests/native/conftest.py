"""The C layer's build needs cJSON beside llama.h: without it every native test is skipped, saying
what to install (.ci/run installs it, so CI always runs them)."""

import subprocess
import sys
from pathlib import Path

import pytest

NATIVE = Path(__file__).resolve().parents[2] / "native"


def _cjson_missing() -> str | None:
    try:
        out = subprocess.run(["make", "-s", "-C", str(NATIVE), "check-cjson", f"PYTHON={sys.executable}"],
                             capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"cannot run make: {exc}"
    return out.stderr.strip() or "cJSON not found" if out.returncode else None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    mine = [item for item in items if here in Path(str(item.fspath)).parents]
    reason = _cjson_missing() if mine else None
    for item in mine if reason else []:
        item.add_marker(pytest.mark.skip(reason=reason))
