import pytest
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import GPT2TokenizerFast
from udrl import Manifest
from udrl.trainer.errors import ConfigError
from udrl.trainer.training.tokenizer import attach_token_ids, load_gpt2_tokenizer, train_bpe

TEXTS = ["minimalist poster for a coffee shop", "espresso, latte, beans", "Café au lait ☕ 東京"] * 20


def manifest():
    return Manifest.new(tasks=["image", "tags"], length_range=(1, 8), reward_edges=[0.5])


def test_a_vocabulary_too_small_for_the_bytes_and_control_tokens_is_refused_with_the_least_size():
    m = manifest()
    least = 256 + len(m.special_tokens) + 1
    with pytest.raises(ConfigError, match=f"vocab_size {least - 1} is too small.*--vocab-size {least} or more"):
        train_bpe(TEXTS, m, vocab_size=least - 1)
    assert len(train_bpe(TEXTS, m, vocab_size=least)) == least


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


def test_with_the_english_word_list_no_hand_written_word_is_spelt_and_headline_words_stay_whole():
    """The retrain's vocabulary size (14,336), trained on the committed data: ordinary words of the
    hand-written requests ("bbq", "mr", "rpg") stop being spelt letter by letter when the BPE also
    learns from wordfreq's list, and the teacher's Title Case headline words do not fall into three or
    more pieces (14.6% of them did when the list was learnt in lower case only: its merges crowded out
    the capitalised ones; 3.8% with no list), for at most 10% more tokens on the data."""
    import gzip
    import json
    import re
    from pathlib import Path

    from udrl.trainer.handwritten import read_requests
    from udrl.trainer.training.tokenizer import english_word_list

    data = Path(__file__).resolve().parents[3] / "data" / "udrl-gemma.jsonl.gz"
    with gzip.open(data, "rt", encoding="utf-8") as f:
        records = [json.loads(line) for line in f]
    texts = [f" {r['query']} {r['output']}" for r in records]
    # Letters only: GPT-2's pre-tokenizer (which llama.cpp's "gpt2" one matches) always cuts "3d" or
    # "90s" between digits and letters.
    words = sorted({w for r in read_requests() for w in re.findall(r"\b[a-z]+\b", r.query.lower())})
    headline_words = [w for r in records[::10] if r["task"] == "headline" and not r.get("origin")
                      for w in re.findall(r"\b[A-Z][a-z]+\b", r["output"])]
    assert len(headline_words) > 1000

    def spelt(tok) -> list[str]:
        """Words of two or more characters that come out as one token per character."""
        return [w for w in words if len(w) > 1
                and all(len(tok.decode([i]).strip()) <= 1 for i in tok.encode(" " + w, add_special_tokens=False))]

    def broken_share(tok) -> float:
        """The share of Title Case headline words that take three or more tokens."""
        return sum(len(tok.encode(" " + w, add_special_tokens=False)) >= 3 for w in headline_words) / len(headline_words)

    m = manifest()
    data_only = train_bpe(texts, m, vocab_size=14336)
    assert spelt(data_only)  # what the word list is for
    listed = train_bpe(texts, m, vocab_size=14336, words=english_word_list(30000))
    assert spelt(listed) == []
    assert broken_share(listed) < 0.05
    data_tokens = sum(len(data_only.encode(t, add_special_tokens=False)) for t in texts[:3000])
    assert sum(len(listed.encode(t, add_special_tokens=False)) for t in texts[:3000]) < 1.1 * data_tokens
