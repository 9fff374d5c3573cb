import dataclasses
import shutil

import pytest
from udrl.errors import ManifestError, UdrlError
from udrl.manifest import load_manifest
from udrl.trainer.evaluate.focus import FocusConfig, choose, markdown, refine, tune_focus
from udrl.trainer.judge import Judge


def row(share: float, valid: float) -> dict:
    return {"query_word_share": share, "format_valid": valid, "relevance_mean": share}


def test_the_largest_bonus_that_copies_no_more_than_the_teacher_and_stays_well_formed_wins():
    teacher = row(0.6, 1.0)
    rows = {0.0: row(0.3, 0.9), 2.0: row(0.5, 0.9), 4.0: row(0.59, 0.95), 6.0: row(0.7, 0.95)}
    assert choose(rows, teacher) == 4.0
    rows[4.0] = row(0.59, 0.8)  # fewer well-formed outputs than with focus off
    assert choose(rows, teacher) == 2.0
    # a model that already copies more than the teacher gets no bonus that copies more still
    assert choose({0.0: row(0.7, 1.0), 2.0: row(0.8, 1.0)}, teacher) == 0.0
    # but one that copies no more than it does without focus (function words pushed down) qualifies
    assert choose({0.0: row(0.7, 1.0), 2.0: row(0.65, 1.0), 3.0: row(0.71, 1.0)}, teacher) == 2.0


def test_a_bonus_as_well_formed_as_a_less_well_formed_teacher_still_qualifies():
    # Focus off writes 651 of 657 well-formed, the teacher 647: the floor is the teacher's, less the
    # half-point slack (3.3 outputs), so a bonus at 650 or 644 qualifies and one at 643 does not.
    teacher = row(0.93, 647 / 657)
    rows = {0.0: row(0.45, 651 / 657), 4.0: row(0.77, 650 / 657), 8.0: row(0.89, 644 / 657), 10.0: row(0.91, 643 / 657)}
    assert choose(rows, teacher) == 8.0
    # Where the teacher is the better-formed, focus off is the floor: 648 qualifies, 644 does not.
    rows[4.0] = row(0.77, 648 / 657)
    assert choose(rows, row(0.93, 1.0)) == 4.0


def test_one_or_two_outputs_fewer_well_formed_than_focus_off_do_not_rule_a_bonus_out():
    # Candidate 3's headlines: 656 of 657 well-formed with focus off, 655 at bonuses 1 and 2; the
    # teacher writes all 657. Without the slack every bonus from 1 up was ruled out.
    teacher = row(0.595, 1.0)
    rows = {0.0: row(0.434, 656 / 657), 1.0: row(0.522, 655 / 657), 2.0: row(0.607, 655 / 657)}
    assert choose(rows, teacher) == 1.0
    assert choose(rows, teacher, slack=0.0) == 0.0
    # the slack still stops a bonus that breaks formats (tags at bonus 10: 94.5%)
    rows[1.0] = row(0.522, 0.945)
    assert choose(rows, teacher) == 0.0


def test_refining_bisects_the_step_above_the_grid_choice_and_keeps_the_rule():
    teacher = row(0.55, 1.0)
    tried = []

    def run(bonus: float) -> dict:  # share grows with the bonus; format drops past 2.7
        tried.append(bonus)
        return row(0.3 + 0.1 * bonus, 1.0 if bonus < 2.7 else 0.9)

    rows = {b: run(b) for b in (0.0, 1.0, 2.0, 3.0)}
    tried.clear()
    assert refine(rows, teacher, run, rounds=3) == 2.5
    assert tried == [2.5, 2.75, 2.625] and set(rows) == {0.0, 1.0, 2.0, 3.0, 2.5, 2.75, 2.625}
    # the refined choice is the grid rule applied to everything tried
    assert choose(rows, teacher) == 2.5
    teacher = row(0.62, 1.0)  # share fits up to 3.2, but format drops past 2.7
    rows = {b: run(b) for b in (0.0, 1.0, 2.0, 3.0)}
    assert refine(rows, teacher, run, rounds=4) == 2.6875
    # nothing above the grid's choice: nothing to refine, no runs
    tried.clear()
    assert refine({0.0: row(0.3, 1.0), 1.0: row(0.4, 1.0)}, teacher, run, rounds=3) == 1.0 and not tried
    assert refine({0.0: row(0.7, 1.0), 1.0: row(0.8, 1.0)}, teacher, run, rounds=0) == 0.0


def test_focus_runs_the_grid_beside_the_teacher_and_writes_the_choice(tiny_artifacts, synthetic_data, tmp_path):
    checkpoint = tmp_path / "model"
    shutil.copytree(tiny_artifacts["torch"], checkpoint)
    config = FocusConfig(model=str(tiny_artifacts["llama"]), data=[str(synthetic_data)], first_query=2, queries=2,
                         grid=(0.0, 50.0), write=str(checkpoint), out=str(tmp_path / "focus.json"))
    report = tune_focus(config, judge=Judge(threads=2))
    assert report["queries"] == [2, 4] and report["grid"] == [0.0, 50.0]
    assert report["query_set"] == "handwritten-tune"  # by default on the tuning half, never the evaluation half
    tasks = ("image", "search", "headline", "tags")
    assert set(report["chosen"]) == set(tasks) and all(0.0 <= b <= 50.0 for b in report["chosen"].values())
    for task in tasks:  # the choice follows the rule on the figures the report shows, refinements included
        at = {b: report["model_at"][str(b)][task] for b in report["grid"]}
        refined = report["refined"][task]
        assert len(refined) in (0, 3) and all(0.0 < float(b) < 50.0 for b in refined)
        at.update({float(b): s for b, s in refined.items()})
        assert report["chosen"][task] == choose(at, report["teacher"][task])
    # a random-weight model copies more of the request when focused
    assert sum(report["model_at"]["50.0"][t]["query_word_share"] for t in tasks) > \
        sum(report["model_at"]["0.0"][t]["query_word_share"] for t in tasks)
    assert dict(load_manifest(checkpoint).focus_bias) == report["chosen"]
    assert "| tags |" in markdown(report) and (tmp_path / "focus.json").exists()

    # the same requests again: the teacher's figures come from the report, not from a second teacher run
    again = tune_focus(dataclasses.replace(config, write=None, out=None, grid=(0.0,), refine=0,
                                           teacher_from=str(tmp_path / "focus.json")), judge=Judge(threads=2))
    assert again["teacher"] == report["teacher"] and again["teacher_model"] == report["teacher_model"]
    assert again["requests_sha256"] == report["requests_sha256"] and again["teacher_from"] == str(tmp_path / "focus.json")
    assert again["model_at"]["0.0"] == report["model_at"]["0.0"]
    # other requests: refused before the run, naming what differs
    with pytest.raises(UdrlError, match=r"its teacher answered other requests .* queries \[2, 4\]\) than this run"):
        tune_focus(dataclasses.replace(config, write=None, out=None, queries=1, teacher_from=str(tmp_path / "focus.json")))
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(UdrlError, match="not a readable focus report"):
        tune_focus(dataclasses.replace(config, write=None, out=None, teacher_from=str(tmp_path / "broken.json")))


def test_a_checkpoint_without_manifest_is_refused_before_the_run(tiny_artifacts, synthetic_data, tmp_path):
    with pytest.raises(ManifestError, match="no udrl manifest"):
        tune_focus(FocusConfig(model=str(tiny_artifacts["llama"]), data=[str(synthetic_data)], write=str(tmp_path)))
    with pytest.raises(UdrlError, match="the evaluation half is looked at by no choice"):
        tune_focus(FocusConfig(model=str(tiny_artifacts["llama"]), data=[str(synthetic_data)], query_set="handwritten"))
    from udrl.artifacts import read_manifest
    from udrl.manifest import save_manifest
    other_rule = read_manifest(tiny_artifacts["llama"])
    save_manifest(other_rule.replace(focus_split_words=not other_rule.focus_split_words), tmp_path)
    with pytest.raises(UdrlError, match="focus split_words .* the bonus is chosen under the model's rule"):
        tune_focus(FocusConfig(model=str(tiny_artifacts["llama"]), data=[str(synthetic_data)], write=str(tmp_path)))
    with pytest.raises(UdrlError, match="refine is a number of halvings, 0 or more; got -1"):
        tune_focus(FocusConfig(model=str(tiny_artifacts["llama"]), data=[str(synthetic_data)], refine=-1))


def test_focus_tunes_a_new_task_alone_and_the_old_ones_keep_their_bonus(tiny_finetuned, tmp_path):
    import json

    from udrl.trainer.taskfile import TASKS

    checkpoint = tmp_path / "model"
    shutil.copytree(tiny_finetuned["run"] / "model", checkpoint)
    before = dict(load_manifest(checkpoint).focus_bias)
    data = json.loads((tiny_finetuned["run"] / "train_config.json").read_text())["data"]
    report = tune_focus(FocusConfig(model=str(tiny_finetuned["llama"]), data=data, queries=1, grid=(0.0, 50.0),
                                    refine=0, write=str(checkpoint), tasks=["alt_text"],
                                    task_files=["data/tasks/alt_text.toml"]), judge=Judge(threads=2))
    assert set(report["chosen"]) == set(report["teacher"]) == {"alt_text"}
    after = dict(load_manifest(checkpoint).focus_bias)
    assert after == {**before, "alt_text": report["chosen"]["alt_text"]}
    assert "alt_text" not in TASKS  # known for the tuning only


def test_a_bonus_per_length_is_chosen_beside_the_teachers_answers_at_that_length(tiny_artifacts, synthetic_data,
                                                                                 tmp_path):
    import udrl

    checkpoint = tmp_path / "model"
    shutil.copytree(tiny_artifacts["torch"], checkpoint)
    config = FocusConfig(model=str(tiny_artifacts["llama"]), data=[str(synthetic_data)], queries=2,
                         grid=(0.0, 50.0), refine=1, tasks=["headline", "tags"], per_length=True,
                         write=str(checkpoint), out=str(tmp_path / "focus.json"))
    report = tune_focus(config, judge=Judge(threads=2))
    assert report["per_length"] and set(report["chosen"]) == {"headline", "tags"}
    for task, points in report["chosen"].items():
        lengths = [n for n, _ in points]
        assert lengths == sorted(int(n) for n in report["teacher_by_length"][task]) and len(lengths) > 1
        for n, bonus in points:  # each length's choice follows the rule beside the teacher at that length
            at = {b: report["model_at_length"][str(b)][task][str(n)] for b in report["grid"]}
            at.update({float(b): s for b, s in report["refined"][task][str(n)].items()})
            assert bonus == choose(at, report["teacher_by_length"][task][str(n)])
    written = load_manifest(checkpoint)
    assert written.focus_bias["headline"] == tuple(tuple(p) for p in report["chosen"]["headline"])
    assert written.focus_bias["image"] == load_manifest(tiny_artifacts["torch"]).focus_bias["image"]  # not tuned
    assert "Chosen per requested length" in markdown(report) and "| headline | " in markdown(report)
    # the SDK reads the bonus for the length asked: no focus given is the manifest's at that length
    (n, bonus), *_ = report["chosen"]["tags"]
    with udrl.load(checkpoint) as model:
        assert model.generate("poster for a jazz night", task="tags", length=n).text == \
            model.generate("poster for a jazz night", task="tags", length=n, focus=bonus).text

    # a report with the teacher's figures per length serves a later run; one without them cannot
    again = tune_focus(dataclasses.replace(config, write=None, out=None, grid=(0.0,), refine=0,
                                           teacher_from=str(tmp_path / "focus.json")), judge=Judge(threads=2))
    assert again["teacher_by_length"] == report["teacher_by_length"]
    per_task = tmp_path / "per-task.json"
    tune_focus(dataclasses.replace(config, write=None, out=str(per_task), grid=(0.0,), refine=0, per_length=False,
                                   teacher_from=str(tmp_path / "focus.json")), judge=Judge(threads=2))
    import json

    bare = json.loads(per_task.read_text())
    bare.pop("teacher_by_length")
    per_task.write_text(json.dumps(bare))
    with pytest.raises(UdrlError, match="a bonus per length needs them per length; run the teacher instead"):
        tune_focus(dataclasses.replace(config, write=None, out=None, teacher_from=str(per_task)))
