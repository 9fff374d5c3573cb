import json
import re

import pytest
from udrl.artifacts import read_manifest
from udrl.backend_llama import open_llama
from udrl.checkpoint import load_checkpoint
from udrl.converters import export
from udrl.converters.to_gguf import read_manifest_json

QUANTS = ["f32", "f16", "q8_0", "q6_k", "q5_k_m", "q4_k_m"]


@pytest.fixture(scope="module")
def ggufs(checkpoint):
    return {q: export(checkpoint, "gguf", q, log=lambda _: None) for q in QUANTS}


@pytest.mark.parametrize("quant", QUANTS)
def test_each_variant_loads_in_stock_llama_cpp_and_generates(ggufs, checkpoint, quant):
    result = ggufs[quant]
    assert result.path.name == f"model-{quant}.gguf" and result.size_bytes == result.path.stat().st_size
    manifest = read_manifest(result.path)
    assert manifest.quantization == quant and manifest.parent == str(checkpoint)
    assert json.loads(read_manifest_json(result.path))["quantization"] == quant

    # stock llama-cpp-python's Llama, no udrl code (open_llama only avoids the AMX kernels that crash)
    llm = open_llama(result.path, n_ctx=128, verbose=False)
    try:
        prompt = "<|task:tags|><|len:4|><|rew:2|>poster for a bakery<|sep|>"
        ids = llm.tokenize(prompt.encode(), add_bos=False, special=True)
        assert ids[:3] == [manifest.token_ids["<|task:tags|>"], manifest.token_ids["<|len:4|>"],
                           manifest.token_ids["<|rew:2|>"]]
        assert ids[-1] == manifest.sep_id
        for token in manifest.special_tokens:
            assert llm.tokenize(token.encode(), add_bos=False, special=True) == [manifest.token_ids[token]]
        out = llm.create_completion(prompt, max_tokens=16, temperature=0)
        assert out["choices"][0]["text"].strip()
    finally:
        llm.close()


def test_quantized_files_are_smaller_and_checks_are_reported(ggufs, checkpoint):
    sizes = {q: r.size_bytes for q, r in ggufs.items()}
    assert sizes["f32"] > sizes["f16"] > sizes["q8_0"] > sizes["q4_k_m"]
    # The metadata (the manifest's spelling list, the tokenizer) is the same in every variant and a
    # large part of a tiny model's file: compare what quantization saves with the f32 weights.
    model, _, _ = load_checkpoint(checkpoint)
    f32_weights = 4 * sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    assert sizes["f32"] - sizes["q8_0"] > 0.6 * f32_weights
    checks = ggufs["f32"].checks
    same, total = re.match(r"(\d+)/(\d+) texts identical", checks["tokenizer"]).groups()
    assert same == total and int(total) >= 10
    assert checks["greedy agreement"].startswith("100%")


def test_f32_gguf_greedy_matches_torch(ggufs, checkpoint):
    import torch

    model, tok, manifest = load_checkpoint(checkpoint)
    prompt = "<|task:image|><|len:8|><|rew:2|>flyer for a jazz night<|sep|>"
    ids = tok.encode(prompt, add_special_tokens=False)
    with torch.no_grad():
        ref = model.generate(torch.tensor([ids]), max_new_tokens=12, do_sample=False,
                             eos_token_id=manifest.eos_id, pad_token_id=manifest.eos_id)[0, len(ids):].tolist()
    ref = ref[: ref.index(manifest.eos_id)] if manifest.eos_id in ref else ref
    llm = open_llama(ggufs["f32"].path, n_ctx=128, verbose=False)
    got = []
    for t in llm.generate(ids, top_k=1, temp=0.0):
        if t == manifest.eos_id or len(got) == 12:
            break
        got.append(t)
    llm.close()
    assert got == ref
