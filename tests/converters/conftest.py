import shutil
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def checkpoint(tiny_run, tmp_path_factory) -> Path:
    """A copy of the tiny run's final checkpoint, in a directory the export tests may fill."""
    target = tmp_path_factory.mktemp("export") / "model"
    shutil.copytree(tiny_run / "model", target)
    return target


@pytest.fixture
def scratch_checkpoint(checkpoint, tmp_path) -> Path:
    """A private copy that a test may damage."""
    target = tmp_path / "model"
    shutil.copytree(checkpoint, target)
    return target
