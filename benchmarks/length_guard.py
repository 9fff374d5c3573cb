"""The length guard's effect: command adherence with and without it, on held-out requests.

For each held-out query of the dataset (the trainer's split), every task is asked for lengths
across the manifest's range; the share within ±1 word, the exact share and the mean absolute error
are reported with the guard on and off, plus the decode speed of each.

    python -m udrl.benchmarks.length_guard runs/demo/model-q8_0.gguf --data data/udrl-gemma.jsonl.gz
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import udrl
from udrl.trainer.training.dataset import read_records, split_by_query


def measure(model_path: str, data: str, queries: int = 25, val_fraction: float = 0.05) -> dict:
    with udrl.load(model_path) as model:
        m = model.manifest
        records = read_records([data], m.tasks, (m.length_min, m.length_max), skip_invalid=True).records
        _, val = split_by_query(records, val_fraction)
        held_out = sorted({r.query for r in val})[:queries]
        report = {"model": model_path, "queries": len(held_out)}
        for guard in (True, False):
            errors, speeds = [], []
            for query in held_out:
                for task in m.tasks:
                    lo, hi = model.commands.length_min, min(model.commands.length_max, 2 * m.default_length.get(task, 8))
                    for length in sorted({lo + (hi - lo) * k // 3 for k in range(4)}):
                        r = model.generate(query, task=task, length=length, length_guard=guard)
                        errors.append(abs(r.words - length))
                        speeds.append(r.decode_tok_s)
            report["guard_on" if guard else "guard_off"] = {
                "requests": len(errors),
                "within1": sum(e <= 1 for e in errors) / len(errors),
                "exact": sum(e == 0 for e in errors) / len(errors),
                "mae_words": statistics.mean(errors),
                "decode_tok_s_median": statistics.median(s for s in speeds if s > 0),
            }
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("--data", default="data/udrl-gemma.jsonl.gz")
    parser.add_argument("--queries", type=int, default=25)
    parser.add_argument("--out", help="JSON file to write")
    args = parser.parse_args()
    report = measure(args.model, args.data, args.queries)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
