"""SDK overhead against raw llama-cpp-python on the same GGUF, same threads, same run.

Measures decode tok/s of `udrl.Model.generate` and of a plain `llama_cpp.Llama.create_completion`
(no udrl code) on the same prompt, alternating them over repetitions, and reports medians and the
ratio; plus the wall time of `import udrl; udrl.load(model)` in a fresh process and its peak RSS.

    python benchmarks/sdk_overhead.py --model runs/mini/model-q8_0.gguf --threads 2
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

QUERY = "minimalist poster for a summer jazz festival by the sea"


def raw_decode_tok_s(model_path: str, prompt: str, eos: int, tokens: int, threads: int, n_ctx: int) -> float:
    from llama_cpp import Llama

    llm = Llama(model_path=model_path, n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads, verbose=False)
    try:
        start, first, n = time.perf_counter(), None, 0
        for _ in llm.create_completion(prompt, max_tokens=tokens, temperature=0.0, stream=True,
                                       logit_bias={eos: float("-inf")}):
            n += 1
            if first is None:
                first = time.perf_counter()
        return (n - 1) / (time.perf_counter() - first)
    finally:
        llm.close()


def load_in_fresh_process(model_path: str, threads: int) -> dict:
    code = (
        "import time, json; t = time.perf_counter(); import udrl; m = udrl.load(%r, threads=%d); "
        "load_s = time.perf_counter() - t; r = m.generate(%r, task='image', length=12); "
        "print(json.dumps({'import_load_s': load_s, 'peak_rss_mb': r.peak_rss_mb}))" % (model_path, threads, QUERY)
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a udrl GGUF")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=64, help="tokens generated per measurement")
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--out", help="JSON file to write (default: benchmarks/results/sdk_overhead-<model>.json)")
    args = parser.parse_args()

    import udrl
    from udrl.commands import make_command, render_prompt

    model = udrl.load(args.model, threads=args.threads)
    m = model.manifest
    command = make_command(m, "image", m.length_max)
    prompt = render_prompt(m, QUERY, command)
    n_ctx = int(m.model["n_ctx"])
    sdk, raw = [], []
    model.generate(QUERY, task="image", length=m.length_max, max_tokens=args.tokens)  # warm-up
    raw_decode_tok_s(args.model, prompt, m.eos_id, args.tokens, args.threads, n_ctx)
    for _ in range(args.reps):  # alternate, so drift on a shared machine hits both alike
        r = model.generate(QUERY, task="image", length=m.length_max, max_tokens=args.tokens)
        sdk.append(r.decode_tok_s)
        raw.append(raw_decode_tok_s(args.model, prompt, m.eos_id, args.tokens, args.threads, n_ctx))
    model.close()
    loads = [load_in_fresh_process(args.model, args.threads) for _ in range(5)]
    result = {
        "model": str(args.model),
        "model_bytes": Path(args.model).stat().st_size,
        "n_params": m.model.get("n_params"),
        "threads": args.threads,
        "tokens": args.tokens,
        "reps": args.reps,
        "sdk_decode_tok_s": {"median": statistics.median(sdk), "min": min(sdk), "max": max(sdk)},
        "raw_decode_tok_s": {"median": statistics.median(raw), "min": min(raw), "max": max(raw)},
        "ratio_sdk_over_raw": statistics.median(sdk) / statistics.median(raw),
        "import_load_s": {"median": statistics.median(x["import_load_s"] for x in loads)},
        "peak_rss_mb": {"median": statistics.median(x["peak_rss_mb"] for x in loads)},
        "machine": {"cpu": platform.processor() or platform.machine(), "system": platform.system(),
                    "python": platform.python_version()},
    }
    out = Path(args.out or f"benchmarks/results/sdk_overhead-{Path(args.model).stem}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"| model | threads | SDK tok/s | raw llama-cpp-python tok/s | ratio | import+load | peak RSS |")
    print(f"| --- | --- | --- | --- | --- | --- | --- |")
    print(f"| {Path(args.model).name} | {args.threads} | {result['sdk_decode_tok_s']['median']:.1f} | "
          f"{result['raw_decode_tok_s']['median']:.1f} | {result['ratio_sdk_over_raw']:.3f} | "
          f"{result['import_load_s']['median']:.2f} s | {result['peak_rss_mb']['median']:.0f} MB |")
    print(f"written to {out}")


if __name__ == "__main__":
    main()
