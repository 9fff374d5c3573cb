"""udrl: small command-conditioned prompt-generation models, run locally.

The SDK is the runtime half of udrl-edge: the command schema, the artifact manifest and (in later
releases) the backends and generation API. It never imports the trainer or the converters, so an
app that embeds it installs only what inference needs.
"""

from .commands import Command, count_words, make_command, render_prompt
from .errors import (
    CheckpointError,
    CommandError,
    ConfigError,
    DatasetError,
    ManifestError,
    UdrlError,
)
from .manifest import Manifest, load_manifest, save_manifest

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "Command",
    "CommandError",
    "ConfigError",
    "DatasetError",
    "Manifest",
    "ManifestError",
    "UdrlError",
    "count_words",
    "load_manifest",
    "make_command",
    "render_prompt",
    "save_manifest",
]
