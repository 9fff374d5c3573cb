"""The exceptions udrl raises. Catch `UdrlError` to handle all of them."""

from __future__ import annotations


class UdrlError(Exception):
    """Base class of every error udrl raises on purpose."""


class ManifestError(UdrlError):
    """An artifact's manifest is missing, unreadable or invalid."""


class CommandError(UdrlError, ValueError):
    """A command (task, length, reward) or query is not allowed by the model's manifest."""


class DatasetError(UdrlError, ValueError):
    """A training dataset is empty, malformed or inconsistent with the command schema."""


class CheckpointError(UdrlError):
    """A checkpoint directory is missing files, corrupted or of an unsupported architecture."""


class ConfigError(UdrlError, ValueError):
    """A configuration has unknown keys or values outside what is allowed."""


class BackendError(UdrlError):
    """A runtime is not installed, not available on this platform, or cannot open the artifact."""
