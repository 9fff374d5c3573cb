"""GGUF for llama.cpp: architecture ``gpt2``, written with the ``gguf`` package.

f32 and f16 are written directly; the other quantizations are made from the f32 file by llama.cpp's
own ``llama_model_quantize`` (through llama-cpp-python). The tokenizer is stored as GPT-2 BPE with
``tokenizer.ggml.pre`` set, and every special token typed CONTROL so that llama.cpp keeps each
control token whole when it tokenizes with special tokens on. The manifest is the metadata string
``udrl.manifest``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import gguf
import numpy as np
from udrl.gguf_file import gguf_metadata_string
from udrl.manifest import METADATA_KEY

from .export import Exporter, ExportError, Source, register
from .metadata import artifact_info
from .verify import (
    compare_logits,
    greedy_agreement,
    logit_checks,
    prompt_set,
    reference_logits,
    tokenizer_corpus,
)

# HF GPT-2 Conv1D weights are [in, out]; llama.cpp wants [out, in].
_CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")

# Acceptance per variant: logits within atol * max|logit| (exact formats), or top-1 agreement.
_LOGIT_TOLERANCE = {"f32": 1e-3, "f16": 3e-2}
_MIN_TOP1 = {"q8_0": 0.95, "q6_k": 0.9, "q5_k_m": 0.85, "q4_k_m": 0.8}


def _llama_ftype(quant: str) -> int:
    import llama_cpp

    return {
        "f32": llama_cpp.LLAMA_FTYPE_ALL_F32, "f16": llama_cpp.LLAMA_FTYPE_MOSTLY_F16,
        "q8_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0, "q6_k": llama_cpp.LLAMA_FTYPE_MOSTLY_Q6_K,
        "q5_k_m": llama_cpp.LLAMA_FTYPE_MOSTLY_Q5_K_M, "q4_k_m": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M,
    }[quant]


def gguf_tensors(model: Any) -> dict[str, np.ndarray]:
    """fp32 tensors under llama.cpp's names (gguf-py's GPT-2 tensor-name map); HF Conv1D weights
    [in, out] become [out, in]. The output head is tied to the token embedding and not written."""
    tmap = gguf.get_tensor_name_map(gguf.MODEL_ARCH.GPT2, model.config.n_layer)
    out = {}
    for name, value in model.state_dict().items():
        if name == "lm_head.weight" or name.endswith((".attn.bias", ".attn.masked_bias")):
            continue
        w = value.detach().float().numpy()
        ours = tmap.get_name(name, try_suffixes=(".weight", ".bias"))
        if ours is None:
            raise ExportError(f"no llama.cpp name for tensor {name}: not a GPT-2 checkpoint")
        out[ours] = np.ascontiguousarray(w.T if name.endswith(_CONV1D) else w)
    return out


def _merges(tokenizer: Any) -> list[str]:
    merges = json.loads(tokenizer.backend_tokenizer.to_str())["model"]["merges"]
    return [m if isinstance(m, str) else " ".join(m) for m in merges]


def write_gguf(source: Source, path: Path, dtype: str, quant: str) -> None:
    """Write an f32 or f16 (``dtype``) GGUF of ``source`` whose manifest says ``quant``
    (a quantized file is made from an f32 one, and llama.cpp copies its metadata)."""
    model, tok = source.model, source.tokenizer
    c = model.config
    manifest = source.manifest_for(quant)
    info = artifact_info(manifest)
    writer = gguf.GGUFWriter(str(path), "gpt2")
    writer.add_name(info.name)
    writer.add_description(info.long_description())
    writer.add_author(info.author)
    writer.add_license(info.license)
    writer.add_license_name(info.license_name)
    writer.add_license_link(info.license_link)
    writer.add_version(info.version)
    writer.add_size_label(info.size_label)
    writer.add_quantized_by(info.quantized_by)
    writer.add_context_length(c.n_positions)
    writer.add_embedding_length(c.n_embd)
    writer.add_feed_forward_length(c.n_inner or 4 * c.n_embd)
    writer.add_block_count(c.n_layer)
    writer.add_head_count(c.n_head)
    writer.add_layer_norm_eps(c.layer_norm_epsilon)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32 if dtype == "f32" else gguf.LlamaFileType.MOSTLY_F16)

    special = set(tok.all_special_ids) | set(manifest.token_ids.values())
    tokens = tok.convert_ids_to_tokens(list(range(len(tok))))
    types = [gguf.TokenType.CONTROL if i in special else gguf.TokenType.NORMAL for i in range(len(tok))]
    for i in range(len(tok), c.vocab_size):  # embedding rows beyond the tokenizer, if any
        tokens.append(f"[PAD{i}]")
        types.append(gguf.TokenType.UNUSED)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(_merges(tok))
    writer.add_bos_token_id(manifest.eos_id)
    writer.add_eos_token_id(manifest.eos_id)
    writer.add_pad_token_id(manifest.eos_id)
    writer.add_add_bos_token(False)
    writer.add_add_eos_token(False)
    writer.add_string(METADATA_KEY, manifest.to_json())

    for name, data in gguf_tensors(model).items():
        # llama.cpp wants norms and biases in f32; matrices follow the file type.
        if dtype == "f16" and data.ndim == 2:
            data = data.astype(np.float16)
        writer.add_tensor(name, data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def quantize(src: Path, dst: Path, quant: str, threads: int = 0) -> None:
    import llama_cpp
    from udrl.backend_llama import quiet_llama_logs

    quiet_llama_logs(llama_cpp)  # the quantizer reports every tensor otherwise
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = _llama_ftype(quant)
    params.nthread = threads
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), params)
    if rc != 0:
        raise ExportError(f"llama.cpp could not quantize {src.name} to {quant} (code {rc})")


def read_manifest_json(path: str | Path) -> str:
    """The manifest JSON stored in a GGUF file's metadata (without loading the model)."""
    text = gguf_metadata_string(path, METADATA_KEY)
    if text is None:
        raise ExportError(f"{path} has no {METADATA_KEY} metadata")
    return text


@register
class GGUFExporter(Exporter):
    format = "gguf"
    suffix = ".gguf"
    quants: ClassVar[tuple[str, ...]] = ("f32", "f16", "q8_0", "q6_k", "q5_k_m", "q4_k_m")
    default_quant = "q8_0"

    def write(self, source: Source, quant: str, path: Path) -> None:
        if quant in ("f32", "f16"):
            write_gguf(source, path, quant, quant)
            return
        f32 = path.with_name(path.name + ".f32")
        try:
            write_gguf(source, f32, "f32", quant)
            quantize(f32, path, quant)
        finally:
            f32.unlink(missing_ok=True)

    def verify(self, source: Source, quant: str, path: Path) -> dict[str, Any]:
        from udrl.backend_llama import open_llama

        failures: list[str] = []
        tok, model, manifest = source.tokenizer, source.model, source.manifest
        llm = open_llama(path, n_ctx=model.config.n_positions, logits_all=True, n_threads=2,
                    verbose=False)
        try:
            stored = json.loads(read_manifest_json(path))
            if stored != source.manifest_for(quant).to_dict():
                failures.append("manifest in the GGUF differs from the checkpoint's")
            mismatched = [t for t in tokenizer_corpus(manifest)
                          if llm.tokenize(t.encode(), add_bos=False, special=True)
                          != tok.encode(t, add_special_tokens=False)]
            if mismatched:
                failures.append(f"llama.cpp tokenizes {len(mismatched)} text(s) differently, e.g. {mismatched[0]!r}")
            prompts = [tok.encode(p, add_special_tokens=False) for p in prompt_set(manifest)]
            pairs = []
            for ids in prompts:
                llm.reset()
                llm.eval(ids)
                pairs.append((reference_logits(model, ids), np.array(llm.scores[: len(ids)], dtype=np.float32)))
            report = compare_logits(pairs)

            def llama_greedy(ids: list[int], max_new: int) -> list[int]:
                out = []
                for t in llm.generate(ids, top_k=1, temp=0.0, reset=True):
                    if t == manifest.eos_id or len(out) == max_new:
                        break
                    out.append(t)
                return out

            greedy = greedy_agreement(model, prompts, manifest.eos_id, llama_greedy)
        finally:
            llm.close()
        checks, logit_failures = logit_checks(report, quant, _LOGIT_TOLERANCE, _MIN_TOP1)
        failures += logit_failures
        n_texts = len(tokenizer_corpus(manifest))
        checks = {"tokenizer": f"{n_texts - len(mismatched)}/{n_texts} texts identical", **checks,
                  "greedy agreement": f"{greedy:.0%} of {len(prompts)} prompts"}
        if failures:
            raise ExportError(f"GGUF {quant} failed verification: " + "; ".join(failures))
        return checks

