import numpy as np
import onnxruntime as ort
import pytest
import torch
from udrl.artifacts import read_manifest
from udrl.checkpoint import load_checkpoint
from udrl.converters import export
from udrl.manifest import METADATA_KEY, TOKENIZER_METADATA_KEY


@pytest.fixture(scope="module")
def onnx_files(checkpoint):
    return {q: export(checkpoint, "onnx", q, log=lambda _: None).path for q in ("fp32", "int8")}


def _session(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])  # stock, no udrl


def _greedy(session, ids, eos, n_layer, n_head, head_dim, max_new=16):
    """Prefill then decode one token at a time, feeding present keys/values back as past."""
    names = [i.name for i in session.get_inputs()]
    past = [np.zeros((1, n_head, 0, head_dim), np.float32) for _ in range(2 * n_layer)]
    step, total, out = np.array([ids], np.int64), len(ids), []
    positions = np.arange(total)[None]
    while len(out) < max_new:
        res = session.run(None, dict(zip(names, [step, np.ones((1, total), np.int64), positions, *past])))
        nxt = int(res[0][0, -1].argmax())
        if nxt == eos:
            break
        out.append(nxt)
        past, step, positions = res[1:], np.array([[nxt]], np.int64), np.array([[total]])
        total += 1
    return out


def test_fp32_decode_with_kv_cache_reproduces_torch_greedy(onnx_files, checkpoint):
    model, tok, manifest = load_checkpoint(checkpoint)
    c = model.config
    session = _session(onnx_files["fp32"])
    for prompt in ["<|task:image|><|len:8|><|rew:2|>flyer for a jazz night<|sep|>",
                   "<|task:tags|><|len:5|><|rew:0|>logo for a vegan bakery<|sep|>"]:
        ids = tok.encode(prompt, add_special_tokens=False)
        with torch.no_grad():
            ref = model.generate(torch.tensor([ids]), max_new_tokens=16, do_sample=False,
                                 eos_token_id=manifest.eos_id, pad_token_id=manifest.eos_id)[0, len(ids):].tolist()
        ref = ref[: ref.index(manifest.eos_id)] if manifest.eos_id in ref else ref
        assert _greedy(session, ids, manifest.eos_id, c.n_layer, c.n_head, c.n_embd // c.n_head) == ref


def test_int8_loads_and_runs_in_stock_onnxruntime_with_batch_two(onnx_files, checkpoint):
    model, tok, manifest = load_checkpoint(checkpoint)
    c = model.config
    session = _session(onnx_files["int8"])
    assert onnx_files["int8"].stat().st_size < onnx_files["fp32"].stat().st_size
    names = [i.name for i in session.get_inputs()]
    past = [np.zeros((2, c.n_head, 0, c.n_embd // c.n_head), np.float32) for _ in range(2 * c.n_layer)]
    ids = np.array([[5, 6, 7, 8], [9, 10, 11, 12]], np.int64)
    out = session.run(None, dict(zip(names, [ids, np.ones_like(ids), np.tile(np.arange(4), (2, 1)), *past])))
    assert out[0].shape == (2, 4, c.vocab_size) and np.isfinite(out[0]).all()
    assert out[1].shape == (2, c.n_head, 4, c.n_embd // c.n_head)


def test_manifest_and_tokenizer_travel_in_metadata(onnx_files, checkpoint):
    meta = _session(onnx_files["fp32"]).get_modelmeta().custom_metadata_map
    assert read_manifest(onnx_files["fp32"]).to_json() == meta[METADATA_KEY]
    assert read_manifest(onnx_files["int8"]).quantization == "int8"
    from tokenizers import Tokenizer

    tok = Tokenizer.from_str(meta[TOKENIZER_METADATA_KEY])
    assert len(tok.encode("<|len:4|>").ids) == 1
