"""Random-weight `mini` and `gpt2-124m` artifacts for speed benchmarks (speed does not depend on the
weights' values). The tokenizer is the real one a run would train on the data, so prompt lengths are
realistic.

    python -m udrl.benchmarks.speed_models --data data/udrl-gemma.jsonl.gz --out runs/speed
"""

from __future__ import annotations

import argparse
from pathlib import Path

from udrl.converters import export
from udrl.files import file_digest
from udrl.manifest import DEFAULT_TASKS, Manifest
from udrl.trainer.decoding import starting_settings
from udrl.trainer.training.checkpoint import write_checkpoint_dir
from udrl.trainer.training.dataset import iter_texts, median_lengths, quantile_edges, read_records
from udrl.trainer.training.model import build_model, count_parameters
from udrl.trainer.training.tokenizer import attach_token_ids, train_bpe

GGUF = ("f16", "q8_0", "q4_k_m")
ONNX = ("fp32", "int8")


def make(data: str, out: Path, presets: list[str], vocab_size: int = 8192) -> list[Path]:
    records = read_records([data], ["image", "search", "headline", "tags"], (1, 48), skip_invalid=True).records
    manifest = Manifest.new(reward_edges=quantile_edges([r.score for r in records], 3),
                            data_hash=file_digest([data]), **starting_settings(DEFAULT_TASKS)).replace(default_length=median_lengths(records))
    tokenizer = train_bpe(iter_texts(records, manifest), manifest, vocab_size)
    manifest = attach_token_ids(manifest, tokenizer)
    artifacts = []
    for preset in presets:
        model = build_model(preset, len(tokenizer), manifest.eos_id)
        m = manifest.replace(model={"architecture": "gpt2", "preset": preset, "n_params": count_parameters(model),
                                    "n_layer": model.config.n_layer, "n_head": model.config.n_head,
                                    "n_embd": model.config.n_embd, "n_ctx": model.config.n_positions,
                                    "vocab_size": model.config.vocab_size, "weights": "random (speed only)"})
        ckpt = out / preset
        if not ckpt.exists():
            write_checkpoint_dir(ckpt, model, tokenizer, m, {"preset": preset, "note": "random weights"})
        for quant in GGUF:
            # Random logits are too flat for a top-1 agreement bar; f16 is still verified in full.
            artifacts.append(export(ckpt, "gguf", quant, force=True, verify=quant == "f16").path)
        for quant in ONNX:
            artifacts.append(export(ckpt, "onnx", quant, force=True, verify=quant == "fp32").path)
    return artifacts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True)
    parser.add_argument("--out", default="runs/speed")
    parser.add_argument("--presets", nargs="+", default=["mini", "gpt2-124m"])
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for path in make(args.data, out, args.presets):
        print(path)


if __name__ == "__main__":
    main()
