"""Exports whose source is a udrl GGUF (the file that ships), and the metadata every format carries."""

import re
from pathlib import Path

import numpy as np
import pytest
import torch
import udrl
from udrl.artifacts import read_manifest
from udrl.backend_llama import open_llama
from udrl.checkpoint import load_checkpoint
from udrl.converters import ExportError, export
from udrl.converters.from_gguf import checkpoint_from_gguf
from udrl.model import default_model_path

GENERAL_KEYS = ("general.name", "general.description", "general.author", "general.license", "general.version",
                "general.size_label", "general.quantized_by")
quiet = lambda _: None  # noqa: E731


def test_a_checkpoint_rebuilt_from_an_f32_gguf_has_the_same_weights_and_tokenizer(tiny_artifacts, tmp_path):
    rebuilt = checkpoint_from_gguf(tiny_artifacts["llama"], tmp_path / "model")
    model, tok, manifest = load_checkpoint(rebuilt)
    ref_model, ref_tok, ref_manifest = load_checkpoint(tiny_artifacts["torch"])
    assert manifest.token_ids == ref_manifest.token_ids
    # the lineage: this GGUF, then the checkpoint it was exported from
    assert manifest.parent == f"{tiny_artifacts['llama']} <- {udrl.read_manifest(tiny_artifacts['llama']).parent}"
    assert manifest.quantization is None
    for text in ["<|task:tags|><|len:4|><|rew:2|> Café crème, 東京 🎉<|sep|>", "  tabs\tand\nnewlines "]:
        assert tok.encode(text, add_special_tokens=False) == ref_tok.encode(text, add_special_tokens=False)
    ids = torch.tensor([ref_tok.encode("<|task:image|><|len:8|><|rew:2|> flyer for a jazz night<|sep|>",
                                       add_special_tokens=False)])
    with torch.no_grad():
        np.testing.assert_allclose(model(ids).logits.numpy(), ref_model(ids).logits.numpy(), atol=1e-4)


def test_the_bundled_gguf_exports_to_onnx_int8_that_agrees_with_it(tmp_path):
    """The shipped q8_0 GGUF, dequantized, exported to ONNX int8 and checked against the GGUF through
    the SDK: the top-1 agreement on the GGUF's own greedy tokens is at least 95%."""
    result = export(default_model_path(), "onnx", "int8", out=tmp_path / "mini-int8.onnx", log=quiet)
    agreement = float(re.match(r"([\d.]+)%", result.checks["top-1 agreement with the source GGUF"]).group(1))
    same, total = map(int, result.checks["greedy texts equal to the source GGUF"].split("/"))
    assert agreement >= 95.0, result.checks
    assert total == 48 and same >= 0.5 * total, result.checks
    with udrl.load(result.path) as onnx_model, udrl.load() as gguf_model:
        assert onnx_model.backend == "onnx"
        assert onnx_model.manifest.parent.startswith(f"{default_model_path()} <- ")
        assert onnx_model.manifest.tasks == gguf_model.manifest.tasks
        assert onnx_model.generate("poster for a summer jazz festival by the sea", task="tags", length=4).text


def test_core_ml_from_a_gguf_passes_the_linux_side_checks(tiny_artifacts, tmp_path):
    pytest.importorskip("coremltools")
    result = export(tiny_artifacts["llama"], "coreml", "int8", out=tmp_path / "m.mlpackage", log=quiet)
    assert result.checks["converted graph in torch"].endswith("top-1 100.0%"), result.checks
    assert result.checks["spec"].startswith("inputs ['input_ids'], outputs ['logits']")
    assert result.checks["parity with the source GGUF"].startswith("skipped: Core ML runs only on macOS")
    import coremltools as ct

    spec = ct.utils.load_spec(str(result.path))
    meta = spec.description.metadata
    assert meta.author == "udrl-edge" and "Gemma Terms of Use" in meta.license and meta.versionString == udrl.__version__
    assert meta.shortDescription.startswith("udrl-tiny: ")


def test_a_fresh_gguf_export_carries_the_general_keys(tiny_artifacts, tmp_path):
    result = export(tiny_artifacts["torch"], "gguf", "q8_0", out=tmp_path / "m-q8_0.gguf", verify=False, log=quiet)
    llm = open_llama(result.path, n_ctx=64, verbose=False)
    try:
        meta = llm.metadata
    finally:
        llm.close()
    missing = [k for k in GENERAL_KEYS if not meta.get(k)]
    assert not missing, missing
    assert meta["general.name"] == "udrl-tiny" and meta["general.license"] == "gemma"
    assert meta["general.license.link"] == "https://ai.google.dev/gemma/terms"
    assert meta["general.version"] == udrl.__version__ and meta["general.size_label"].endswith("K")


def test_onnx_carries_producer_version_and_doc_string(tiny_artifacts, tmp_path):
    import onnx

    result = export(tiny_artifacts["torch"], "onnx", "fp32", out=tmp_path / "m.onnx", verify=False, log=quiet)
    proto = onnx.load(str(result.path), load_external_data=False)
    assert proto.producer_name == "udrl-edge" and proto.producer_version == udrl.__version__
    assert proto.model_version == 100  # 0.1.0
    assert "Gemma Terms of Use" in proto.doc_string and proto.doc_string.startswith("udrl-tiny: ")


def test_a_gguf_source_that_is_not_a_udrl_model_is_refused(tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + b"\x03\x00\x00\x00" + b"\x00" * 30)
    with pytest.raises(udrl.UdrlError):
        export(bad, "onnx", "fp32", out=tmp_path / "x.onnx", log=quiet)
    with pytest.raises(ExportError, match="no such GGUF"):
        export(tmp_path / "missing.gguf", "onnx", "fp32", log=quiet)
    assert not list(Path(tmp_path).glob("x.onnx*"))


def test_the_bundled_gguf_carries_the_general_keys():
    """What Ollama's `show` and LM Studio display for the file that ships."""
    llm = open_llama(default_model_path(), n_ctx=64, verbose=False)
    try:
        meta = llm.metadata
    finally:
        llm.close()
    assert not [k for k in GENERAL_KEYS if not meta.get(k)]
    n_params = read_manifest(default_model_path()).model["n_params"]
    assert meta["general.name"] == "udrl-mini" and meta["general.size_label"] == f"{round(n_params / 1e6)}M"
