import random

import pytest
from udrl.trainer.distill.augment import AugmentConfig, augment_rows, swappable_words
from udrl.trainer.distill.compose import english_words


def test_swappable_words_are_request_words_the_output_carries():
    assert swappable_words("label for homemade strawberry jam", "Strawberry Jam Made at Home") == \
        ["strawberry", "jam"]
    assert swappable_words("poster for a jazz night", "smoky club, saxophone") == []
    assert swappable_words("a menu for the cafe", "the cafe menu") == ["menu", "cafe"]  # no stopwords


def test_a_swap_changes_request_and_output_together_and_keeps_capitals():
    rows = [{"query": "flyer for a lost golden retriever named biscuit", "task": "headline",
             "output": "Have You Seen Biscuit, Our Golden Retriever?", "requested": 7}]
    (copy,) = augment_rows(rows, AugmentConfig(copies=1, words_per_copy=3, seed=1), words=("walrus", "tiramisu", "quasar"))
    old = {"golden", "retriever", "biscuit"}
    new = {w for w in copy["query"].split() if w not in rows[0]["query"].split()}
    assert new and new <= {"walrus", "tiramisu", "quasar"}
    for word in new:
        assert word.capitalize() in copy["output"]
    kept = old - {w for w in rows[0]["query"].split() if w not in copy["query"].split()}
    assert all(w.capitalize() in copy["output"] for w in kept)
    assert copy["origin"] == rows[0]["query"] and copy["task"] == "headline" and copy["requested"] == 7
    assert len(copy["output"].split()) == len(rows[0]["output"].split())


def test_copies_are_reproducible_and_only_from_rows_with_a_shared_word():
    rows = [{"query": "label for homemade strawberry jam", "task": "tags", "output": "jam, strawberry"},
            {"query": "poster for a jazz night", "task": "image", "output": "smoky club, saxophone"}]
    a = augment_rows(rows, AugmentConfig(copies=3, seed=0))
    assert a == augment_rows(rows, AugmentConfig(copies=3, seed=0))
    assert len(a) == 3 and all(r["origin"] == rows[0]["query"] for r in a)
    assert augment_rows(rows, AugmentConfig(copies=0)) == []
    with pytest.raises(ValueError, match="copies"):
        augment_rows(rows, AugmentConfig(copies=-1))


def _copy_data(rng: random.Random, subjects: list[str], n: int) -> list[dict]:
    """Tags that carry the request's subject word, for a small fixed set of subjects."""
    designs = ["poster", "flyer", "banner", "sticker", "menu", "label"]
    extras = ["bright", "fun", "modern", "bold", "sale", "party", "event", "happy"]
    rows = []
    for _ in range(n):
        subject, design = rng.choice(subjects), rng.choice(designs)
        tags = [subject, design] + rng.sample(extras, rng.randint(1, 3))
        rows.append({"query": f"{design} for a {subject} party", "task": "tags", "output": ", ".join(tags),
                     "requested": len(tags)})
    return rows


def test_copy_augmentation_teaches_a_tiny_model_to_carry_an_unseen_word(tmp_path):
    """Trained on 24 subjects alone, a tiny model writes one of them; trained on the same records
    plus copy-augmented ones, it carries a subject it has never seen into its tags."""
    import json
    import os
    import subprocess
    import sys

    from udrl.checkpoint import load_checkpoint
    from udrl.commands import make_command
    from udrl.trainer.training.adherence import Request, greedy_generate

    rng = random.Random(0)
    pool = [w for w in english_words() if 4 <= len(w) <= 8]
    rng.shuffle(pool)
    subjects, unseen = pool[:24], pool[24:]
    base = _copy_data(rng, subjects, 1500)
    augmented = base + augment_rows(base, AugmentConfig(copies=3, seed=0), words=unseen[60:])
    tests = unseen[:40]  # never in either training set
    assert not set(tests) & {w for r in augmented for w in r["query"].split()}
    # The two runs side by side, one thread each (a tiny model gains little from a second thread).
    # Copying a word of several pieces takes a tiny model about 2,000 steps to learn (1,000: 18%).
    runs = {}
    for name, rows in (("plain", base), ("augmented", augmented)):
        data = tmp_path / f"{name}.jsonl"
        data.write_text("".join(json.dumps({**r, "words": len(r["output"].split()), "score": 0.5}) + "\n"
                                for r in rows))
        config = tmp_path / f"{name}.json"
        config.write_text(json.dumps({"data": [str(data)], "preset": "tiny", "length_max": 8, "vocab_size": 1024,
                                      "conditioning": ["length"], "max_steps": 2000, "lr": 3e-3,
                                      "eval_interval": 2000, "checkpoint_interval": 2000, "adherence_samples": 0,
                                      "threads": 1}))
        cmd = [sys.executable, "-m", "udrl", "train", "--config", str(config), "--out", str(tmp_path / name)]
        runs[name] = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                      env={**os.environ, "OMP_NUM_THREADS": "1"})
    carried = {}
    for name, proc in runs.items():
        _, err = proc.communicate(timeout=900)
        assert proc.returncode == 0, err[-2000:]
        model, tokenizer, manifest = load_checkpoint(tmp_path / name / "model")
        requests = [Request(f"poster for a {w} party", make_command(manifest, "tags", 3)) for w in tests]
        outputs = greedy_generate(model, tokenizer, manifest, requests)
        carried[name] = sum(w in o.replace(",", " ").split() for w, o in zip(tests, outputs)) / len(tests)
    print(carried)
    assert carried["augmented"] >= 0.5
    assert carried["augmented"] >= carried["plain"] + 0.4
