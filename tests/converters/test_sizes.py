"""The `mini` and `gpt2-124m` shapes export and run (random weights: these are load-and-speed checks)."""

import time

import numpy as np
import pytest
from udrl.backend_llama import open_llama
from udrl.checkpoint import load_checkpoint
from udrl.converters import export
from udrl.trainer.training.checkpoint import write_checkpoint_dir
from udrl.trainer.training.model import build_model, count_parameters


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["mini", "gpt2-124m"])
def test_larger_presets_export_to_gguf_and_onnx(preset, checkpoint, tmp_path):
    _, tokenizer, manifest = load_checkpoint(checkpoint)
    model = build_model(preset, len(tokenizer), manifest.eos_id)
    manifest = manifest.replace(model={**manifest.model, "preset": preset, "n_params": count_parameters(model)})
    ckpt = write_checkpoint_dir(tmp_path / preset, model, tokenizer, manifest, {"preset": preset})

    f16 = export(ckpt, "gguf", "f16")
    q8 = export(ckpt, "gguf", "q8_0", verify=False)  # random logits are too flat for a top-1 bar
    onnx = export(ckpt, "onnx", "fp32")
    assert q8.size_bytes < 0.6 * f16.size_bytes
    assert onnx.checks["greedy agreement (KV cache)"].startswith("100%")

    llm = open_llama(q8.path, n_ctx=256, verbose=False)
    start = time.perf_counter()
    out = llm.create_completion("<|task:image|><|len:12|><|rew:2|>poster<|sep|>", max_tokens=32, temperature=0,
                                logit_bias={manifest.eos_id: -100.0})
    elapsed = time.perf_counter() - start
    llm.close()
    tokens = out["usage"]["completion_tokens"]
    print(f"{preset}: {count_parameters(model) / 1e6:.1f}M params, q8_0 {q8.size_bytes / 1e6:.1f} MB, "
          f"{tokens / elapsed:.0f} tok/s")
    assert tokens == 32 and np.isfinite(elapsed)
