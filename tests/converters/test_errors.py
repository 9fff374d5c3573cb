import json

import pytest
from udrl import CheckpointError, ManifestError
from udrl.converters import ExportError, export, to_gguf


def _leftovers(directory):
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


@pytest.mark.parametrize("damage, error, message", [
    (lambda d: (d / "tokenizer.json").unlink(), CheckpointError, "missing tokenizer.json"),
    (lambda d: (d / "model.safetensors").write_bytes(b"\x00garbage"), CheckpointError, "cannot load weights"),
    (lambda d: (d / "udrl.json").unlink(), ManifestError, "no udrl manifest"),
    (lambda d: (d / "config.json").write_text(json.dumps({"model_type": "llama"})), CheckpointError,
     "'llama' model"),
])
def test_bad_checkpoints_are_refused_and_leave_nothing(scratch_checkpoint, damage, error, message):
    damage(scratch_checkpoint)
    with pytest.raises(error, match=message):
        export(scratch_checkpoint, "gguf", "f16")
    assert not (scratch_checkpoint.parent / "model-f16.gguf").exists()
    assert _leftovers(scratch_checkpoint.parent) == []


def test_unknown_format_and_quantization_list_the_choices(checkpoint):
    with pytest.raises(ExportError, match="unknown format 'tflite'; known formats: coreml, gguf, onnx"):
        export(checkpoint, "tflite")
    with pytest.raises(ExportError, match="gguf has no quantization 'q3'; choose one of: f32, f16, q8_0"):
        export(checkpoint, "gguf", "q3")


def test_existing_output_needs_force(scratch_checkpoint):
    out = scratch_checkpoint.parent / "model.gguf"
    out.write_bytes(b"keep me")
    with pytest.raises(ExportError, match="already exists; pass --force"):
        export(scratch_checkpoint, "gguf", "f16", out=out)
    assert out.read_bytes() == b"keep me"
    export(scratch_checkpoint, "gguf", "f16", out=out, force=True, log=lambda _: None)
    assert out.read_bytes()[:4] == b"GGUF"
    assert _leftovers(scratch_checkpoint.parent) == []


def test_failed_verification_writes_nothing(scratch_checkpoint, monkeypatch):
    monkeypatch.setitem(to_gguf._MIN_TOP1, "q4_k_m", 1.01)  # demand the impossible
    with pytest.raises(ExportError, match="q4_k_m failed verification: top-1 agreement"):
        export(scratch_checkpoint, "gguf", "q4_k_m", log=lambda _: None)
    assert not (scratch_checkpoint.parent / "model-q4_k_m.gguf").exists()
    assert _leftovers(scratch_checkpoint.parent) == []


def test_no_verify_skips_the_checks_and_says_so(scratch_checkpoint, monkeypatch):
    monkeypatch.setitem(to_gguf._MIN_TOP1, "q4_k_m", 1.01)
    result = export(scratch_checkpoint, "gguf", "q4_k_m", verify=False, log=lambda _: None)
    assert result.checks == {"verified": False} and result.path.exists()
