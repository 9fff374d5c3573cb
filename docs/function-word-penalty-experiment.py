"""An experiment, not the product: image prompts with a logit penalty on function words and query focus
on split words, on the tuning half of the hand-written requests (trainer/recipes/mini-notes.md,
"A function-word penalty for image prompts"). The bundled model writes its image prompts in the
request's frame ("a book cover for a cover"), and query focus is held at 0 for them by copying that is
mostly "a" and "for". This pushes the manifest's end stopwords (articles, prepositions,
conjunctions; `rules.Vocabulary.end_word`) down by PENALTY and lifts the request's content words by
FOCUS, split words included, then scores the tuning half as `udrl eval --set handwritten-tune
--no-teacher --no-second-judge --tasks image` does.

    .venv/bin/python docs/function-word-penalty-experiment.py OUT.json PENALTY FOCUS [TASK]

It patches the SDK's rule list for this process only. If the rule is built, it belongs in rules.py
and native/udrl.c with shared vectors, behind a manifest field, and this script goes.
"""

import sys

import udrl.generate as generate
import udrl.rules as rules

out, penalty, bonus = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
task = sys.argv[4] if len(sys.argv) > 4 else "image"


def function_word_penalty(logits, state):
    """Push the whole-word tokens of the manifest's end stopwords down by PENALTY."""
    if penalty > 0:
        logits[state.vocab.end_word] -= penalty


_init = generate._Decoder.__init__


def _init_with_focus(self, backend, query, command, options):
    _init(self, backend, query, command, options)
    self.focus_bias = bonus
    self.focus = rules.focus_tokens(backend, query, split_words=True) if bonus > 0 else {}


generate._Decoder.__init__ = _init_with_focus
rules.apply_rules.__defaults__ = ((rules.query_focus, function_word_penalty, *rules.RULES[1:]),)

from udrl.trainer.evaluate.quality import EvalConfig, evaluate_quality  # noqa: E402  (after the patch)

evaluate_quality(EvalConfig(model="sdk/models/udrl-mini-q8_0.gguf", data=["data/udrl-gemma.jsonl.gz"],
                            query_set="handwritten-tune", teacher=False, second_judge=False, tasks=[task], out=out))
