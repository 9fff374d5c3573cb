import json
import subprocess
import sys


def udrl(*args, **kw):
    return subprocess.run([sys.executable, "-m", "udrl", *args], capture_output=True, text=True, timeout=300, **kw)


def test_info_prints_manifest_and_size(tiny_run):
    out = udrl("info", str(tiny_run / "model"))
    assert out.returncode == 0, out.stderr
    assert "tasks         image, search, headline, tags" in out.stdout
    assert "length        1 to 16 words" in out.stdout and "MB" in out.stdout
    report = json.loads(udrl("info", "--json", str(tiny_run / "model")).stdout)
    assert report["manifest"]["format"] == "udrl-manifest" and report["size_bytes"] > 100_000


def test_info_on_a_directory_without_manifest_fails_clearly(tmp_path):
    out = udrl("info", str(tmp_path))
    assert out.returncode == 4  # ManifestError (README: exit statuses)
    assert "no udrl manifest" in out.stderr and "Traceback" not in out.stderr


def test_train_cli_reports_bad_data_without_a_traceback(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"query": "q", "task": "image", "output": "a b", "words": 2, "score": 0.5}\n{oops\n')
    out = udrl("train", "--data", str(bad), "--out", str(tmp_path / "run"))
    assert out.returncode == 6  # DatasetError
    assert f"{bad}:2: not valid JSON" in out.stderr and "--skip-invalid" in out.stderr
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "run" / "train_config.json").exists()  # fixing the data needs no --resume


def test_train_cli_refuses_a_vocabulary_too_small_without_a_traceback(tmp_path, synthetic_data):
    out = udrl("train", "--data", str(synthetic_data), "--out", str(tmp_path / "run"), "--preset", "tiny",
               "--vocab-size", "300", "--steps", "1")
    assert out.returncode == 6  # ConfigError
    assert "vocab_size 300 is too small for a new tokenizer" in out.stderr and "--vocab-size" in out.stderr
    assert "Traceback" not in out.stderr
    assert not any((tmp_path / "run").iterdir())  # nothing of the refused start is left to reuse
    huge = udrl("train", "--data", str(synthetic_data), "--out", str(tmp_path / "run"), "--vocab-size", "99999999999")
    assert huge.returncode == 6 and "vocab_size must be at most 1,048,576" in huge.stderr, huge.stderr
    # The refused starts leave no run behind: the corrected command starts, without --resume.
    again = udrl("train", "--data", str(synthetic_data), "--out", str(tmp_path / "run"), "--preset", "tiny",
                 "--vocab-size", "400", "--steps", "1", "--eval-interval", "1", "--adherence-samples", "2")
    assert again.returncode == 0, again.stderr
    assert json.loads((tmp_path / "run" / "model" / "train_config.json").read_text())["vocab_size"] == 400


def test_train_cli_end_to_end_with_config_file(tmp_path, synthetic_data):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"preset": "tiny", "length_max": 16, "max_steps": 5, "eval_interval": 5,
                                  "checkpoint_interval": 5, "adherence_samples": 4}))
    out = udrl("train", "--config", str(config), "--data", str(synthetic_data), "--out", str(tmp_path / "r"),
               "--steps", "4")
    assert out.returncode == 0, out.stderr
    assert json.loads((tmp_path / "r" / "model" / "train_config.json").read_text())["max_steps"] == 4
    assert udrl("info", str(tmp_path / "r" / "model")).returncode == 0


def test_udrl_train_has_one_flag_per_config_field_and_flags_override_the_file(tmp_path):
    import argparse
    import dataclasses

    from udrl.trainer.cli import _config_from_args
    from udrl.trainer.training.config import TrainConfig, add_flags

    parser = argparse.ArgumentParser()
    parser.add_argument("--config")
    add_flags(parser)
    dests = {action.dest for action in parser._actions}
    assert {f.name for f in dataclasses.fields(TrainConfig)} <= dests
    file = tmp_path / "c.json"
    file.write_text(json.dumps({"data": ["d.jsonl"], "lr": 0.5, "conditioning": ["length"], "max_steps": 9}))
    args = parser.parse_args(["--config", str(file), "--steps", "3", "--conditioning", "--reward-edges", "0.2", "0.6"])
    config = _config_from_args(args)
    assert (config.max_steps, config.conditioning, config.reward_edges) == (3, [], [0.2, 0.6])  # the flags
    assert (config.lr, config.data, config.vocab_size) == (0.5, ["d.jsonl"], TrainConfig().vocab_size)  # file, default
