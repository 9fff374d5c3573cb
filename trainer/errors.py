"""The trainer's exceptions, beside the SDK's (`udrl.errors`); the command line exits 6 on either."""

from __future__ import annotations

from udrl.errors import UdrlError


class ConfigError(UdrlError, ValueError):
    """A training, recipe, task or distillation configuration has unknown keys or values outside
    what is allowed."""

    exit_code = 6


class DatasetError(UdrlError, ValueError):
    """A training dataset is empty, malformed or inconsistent with the command schema."""

    exit_code = 6
