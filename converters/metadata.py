"""Who made an artifact, under which licence, and what version it is: written once here, in the
places each runtime's tools look.

| artifact | where | read by |
| --- | --- | --- |
| GGUF | ``general.name``, ``general.description``, ``general.author``, ``general.license`` (+ ``.link``), ``general.version``, ``general.size_label``, ``general.quantized_by`` | Ollama ``show``, LM Studio, ``llama_cpp.Llama(...).metadata`` |
| ONNX | ``producer_name``, ``producer_version``, ``model_version``, ``doc_string`` | Netron, ONNX Runtime's model metadata |
| Core ML | author, license, version, short description | Xcode's model view |
| model card | YAML front matter (`trainer/evaluate/card.py`) | the Hugging Face hub |

The weights are distilled from Gemma 3 outputs, so the Gemma Terms of Use apply to them and to what
they generate; that is the licence every artifact states.
"""

from __future__ import annotations

import dataclasses

from udrl import __version__
from udrl.manifest import Manifest

AUTHOR = "udrl-edge"
LICENSE = "gemma"  # the Hugging Face hub's licence id for the Gemma Terms of Use
LICENSE_NAME = "Gemma Terms of Use"
LICENSE_LINK = "https://ai.google.dev/gemma/terms"
QUANTIZED_BY = "udrl export (llama.cpp llama_model_quantize, ONNX Runtime, coremltools)"


@dataclasses.dataclass(frozen=True)
class ArtifactInfo:
    name: str  # e.g. "udrl-mini"
    description: str
    author: str
    license: str
    license_name: str
    license_link: str
    version: str  # the udrl-edge release that wrote the artifact
    size_label: str  # e.g. "23M", as gguf-py labels parameter counts
    quantized_by: str

    @property
    def onnx_model_version(self) -> int:
        """ONNX's model_version is an integer: the release as major * 10000 + minor * 100 + patch."""
        parts = [int(p) if p.isdigit() else 0 for p in self.version.split(".")[:3]] + [0, 0, 0]
        return parts[0] * 10000 + parts[1] * 100 + parts[2]

    def long_description(self) -> str:
        return f"{self.description} Licence: {self.license_name} ({self.license_link})."


def artifact_info(manifest: Manifest) -> ArtifactInfo:
    """The provenance every artifact of a model carries, from its manifest."""
    from gguf.utility import size_label

    preset = manifest.model.get("preset") or "gpt2"
    params = int(manifest.model.get("n_params") or 0)
    return ArtifactInfo(
        name=f"udrl-{preset}",
        description=(f"A {params / 1e6:.1f}M-parameter GPT-2 policy trained with upside-down reinforcement learning "
                     f"to write prompts on command (tasks: {', '.join(manifest.tasks)}; length "
                     f"{manifest.length_min}-{manifest.length_max} words; {manifest.reward_levels} relevance "
                     "levels) from a design request. Prompt format and commands: the udrl.manifest metadata."),
        author=AUTHOR,
        license=LICENSE,
        license_name=LICENSE_NAME,
        license_link=LICENSE_LINK,
        version=__version__,
        size_label=size_label(params, 0, 0, 0) if params else "unknown",
        quantized_by=QUANTIZED_BY,
    )
