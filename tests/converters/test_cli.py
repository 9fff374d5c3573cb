import json
import subprocess
import sys


def udrl(*args):
    return subprocess.run([sys.executable, "-m", "udrl", *args], capture_output=True, text=True, timeout=600)


def test_export_several_variants_then_info(checkpoint, tmp_path):
    import shutil

    ckpt = tmp_path / "model"
    shutil.copytree(checkpoint, ckpt)
    out = udrl("export", str(ckpt), "--format", "gguf", "--quant", "f16", "q8_0", "--report", str(tmp_path / "r.json"))
    assert out.returncode == 0, out.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    assert [r["quant"] for r in report] == ["f16", "q8_0"]
    assert report[1]["size_bytes"] == (tmp_path / "model-q8_0.gguf").stat().st_size < report[0]["size_bytes"]
    assert "top-1 agreement" in out.stdout and "smaller than the safetensors checkpoint" in out.stdout
    info = json.loads(udrl("info", "--json", str(tmp_path / "model-q8_0.gguf")).stdout)
    assert info["manifest"]["quantization"] == "q8_0"
    again = udrl("export", str(ckpt), "--format", "gguf", "--quant", "f16")
    assert again.returncode == 1 and "already exists; pass --force" in again.stderr
    bad = udrl("export", str(ckpt), "--format", "onnx", "--quant", "q4")
    assert bad.returncode == 1 and "choose one of: fp32, int8, fp16" in bad.stderr
