import gzip
import json

import pytest
from udrl.manifest import load_manifest
from udrl.trainer.errors import ConfigError
from udrl.trainer.recipe import Recipe, kept_file, run_dirs, run_recipe


def _stage(path, data, steps, lr):
    path.write_text(json.dumps({"data": [str(data)], "preset": "tiny", "length_max": 16, "max_steps": steps,
                                "lr": lr, "warmup_steps": 2, "eval_interval": steps, "checkpoint_interval": steps,
                                "adherence_samples": 0, "threads": 1}))


def test_a_recipe_trains_its_stages_per_variant_and_skips_what_is_done(synthetic_data, tmp_path):
    _stage(tmp_path / "one.json", synthetic_data, 12, 2e-3)
    _stage(tmp_path / "two.json", synthetic_data, 6, 1e-3)
    recipe = tmp_path / "recipe.json"
    recipe.write_text(json.dumps({"stages": ["one.json", "two.json"],
                                  "variants": {"udrl": ["length", "reward"], "nocmd": []}}))
    out = tmp_path / "runs"
    lines = []
    finals = run_recipe(recipe, out, threads=1, log=lines.append)
    assert finals == {"udrl": out / "udrl", "nocmd": out / "nocmd"}
    assert (out / "stage1" / "udrl" / "model").is_dir() and (out / "stage1" / "nocmd" / "model").is_dir()
    assert load_manifest(out / "udrl" / "model").conditioning == ("length", "reward")
    assert load_manifest(out / "nocmd" / "model").conditioning == ()
    second = json.loads((out / "udrl" / "train_config.json").read_text())
    assert second["init"] == str(out / "stage1" / "udrl" / "model") and second["max_steps"] == 6
    assert len(lines) == 2  # one line per stage
    stamp = (out / "udrl" / "model").stat().st_mtime_ns
    lines.clear()
    run_recipe(recipe, out, threads=1, log=lines.append)  # all done: nothing runs
    assert lines == [] and (out / "udrl" / "model").stat().st_mtime_ns == stamp


def test_recipe_files_are_checked(tmp_path, synthetic_data):
    bad = tmp_path / "r.json"
    bad.write_text("{")
    with pytest.raises(ConfigError, match="not valid JSON"):
        Recipe.from_file(bad)
    bad.write_text(json.dumps({"stages": ["missing.json"], "variants": {"udrl": []}}))
    with pytest.raises(ConfigError, match="train config not found"):
        Recipe.from_file(bad)
    _stage(tmp_path / "one.json", synthetic_data, 2, 1e-3)
    bad.write_text(json.dumps({"stages": ["one.json"], "variants": {"udrl": []}, "epochs": 3}))
    with pytest.raises(ConfigError, match="unknown recipe key\\(s\\) \\['epochs'\\]"):
        Recipe.from_file(bad)
    bad.write_text(json.dumps({"stages": ["one.json"], "variants": {"udrl": []},
                               "round2": {"variant": "other", "config": "one.json", "tasks": ["tags"]}}))
    with pytest.raises(ConfigError, match="round2 variant 'other'"):
        Recipe.from_file(bad)
    with pytest.raises(ConfigError, match="recipe not found"):
        Recipe.from_file(tmp_path / "none.json")


def test_the_shipped_recipe_reads_and_lays_out_its_runs(tmp_path):
    recipe = Recipe.from_file("trainer/recipes/mini-recipe.json")
    assert len(recipe.stages) == 3 and set(recipe.variants) == {"udrl", "noreward", "nocmd"}
    assert recipe.round2.queries == 6600  # the round asks as many training queries as it did on the 6,600-query data
    assert run_dirs(recipe, tmp_path, "udrl")[-1] == tmp_path / "udrl"
    assert run_dirs(recipe, tmp_path, "udrl")[-2] == tmp_path / "stage3" / "udrl"
    assert run_dirs(recipe, tmp_path, "nocmd")[-1] == tmp_path / "nocmd"
    assert len(run_dirs(recipe, tmp_path, "nocmd")) == 3


def test_kept_stages_carry_a_recipe_to_a_machine_without_its_runs(synthetic_data, tmp_path):
    _stage(tmp_path / "one.json", synthetic_data, 8, 2e-3)
    _stage(tmp_path / "two.json", synthetic_data, 4, 1e-3)
    recipe = tmp_path / "recipe.json"
    recipe.write_text(json.dumps({"stages": ["one.json", "two.json"], "variants": {"udrl": ["length", "reward"]}}))
    keep = tmp_path / "kept"
    first = tmp_path / "machine1"
    assert run_recipe(recipe, first, threads=1, keep=keep, until=1, log=lambda _: None) == {
        "udrl": first / "stage1" / "udrl"}
    assert kept_file(keep, "udrl", 1).is_file() and not (first / "udrl").exists()  # stopped after stage 1
    with gzip.open(kept_file(keep, "udrl", 1), "rb") as f:
        assert f.read(4) == b"GGUF"  # a gzipped GGUF, nothing left beside it
    assert sorted(p.name for p in keep.iterdir()) == ["udrl-stage1-f16.gguf.gz"]

    second = tmp_path / "machine2"  # only the kept file travels
    lines = []
    run_recipe(recipe, second, threads=1, keep=keep, log=lines.append)
    assert lines[0].startswith("stage 2/2")  # stage 1 is not trained again
    assert json.loads((second / "udrl" / "train_config.json").read_text())["init"] == str(second / "stage1" / "udrl" / "model")
    assert load_manifest(second / "udrl" / "model").conditioning == ("length", "reward")
    assert kept_file(keep, "udrl", 2).is_file()
    with pytest.raises(ConfigError, match="--until 3: the recipe has stages 1 to 2"):
        run_recipe(recipe, second, keep=keep, until=3)
