from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import GPT2TokenizerFast

from udrl import Manifest
from udrl.trainer.tokenizer import attach_token_ids, load_gpt2_tokenizer, train_bpe

TEXTS = ["minimalist poster for a coffee shop", "espresso, latte, beans", "Café au lait ☕ 東京"] * 20


def manifest():
    return Manifest.new(tasks=["image", "tags"], length_range=(1, 8), reward_edges=[0.5])


def test_trained_bpe_keeps_every_control_token_whole():
    m = manifest()
    tok = train_bpe(TEXTS, m, vocab_size=400)
    m = attach_token_ids(m, tok)
    prompt = "<|task:tags|><|len:3|><|rew:1|>coffee shop<|sep|>"
    ids = tok.encode(prompt, add_special_tokens=False)
    assert ids[:3] == [m.token_ids["<|task:tags|>"], m.token_ids["<|len:3|>"], m.token_ids["<|rew:1|>"]]
    assert ids[-1] == m.sep_id
    assert tok.decode(tok.encode("Café au lait ☕ 東京", add_special_tokens=False)) == "Café au lait ☕ 東京"
    assert m.eos_id == tok.eos_token_id


def test_local_gpt2_tokenizer_gets_the_control_tokens(tmp_path):
    base = Tokenizer(models.BPE())
    base.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    base.train_from_iterator(TEXTS, trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"],
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    GPT2TokenizerFast(tokenizer_object=base, eos_token="<|endoftext|>").save_pretrained(tmp_path)
    m = manifest()
    tok = load_gpt2_tokenizer(tmp_path, m)
    m = attach_token_ids(m, tok)
    assert m.eos_id == base.token_to_id("<|endoftext|>")
    assert len(tok.encode("<|len:8|>", add_special_tokens=False)) == 1
