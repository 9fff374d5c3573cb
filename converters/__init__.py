"""udrl.converters: export a checkpoint to GGUF, ONNX and Core ML, each carrying the manifest.

Needs the ``convert`` extra (and ``coreml`` for Core ML). The SDK never imports this package.

Example:
    >>> from udrl.converters import export                        # doctest: +SKIP
    >>> export("runs/mini/model", "gguf", quant="q4_k_m").summary()
"""

from .export import EXPORTERS, ExportError, ExportResult, export, get_exporter

__all__ = ["EXPORTERS", "ExportError", "ExportResult", "export", "get_exporter"]
