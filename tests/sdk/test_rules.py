"""udrl/rules.py: the decoding rules against the shared vectors (tests/data/decoding-vectors.json),
which native/test_rules.c runs through the C layer's rules too."""

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from udrl import rules
from udrl.backends import open_backend
from udrl.model import default_model_path

sys.path.insert(0, str(Path(__file__).parent))
from decoding_vectors import CASES, VECTORS, apply_case, case_inputs, expected, focus_vectors  # noqa: E402


@pytest.fixture(scope="module")
def backend():
    b = open_backend(default_model_path(), backend="llama")
    yield b
    b.close()


@pytest.fixture(scope="module")
def vectors() -> dict:
    return json.loads(VECTORS.read_text(encoding="utf-8"))


def test_the_vectors_are_of_the_bundled_model_and_hold_every_case(vectors, backend):
    digest = hashlib.sha256(default_model_path().read_bytes()).hexdigest()
    assert vectors["model_sha256"] == digest, "the bundled model changed: run tests/sdk/decoding_vectors.py"
    assert [c["name"] for c in vectors["cases"]] == [c[0] for c in CASES]
    for committed, case in zip(vectors["cases"], CASES):
        assert {k: v for k, v in committed.items() if k != "expect"} == case_inputs(backend, case)


def test_focus_bias_reading_and_validation_match_the_vectors(vectors):
    # focus_vectors computes with udrl.manifest's focus_at and validation; the C test reads the same.
    assert {k: vectors[k] for k in ("focus_lengths", "focus_at", "invalid_focus_bias")} == focus_vectors()
    # held flat before the first point and after the last, on the line between, exact at each point
    assert [n for _, _, n in vectors["focus_at"]] == [2.875, 0.0, 1.25, 1.25, 2.375, 3.5, 4.375, 5.25, 5.25, 2.0, 2.0,
                                                       pytest.approx(0.46), pytest.approx(0.1 + 9.8 * 16 / 31)]


def test_the_python_rules_leave_the_logits_the_vectors_state(vectors, backend):
    for case in vectors["cases"]:
        assert expected(backend, case) == case["expect"], case["name"]


@pytest.mark.parametrize("rule", rules.RULES, ids=lambda r: r.__name__)
def test_each_rule_changes_some_case_so_changing_it_fails(vectors, backend, rule):
    without = tuple(r for r in rules.RULES if r is not rule)
    changed = [c["name"] for c in vectors["cases"] if expected(backend, c, without) != c["expect"]]
    assert changed, f"no case of the vectors depends on {rule.__name__}"


def test_rules_edit_a_copy_and_keep_the_dtype(backend):
    case = case_inputs(backend, CASES[0])
    out = apply_case(backend, case, tuple(r for r in rules.RULES if r is not rules.whole_words))
    assert out.dtype == np.float32 and np.isfinite(out).sum() == len(out) - 1  # the early end's ban only
    spelt = apply_case(backend, case)  # whole words also bans the tokens that spell nothing
    assert spelt.dtype == np.float32 and 0 < np.isneginf(spelt).sum() < len(spelt) // 4
    logits = np.zeros(len(out), dtype=np.float32)
    state = rules.DecodeState(rules.vocabulary(backend, len(logits)), length=4)
    assert np.isneginf(rules.apply_rules(logits, state)[backend.manifest.eos_id])
    assert not logits.any()  # the caller's logits are left as they were
