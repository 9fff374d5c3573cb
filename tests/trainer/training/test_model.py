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


def test_a_new_vocabulary_keeps_the_shared_rows_and_spells_the_rest_from_the_old():
    import torch
    from udrl import Manifest
    from udrl.trainer.training.model import transplant_vocabulary
    from udrl.trainer.training.tokenizer import train_bpe

    m = Manifest.new(tasks=["image", "tags"], length_range=(1, 8), reward_edges=[0.5])
    texts = ["a mango smoothie poster for a juice bar", "lost golden retriever near maple park"] * 30
    old, new = train_bpe(texts, m, vocab_size=300), train_bpe(texts, m, vocab_size=420)
    mango = "\u0120mango"  # " mango" in the byte-level alphabet
    assert mango in new.get_vocab() and mango not in old.get_vocab()
    model = build_model("tiny", len(old), eos_id=0)
    before = model.get_input_embeddings().weight.detach().clone()
    kept = transplant_vocabulary(model, old, new)

    weight = model.get_input_embeddings().weight
    assert weight.shape[0] == len(new) and model.get_output_embeddings().weight is weight  # still tied
    shared = [t for t in new.get_vocab() if t in old.get_vocab()]
    assert kept == len(shared) < len(new)
    for token in shared:  # every special token among them, at whatever id it has now
        assert torch.equal(weight[new.convert_tokens_to_ids(token)], before[old.convert_tokens_to_ids(token)])
    pieces = old.encode(" mango", add_special_tokens=False)
    assert len(pieces) > 1
    assert torch.allclose(weight[new.convert_tokens_to_ids(mango)], before[pieces].mean(dim=0))
