import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from udrl import CheckpointError, Manifest, ManifestError, load_manifest
from udrl.checkpoint import load_checkpoint, verify_checkpoint
from udrl.trainer import TrainConfig, train
from udrl.trainer.errors import ConfigError, DatasetError
from udrl.trainer.training.dataset import quantile_edges


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_short_tiny_run_lowers_validation_loss(tiny_run):
    evals = [m for m in metrics(tiny_run) if "val_loss" in m]
    assert [m["step"] for m in evals] == [0, 100, 200, 300]
    assert evals[-1]["val_loss"] < 0.7 * evals[0]["val_loss"]
    assert (tiny_run / "loss.png").stat().st_size > 10_000


def test_final_checkpoint_is_complete_and_carries_the_manifest(tiny_run):
    model, tokenizer, manifest = load_checkpoint(tiny_run / "model")
    assert not (tiny_run / "model" / "train_state.pt").exists()
    assert manifest.model["preset"] == "tiny" and manifest.model["n_params"] > 0
    assert manifest.data_hash.startswith("sha256:")
    assert manifest.reward_levels == 3 and set(manifest.default_length) == set(manifest.tasks)
    assert tokenizer.convert_ids_to_tokens(manifest.sep_id) == "<|sep|>"
    assert model.config.vocab_size == len(tokenizer)
    saved = json.loads((tiny_run / "model" / "train_config.json").read_text())
    assert saved["max_steps"] == 300
    assert sorted(p.name for p in (tiny_run / "checkpoints").iterdir()) == ["step-0000200", "step-0000300"]


def test_udrl_length_commands_are_obeyed_far_more_than_without(synthetic_data, tmp_path):
    """The paper's point at test scale: with achieved-length commands, the policy lands within one word
    of a requested length on held-out queries far more often than the same model trained without."""
    from udrl.commands import make_command
    from udrl.trainer.distill.synthetic import LENGTHS
    from udrl.trainer.training.adherence import Request, adherence, greedy_generate
    from udrl.trainer.training.dataset import read_records, split_by_query

    scores = {}
    for name, conditioning in (("udrl", ["length", "reward"]), ("plain", [])):
        final = train(TrainConfig(
            data=[str(synthetic_data)], out_dir=str(tmp_path / name), preset="tiny", length_max=16,
            conditioning=conditioning, max_steps=500, lr=2e-3, eval_interval=500,
            checkpoint_interval=500, adherence_samples=0, threads=2,
        ))
        model, tokenizer, manifest = load_checkpoint(final)
        records = read_records([synthetic_data], manifest.tasks, (1, 16)).records
        _, val = split_by_query(records, 0.05)
        queries = sorted({r.query for r in val})[:12]
        requests = [Request(q, make_command(manifest, task, n)) for q in queries
                    for task, (lo, hi) in LENGTHS.items() for n in (lo, (lo + hi) // 2, hi)]
        scores[name] = adherence(requests, greedy_generate(model, tokenizer, manifest, requests))
    print(scores)
    assert scores["udrl"]["len_within1"] >= 0.7
    assert scores["udrl"]["len_within1"] >= scores["plain"]["len_within1"] + 0.3
    assert scores["udrl"]["len_mae"] < 0.5 * scores["plain"]["len_mae"]


def _udrl(*args: str) -> list[str]:
    return [sys.executable, "-m", "udrl", *args]


def test_killed_run_resumes_to_the_same_final_step_and_weights(synthetic_data, tmp_path, kill9_when):
    common = ["--data", str(synthetic_data), "--preset", "tiny", "--length-max", "16", "--steps", "300",
              "--eval-interval", "100", "--checkpoint-interval", "40", "--threads", "1"]
    run = tmp_path / "killed"
    proc = subprocess.Popen(_udrl("train", "--out", str(run), *common),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    latest = run / "latest"
    # wait until a checkpoint exists and training has moved past it
    kill9_when(proc, lambda: latest.exists() and latest.read_text().strip() >= "step-0000080", 120,
               "training never reached step 80")
    assert proc.returncode == -signal.SIGKILL
    assert not (run / "model").exists()

    resumed = subprocess.run(_udrl("train", "--out", str(run), "--resume", "--threads", "1"),
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stdout
    verify_checkpoint(run / "model")
    assert (run / "latest").read_text().strip() == "step-0000300"
    assert not list(run.glob(".*tmp*")) and not list((run / "checkpoints").glob(".*tmp*"))
    steps = [m["step"] for m in metrics(run) if "train_loss" in m]
    assert steps == list(range(10, 301, 10)), "metrics must have each step once"

    straight = tmp_path / "straight"
    done = subprocess.run(_udrl("train", "--out", str(straight), *common), capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    a = load_file(run / "model" / "model.safetensors")
    b = load_file(straight / "model" / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-5)


def test_resuming_a_finished_run_changes_nothing(tiny_run):
    before = (tiny_run / "model" / "model.safetensors").read_bytes()
    train(TrainConfig(out_dir=str(tiny_run), resume=True, threads=2))
    assert (tiny_run / "model" / "model.safetensors").read_bytes() == before


def test_ddp_with_two_cpu_processes_writes_one_checkpoint(synthetic_data, tmp_path):
    run = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "udrl", "train", "--data", str(synthetic_data), "--out", str(run), "--preset", "tiny",
           "--length-max", "16", "--steps", "6", "--checkpoint-interval", "100", "--eval-interval", "100",
           "--threads", "1", "--device", "cpu"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 process(es)" in result.stdout
    assert result.stdout.count("done: final checkpoint") == 1
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["step-0000006"]
    verify_checkpoint(run / "model")


def test_existing_run_is_not_overwritten_without_resume(tiny_run, synthetic_data):
    with pytest.raises(ConfigError, match="already holds a training run; pass --resume"):
        train(TrainConfig(data=[str(synthetic_data)], out_dir=str(tiny_run), max_steps=1))


def test_resume_refuses_changed_data(tmp_path, synthetic_data):
    data = tmp_path / "data.jsonl"
    data.write_bytes(synthetic_data.read_bytes())
    run = tmp_path / "run"
    train(TrainConfig(data=[str(data)], out_dir=str(run), length_max=16, max_steps=2, eval_interval=10,
                      checkpoint_interval=1, adherence_samples=0))
    with open(data, "a") as f:
        f.write(json.dumps({"query": "new", "task": "image", "output": "new thing", "words": 2,
                            "score": 0.5}) + "\n")
    with pytest.raises(DatasetError, match="data files changed"):
        train(TrainConfig(out_dir=str(run), resume=True))


def test_unknown_config_key_is_refused():
    with pytest.raises(ConfigError, match="unknown training option\\(s\\) \\['learning_rate'\\]"):
        TrainConfig.from_dict({"learning_rate": 1e-3})


def test_corrupted_and_incomplete_checkpoints_are_refused(tiny_run, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(tiny_run / "model", broken)
    (broken / "model.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(CheckpointError, match="cannot load weights"):
        load_checkpoint(broken)
    (broken / "tokenizer.json").unlink()
    with pytest.raises(CheckpointError, match="missing tokenizer.json"):
        load_checkpoint(broken)
    (broken / "udrl.json").unlink()
    with pytest.raises(ManifestError, match="no udrl manifest"):
        load_checkpoint(broken)


def test_a_word_copied_from_the_query_is_the_same_token_in_the_output(tiny_run):
    """Copying a request's words (most of a search query or a tag list) is token identity for the
    model: the first output word and the first query word are spelt the same as later ones."""
    from transformers import PreTrainedTokenizerFast
    from udrl.trainer.training.dataset import Record
    from udrl.trainer.training.loop import _encode

    tokenizer = PreTrainedTokenizerFast.from_pretrained(str(tiny_run / "model"), local_files_only=True)
    manifest = load_manifest(tiny_run / "model")
    record = Record("summer camp flyer", "tags", "summer, flyer, camp", 3, 0.9)
    (example,), too_long = _encode([record], manifest, tokenizer, 256)
    query_ids = example.prompt[len(example.prompt) - 1 - len(tokenizer.encode(" summer camp flyer")) : -1]
    assert too_long == 0
    assert query_ids == tokenizer.encode(" summer camp flyer")
    summer = tokenizer.encode(" summer")
    assert example.output[: len(summer)] == query_ids[: len(summer)] == summer
    assert tokenizer.decode(example.output[:-1]) == " summer, flyer, camp"


def test_a_title_case_tasks_targets_are_learnt_in_lower_case(tiny_run):
    """The headline task file says ``case = "title"``: its Title Case words become the request's
    lower-case tokens (acronyms stay), while other tasks' outputs are learnt as written."""
    from transformers import PreTrainedTokenizerFast
    from udrl.trainer.training.dataset import Record
    from udrl.trainer.training.loop import _encode

    tokenizer = PreTrainedTokenizerFast.from_pretrained(str(tiny_run / "model"), local_files_only=True)
    manifest = load_manifest(tiny_run / "model")
    assert manifest.title_tasks == ("headline",) and "the" in manifest.minor_words
    records = [Record("summer camp flyer", "headline", "Summer Camp at the USA Lake", 6, 0.9),
               Record("summer camp flyer", "search", "Summer Camp USA", 3, 0.9)]
    (headline, search), _ = _encode(records, manifest, tokenizer, 256)
    assert tokenizer.decode(headline.output[:-1]) == " summer camp at the USA lake"
    assert tokenizer.decode(search.output[:-1]) == " Summer Camp USA"
    assert headline.output[: len(tokenizer.encode(" summer"))] == tokenizer.encode(" summer")


def test_a_second_stage_starts_where_the_first_ended(tiny_run, tiny_second_stage):
    """--init with a udrl checkpoint continues it: same weights, tokenizer and preset, a new schedule."""
    first = [json.loads(line) for line in (tiny_run / "metrics.jsonl").read_text().splitlines()]
    second = [json.loads(line) for line in (tiny_second_stage / "metrics.jsonl").read_text().splitlines()]
    first_val = [r["val_loss"] for r in first if "val_loss" in r]
    second_val = [r["val_loss"] for r in second if "val_loss" in r]
    # Step 0 of the second stage evaluates the first stage's final weights on the same held-out split.
    assert second[0]["step"] == 0 and second_val[0] == pytest.approx(first_val[-1], abs=1e-6)
    manifest = load_manifest(tiny_second_stage / "model")
    assert manifest.parent == str(tiny_run / "model") and manifest.model["preset"] == "tiny"
    parent_model, parent_tokenizer, parent_manifest = load_checkpoint(tiny_run / "model")
    model, tokenizer, _ = load_checkpoint(tiny_second_stage / "model")
    assert tokenizer.get_vocab() == parent_tokenizer.get_vocab() and manifest.token_ids == parent_manifest.token_ids
    assert not torch.equal(model.transformer.h[0].attn.c_attn.weight, parent_model.transformer.h[0].attn.c_attn.weight)


def test_a_later_stage_keeps_its_parents_reward_edges_when_data_is_added(tiny_run, synthetic_data, tmp_path):
    """Added records (a rollout's, judged high) would move the score quantiles; the levels must not move."""
    records = [json.loads(line) for line in synthetic_data.read_text().splitlines()]
    added = tmp_path / "rollout.jsonl"
    added.write_text("".join(json.dumps({**r, "score": 0.99}) + "\n" for r in records[:1200]))
    parent = load_manifest(tiny_run / "model")
    shifted = quantile_edges([r["score"] for r in records] + [0.99] * 1200, len(parent.reward_edges) + 1)
    assert list(parent.reward_edges) != shifted  # the mixture's own quantiles differ

    run = train(TrainConfig(data=[str(synthetic_data), str(added)], out_dir=str(tmp_path / "run"),
                            init=str(tiny_run / "model"), length_max=16, max_steps=2, warmup_steps=1, eval_interval=2,
                            checkpoint_interval=2, eval_batches=1, adherence_samples=0, threads=2))
    assert load_manifest(run).reward_edges == parent.reward_edges


def test_manifest_reads_back_from_the_checkpoint(tiny_run):
    assert load_manifest(tiny_run / "model") == verify_checkpoint(tiny_run / "model")


def test_training_from_a_local_pretrained_gpt2(tmp_path, synthetic_data):
    """--init DIR: the run starts from the directory's weights and tokenizer, plus control tokens."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import GPT2TokenizerFast
    from udrl.trainer.training.dataset import iter_texts, read_records
    from udrl.trainer.training.model import build_model

    base_dir = tmp_path / "gpt2"
    records = read_records([synthetic_data], ["image", "search", "headline", "tags"], (1, 48)).records
    texts = list(iter_texts(records, Manifest.new(length_range=(1, 48))))
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=600, special_tokens=["<|endoftext|>"],
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    GPT2TokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>").save_pretrained(base_dir)
    base = build_model("tiny", bpe.get_vocab_size(), eos_id=bpe.token_to_id("<|endoftext|>"))
    base.save_pretrained(base_dir)

    final = train(TrainConfig(data=[str(synthetic_data)], out_dir=str(tmp_path / "run"), init=str(base_dir),
                              length_max=16, max_steps=3, lr=1e-9, eval_interval=10,
                              checkpoint_interval=10, adherence_samples=2))
    model, tokenizer, manifest = load_checkpoint(final)
    assert manifest.parent == str(base_dir) and manifest.model["preset"] is None
    assert manifest.eos_id == bpe.token_to_id("<|endoftext|>")
    assert model.config.vocab_size == bpe.get_vocab_size() + len(manifest.special_tokens) - 1
    # With a vanishing learning rate the trained model is still the pretrained one, new rows aside.
    n = bpe.get_vocab_size()
    torch.testing.assert_close(model.get_input_embeddings().weight[:n], base.get_input_embeddings().weight,
                               atol=1e-6, rtol=0)
    torch.testing.assert_close(model.transformer.h[1].mlp.c_fc.weight, base.transformer.h[1].mlp.c_fc.weight,
                               atol=1e-6, rtol=0)


def test_length_grouped_batches_see_every_record_once_an_epoch_and_pad_less():
    import random

    from udrl.trainer.training.loop import Distributed, _micro_batch

    rng = random.Random(0)
    lengths = [rng.choice([8, 12, 20, 30, 60, 120]) + rng.randrange(5) for _ in range(32 * 130)]
    n, batch, one = len(lengths), 32, Distributed()

    def epoch(**kw):
        return [_micro_batch(n, micro, batch, one, 7, **kw) for micro in range(n // batch)]

    plain, grouped = epoch(), epoch(lengths=lengths)
    assert sorted(i for b in grouped for i in b) == list(range(n))  # each record once
    assert grouped == epoch(lengths=lengths)  # a pure function of the step: resumable
    assert [_micro_batch(n, micro, batch, one, 7, lengths=lengths) for micro in range(n // batch, 2 * n // batch)] \
        != grouped  # the next epoch is another order

    def padded(batches):  # tokens a batch of padded rows holds
        return sum(len(b) * max(lengths[i] for i in b) for b in batches)

    assert padded(grouped) < 0.6 * padded(plain)
    # Long and short batches are interleaved, not sorted across the epoch.
    widths = [max(lengths[i] for i in b) for b in grouped[:50]]
    assert widths != sorted(widths) and widths != sorted(widths, reverse=True)
