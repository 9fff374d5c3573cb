import pytest
from udrl import CommandError, Manifest, count_words, make_command, render_prompt
from udrl.commands import reward_level


@pytest.fixture
def manifest():
    return Manifest.new(tasks=["image", "search", "headline", "tags"], length_range=(2, 30),
                        reward_edges=[0.3, 0.5, 0.7]).replace(default_length={"search": 4})


def test_defaults_are_the_task_default_length_and_the_highest_reward(manifest):
    assert make_command(manifest, "search") == make_command(manifest, "search", 4, 3)
    assert make_command(manifest, "image").length == 16  # middle of the range when no default


def test_unknown_task_lists_the_tasks(manifest):
    with pytest.raises(CommandError, match="unknown task 'video'.*image, search, headline, tags"):
        make_command(manifest, "video")


@pytest.mark.parametrize("length", [1, 31, 0, -3])
def test_length_outside_the_range_gives_the_range(manifest, length):
    with pytest.raises(CommandError, match="2 to 30 words"):
        make_command(manifest, "image", length=length)


@pytest.mark.parametrize("length", [2.5, "10", True])
def test_length_must_be_an_integer(manifest, length):
    with pytest.raises(CommandError, match="integer"):
        make_command(manifest, "image", length=length)


@pytest.mark.parametrize("reward", [-1, 4, 1.0])
def test_reward_outside_the_levels_is_refused(manifest, reward):
    with pytest.raises(CommandError, match="0 \\(lowest\\) to 3"):
        make_command(manifest, "image", reward=reward)


def test_prompt_is_control_tokens_query_and_separator(manifest):
    cmd = make_command(manifest, "tags", 5, 1)
    assert render_prompt(manifest, "  cafe \n logo ", cmd) == "<|task:tags|><|len:5|><|rew:1|> cafe logo<|sep|>"


def test_ablated_commands_do_not_reach_the_prompt(manifest):
    no_reward = manifest.replace(conditioning=("length",))
    cmd = make_command(no_reward, "image", 9, 2)
    assert render_prompt(no_reward, "q", cmd) == "<|task:image|><|len:9|> q<|sep|>"
    plain = manifest.replace(conditioning=())
    assert render_prompt(plain, "q", cmd) == "<|task:image|> q<|sep|>"


@pytest.mark.parametrize("query, message", [("", "empty"), ("   ", "empty"), ("a <|sep|> b", "reserved")])
def test_bad_queries_are_refused(manifest, query, message):
    with pytest.raises(CommandError, match=message):
        render_prompt(manifest, query, make_command(manifest, "image"))


def test_reward_levels_follow_the_edges(manifest):
    assert [reward_level(manifest, s) for s in (0.1, 0.3, 0.49, 0.5, 0.9)] == [0, 1, 1, 2, 3]


def test_words_are_whitespace_separated():
    assert count_words("neon city, night  rain\tmood") == 5
    assert count_words("") == 0
