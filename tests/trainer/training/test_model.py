import json

import pytest
from udrl import CheckpointError
from udrl.trainer.errors import ConfigError
from udrl.trainer.training.model import PRESETS, build_model, count_parameters, init_from_pretrained


def test_presets_have_the_documented_sizes():
    assert count_parameters(build_model("tiny", 1000, eos_id=0)) < 1_000_000
    mini = count_parameters(build_model("mini", 8192, eos_id=0))
    assert 15e6 < mini <= 30e6, mini
    assert PRESETS["gpt2-124m"] == {"n_layer": 12, "n_head": 12, "n_embd": 768, "n_positions": 1024}


def test_unknown_preset_lists_the_presets():
    with pytest.raises(ConfigError, match="tiny, mini, gpt2-124m"):
        build_model("huge", 100, eos_id=0)


def test_init_from_a_local_gpt2_resizes_for_control_tokens(tmp_path):
    build_model("tiny", 300, eos_id=0).save_pretrained(tmp_path)
    model = init_from_pretrained(tmp_path, vocab_size=350)
    assert model.get_input_embeddings().weight.shape[0] == 350
    assert model.get_output_embeddings().weight.shape[0] == 350


def test_init_refuses_other_architectures(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(CheckpointError, match="'llama' model; udrl trains and ships GPT-2 only"):
        init_from_pretrained(tmp_path, 100)
    with pytest.raises(CheckpointError, match="no config.json"):
        init_from_pretrained(tmp_path / "nowhere", 100)
