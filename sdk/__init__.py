"""udrl: small command-conditioned prompt-generation models, run locally.

    >>> import udrl
    >>> model = udrl.load("model-q8_0.gguf")                              # doctest: +SKIP
    >>> model.generate("poster for a jazz night", task="image", length=12).text

The SDK is the runtime half of udrl-edge: the command schema, the artifact manifest, the backends
(llama.cpp, ONNX Runtime, torch, Core ML) and the generation API. It never imports the trainer or
the converters, so an app that embeds it installs only what inference needs.
"""

from .artifacts import read_manifest
from .commands import Command, count_words, make_command, render_prompt
from .errors import (
    BackendError,
    CheckpointError,
    CommandError,
    ManifestError,
    UdrlError,
)
from .generate import GenerationResult
from .manifest import Manifest, load_manifest, save_manifest
from .model import CommandSpace, Model, Request, Stream, default_model_path, load
from .scheduler import Ticket

__version__ = "0.1.0"

__all__ = [
    "BackendError",
    "CheckpointError",
    "Command",
    "CommandError",
    "CommandSpace",
    "GenerationResult",
    "Manifest",
    "ManifestError",
    "Model",
    "Ticket",
    "default_model_path",
    "Request",
    "Stream",
    "UdrlError",
    "count_words",
    "load",
    "load_manifest",
    "make_command",
    "read_manifest",
    "render_prompt",
    "save_manifest",
]
