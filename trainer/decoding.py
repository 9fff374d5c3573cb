"""The decoding settings a new model's manifest starts with. The SDK and the C layer read them from
the manifest (they hold no tuned numbers); `udrl focus` (focus.py) tunes the bonus afterwards and
writes it into the manifest of the model it was tuned for.

    >>> starting_settings(["tags", "poster"])["focus_bias"]
    {'tags': 8.0, 'poster': 0.0}
    >>> spelling_words(2000)[:20]
    'a ability able about'
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

# Query focus (udrl.rules): per task, the logit bonus for the request's content words the output
# lacks so far, and which words do not count as content. A small policy trained from scratch knows
# a rare subject word ("blueberry") too weakly to pick it over a frequent one ("chocolate"); the
# bonus lets the word the user asked about win. The judge rewards copying the request, so
# relevance cannot choose the bonus; `udrl focus` does, beside the teacher. These starting values
# are what it chose for the mini model (trainer/recipes/mini-notes.md); a task they do not name
# starts without focus, until `udrl focus` chooses its bonus.
FOCUS_BIAS = {"image": 0.0, "search": 3.0, "headline": 1.0, "tags": 8.0}
FOCUS_STOPWORDS = (
    "about", "after", "all", "also", "and", "any", "are", "around", "based", "been", "before", "being",
    "between", "both", "but", "can", "could", "create", "design", "does", "each", "every", "for", "from",
    "had", "has", "have", "her", "his", "how", "into", "its", "just", "like", "make", "more", "most",
    "need", "new", "not", "off", "one", "only", "onto", "our", "out", "over", "own", "please", "same",
    "she", "should", "some", "such", "than", "that", "the", "their", "them", "then", "there", "these",
    "they", "this", "those", "through", "too", "under", "using", "very", "want", "was", "were", "what",
    "when", "where", "which", "while", "who", "why", "will", "with", "would", "you", "your",
)

# Words an output never ends on: articles, conjunctions, possessives and prepositions, which leave a
# phrase open. The length guard cuts at the requested word count, so without this a cut lands on
# "at the" or "colors and". Words that end phrasal verbs ("sign up", "check out") are not here; the
# teacher's outputs end on one of these in under 0.2% of its records ("The Game is on").
END_STOPWORDS = (
    "a", "about", "an", "and", "as", "at", "between", "but", "by", "for", "from", "his", "in", "into", "its",
    "my", "nor", "of", "on", "onto", "or", "our", "over", "per", "than", "the", "their", "through", "to",
    "under", "via", "with", "within", "without", "your",
)

# Words Title Case leaves in lower case inside a phrase (udrl.casing): articles, coordinating
# conjunctions and short prepositions, as AP and Chicago style keep them. The teacher writes each of
# these in lower case in 80-99% of its mid-headline uses; verbs such as "is" stay capitalised.
MINOR_WORDS = (
    "a", "an", "and", "as", "at", "but", "by", "for", "from", "in", "into", "nor", "of", "on", "onto", "or",
    "per", "so", "the", "to", "via", "vs", "with", "yet",
)


# The whole-word rule (udrl.rules.whole_words): an output's words are words of wordfreq's English list
# (its N most frequent, letters only; one-letter words only "a", "i" and "x", as in "4 x 6") or of
# the request. A small policy starts a word with a short piece and carries on into letters no word
# spells ("pders party"); on the hand-written tuning half the rule took the shipped model's
# degenerate outputs from 4.2% to 1.4% with relevance unchanged (trainer/recipes/mini-notes.md).
# Short words come from the most frequent only: further down the list most of them are
# abbreviations and typos ("bht", "thf", "tup") that the model wrote where it had lost its way.
SPELLING_WORDS = 200_000
SHORT_WORD_LETTERS = 4
SHORT_WORDS = 30_000
ONE_LETTER_WORDS = "aix"
# After an apostrophe a word may also be one of these: "jam's", "don't", "we'll", "they're".
AFTER_APOSTROPHE = ("d", "ll", "m", "re", "s", "t", "ve")


def spelling_words(n: int = SPELLING_WORDS) -> str:
    """The manifest's ``spelling.words`` from wordfreq's ``n`` most frequent English words: those of
    ASCII lowercase letters only, of up to `SHORT_WORD_LETTERS` letters only among the
    `SHORT_WORDS` most frequent, sorted, space-separated ("" for n = 0: the rule off)."""
    from wordfreq import top_n_list

    ranked = top_n_list("en", n)
    frequent = set(ranked[:SHORT_WORDS])
    words = {w for w in ranked if re.fullmatch("[a-z]+", w) and (len(w) > 1 or w in ONE_LETTER_WORDS)
             and (len(w) > SHORT_WORD_LETTERS or w in frequent)}
    return " ".join(sorted(words))


def starting_settings(tasks: Sequence[str], title_tasks: Sequence[str] = (),
                      tuned_focus: Mapping[str, float] | None = None,
                      spelling: int = SPELLING_WORDS, split_words: bool = True,
                      push_function_words: bool = False) -> dict[str, Any]:
    """The `Manifest.new` fields a new model of ``tasks`` starts with: focus bonus, focus stopwords,
    end stopwords, Title Case for ``title_tasks`` (those of ``tasks`` whose task file says so), and
    the whole-word rule's list of ``spelling`` words (`spelling_words`). ``tuned_focus`` (the bonus
    `udrl focus` chose for the model a run starts from) wins over the starting values for the tasks
    it names: a fine-tune that adds a task keeps the old ones' bonus. ``split_words`` is whether
    focus lifts the words the tokenizer splits (rules.py): on for a new model; a run from a tuned
    model passes that model's, since its bonus was chosen under it. ``push_function_words`` is
    whether focus also pushes the end stopwords down by its bonus: off unless asked (`udrl train
    --focus-push-function-words`), and a run from a tuned model keeps that model's."""
    tuned = tuned_focus or {}
    words = spelling_words(spelling) if spelling else ""
    return {"focus_bias": {t: tuned.get(t, FOCUS_BIAS.get(t, 0.0)) for t in tasks}, "focus_split_words": split_words,
            "focus_push_function_words": push_function_words,
            "focus_stopwords": FOCUS_STOPWORDS,
            "end_stopwords": END_STOPWORDS, "title_tasks": tuple(t for t in tasks if t in title_tasks),
            "minor_words": MINOR_WORDS, "spelling_words": words,
            "spelling_after_apostrophe": AFTER_APOSTROPHE if words else ()}
