"""Core ML for Apple devices: the plain GPT-2 forward as an ML program (``.mlpackage``).

Variants:
- ``fp16``: input ``input_ids`` [1, 1..n_ctx] -> ``logits`` [1, seq, vocab]; the caller re-runs the
  whole sequence each step (simple, any iOS 16+ device);
- ``int8``: the same with weights linearly quantized to int8;
- ``palette4``: the same with weights palettized to 4 bits (k-means, 16 entries per tensor);
- ``stateful``: iOS 18 KV cache kept by Core ML as model state (``ct.StateType``): inputs
  ``input_ids`` [1, seq] and ``causal_mask`` [1, 1, seq, past + seq], states ``key_cache`` and
  ``value_cache`` [n_layer, 1, heads, n_ctx, head_dim]; one prediction per new token.

The manifest and tokenizer travel in ``user_defined_metadata``. Conversion runs on Linux; prediction
needs macOS, so on Linux verification checks the spec (inputs, outputs, states, metadata, weight
types, size) and on macOS it also compares logits with PyTorch.
"""

from __future__ import annotations

import math
import platform
import warnings
from pathlib import Path
from typing import Any, ClassVar

import coremltools as ct  # noqa: E402  (after torch, as coremltools expects)
import numpy as np
import torch
from torch import nn
from udrl.artifacts import artifact_size
from udrl.manifest import METADATA_KEY, TOKENIZER_METADATA_KEY

from .export import Exporter, ExportError, Source, register
from .gpt2 import GPT2Forward
from .metadata import artifact_info
from .verify import compare_logits, logit_checks, prompt_set, reference_logits

# MIL ops that prove a weight compression was applied.
_COMPRESSION_OPS = {"int8": ("constexpr_blockwise_shift_scale", "constexpr_affine_dequantize"),
                    "palette4": ("constexpr_lut_to_dense",)}
_LOGIT_TOLERANCE = {"fp16": 5e-2, "stateful": 5e-2}
# The torch module handed to the converter, run in torch: exact, except the fp16 KV cache.
_GRAPH_TOLERANCE = {"fp16": 1e-4, "int8": 1e-4, "palette4": 1e-4, "stateful": 2e-2}
_MIN_TOP1 = {"int8": 0.9, "palette4": 0.7}


def _run_blocks(f: GPT2Forward, x: torch.Tensor, bias: torch.Tensor, cache: Any = None, start: Any = 0,
                end: Any = None) -> torch.Tensor:
    """The transformer blocks for batch 1, written with fixed batch size and tensor ops only so that
    tracing with a flexible sequence length converts; with ``cache`` keys and values go to state."""
    s = x.shape[1]
    d = f.head_dim
    for i, block in enumerate(f.blocks):
        q, k, v = block.qkv(block.ln_1(x)).split(f.n_embd, dim=-1)
        q = q.view(1, s, f.n_head, d).transpose(1, 2)
        k = k.view(1, s, f.n_head, d).transpose(1, 2)
        v = v.view(1, s, f.n_head, d).transpose(1, 2)
        if cache is not None:
            cache.key_cache[i, :, :, start:end, :] = k.to(torch.float16)
            cache.value_cache[i, :, :, start:end, :] = v.to(torch.float16)
            k = cache.key_cache[i, :, :, :end, :].to(torch.float32)
            v = cache.value_cache[i, :, :, :end, :].to(torch.float32)
        scores = (q @ k.transpose(-1, -2)) * (1.0 / math.sqrt(d)) + bias
        attn = torch.softmax(scores, dim=-1) @ v
        x = x + block.proj(attn.transpose(1, 2).reshape(1, s, f.n_embd))
        x = x + block.fc_out(nn.functional.gelu(block.fc(block.ln_2(x)), approximate="tanh"))
    h = f.ln_f(x)
    return nn.functional.linear(h.reshape(-1, f.n_embd), f.wte.weight).reshape(1, s, -1)


class _Logits(nn.Module):
    """Stateless: the whole sequence in, logits out."""

    def __init__(self, forward: GPT2Forward):
        super().__init__()
        self.f = forward

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        positions = torch.cumsum(torch.ones_like(input_ids), dim=1) - 1
        later = positions.unsqueeze(-1) < positions.unsqueeze(-2)  # [1, s, s]: key after query
        bias = (later.to(torch.float32) * -1e4).unsqueeze(1)
        x = self.f.wte(input_ids) + self.f.wpe(positions)
        return _run_blocks(self.f, x, bias)


class _Stateful(nn.Module):
    """KV cache as registered buffers that Core ML turns into model state."""

    def __init__(self, forward: GPT2Forward, n_ctx: int):
        super().__init__()
        self.f = forward
        shape = (forward.n_layer, 1, forward.n_head, n_ctx, forward.head_dim)
        self.register_buffer("key_cache", torch.zeros(shape, dtype=torch.float16))
        self.register_buffer("value_cache", torch.zeros(shape, dtype=torch.float16))

    def forward(self, input_ids: torch.Tensor, causal_mask: torch.Tensor) -> torch.Tensor:
        end = causal_mask.shape[-1]
        start = end - input_ids.shape[1]
        positions = torch.arange(start, end, dtype=torch.int32).unsqueeze(0)
        x = self.f.wte(input_ids) + self.f.wpe(positions)
        return _run_blocks(self.f, x, causal_mask, cache=self, start=start, end=end)


def convert(model: Any, quant: str) -> ct.models.MLModel:
    forward = GPT2Forward.from_hf(model)
    n_ctx = model.config.n_positions
    seq = ct.RangeDim(lower_bound=1, upper_bound=n_ctx, default=8)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        if quant == "stateful":
            module = _Stateful(forward, n_ctx).eval()
            example = (torch.zeros(1, 4, dtype=torch.int32), torch.zeros(1, 1, 4, 4))
            traced = torch.jit.trace(module, example)
            total = ct.RangeDim(lower_bound=1, upper_bound=n_ctx, default=8)
            shape = module.key_cache.shape
            mlmodel = ct.convert(
                traced,
                inputs=[ct.TensorType("input_ids", shape=(1, seq), dtype=np.int32),
                        ct.TensorType("causal_mask", shape=(1, 1, seq, total), dtype=np.float16)],
                outputs=[ct.TensorType("logits", dtype=np.float16)],
                states=[ct.StateType(ct.TensorType(shape=shape, dtype=np.float16), name="key_cache"),
                        ct.StateType(ct.TensorType(shape=shape, dtype=np.float16), name="value_cache")],
                minimum_deployment_target=ct.target.iOS18,
                compute_precision=ct.precision.FLOAT16,
            )
        else:
            traced = torch.jit.trace(_Logits(forward).eval(), (torch.zeros(1, 4, dtype=torch.int32),))
            mlmodel = ct.convert(
                traced,
                inputs=[ct.TensorType("input_ids", shape=(1, seq), dtype=np.int32)],
                outputs=[ct.TensorType("logits", dtype=np.float16)],
                minimum_deployment_target=ct.target.iOS18 if quant == "palette4" else ct.target.iOS17,
                compute_precision=ct.precision.FLOAT16,
            )
    if quant == "int8":
        config = ct.optimize.coreml.OptimizationConfig(
            global_config=ct.optimize.coreml.OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int8"))
        mlmodel = ct.optimize.coreml.linear_quantize_weights(mlmodel, config)
    elif quant == "palette4":
        config = ct.optimize.coreml.OptimizationConfig(
            global_config=ct.optimize.coreml.OpPalettizerConfig(nbits=4, mode="kmeans"))
        mlmodel = ct.optimize.coreml.palettize_weights(mlmodel, config)
    return mlmodel


def _ops(spec: Any) -> set[str]:
    ops: set[str] = set()
    for function in spec.mlProgram.functions.values():
        for block in function.block_specializations.values():
            ops.update(op.type for op in block.operations)
    return ops


@register
class CoreMLExporter(Exporter):
    format = "coreml"
    suffix = ".mlpackage"
    quants: ClassVar[tuple[str, ...]] = ("fp16", "int8", "palette4", "stateful")
    default_quant = "fp16"

    def write(self, source: Source, quant: str, path: Path) -> None:
        mlmodel = convert(source.model, quant)
        manifest = source.manifest_for(quant)
        info = artifact_info(manifest)
        mlmodel.user_defined_metadata[METADATA_KEY] = manifest.to_json()
        mlmodel.user_defined_metadata[TOKENIZER_METADATA_KEY] = source.tokenizer.backend_tokenizer.to_str()
        mlmodel.short_description = f"{info.name}: {info.description}"
        mlmodel.author = info.author
        mlmodel.license = f"{info.license_name} ({info.license_link})"
        mlmodel.version = info.version
        mlmodel.save(str(path))

    def verify(self, source: Source, quant: str, path: Path) -> dict[str, Any]:
        spec = ct.utils.load_spec(str(path))
        desc = spec.description
        failures: list[str] = []
        inputs = [i.name for i in desc.input]
        outputs = [o.name for o in desc.output]
        states = [s.name for s in desc.state]
        want_inputs = ["input_ids", "causal_mask"] if quant == "stateful" else ["input_ids"]
        if inputs != want_inputs:
            failures.append(f"inputs are {inputs}, expected {want_inputs}")
        if outputs != ["logits"]:
            failures.append(f"outputs are {outputs}, expected ['logits']")
        want_states = ["key_cache", "value_cache"] if quant == "stateful" else []
        if states != want_states:
            failures.append(f"states are {states}, expected {want_states}")
        meta = dict(desc.metadata.userDefined)
        if meta.get(METADATA_KEY) != source.manifest_for(quant).to_json():
            failures.append("manifest in user_defined_metadata differs from the checkpoint's")
        if meta.get(TOKENIZER_METADATA_KEY) != source.tokenizer.backend_tokenizer.to_str():
            failures.append("tokenizer in user_defined_metadata differs from the checkpoint's")
        ops = _ops(spec)
        wanted = _COMPRESSION_OPS.get(quant)
        if wanted and not ops & set(wanted):
            failures.append(f"no {' or '.join(wanted)} op: weights were not compressed to {quant}")
        size = artifact_size(path)
        params = sum(p.numel() for p in {id(p): p for p in source.model.parameters()}.values())
        bits = {"fp16": 16, "stateful": 16, "int8": 8, "palette4": 4}[quant]
        metadata = sum(len(value.encode()) for value in meta.values())  # manifest (spelling list) and tokenizer
        if size > params * bits / 8 * 1.25 + metadata + 200_000:
            failures.append(f"{size} bytes is more than {bits}-bit weights of {params} parameters should take")
        checks: dict[str, Any] = {
            "spec": f"inputs {inputs}, outputs {outputs}, states {states or 'none'}, spec version "
                    f"{spec.specificationVersion}",
            "weights": f"{size / 1e6:.2f} MB for {params / 1e6:.2f}M parameters at {bits} bits",
        }
        graph = _graph_parity(source, quant)
        checks["converted graph in torch"] = (f"logits max |diff| {graph.max_abs_diff:.2e}, "
                                              f"top-1 {graph.top1_agree:.1%}")
        if graph.max_abs_diff > _GRAPH_TOLERANCE[quant] * max(1.0, graph.scale):
            failures.append(f"the module given to Core ML differs from PyTorch by {graph.max_abs_diff:.2e}")
        if platform.system() == "Darwin":
            checks.update(_predict_parity(source, quant, path, failures))
        else:
            checks["logits"] = "not compared: Core ML prediction needs macOS"
        if failures:
            raise ExportError(f"Core ML {quant} failed verification: " + "; ".join(failures))
        return checks


def causal_mask(past: int, new: int) -> np.ndarray:
    """The stateful variant's mask for ``new`` tokens after ``past`` cached ones: [1, 1, new, past+new]."""
    mask = np.zeros((new, past + new), np.float32)
    mask[np.triu_indices(new, k=1, m=new)[0], past + np.triu_indices(new, k=1, m=new)[1]] = -1e4
    return mask[None, None]


@torch.no_grad()
def _graph_parity(source: Source, quant: str) -> Any:
    """Run the exact module that was converted, in torch, against the reference (on any OS): the
    stateful one by prefill then token-by-token decode through its cache."""
    forward = GPT2Forward.from_hf(source.model)
    pairs = []
    for text in prompt_set(source.manifest):
        ids = source.tokenizer.encode(text, add_special_tokens=False)
        x = torch.tensor([ids], dtype=torch.int32)
        if quant == "stateful":
            module = _Stateful(forward, source.model.config.n_positions).eval()
            split = max(1, len(ids) - 3)
            parts = [module(x[:, :split], torch.from_numpy(causal_mask(0, split)))]
            for i in range(split, len(ids)):
                parts.append(module(x[:, i : i + 1], torch.from_numpy(causal_mask(i, 1))))
            got = torch.cat(parts, dim=1)[0]
        else:
            got = _Logits(forward).eval()(x)[0]
        pairs.append((reference_logits(source.model, ids), got.float().numpy()))
    return compare_logits(pairs)


def _predict_parity(source: Source, quant: str, path: Path, failures: list[str]) -> dict[str, Any]:
    """On macOS: run the model and compare logits with PyTorch."""
    mlmodel = ct.models.MLModel(str(path), compute_units=ct.ComputeUnit.CPU_ONLY)
    pairs = []
    for text in prompt_set(source.manifest):
        ids = source.tokenizer.encode(text, add_special_tokens=False)
        feed = {"input_ids": np.array([ids], dtype=np.int32)}
        if quant == "stateful":
            state = mlmodel.make_state()
            feed["causal_mask"] = causal_mask(0, len(ids)).astype(np.float16)
            got = mlmodel.predict(feed, state=state)["logits"][0]
        else:
            got = mlmodel.predict(feed)["logits"][0]
        pairs.append((reference_logits(source.model, ids), got.astype(np.float32)))
    checks, logit_failures = logit_checks(compare_logits(pairs), quant, _LOGIT_TOLERANCE, _MIN_TOP1)
    failures += logit_failures
    return {f"Core ML {k}": v for k, v in checks.items()}
