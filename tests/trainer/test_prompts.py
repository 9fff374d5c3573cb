import pytest
from udrl.trainer.formats import is_valid_format
from udrl.trainer.prompts import (
    LENGTH_SPREAD,
    build_prompt,
    build_query_prompt,
    clean_output,
    clean_query,
    split_query_list,
)
from udrl.trainer.taskfile import TASKS


@pytest.mark.parametrize("task", list(LENGTH_SPREAD))
def test_prompt_asks_for_the_length_and_states_true_counts_in_its_examples(task):
    prompt = build_prompt(task, "poster for a bike repair shop", 7)
    assert prompt.endswith("Request: poster for a bike repair shop\n" + prompt.splitlines()[-1])
    assert prompt.splitlines()[-1].endswith("(7 words):")
    for line in prompt.splitlines()[2:-2]:
        if "words):" in line:
            n = int(line.split("(")[1].split()[0])
            assert len(line.split("):", 1)[1].split()) == n
    for _, output in TASKS[task].examples:
        assert is_valid_format(task, output)


@pytest.mark.parametrize(
    "task, raw, expected",
    [
        ("image", " red bike on a blue wall, sunny\nRequest: next", "red bike on a blue wall, sunny"),
        ("image", 'Prompt (5 words): "red bike, blue wall"', "red bike, blue wall"),
        ("image", "bike shop<start_of_image><start_of_image>", "bike shop"),
        ("tags", " bike, repair, Bike, shop, , tools.", "bike, repair, shop, tools"),
        ("search", " bike repair shop.", "bike repair shop"),
        ("headline", " Fix Your Ride Today.", "Fix Your Ride Today"),
    ],
)
def test_cleaning_keeps_one_clean_line(task, raw, expected):
    assert clean_output(task, raw, "poster for a bike repair shop") == (expected, "")


@pytest.mark.parametrize(
    "raw, reason",
    [("", "empty"), ("   \n", "empty"), ("<start_of_image>", "empty"), (" 12 34", "empty"),
     ("poster for a bike repair shop", "echoes the query"),
     ("a poster for a bike repair shop!", "echoes the query")],
)
def test_cleaning_rejects_empty_and_echoed_outputs(raw, reason):
    assert clean_output("image", raw, "poster for a bike repair shop") == (None, reason)


def test_query_cleaning_and_list_splitting():
    completion = " neon sign for a late night ramen bar\n- 42\n- logo\n- flyer for a yoga retreat in bali"
    items = split_query_list(completion)
    assert [clean_query(i) for i in items] == ["neon sign for a late night ramen bar", None, None,
                                               "flyer for a yoga retreat in bali"]
    assert build_query_prompt("ramen bar").endswith("Topic: ramen bar\n-")


@pytest.mark.parametrize("task", list(LENGTH_SPREAD))
def test_an_output_cut_after_a_word_that_leaves_it_unfinished_is_not_well_formed(task):
    assert not is_valid_format(task, "summer jazz festival at the")
    assert not is_valid_format(task, "bright colors, soft light and")
    assert not is_valid_format(task, "tickets for (and")
    assert is_valid_format(task, "jazz, summer festival, sea" if task == "tags" else "summer jazz festival by the sea")

