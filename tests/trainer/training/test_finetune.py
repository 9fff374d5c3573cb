"""Fine-tuning a udrl model on a task of one's own: its control token, manifest and generation."""

import json
import shutil

import pytest
import udrl
from udrl.manifest import load_manifest
from udrl.trainer import TrainConfig
from udrl.trainer.errors import ConfigError, DatasetError
from udrl.trainer.training.dataset import Record, replay_mix


def test_a_new_task_gets_one_control_token_and_the_old_ones_keep_theirs(tiny_finetuned, tiny_artifacts):
    parent, child = udrl.read_manifest(tiny_artifacts["llama"]), load_manifest(tiny_finetuned["run"] / "model")
    assert child.tasks == (*parent.tasks, "alt_text")
    for token, token_id in parent.token_ids.items():  # every old token keeps its id
        assert child.token_ids[token] == token_id
    new = child.control_tokens["task"]["alt_text"]
    assert child.token_ids[new] == max(child.token_ids.values()) == child.model["vocab_size"] - 1
    config = json.loads((tiny_finetuned["run"] / "train_config.json").read_text())
    assert config["init"] == str(tiny_finetuned["run"] / "init")  # a checkpoint made from the GGUF
    assert config["tasks"] == [*parent.tasks, "alt_text"]
    assert {t: child.focus_bias[t] for t in parent.tasks} == dict(parent.focus_bias)


def test_the_fine_tuned_model_generates_the_new_task_and_the_old_ones(tiny_finetuned):
    with udrl.load(tiny_finetuned["llama"]) as model:
        assert "alt_text" in model.manifest.tasks
        for task in model.manifest.tasks:
            assert model.generate("poster for a jazz night", task=task).text.strip()
        with pytest.raises(udrl.CommandError, match="alt_text"):
            model.generate("poster", task="alt-text")


def test_replay_keeps_the_old_tasks_at_the_share_asked():
    records = [Record(f"q{i}", "tags", "a, b", 2, 0.5) for i in range(90)] + \
              [Record(f"n{i}", "alt_text", "a cat", 2, 0.5) for i in range(30)]
    mixed = replay_mix(records, ["image", "tags"], 0.25, seed=0)
    assert sum(r.task == "alt_text" for r in mixed) == 30 and sum(r.task == "tags" for r in mixed) == 10
    assert mixed == replay_mix(records, ["image", "tags"], 0.25, seed=0)
    assert replay_mix(records, ["tags"], 0.9, seed=0) == records  # fewer old records than the share: all
    with pytest.raises(DatasetError, match="replay share"):
        replay_mix(records, ["tags"], 1.0, seed=0)


def test_replay_must_be_a_share():
    with pytest.raises(ConfigError, match="replay is a share of the records"):
        TrainConfig(replay=1.5).validate()


def test_continuing_a_fine_tune_says_that_replay_has_nothing_to_mix(tiny_finetuned, synthetic_data, tmp_path,
                                                                    capsys):
    # The fine-tuned model knows every task of its data now: replay keeps everything, and says so.
    from udrl.trainer import train

    train(TrainConfig(data=[str(synthetic_data), str(tiny_finetuned["run"].parent / "alt_text.jsonl")],
                      out_dir=str(tmp_path / "again"), init=str(tiny_finetuned["run"] / "model"), replay=0.5,
                      length_max=16, max_steps=1, warmup_steps=0, eval_interval=1, checkpoint_interval=1,
                      adherence_samples=0, threads=2))
    out = capsys.readouterr().out
    assert "replay: all" in out and "pass a sample of their records as --data" in out


def test_the_walk_through_recipe_fine_tunes_gently_and_rehearses_the_old_tasks():
    config = TrainConfig.from_json_file("trainer/recipes/mini-finetune.json")
    assert config.init is None and not config.data  # the command line names the model and the data
    assert 0.5 <= config.replay < 1 and config.lr < TrainConfig().lr


def test_retokenize_moves_a_trained_model_to_a_new_bpe_that_the_sdk_runs(tiny_run, synthetic_data, tmp_path,
                                                                         capsys):
    from udrl.converters import export
    from udrl.trainer import train

    parent = load_manifest(tiny_run / "model")
    run = tmp_path / "retok"
    train(TrainConfig(data=[str(synthetic_data)], out_dir=str(run), init=str(tiny_run / "model"), retokenize=True,
                      vocab_size=parent.model["vocab_size"] - 200, length_max=16, max_steps=5, warmup_steps=0,
                      eval_interval=5, checkpoint_interval=5, adherence_samples=0, threads=2))
    assert "retokenize:" in capsys.readouterr().out
    child = load_manifest(run / "model")
    assert child.model["vocab_size"] == parent.model["vocab_size"] - 200  # the data holds no more merges
    assert child.tasks == parent.tasks and child.reward_edges == parent.reward_edges
    with udrl.load(export(run / "model", "gguf", "f32", log=lambda _: None).path) as model:
        assert model.generate("poster for a jazz night", task="tags").text.strip()


def test_retokenize_needs_a_model_to_move():
    with pytest.raises(ConfigError, match="retokenize moves an --init model"):
        TrainConfig(retokenize=True).validate()


def test_a_copy_adjusted_task_is_taught_with_the_others_replayed(tiny_run, synthetic_data, tmp_path, capsys):
    # From a model that knows every task of the data: the copy-adjusted task keeps all its records,
    # the others are sampled to the replay share, and the run says how it re-scored the task.
    from udrl.trainer import train
    from udrl.trainer.training.dataset import read_records

    records = read_records([str(synthetic_data)], ["image", "search", "headline", "tags"], (1, 16)).records
    images = sum(r.task == "image" for r in records)
    train(TrainConfig(data=[str(synthetic_data)], out_dir=str(tmp_path / "image"), init=str(tiny_run / "model"),
                      copy_adjusted=["image"], rank_matched=["image"], replay=0.5, length_max=16, max_steps=1,
                      warmup_steps=0, eval_interval=1, checkpoint_interval=1, adherence_samples=0, threads=2))
    out = capsys.readouterr().out
    assert f"fitted over its {images} records" in out and "copy-adjusted reward for image: score - " in out
    assert "rank-matched reward for image: each task's scores mapped by rank onto the whole data's" in out
    assert f"replay: {2 * images} of {len(records)} records, the tasks not being taught 50% of them" in out


def test_a_fine_tune_keeps_its_parents_focus_rule_unless_asked_for_split_words(tiny_run, synthetic_data, tmp_path):
    # The bonus a parent's focus was tuned to keeps its meaning; the flag moves a model whose manifest
    # predates split-word focus onto it.
    from udrl.manifest import MANIFEST_FILENAME, save_manifest
    from udrl.trainer import train

    parent = tmp_path / "parent"
    shutil.copytree(tiny_run / "model", parent)
    save_manifest(load_manifest(parent).replace(focus_split_words=False), parent)
    for flag in (False, True):
        out = tmp_path / f"child-{flag}"
        train(TrainConfig(data=[str(synthetic_data)], out_dir=str(out), init=str(parent), focus_split_words=flag,
                          focus_push_function_words=flag, length_max=16, max_steps=1, warmup_steps=0,
                          eval_interval=1, checkpoint_interval=1, adherence_samples=0, threads=2))
        focus = json.loads((out / "model" / MANIFEST_FILENAME).read_text())["focus"]
        assert focus["split_words"] is flag and focus["push_function_words"] is flag
