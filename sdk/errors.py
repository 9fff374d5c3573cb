"""The exceptions udrl raises. Catch `UdrlError` to handle all of them.

Each kind carries the exit status the ``udrl`` command line ends with (``exit_code``; the README
lists them). The trainer's own kinds (`ConfigError`, `DatasetError`) live in ``udrl.trainer.errors``."""

from __future__ import annotations


class UdrlError(Exception):
    """Base class of every error udrl raises on purpose."""

    exit_code = 1


class ManifestError(UdrlError):
    """An artifact's manifest is missing, unreadable or invalid."""

    exit_code = 4


class CommandError(UdrlError, ValueError):
    """A command (task, length, reward), query or option is not allowed by the model's manifest.
    In a batch, ``index`` is the position of the request at fault (None otherwise)."""

    exit_code = 3

    def __init__(self, message: str, index: int | None = None):
        super().__init__(message)
        self.index = index


class CheckpointError(UdrlError):
    """A checkpoint directory is missing files, corrupted or of an unsupported architecture."""

    exit_code = 4


class BackendError(UdrlError):
    """A runtime is not installed, not available on this platform, or cannot open the artifact."""

    exit_code = 5
