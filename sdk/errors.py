"""The exceptions udrl raises. Catch `UdrlError` to handle all of them."""

from __future__ import annotations


class UdrlError(Exception):
    """Base class of every error udrl raises on purpose."""


class ManifestError(UdrlError):
    """An artifact's manifest is missing, unreadable or invalid."""


class CommandError(UdrlError, ValueError):
    """A command (task, length, reward), query or option is not allowed by the model's manifest.
    In a batch, ``index`` is the position of the request at fault (None otherwise)."""

    def __init__(self, message: str, index: int | None = None):
        super().__init__(message)
        self.index = index


class DatasetError(UdrlError, ValueError):
    """A training dataset is empty, malformed or inconsistent with the command schema."""


class CheckpointError(UdrlError):
    """A checkpoint directory is missing files, corrupted or of an unsupported architecture."""


class ConfigError(UdrlError, ValueError):
    """A configuration has unknown keys or values outside what is allowed."""


class BackendError(UdrlError):
    """A runtime is not installed, not available on this platform, or cannot open the artifact."""
