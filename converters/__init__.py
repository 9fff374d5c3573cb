"""udrl.converters: export a checkpoint to GGUF, ONNX and Core ML, each carrying the manifest.

Needs the ``convert`` extra (and ``coreml`` for Core ML). The SDK never imports this package.
"""
