import json

import pytest
from udrl.trainer.evaluate.quality import (
    EvalConfig,
    copy_matched,
    distinct_2,
    evaluate_quality,
    markdown,
    plan_requests,
    query_word_share,
)
from udrl.trainer.judge import Judge
from udrl.trainer.training.dataset import read_records, split_by_query

TASKS = ["image", "search", "headline", "tags"]


def test_distinct_2_counts_repeated_bigrams():
    assert distinct_2(["a b c", "d e"]) == 1.0
    assert distinct_2(["party party party party"]) == pytest.approx(1 / 3)
    assert distinct_2(["one"]) == 0.0


def test_query_word_share_counts_output_words_taken_from_the_request():
    assert query_word_share("Jazz night poster", "jazz, night, music, saxophone") == 0.5
    assert query_word_share("jazz night", "") == 0.0


def test_requests_use_only_held_out_queries(synthetic_data):
    config = EvalConfig(model="unused", data=[str(synthetic_data)], query_set="in-distribution", queries=5)
    requests = plan_requests(config, TASKS, (1, 16))
    train, _ = split_by_query(read_records([synthetic_data], TASKS, (1, 16)).records, 0.05)
    assert not {r.query for r in requests} & {r.query for r in train}
    assert len({r.query for r in requests}) == 5 and {r.task for r in requests} == set(TASKS)
    assert all(1 <= r.length <= 16 for r in requests)


def test_eval_scores_the_artifact_and_the_teacher_the_same_way(tiny_artifacts, synthetic_data, tmp_path):
    out = tmp_path / "eval.json"
    judge = Judge(threads=2)
    report = evaluate_quality(EvalConfig(model=str(tiny_artifacts["llama"]), data=[str(synthetic_data)], queries=2,
                                         lengths_per_task=2, out=str(out)), judge=judge)
    assert json.loads(out.read_text())["requests"] == report["requests"] == 2 * 4 * 2
    assert any(report["focus"].values())  # new models have query focus: the report also scores them without it
    for system in ("udrl", "udrl_focus_off", "teacher"):
        overall = report[system]["overall"]
        assert 0 <= overall["query_word_share"] <= 1
        assert -1 <= overall["relevance_mean"] <= 1 and 0 <= overall["format_valid"] <= 1
        assert set(report[system]["per_task"]) == set(TASKS) and overall["latency_p50_s"] > 0
    assert report["udrl"]["overall"]["length_within1"] >= 0.9  # the length guard is on
    assert report["ratios"]["teacher_latency_over_udrl"] > 0  # the ratio itself is a benchmark figure, not a test
    assert report["teacher_model"]["n_params"] > 200e6  # Gemma 3 270M
    assert report["ratios"]["teacher_over_udrl_parameters"] == report["teacher_model"]["n_params"] / report["n_params"]
    assert all(f"| {s} | all |" in markdown(report) for s in ("udrl", "udrl_focus_off", "teacher"))
    for system in ("udrl", "teacher"):  # every output falls in one share bin
        for part in report[system]["per_task"].values():
            assert sum(b["n"] for b in part["relevance_by_share"]) == part["n"]
    assert set(report["ratios"]["copy_matched_per_task"]) == set(TASKS)
    assert "At the teacher's copying" in markdown(report)
    # The ratio over the requests the teacher answered leaves out those whose output it rejected.
    answered = [row for row in report["outputs"] if row["teacher"]]
    assert sum(report["teacher_answered"].values()) == len(answered)
    for task, ratio in report["ratios"]["relevance_teacher_answered_per_task"].items():
        rows = [row for row in answered if row["task"] == task]
        mine = judge.relevance([r["query"] for r in rows], [r["udrl"] or " " for r in rows])
        teachers = judge.relevance([r["query"] for r in rows], [r["teacher"] for r in rows])
        assert ratio == pytest.approx(mine.mean() / teachers.mean(), rel=1e-4)
        # each output carries the relevance the figures were made from
        assert [r["udrl_relevance"] for r in rows] == pytest.approx(list(mine), abs=1e-5)
        assert [r["teacher_relevance"] for r in rows] == pytest.approx(list(teachers), abs=1e-5)
    assert "Over the requests the teacher answered" in markdown(report)


def test_relevance_at_equal_copying_reweights_the_model_by_the_teachers_share_bins():
    def bins(*cells):  # (n, mean) per share bin 0-0.2, 0.2-0.4, ... 0.8-1
        return {"relevance_by_share": [{"n": n, "mean": m} for n, m in cells]}

    # the model copies more (most outputs in the top bin, where relevance is high); at the teacher's
    # copying it scores its low-bin relevance for the teacher's mostly low-bin outputs
    model = bins((1, 0.30), (0, None), (0, None), (0, None), (9, 0.80))
    teacher = bins((8, 0.35), (0, None), (0, None), (0, None), (2, 0.75))
    assert copy_matched(model, teacher) == pytest.approx((8 * 0.30 + 2 * 0.80) / 10)
    # a bin the model never reaches is left out, the rest renormalised
    assert copy_matched(bins((0, None), (4, 0.5), (0, None), (0, None), (1, 0.9)),
                        bins((5, 0.2), (5, 0.4), (0, None), (0, None), (0, None))) == pytest.approx(0.5)
    assert copy_matched(bins((1, 0.5), *[(0, None)] * 4), bins((0, None), (3, 0.5), *[(0, None)] * 3)) is None


def _finetune_data(tiny_finetuned) -> list[str]:
    return json.loads((tiny_finetuned["run"] / "train_config.json").read_text())["data"]


def test_a_fine_tuned_model_is_evaluated_with_its_task_file_beside_the_model_before(tiny_finetuned, tiny_artifacts):
    from udrl.trainer.taskfile import TASKS

    config = EvalConfig(model=str(tiny_finetuned["llama"]), data=_finetune_data(tiny_finetuned), queries=2,
                        lengths_per_task=2, teacher=False, second_judge=False, tasks=["alt_text", "tags"],
                        task_files=["data/tasks/alt_text.toml"], before=str(tiny_artifacts["llama"]))
    report = evaluate_quality(config, judge=Judge(threads=2))
    assert set(report["udrl"]["per_task"]) == {"alt_text", "tags"}
    assert set(report["before"]["per_task"]) == {"tags"}  # the model before had no alt_text
    ratio = report["after_over_before"]["relevance_per_task"]
    assert set(ratio) == {"tags"}
    assert ratio["tags"] == pytest.approx(report["udrl"]["per_task"]["tags"]["relevance_mean"]
                                          / report["before"]["per_task"]["tags"]["relevance_mean"])
    rows = report["outputs"]
    assert all(("before" in row) == (row["task"] == "tags") for row in rows) and len(rows) == 2 * 2 * 2
    assert "| before | tags |" in markdown(report) and "Relevance after / before" in markdown(report)
    assert "alt_text" not in TASKS  # known for the evaluation only: nothing left behind in the process


def test_eval_refuses_a_task_the_model_lacks_or_one_without_its_task_file(tiny_finetuned, monkeypatch):
    from udrl.trainer import taskfile
    from udrl.trainer.errors import ConfigError

    base = dict(model=str(tiny_finetuned["llama"]), data=_finetune_data(tiny_finetuned), queries=1,
                teacher=False, second_judge=False)
    with pytest.raises(ConfigError, match="no task 'poem'.*alt_text"):
        evaluate_quality(EvalConfig(**base, tasks=["poem"]))
    monkeypatch.setattr(taskfile, "TASKS", taskfile.TaskRegistry())  # the shipped four only
    with pytest.raises(ConfigError, match="no task file for 'alt_text'.*--task-file"):
        evaluate_quality(EvalConfig(**base))
