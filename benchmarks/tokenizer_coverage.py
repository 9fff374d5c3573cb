"""How whole ordinary English words stay in a tokenizer: the shipped one and the BPE the recipe
would train at other vocabulary sizes.

A word the model must copy from a request is easy to copy when it is one token and hard when it
is pieces ("lost" as " l" + "ost"): the shipped model writes fragments exactly there ("new mango
flavor" -> "New H Smoothie"). For each tokenizer this reports, over wordfreq's most frequent
English words and over the words of the hand-written *tuning* half (never the evaluation half: the
vocabulary size is a choice), the share kept whole, the share with a one-letter piece, the mean
pieces per word, the tokens a training record takes, and the embedding parameters at the mini
preset's width (what the vocabulary costs in file size). A BPE that also learns a word list of
10,000 or more words has learnt the common words measured here by name, so for those rows the
tuning-half columns are the independent ones.

    python -m udrl.benchmarks.tokenizer_coverage --data data/udrl-gemma.jsonl.gz \
        --model sdk/models/udrl-mini-q8_0.gguf --vocab 14336 24576 --words 0 5000 30000 \
        --out benchmarks/results/tokenizer-coverage.json
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from udrl import Manifest
from udrl.backends import open_backend
from udrl.files import write_atomic
from udrl.trainer.handwritten import load_split
from udrl.trainer.taskfile import TASKS
from udrl.trainer.training.config import PRESETS, TrainConfig
from udrl.trainer.training.dataset import iter_texts, read_records, split_by_query
from udrl.trainer.training.tokenizer import english_word_list, train_bpe

COMMON_WORDS = 10_000  # wordfreq's most frequent English words measured
RECORD_SAMPLE = 3_000  # training records whose token counts are compared

Encoder = Callable[[str], list[str]]  # text -> the text of each token


def word_figures(encode: Encoder, words: Sequence[str]) -> dict[str, float]:
    """Whole share, one-letter-piece share and mean pieces of ``words``, each read after a space
    (as a request word sits in a prompt)."""
    pieces = [[p.strip() for p in encode(" " + w)] for w in words]
    return {"words": len(words),
            "whole": sum(len(p) == 1 for p in pieces) / len(words),
            "one_letter_piece": sum(len(p) > 1 and any(len(x) == 1 for x in p) for p in pieces) / len(words),
            "mean_pieces": statistics.fmean(len(p) for p in pieces)}


def _letter_words(texts: Sequence[str]) -> list[str]:
    return sorted({w for t in texts for w in re.findall(r"\b[a-z]{2,}\b", t.lower())})


def measure(data: str, vocab_sizes: Sequence[int], models: Sequence[str] = (),
            tokenizer_words: Sequence[int] = (30_000,), preset: str = "mini") -> dict:
    """The report: one row per tokenizer, the given models' first, then a BPE trained as the recipe
    trains it for each vocabulary size and word-list length (0: no word list)."""
    # The records the trainer's tokenizer learns from: its defaults, its training split.
    train = TrainConfig()
    manifest = Manifest.new(tasks=list(TASKS), length_range=(train.length_min, train.length_max), reward_edges=[0.5])
    report = read_records([data], manifest.tasks, (train.length_min, train.length_max), train.skip_invalid)
    records, _ = split_by_query(report.records, train.val_fraction)
    sample = [manifest.output_prefix + r.output for r in records[::max(1, len(records) // RECORD_SAMPLE)]]
    word_sets = {"common": [w for w in english_word_list(COMMON_WORDS) if w.isalpha() and len(w) > 1],
                 "tuning_half": _letter_words(load_split("tune"))}
    width = PRESETS[preset]["n_embd"]
    rows = []

    def row(name: str, vocab: int, encode: Encoder, seconds: float | None) -> dict:
        return {"tokenizer": name, "vocab": vocab, "embedding_params": vocab * width,
                **{k: word_figures(encode, ws) for k, ws in word_sets.items()},
                "tokens_per_output": statistics.fmean(len(encode(t)) for t in sample),
                **({"train_s": round(seconds, 1)} if seconds is not None else {})}

    for path in models:
        backend = open_backend(path)
        vocab = len(backend.prefill(backend.encode(" a")))  # the logits' width
        rows.append(row(path, vocab, lambda t, b=backend: [b.token_bytes(i).decode("utf-8", "replace")
                                                          for i in b.encode(t)], None))
    for vocab in vocab_sizes:
        for n_words in tokenizer_words:
            start = time.perf_counter()
            tok = train_bpe(iter_texts(records, manifest), manifest, vocab, english_word_list(n_words) if n_words else ())
            seconds = time.perf_counter() - start
            rows.append(row(f"bpe-{vocab}, {n_words} listed words", vocab,
                            lambda t, tok=tok: [tok.decode([i]) for i in tok.encode(t, add_special_tokens=False)],
                            seconds))
    return {"data": data, "records": len(records), "preset": preset, "width": width, "rows": rows}


def markdown(report: dict) -> str:
    """The report as a table."""
    lines = ["| tokenizer | vocab | common words whole | one-letter piece | tuning-half words whole | "
             "one-letter piece | pieces/word | tokens/output | embedding params |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in report["rows"]:
        c, t = r["common"], r["tuning_half"]
        lines.append(f"| {r['tokenizer']} | {r['vocab']} | {c['whole']:.1%} | {c['one_letter_piece']:.1%} | "
                     f"{t['whole']:.1%} | {t['one_letter_piece']:.1%} | {t['mean_pieces']:.2f} | "
                     f"{r['tokens_per_output']:.2f} | {r['embedding_params'] / 1e6:.1f}M |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="the judged training records the BPE learns from")
    p.add_argument("--vocab", type=int, nargs="+", default=[14336], help="BPE sizes to train")
    p.add_argument("--words", type=int, nargs="+", default=[30_000],
                   help="lengths of wordfreq's list the BPE also learns (the recipe's: 30,000; 0: none)")
    p.add_argument("--model", action="append", default=[], help="a model whose own tokenizer is measured (.gguf)")
    p.add_argument("--out", help="JSON report (a .md table is written beside it)")
    args = p.parse_args(argv)
    report = measure(args.data, args.vocab, args.model, args.words)
    table = markdown(report)
    print(table)
    if args.out:
        out = Path(args.out)
        write_atomic(out, json.dumps(report, indent=2) + "\n")
        write_atomic(out.with_suffix(".md"), table + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
