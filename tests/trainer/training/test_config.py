import math
import re

import pytest
from udrl.trainer.errors import ConfigError
from udrl.trainer.training.config import MAX_LENGTH, MAX_VOCAB_SIZE, TrainConfig


@pytest.mark.parametrize("field, value, message", [
    ("lr", math.nan, "lr must be positive"),
    ("lr", math.inf, "lr must be positive"),
    ("lr", 0.0, "lr must be positive"),
    ("grad_clip", math.nan, "grad_clip non-negative"),
    ("weight_decay", -0.1, "weight_decay must be non-negative"),
    ("weight_decay", math.nan, "weight_decay must be non-negative"),
    ("min_lr_ratio", 1.5, "min_lr_ratio in [0, 1]"),
    ("min_lr_ratio", math.nan, "min_lr_ratio in [0, 1]"),
    ("dropout", 5.0, "dropout must be in [0, 1)"),
    ("dropout", math.nan, "dropout must be in [0, 1)"),
    ("val_fraction", math.nan, "val_fraction must be in [0, 1)"),
    ("replay", math.nan, "replay is a share of the records"),
    ("copy_adjusted", ["image", "image"], "copy_adjusted lists a task twice"),
    ("rank_matched", ["image", "image"], "rank_matched lists a task twice"),
    ("length_max", MAX_LENGTH + 1, f"length_max must be at most {MAX_LENGTH} words"),
    ("vocab_size", MAX_VOCAB_SIZE + 1, "vocab_size must be at most 1,048,576"),
    ("vocab_size", 0, "vocab_size must be at least 1"),
])
def test_a_value_outside_what_is_allowed_is_named_with_what_is(field, value, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        TrainConfig(data=["d.jsonl"], **{field: value}).validate()


def test_the_defaults_and_the_bounds_themselves_are_allowed():
    TrainConfig(data=["d.jsonl"]).validate()
    TrainConfig(data=["d.jsonl"], vocab_size=MAX_VOCAB_SIZE, length_max=MAX_LENGTH, dropout=0.0,
                min_lr_ratio=1.0, weight_decay=0.0, grad_clip=0.0).validate()
