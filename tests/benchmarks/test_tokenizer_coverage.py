from udrl import Manifest
from udrl.benchmarks.tokenizer_coverage import markdown, word_figures
from udrl.trainer.training.tokenizer import train_bpe


def test_word_figures_count_whole_words_and_one_letter_pieces():
    pieces = {" lost": [" l", "ost"], " jam": [" jam"], " mango": [" m", "ango"], " homemade": [" hom", "emade"]}
    figures = word_figures(lambda text: pieces[text], ["lost", "jam", "mango", "homemade"])
    assert figures == {"words": 4, "whole": 0.25, "one_letter_piece": 0.5, "mean_pieces": 1.75}


def test_a_listed_word_stays_whole_in_a_trained_bpe():
    """What the benchmark compares: the recipe's BPE with and without a word list."""
    manifest = Manifest.new(tasks=["tags"], length_range=(1, 8), reward_edges=[0.5])
    texts = [" poster for a jazz night", " saxophone, stage, spotlight"] * 30

    def encoder(tok):
        return lambda text: [tok.decode([i]) for i in tok.encode(text, add_special_tokens=False)]

    plain = train_bpe(texts, manifest, vocab_size=320)
    listed = train_bpe(texts, manifest, vocab_size=320, words=["strawberry"])
    assert word_figures(encoder(plain), ["strawberry"])["whole"] == 0.0
    assert word_figures(encoder(listed), ["strawberry"])["whole"] == 1.0
    table = markdown({"rows": [{"tokenizer": "bpe-320", "vocab": 320, "embedding_params": 320 * 512,
                                "common": word_figures(encoder(listed), ["strawberry"]),
                                "tuning_half": word_figures(encoder(listed), ["jazz", "strawberry"]),
                                "tokens_per_output": 3.0}]})
    assert "| bpe-320 | 320 | 100.0% | 0.0% | 100.0% |" in table
