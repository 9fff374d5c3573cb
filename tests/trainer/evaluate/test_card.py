import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from udrl.errors import UdrlError
from udrl.trainer.evaluate.card import RECIPE_DIR, CardConfig, build_card, bundled_name, recipe_of, targets
from udrl.trainer.evaluate.quality import EvalConfig, evaluate_quality
from udrl.trainer.judge import Judge


@pytest.fixture(scope="module")
def reports(tiny_artifacts, synthetic_data, tmp_path_factory):
    """A real evaluation beside the teacher and a guard-off evaluation of the same tiny artifact."""
    base = tmp_path_factory.mktemp("card")
    judge = Judge(threads=2)
    common = dict(model=str(tiny_artifacts["llama"]), data=[str(synthetic_data)], queries=2, lengths_per_task=1,
                  second_judge=False)
    evaluate_quality(EvalConfig(**common, out=str(base / "eval.json")), judge=judge)
    evaluate_quality(EvalConfig(**common, teacher=False, length_guard=False, out=str(base / "abl.json")), judge=judge)
    return base


def test_card_reports_every_target_and_section(reports, tiny_run, tmp_path):
    export_report = tmp_path / "export.json"
    export_report.write_text(json.dumps([{"path": "m.gguf", "format": "gguf", "quant": "f32", "size_bytes": 2_000_000,
                                          "checkpoint_bytes": 2_000_000, "checks": {"greedy agreement": "100%"}}]))
    card = build_card(CardConfig(eval=str(reports / "eval.json"), out=str(tmp_path / "card"),
                                 ablation={"udrl": str(reports / "abl.json")}, runs={"udrl": str(tiny_run)},
                                 exports=[str(export_report)], data_card="data/udrl-gemma.card.json"))
    text = card.read_text()
    for section in ("## Targets", "## Evaluation against the teacher", "## Ablation", "## Data",
                    "## Training recipe", "## Artifacts", "## Reproduce"):
        assert section in text
    assert (tmp_path / "card" / "card-eval.png").stat().st_size > 0
    assert (tmp_path / "card" / "card-loss.png").stat().st_size > 0
    report = json.loads((reports / "eval.json").read_text())
    rows = targets(report)
    # per task: relevance, copying and degenerate outputs (no second judge here); then length, parameters, latency
    assert len(rows) == 3 * len(report["udrl"]["per_task"]) + 3
    names = [name for name, *_ in rows]
    assert "length within ±1 word ≥ 95%" in names and "≥ 10× lower latency per request" in names
    for task, s in report["udrl"]["per_task"].items():
        copy_row = next(row for row in rows if row[0].startswith("copies") and row[0].endswith(task))
        assert copy_row[3] == (s["query_word_share"] <= report["teacher"]["per_task"][task]["query_word_share"] + 0.05)
    # a tiny model trained 200 steps on synthetic data cannot match the teacher: the card must say so
    assert any(not ok for *_, ok in rows) and "**missed**" in text and "## Gaps and next steps" in text
    assert "task + achieved length + reward level" in text  # the variant named from its run's conditioning
    # the tiny model has query focus: the card says what it adds and shows the ablation without it
    off = report["udrl_focus_off"]["overall"]["relevance_mean"]
    assert f"With it off (`focus=0`) the same model scores relevance {off:.3f}" in text
    assert "| udrl_focus_off | all |" in text and "length guard and query focus **off**" in text
    ablation = json.loads((reports / "abl.json").read_text())["udrl_focus_off"]["overall"]
    assert f"| {ablation['relevance_mean']:.3f} | {ablation['length_within1']:.1%} |" in text


def test_card_names_the_file_the_package_ships_the_evaluated_model_as(reports, tmp_path):
    evaluated = json.loads((reports / "eval.json").read_text())["model"]
    out = tmp_path / "models"
    out.mkdir()
    (out / "other-q8_0.gguf").write_bytes(b"GGUF" + bytes(len(Path(evaluated).read_bytes()) - 4))  # same size only
    assert bundled_name(evaluated, out) == Path(evaluated).name  # nothing there holds its bytes
    shutil.copyfile(evaluated, out / "udrl-mini-q8_0.gguf")
    assert bundled_name(evaluated, out) == "udrl-mini-q8_0.gguf"
    text = build_card(CardConfig(eval=str(reports / "eval.json"), out=str(out))).read_text()
    assert "ships inside the `udrl-edge` package as `udrl-mini-q8_0.gguf`" in text


def test_card_refuses_an_eval_without_teacher(reports, tmp_path):
    with pytest.raises(UdrlError, match="no teacher figures"):
        build_card(CardConfig(eval=str(reports / "abl.json"), out=str(tmp_path)))


def test_card_cli_checks_name_path_pairs(reports, tmp_path):
    out = subprocess.run([sys.executable, "-m", "udrl", "card", "--eval", str(reports / "eval.json"),
                          "--ablation", "no-equals-sign", "--out", str(tmp_path)], capture_output=True, text=True)
    assert out.returncode == 1 and "--ablation takes NAME=PATH" in out.stderr


def test_card_says_when_the_ablation_ran_an_earlier_recipe_or_dataset_than_the_shipped_model(reports, tiny_run, tmp_path):
    older = tmp_path / "older-run"
    shutil.copytree(tiny_run / "model", older / "model")
    config = json.loads((tiny_run / "train_config.json").read_text())
    (older / "train_config.json").write_text(json.dumps({**config, "max_steps": config["max_steps"] // 2}))
    (older / "metrics.jsonl").write_text((tiny_run / "metrics.jsonl").read_text())
    manifest = json.loads((tiny_run / "model" / "udrl.json").read_text())
    manifest.pop("output_prefix")
    shipped_data = manifest["data_hash"]
    manifest["data_hash"] = "sha256:" + "0" * 64  # the committed dataset has grown since
    (older / "model" / "udrl.json").write_text(json.dumps(manifest))

    card = build_card(CardConfig(eval=str(reports / "eval.json"), out=str(tmp_path / "card"),
                                 ablation={"udrl": str(reports / "abl.json")}, runs={"udrl": str(older)},
                                 shipped_run=str(tiny_run))).read_text()
    assert "earlier recipe or dataset than the shipped model" in card
    assert f"training data sha256:000000000000 (shipped {shipped_data[:19]})" in card
    assert f"max_steps {config['max_steps'] // 2} (shipped {config['max_steps']})" in card
    assert "prompt output_prefix '' (shipped ' ')" in card
    assert f"| max_steps | {config['max_steps']} |" in card  # the recipe shown is the shipped run's

    same = build_card(CardConfig(eval=str(reports / "eval.json"), out=str(tmp_path / "card2"),
                                 ablation={"udrl": str(reports / "abl.json")}, runs={"udrl": str(tiny_run)},
                                 shipped_run=str(tiny_run))).read_text()
    assert "earlier recipe" not in same


def test_card_shows_how_the_query_focus_bonus_was_chosen(reports, tmp_path):
    figures = lambda share, valid, rel: {"query_word_share": share, "format_valid": valid, "relevance_mean": rel}  # noqa: E731
    focus = {"model": "m.gguf", "requests": 24, "queries": [100, 102], "grid": [0.0, 4.0],
             "chosen": {"tags": 4.0, "image": 0.0},
             "teacher": {"tags": figures(0.9, 1.0, 0.8), "image": figures(0.2, 0.9, 0.5)},
             "model_at": {"0.0": {"tags": figures(0.6, 0.9, 0.5), "image": figures(0.3, 1.0, 0.4)},
                          "4.0": {"tags": figures(0.85, 0.95, 0.7), "image": figures(0.4, 1.0, 0.6)}}}
    (tmp_path / "focus.json").write_text(json.dumps(focus))
    text = build_card(CardConfig(eval=str(reports / "eval.json"), out=str(tmp_path / "card"),
                                 focus=str(tmp_path / "focus.json"))).read_text()
    assert "## Query focus: how the bonus was chosen" in text
    assert "| tags | 0.900 (100%) | 0.600 (90%) rel 0.500 | 0.850 (95%) rel 0.700 | **4** |" in text
    assert "held-out queries 100 to 101" in text
    assert "it writes no fewer well-formed outputs than with focus off" in text  # a report from before the slack
    (tmp_path / "focus.json").write_text(json.dumps({**focus, "format_slack": 0.005}))
    text = build_card(CardConfig(eval=str(reports / "eval.json"), out=str(tmp_path / "card"),
                                 focus=str(tmp_path / "focus.json"))).read_text()
    assert "its share of well-formed outputs is at most 0.5 percentage point under focus off's" in text


def test_card_shows_both_stages_of_a_two_stage_run(reports, tiny_run, tiny_second_stage, tmp_path):
    text = build_card(CardConfig(eval=str(reports / "eval.json"), out=str(tmp_path / "card"),
                                 ablation={"udrl": str(reports / "abl.json")}, runs={"udrl": str(tiny_run)},
                                 shipped_run=str(tiny_second_stage))).read_text()
    # the tiny test stages ran none of the committed recipes, and the card does not pretend they did
    assert "in 2 stages (stage 1 (no committed recipe), then stage 2 (no committed recipe))" in text
    assert "train this model (2 stages) and the ablation variants" in text
    assert "| option | stage 1 | stage 2 |" in text and "| max_steps | 300 | 40 |" in text
    assert "| data | synthetic.jsonl | synthetic.jsonl |" in text
    # the second stage trained with the first stage's tokenizer, whatever its config's default vocab_size
    vocab = json.loads((tiny_run / "model" / "udrl.json").read_text())["model"]["vocab_size"]
    assert f"| vocab_size | {vocab} | {vocab} |" in text
    assert re.search(r"the shipped run took \d+ \+ \d+ min", text)
    # the one-stage ablation run is not the shipped recipe, and the card says how
    # (its one stage is the shipped run's first stage, so the stage count is the only difference)
    assert "than the shipped model's (below), so their rows compare with each other, not with the shipped model: " \
        "training stages 1 (shipped 2)." in text
    assert (tmp_path / "card" / "card-loss.png").stat().st_size > 0


def test_a_stage_is_named_by_the_committed_recipe_whose_options_it_ran(tmp_path):
    for name in ("mini.json", "mini-stage2.json", "mini-stage3.json", "mini-round2.json", "mini-finetune.json"):
        recipe = json.loads((RECIPE_DIR / name).read_text())
        # a run's resolved config: every option, the recipe's among them; more threads than the recipe's
        ran = {**recipe, "init": "runs/x/model", "out_dir": "runs/y", "threads": 2, "grad_clip": 1.0}
        assert recipe_of(ran) == f"trainer/recipes/{name}"
        assert recipe_of({**ran, "lr": recipe["lr"] / 3}) is None
    (tmp_path / "a.json").write_text(json.dumps({"lr": 0.1, "max_steps": 5}))
    (tmp_path / "broken.json").write_text("{not json")
    assert recipe_of({"lr": 0.1, "max_steps": 5, "seed": 1}, tmp_path) == "trainer/recipes/a.json"
    assert recipe_of({"lr": 0.1}, tmp_path) is None  # the recipe sets max_steps too


def test_card_front_matter_is_yaml_the_hub_reads(reports, tmp_path):
    import yaml

    card = build_card(CardConfig(eval=str(reports / "eval.json"), out=str(tmp_path / "card")))
    text = card.read_text()
    assert text.startswith("---\n")
    meta = yaml.safe_load(text.split("---\n")[1])
    assert meta["license"] == "gemma" and meta["license_link"] == "https://ai.google.dev/gemma/terms"
    assert meta["library_name"] and meta["pipeline_tag"] == "text-generation" and "gguf" in meta["tags"]
    assert meta["datasets"] == ["udrl-gemma"]
    report = json.loads((reports / "eval.json").read_text())
    results = meta["model-index"][0]["results"]
    assert [r["task"]["name"].split()[0] for r in results] == list(report["udrl"]["per_task"])
    first = results[0]["metrics"][0]
    task = next(iter(report["udrl"]["per_task"]))
    assert first["value"] == round(report["udrl"]["per_task"][task]["relevance_mean"], 4)
    assert text.split("---\n", 2)[2].lstrip().startswith("# ")


def test_targets_hold_every_task_to_both_judges_the_teachers_copying_and_few_degenerate_outputs():
    def system(relevance, mpnet, copied, degenerate):
        task = {"relevance_mean": relevance, "relevance_mpnet_mean": mpnet, "query_word_share": copied,
                "degenerate": degenerate}
        return {"per_task": {"headline": task}, "overall": {"length_within1": 0.97, "latency_p50_s": 0.01}}

    report = {"udrl": system(0.50, 0.40, 0.56, 0.04), "teacher": system(0.50, 0.50, 0.50, 0.01),
              "ratios": {"relevance_per_task": {"headline": 1.0}, "relevance_mpnet_per_task": {"headline": 0.8},
                         "teacher_latency_over_udrl": 9.0}}
    met = {name: ok for name, _, _, ok in targets(report)}
    assert met["relevance ≥ 0.95× teacher, headline (MiniLM)"]
    assert not met["relevance ≥ 0.95× teacher, headline (mpnet, reports only)"]  # one judge is not enough
    assert not met["copies ≤ teacher + 0.05 of its words from the request, headline"]  # 0.56 > 0.50 + 0.05
    assert met["degenerate outputs ≤ 5%, headline"]
    assert met["length within ±1 word ≥ 95%"] and not met["≥ 10× lower latency per request"]


def test_card_recipe_table_shows_a_copy_adjusted_stage_and_its_replay(reports, tiny_second_stage, tmp_path):
    # and its rank-matched tasks; options no stage set (the first stage's blanks) leave no row
    run = tmp_path / "stage2"
    shutil.copytree(tiny_second_stage, run)
    config = json.loads((run / "train_config.json").read_text())
    (run / "train_config.json").write_text(json.dumps({**config, "copy_adjusted": ["image", "tags"],
                                                               "rank_matched": ["image"], "replay": 0.58}))
    text = build_card(CardConfig(eval=str(reports / "eval.json"), out=str(tmp_path / "card"),
                                 shipped_run=str(run))).read_text()
    assert "| copy_adjusted |  | image, tags |" in text
    assert "| replay |  | 0.58 |" in text
    assert "| rank_matched |  | image |" in text
