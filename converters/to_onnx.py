"""ONNX for ONNX Runtime: the plain GPT-2 forward with a KV cache, dynamic batch and sequence axes.

Inputs: ``input_ids``, ``attention_mask``, ``position_ids`` (int64) and ``past_key_values.{i}.key``
/ ``.value`` (float32, [batch, heads, past, head_dim]); outputs: ``logits`` and
``present.{i}.key`` / ``.value``. One graph serves prefill (past length 0) and decode (one new
token). Variants: fp32, int8 (ONNX Runtime dynamic quantization of the matmul weights) and fp16.
The manifest and the tokenizer travel inside, as ``metadata_props`` ``udrl.manifest`` and
``udrl.tokenizer``, so one ``.onnx`` file is a complete artifact.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from udrl.backends import left_pad
from udrl.manifest import METADATA_KEY, TOKENIZER_METADATA_KEY

from .export import Exporter, ExportError, Source, register
from .gpt2 import GPT2Forward
from .metadata import ArtifactInfo, artifact_info
from .verify import compare_logits, greedy_agreement, logit_checks, prompt_set, reference_logits

OPSET = 17
_LOGIT_TOLERANCE = {"fp32": 1e-4, "fp16": 3e-2}
_MIN_TOP1 = {"int8": 0.9}
# Dynamic int8 quantizes activations per tensor, so a batch's rows nudge each other's logits.
_BATCH_TOLERANCE = {"fp32": 1e-4, "fp16": 3e-2, "int8": 5e-2}


def io_names(n_layer: int) -> tuple[list[str], list[str]]:
    past = [f"past_key_values.{i}.{kv}" for i in range(n_layer) for kv in ("key", "value")]
    present = [f"present.{i}.{kv}" for i in range(n_layer) for kv in ("key", "value")]
    return ["input_ids", "attention_mask", "position_ids", *past], ["logits", *present]


def export_fp32(model: Any, path: Path) -> None:
    """Trace the plain forward to an fp32 ONNX graph with dynamic batch, sequence and past axes."""
    forward = GPT2Forward.from_hf(model)
    inputs, outputs = io_names(forward.n_layer)
    batch, seq, past = 2, 3, 2
    args = (torch.ones(batch, seq, dtype=torch.long), torch.ones(batch, past + seq, dtype=torch.long),
            torch.arange(past, past + seq).repeat(batch, 1), *forward.empty_cache(batch, past))
    axes: dict[str, dict[int, str]] = {
        "input_ids": {0: "batch", 1: "sequence"},
        "attention_mask": {0: "batch", 1: "total_sequence"},
        "position_ids": {0: "batch", 1: "sequence"},
        "logits": {0: "batch", 1: "sequence"},
    }
    for name in inputs[3:]:
        axes[name] = {0: "batch", 2: "past_sequence"}
    for name in outputs[1:]:
        axes[name] = {0: "batch", 2: "total_sequence"}
    with warnings.catch_warnings():
        # The TorchScript exporter is deprecated in favour of dynamo, but it is the one that turns this
        # graph's dynamic axes into a single prefill+decode model without extra dependencies.
        # Constant folding stores each linear layer's weight as a MatMul initializer, which is what
        # int8 dynamic quantization recognises.
        warnings.simplefilter("ignore")
        torch.onnx.export(forward, args, str(path), input_names=inputs, output_names=outputs,
                          dynamic_axes=axes, opset_version=OPSET, dynamo=False, do_constant_folding=True)


def set_metadata(path: Path, entries: dict[str, str], info: ArtifactInfo | None = None) -> None:
    """Set ``metadata_props`` entries and, given ``info``, the model's producer, version and doc string."""
    import onnx

    proto = onnx.load(str(path))
    kept = [p for p in proto.metadata_props if p.key not in entries]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    for key, value in entries.items():
        proto.metadata_props.add(key=key, value=value)
    if info is not None:
        proto.producer_name = info.author
        proto.producer_version = info.version
        proto.model_version = info.onnx_model_version
        proto.doc_string = f"{info.name}: {info.long_description()}"
    onnx.save(proto, str(path))


def read_metadata(path: str | Path) -> dict[str, str]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return dict(session.get_modelmeta().custom_metadata_map)


class OrtRunner:
    """Prefill and decode through an ONNX Runtime session (used by verification)."""

    def __init__(self, path: Path, n_layer: int, n_head: int, head_dim: int):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = 2
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.n_layer, self.n_head, self.head_dim = n_layer, n_head, head_dim
        self.dtype = np.float16 if self.session.get_inputs()[3].type == "tensor(float16)" else np.float32

    def empty(self, batch: int) -> list[np.ndarray]:
        return [np.zeros((batch, self.n_head, 0, self.head_dim), dtype=self.dtype) for _ in range(2 * self.n_layer)]

    def run(self, ids: np.ndarray, mask: np.ndarray, positions: np.ndarray, past: Sequence[np.ndarray]):
        inputs, _ = io_names(self.n_layer)
        feed = dict(zip(inputs, [ids, mask, positions, *past]))
        out = self.session.run(None, feed)
        return out[0].astype(np.float32), out[1:]

    def logits(self, ids: Sequence[int]) -> np.ndarray:
        a = np.array([ids], dtype=np.int64)
        return self.run(a, np.ones_like(a), np.arange(len(ids))[None], self.empty(1))[0][0]

    def greedy(self, ids: Sequence[int], eos: int, max_new: int) -> list[int]:
        a = np.array([ids], dtype=np.int64)
        logits, past = self.run(a, np.ones_like(a), np.arange(len(ids))[None], self.empty(1))
        out: list[int] = []
        n = len(ids)
        while len(out) < max_new:
            nxt = int(logits[0, -1].argmax())
            if nxt == eos:
                break
            out.append(nxt)
            logits, past = self.run(np.array([[nxt]]), np.ones((1, n + 1), np.int64), np.array([[n]]), past)
            n += 1
        return out


def _weight_matmuls(model_path: Path) -> list[str]:
    """The MatMul nodes that multiply by a weight (an initializer): the ones to quantize. The
    attention's activation-by-activation MatMuls stay fp32; onnxruntime 1.31 quantized them too
    (per tensor, dynamically), which dropped a tiny model's top-1 agreement with torch to 46%."""
    import onnx

    graph = onnx.load(str(model_path), load_external_data=False).graph
    weights = {init.name for init in graph.initializer}
    return [n.name for n in graph.node if n.op_type == "MatMul" and any(i in weights for i in n.input)]


@register
class ONNXExporter(Exporter):
    format = "onnx"
    suffix = ".onnx"
    quants: ClassVar[tuple[str, ...]] = ("fp32", "int8", "fp16")
    default_quant = "fp32"

    def write(self, source: Source, quant: str, path: Path) -> None:
        """Export fp32, then quantize or cast it when asked."""
        fp32 = path if quant == "fp32" else path.with_name(path.name + ".fp32")
        try:
            export_fp32(source.model, fp32)
            if quant == "int8":
                from onnxruntime.quantization import QuantType, quantize_dynamic

                # The block MatMuls only, one scale per output channel. The token embedding (a Gather,
                # tied to the output head) stays fp32: quantized per tensor it held a trained mini model's
                # top-1 agreement with torch at 89-90%; left in fp32 (10 MB more), 94%.
                quantize_dynamic(str(fp32), str(path), weight_type=QuantType.QInt8, per_channel=True,
                                 op_types_to_quantize=["MatMul"], nodes_to_quantize=_weight_matmuls(fp32))
            elif quant == "fp16":
                import onnx
                from onnxruntime.transformers.float16 import convert_float_to_float16

                onnx.save(convert_float_to_float16(onnx.load(str(fp32)), keep_io_types=False), str(path))
        finally:
            if fp32 != path:
                fp32.unlink(missing_ok=True)
        manifest = source.manifest_for(quant)
        set_metadata(path, {
            METADATA_KEY: manifest.to_json(),
            TOKENIZER_METADATA_KEY: source.tokenizer.backend_tokenizer.to_str(),
        }, artifact_info(manifest))

    def verify(self, source: Source, quant: str, path: Path) -> dict[str, Any]:
        model, tok, manifest = source.model, source.tokenizer, source.manifest
        c = model.config
        failures: list[str] = []
        meta = read_metadata(path)
        if meta.get(METADATA_KEY) != source.manifest_for(quant).to_json():
            failures.append("manifest in metadata_props differs from the checkpoint's")
        if meta.get(TOKENIZER_METADATA_KEY) != tok.backend_tokenizer.to_str():
            failures.append("tokenizer in metadata_props differs from the checkpoint's")
        runner = OrtRunner(path, c.n_layer, c.n_head, c.n_embd // c.n_head)
        prompts = [tok.encode(p, add_special_tokens=False) for p in prompt_set(manifest)]
        report = compare_logits([(reference_logits(model, ids), runner.logits(ids)) for ids in prompts])
        greedy = greedy_agreement(model, prompts, manifest.eos_id,
                                  lambda ids, n: runner.greedy(ids, manifest.eos_id, n))
        batch_diff = _batch_consistency(runner, prompts[:2])
        checks, logit_failures = logit_checks(report, quant, _LOGIT_TOLERANCE, _MIN_TOP1)
        failures += logit_failures
        checks["greedy agreement (KV cache)"] = f"{greedy:.0%} of {len(prompts)} prompts"
        checks["batch-2 vs batch-1 max |diff|"] = f"{batch_diff:.2e}"
        if quant == "fp32" and greedy < 1.0:
            failures.append(f"greedy decoding with the KV cache matches PyTorch on only {greedy:.0%} of prompts")
        if batch_diff > _BATCH_TOLERANCE[quant] * max(1.0, report.scale):
            failures.append(f"a left-padded batch of 2 differs from single runs by {batch_diff:.2e}")
        if failures:
            raise ExportError(f"ONNX {quant} failed verification: " + "; ".join(failures))
        return checks


def _batch_consistency(runner: OrtRunner, prompts: Sequence[Sequence[int]]) -> float:
    """Max logit difference between a left-padded batch and the same prompts run one by one."""
    ids, mask, positions = left_pad(prompts, 0)
    width = ids.shape[1]
    logits, _ = runner.run(ids, mask, positions, runner.empty(len(prompts)))
    return max(float(np.max(np.abs(logits[i, width - len(p):] - runner.logits(p)))) for i, p in enumerate(prompts))
