import importlib.util

import pytest
import udrl
from udrl import BackendError, CommandError, ManifestError, UdrlError


@pytest.fixture(scope="module")
def model(tiny_artifacts):
    with udrl.load(tiny_artifacts["llama"]) as m:
        yield m


def test_unknown_task_lists_the_tasks(model):
    with pytest.raises(CommandError, match="unknown task 'video'; this model knows: image, search, headline, tags"):
        model.generate("poster", task="video")


def test_length_outside_the_trained_range_gives_the_range(model):
    with pytest.raises(CommandError, match="1 to 16 words"):
        model.generate("poster", length=40)


def test_empty_query(model):
    with pytest.raises(CommandError, match="query is empty"):
        model.generate("   ")


def test_query_too_long_for_the_context_is_refused_not_cut(model):
    with pytest.raises(CommandError, match="query too long: the prompt is \\d+ tokens and this model's context holds 128"):
        model.generate("festival " * 200)


def test_bad_sampling_options(model):
    with pytest.raises(CommandError, match="top_p must be in"):
        model.generate("poster", temperature=0.5, top_p=0)
    with pytest.raises(CommandError, match="max_tokens must be an integer >= 1"):
        model.generate("poster", max_tokens=0)


def test_missing_and_corrupted_model_files(tmp_path):
    with pytest.raises(UdrlError, match="no such artifact"):
        udrl.load(tmp_path / "missing.gguf")
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"this is not a model")
    with pytest.raises(ManifestError, match="not a GGUF file"):
        udrl.load(bad)
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(b"GGUF\x03\x00\x00\x00" + b"\x01" * 10)
    with pytest.raises(ManifestError, match="truncated"):
        udrl.load(cut)
    other = tmp_path / "notes.txt"
    other.write_text("x")
    with pytest.raises(UdrlError, match="not a udrl artifact"):
        udrl.load(other)


def test_artifact_without_manifest_is_refused(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    path = tmp_path / "plain.onnx"
    onnx.save(helper.make_model(graph), str(path))
    with pytest.raises(ManifestError, match="carries no udrl manifest"):
        udrl.load(path)


def test_backend_not_installed_names_the_extra(tiny_artifacts, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else real(name, *a))
    with pytest.raises(BackendError, match=r"pip install 'udrl-edge\[onnx\]'"):
        udrl.load(tiny_artifacts["onnx"])


def test_wrong_backend_for_the_artifact_and_unknown_backend(tiny_artifacts):
    with pytest.raises(BackendError, match="backend 'onnx' runs onnx artifacts, but .* is gguf"):
        udrl.load(tiny_artifacts["llama"], backend="onnx")
    with pytest.raises(BackendError, match="unknown backend 'tensorrt'; choose one of: auto, llama, onnx, torch, coreml"):
        udrl.load(tiny_artifacts["llama"], backend="tensorrt")


def test_core_ml_off_macos_names_the_alternatives(tmp_path):
    import platform

    if platform.system() == "Darwin":
        pytest.skip("on macOS Core ML is available")
    pkg = tmp_path / "m.mlpackage"
    pkg.mkdir()
    with pytest.raises(BackendError, match="Core ML runs only on macOS/iOS.*'llama'.*'onnx'"):
        udrl.load(pkg)


def test_an_installation_without_a_bundled_model_gets_a_clear_error(monkeypatch, tmp_path):
    import udrl.model

    monkeypatch.setattr(udrl.model, "DEFAULT_MODEL_DIR", tmp_path)
    with pytest.raises(UdrlError, match="carries no bundled default model"):
        udrl.load()
