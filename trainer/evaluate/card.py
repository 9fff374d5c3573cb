"""`udrl card`: the shipped model's card (markdown + plots) from what `make model` measured.

The card is assembled only from files the pipeline wrote — the evaluation of the shipped artifact
beside the teacher, the ablation evaluations, the training runs and the export reports — so every
figure in it can be traced to a run and nothing is typed in by hand.

    udrl card --eval runs/model/eval.json --ablation udrl=runs/model/ablation-udrl.json \\
        --run udrl=runs/model/udrl --export runs/model/export-gguf.json --out sdk/models
"""

from __future__ import annotations

import dataclasses
import filecmp
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from udrl.errors import UdrlError
from udrl.files import write_atomic
from udrl.manifest import describe_focus

from ..figures import save_figure

# The targets of the real-requests issue (shipped model against the teacher, one evaluation run).
TARGET_RELEVANCE_RATIO = 0.95  # per task, on each judge
TARGET_COPY_MARGIN = 0.05  # share of output words taken from the request: at most the teacher's + this
TARGET_DEGENERATE = 0.05  # per task
TARGET_WITHIN1 = 0.95
TARGET_PARAMS_RATIO = 10.0
TARGET_LATENCY_RATIO = 10.0

VARIANT_NAMES = {
    ("length", "reward"): "UDRL: task + achieved length + reward level",
    ("length",): "no reward command: task + achieved length",
    (): "no commands: task only (plain distillation)",
}


@dataclasses.dataclass
class CardConfig:
    eval: str  # `udrl eval` report of the shipped artifact beside the teacher (length guard on)
    out: str  # directory for README.md and the plots
    ablation: dict[str, str] = dataclasses.field(default_factory=dict)  # variant -> eval report, guard off
    runs: dict[str, str] = dataclasses.field(default_factory=dict)  # variant -> training run directory
    # The run the shipped model came from, when it is not the ablation's "udrl" run (a longer recipe).
    shipped_run: str | None = None
    exports: list[str] = dataclasses.field(default_factory=list)  # `udrl export --report` files
    data_card: str | None = None  # the dataset's card JSON
    notes: str | None = None  # markdown read into a "Gaps and next steps" section
    # `udrl focus` reports that chose the shipped model's query-focus bonus, in the order they ran (a
    # later one, such as a bonus per length for one task, overrides an earlier one's choice for its tasks)
    focus: list[str] | str | None = None
    title: str = "udrl-mini"


def _load_json(path: str | Path) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UdrlError(f"cannot read {path} for the model card: {exc}") from None


def bundled_name(evaluated: str | Path, out: Path) -> str:
    """The file name the evaluated model ships under: the GGUF in the card's folder (the package's
    model folder) with the same bytes, else the evaluated file's own name."""
    evaluated = Path(evaluated)
    if evaluated.is_file():
        for candidate in sorted(out.glob("*.gguf")):
            if filecmp.cmp(evaluated, candidate, shallow=False):
                return candidate.name
    return evaluated.name


def _run_info(run_dir: Path) -> dict[str, Any]:
    """Configuration, final validation figures and wall-clock time of one training run.

    A second stage (a run started with ``--init`` from another run's model) carries its first stage
    under ``"stages"``, and its curves continue the first stage's steps.
    """
    config = _load_json(run_dir / "train_config.json")
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    manifest = _load_json(run_dir / "model" / "udrl.json")
    # Wall clock from the run directory: the config is written at the start, the weights at the end
    # (not udrl.json, which `udrl focus --write` rewrites later).
    seconds = (run_dir / "model" / "model.safetensors").stat().st_mtime - (run_dir / "train_config.json").stat().st_mtime
    # A stage started from a model keeps that model's tokenizer whatever its config's vocab_size says.
    stages = [{"config": config, "seconds": seconds, "vocab_size": manifest.get("model", {}).get("vocab_size")}]
    parent_run = Path(config["init"]).parent if config.get("init") else None
    # A run started from a GGUF keeps the checkpoint made from it inside itself (RUN/init): no parent run.
    if parent_run is not None and parent_run.resolve() != run_dir.resolve() \
            and (parent_run / "train_config.json").exists():
        first = _run_info(parent_run)
        stages = first["stages"] + stages
        offset = first["train"][-1]["step"] if first["train"] else 0
        rows = first["evals"] + first["train"] + [{**r, "step": r["step"] + offset} for r in rows]
    evals = [r for r in rows if "val_loss" in r]
    return {"config": config, "final": evals[-1] if evals else {}, "evals": evals,
            "train": [r for r in rows if "train_loss" in r], "manifest": manifest,
            "seconds": sum(stage["seconds"] for stage in stages), "stages": stages}


# The committed training recipes (`make model` runs them in order, one stage each).
RECIPE_DIR = Path(__file__).resolve().parents[1] / "recipes"
RECIPE_KEYS = ("preset", "vocab_size", "copy_adjusted", "rank_matched", "focus_split_words", "focus_push_function_words", "replay", "dropout", "max_steps", "batch_size",
               "lr", "warmup_steps", "min_lr_ratio", "weight_decay", "grad_clip", "val_fraction", "seed", "threads")
# Manifest fields that fix how a run's prompts were written.
FORMAT_KEYS = ("template", "output_prefix")


def recipe_of(stage_config: Mapping[str, Any], recipe_dir: Path = RECIPE_DIR) -> str | None:
    """The committed recipe a training stage ran (``trainer/recipes/NAME.json``), or None.

    A run stores its resolved configuration, not the file it came from; a recipe matches when every
    option it sets, except the data paths, the thread count (a run may be given more threads) and
    the model it starts from (`make model` passes its own run's path), has the stage's value.
    """
    for path in sorted(recipe_dir.glob("*.json")):
        try:
            recipe = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if isinstance(recipe, dict) and all(stage_config.get(k) == v for k, v in recipe.items()
                                            if k not in ("data", "threads", "init")):
            return f"trainer/recipes/{path.name}"
    return None


def recipe_differences(run: Mapping[str, Any], shipped: Mapping[str, Any]) -> list[str]:
    """How an ablation run's recipe, prompt format and training data differ from the shipped run's (empty if none)."""
    # Stage by stage: a one-stage run is compared with the shipped run's first stage.
    staged = len(run["stages"]) > 1 or len(shipped["stages"]) > 1
    diffs = [f"{f'stage {i + 1} ' if staged else ''}{k} {mine['config'].get(k)!r} (shipped {theirs['config'].get(k)!r})"
             for i, (mine, theirs) in enumerate(zip(run["stages"], shipped["stages"]))
             for k in RECIPE_KEYS if k != "threads" and mine["config"].get(k) != theirs["config"].get(k)]
    if len(run["stages"]) != len(shipped["stages"]):
        diffs.append(f"training stages {len(run['stages'])} (shipped {len(shipped['stages'])})")
    diffs += [f"prompt {k} {run['manifest'].get(k, '')!r} (shipped {shipped['manifest'].get(k, '')!r})"
              for k in FORMAT_KEYS if run["manifest"].get(k, "") != shipped["manifest"].get(k, "")]
    # The data path stays the same when the committed dataset grows; its digest does not.
    ran_on, shipped_on = run["manifest"].get("data_hash"), shipped["manifest"].get("data_hash")
    if ran_on != shipped_on:
        diffs.append(f"training data {str(ran_on)[:19]} (shipped {str(shipped_on)[:19]})")
    return diffs


def _stage_option(stage: Mapping[str, Any], key: str) -> Any:
    """One option of a training stage as the card's recipe table shows it: the vocabulary the stage
    trained with (its model's), lists as comma-separated words, an option left unset as blank."""
    if key == "vocab_size" and stage.get("vocab_size"):
        return stage["vocab_size"]
    value = stage["config"].get(key)
    if value is None or value == []:
        return ""
    return ", ".join(map(str, value)) if isinstance(value, list) else value


def _stage_minutes(run: Mapping[str, Any]) -> str:
    """A run's wall clock, stage by stage: "77 + 56 min"."""
    return " + ".join(f"{stage['seconds'] / 60:.0f}" for stage in run["stages"]) + " min"


def _variant(conditioning: Sequence[str]) -> str:
    return VARIANT_NAMES.get(tuple(conditioning), "task + " + " + ".join(conditioning))


def _pct(x: float) -> str:
    return f"{x:.1%}"


def _met(ok: bool) -> str:
    return "met" if ok else "**missed**"


def targets(report: Mapping[str, Any]) -> list[tuple[str, str, str, bool]]:
    """(target, measured, teacher or comment, met) rows: per task, relevance on each judge, copying
    and degenerate outputs; then length adherence, parameters and latency."""
    u, t, r = report["udrl"], report["teacher"], report["ratios"]
    rows = []
    for task, ratio in r["relevance_per_task"].items():
        us, ts = u["per_task"][task], t["per_task"][task]
        rows.append((f"relevance ≥ {TARGET_RELEVANCE_RATIO}× teacher, {task} (MiniLM)", f"{ratio:.3f}×",
                     f"{us['relevance_mean']:.3f} vs {ts['relevance_mean']:.3f}", ratio >= TARGET_RELEVANCE_RATIO))
        if (mpnet := r.get("relevance_mpnet_per_task", {}).get(task)) is not None:
            rows.append((f"relevance ≥ {TARGET_RELEVANCE_RATIO}× teacher, {task} (mpnet, reports only)",
                         f"{mpnet:.3f}×", f"{us['relevance_mpnet_mean']:.3f} vs {ts['relevance_mpnet_mean']:.3f}",
                         mpnet >= TARGET_RELEVANCE_RATIO))
        if "query_word_share" in us and "query_word_share" in ts:
            limit = ts["query_word_share"] + TARGET_COPY_MARGIN
            rows.append((f"copies ≤ teacher + {TARGET_COPY_MARGIN} of its words from the request, {task}",
                         f"{us['query_word_share']:.2f}", f"teacher {ts['query_word_share']:.2f}",
                         us["query_word_share"] <= limit))
        if "degenerate" in us:
            rows.append((f"degenerate outputs ≤ {TARGET_DEGENERATE:.0%}, {task}", _pct(us["degenerate"]),
                         f"teacher {_pct(ts['degenerate'])}" if "degenerate" in ts else "",
                         us["degenerate"] <= TARGET_DEGENERATE))
    within = u["overall"]["length_within1"]
    rows.append((f"length within ±1 word ≥ {TARGET_WITHIN1:.0%}", _pct(within),
                 f"teacher {_pct(t['overall']['length_within1'])}", within >= TARGET_WITHIN1))
    if "teacher_over_udrl_parameters" in r:
        p = r["teacher_over_udrl_parameters"]
        rows.append((f"≥ {TARGET_PARAMS_RATIO:.0f}× fewer parameters than the teacher", f"{p:.1f}×",
                     f"{report['teacher_model']['n_params'] / 1e6:.1f}M vs {report['n_params'] / 1e6:.1f}M",
                     p >= TARGET_PARAMS_RATIO))
    lat = r["teacher_latency_over_udrl"]
    rows.append((f"≥ {TARGET_LATENCY_RATIO:.0f}× lower latency per request", f"{lat:.1f}×",
                 f"p50 {t['overall']['latency_p50_s'] * 1e3:.0f} ms vs {u['overall']['latency_p50_s'] * 1e3:.1f} ms",
                 lat >= TARGET_LATENCY_RATIO))
    return rows


def _model_alone(report: Mapping[str, Any]) -> Mapping[str, Any]:
    """An ablation report's figures for the model by itself: query focus off where it was on."""
    return report.get("udrl_focus_off", report["udrl"])


def focus_summary(report: Mapping[str, Any]) -> str:
    """What query focus adds in this report, and how much each system copies from the request."""
    if "udrl_focus_off" not in report:
        return "The shipped model has no query focus (its manifest predates it)."
    u, off, t = report["udrl"]["overall"], report["udrl_focus_off"]["overall"], report["teacher"]["overall"]
    share = {name: s.get("query_word_share") for name, s in (("shipped", u), ("focus off", off), ("teacher", t))}
    bonus = "; ".join(f"{t} {describe_focus(b)}" for t, b in report["focus"].items())
    text = (f"Query focus (the manifest's bonus per task: {bonus}) is on in the shipped rows. With it off "
            f"(`focus=0`) the same model scores relevance {off['relevance_mean']:.3f} "
            f"({off['relevance_mean'] / t['relevance_mean']:.3f}× the teacher) against {u['relevance_mean']:.3f} with it. ")
    if None not in share.values():
        text += ("Share of output words taken from the request: shipped " + f"{share['shipped']:.2f}, focus off "
                 f"{share['focus off']:.2f}, teacher {share['teacher']:.2f}; the judge rewards copying the request, "
                 "so the bonus is set per task" + (" (per task and requested length where the manifest lists points)"
                                                   if any(isinstance(b, list) for b in report["focus"].values()) else "")
                 + " no higher than copying as much as the teacher does (or as the model with focus off, where that "
                 "is more).")
    return text


def plot_relevance(report: Mapping[str, Any], ablation: Mapping[str, Any], path: Path) -> Path:
    """Grouped bars: relevance per task for the teacher, the shipped model and each ablation variant."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = sorted(report["udrl"]["per_task"])
    systems = {"teacher (Gemma 3 270M)": report["teacher"], "shipped (guard on)": report["udrl"]}
    if "udrl_focus_off" in report:
        systems["shipped, query focus off"] = report["udrl_focus_off"]
    systems.update({f"{name} (guard off)": _model_alone(rep) for name, rep in ablation.items()})
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    width = 0.8 / len(systems)
    for i, (label, s) in enumerate(systems.items()):
        xs = [j + i * width for j in range(len(tasks) + 1)]
        parts = [s["per_task"][t] for t in tasks] + [s["overall"]]
        axes[0].bar(xs, [p["relevance_mean"] for p in parts], width, label=label)
        axes[1].bar(xs, [p["length_within1"] for p in parts], width, label=label)
    for ax, ylabel in zip(axes, ("relevance (MiniLM cosine, mean)", "share within ±1 word of the request")):
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(tasks) + 1)], tasks + ["all"])
        ax.set_ylabel(ylabel)
        ax.grid(axis="y", alpha=0.3)
    axes[1].axhline(TARGET_WITHIN1, color="k", ls=":", lw=1)
    fig.legend(*axes[0].get_legend_handles_labels(), loc="lower center", ncol=len(systems), fontsize=8)
    fig.suptitle("held-out queries: shipped model, teacher and ablation")
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    return save_figure(fig, path)


def plot_losses(runs: Mapping[str, dict[str, Any]], path: Path) -> Path:
    """Validation loss against step for every training run, train loss faint behind it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for name, info in runs.items():
        (line,) = ax.plot([r["step"] for r in info["evals"]], [r["val_loss"] for r in info["evals"]], "o-",
                          label=f"{name} validation")
        ax.plot([r["step"] for r in info["train"]], [r["train_loss"] for r in info["train"]], lw=0.7, alpha=0.35,
                color=line.get_color())
    ax.set_xlabel("step")
    ax.set_ylabel("loss on output tokens")
    ax.set_ylim(top=min(8.0, ax.get_ylim()[1]))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


def _teacher_model(data: dict) -> str:
    """The teacher model a dataset card names (one teacher, or several runs of them)."""
    teachers = data["teacher"] if isinstance(data["teacher"], list) else [data["teacher"]]
    return ", ".join(sorted({str((t or {}).get("model", "?")) for t in teachers}))


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


# How the card names each `udrl eval` query set.
QUERY_SET_WORDS = {
    "handwritten": "hand-written design requests (the evaluation half of data/handwritten, off the training "
                   "distribution, never seen in training)",
    "handwritten-tune": "hand-written design requests (the tuning half of data/handwritten, never seen in training)",
    "in-distribution": "held-out queries of the training data (teacher-written like the training queries, never "
                       "seen in training)",
}


def front_matter(report: Mapping[str, Any], title: str) -> list[str]:
    """The card's YAML front matter, as the Hugging Face hub reads it: licence, library, pipeline,
    tags, data, and a model-index with the evaluation's relevance and length figures per task."""
    import yaml
    from udrl.converters.metadata import LICENSE, LICENSE_LINK, LICENSE_NAME

    u, r = report["udrl"], report["ratios"]
    results = []
    for task, ratio in r["relevance_per_task"].items():
        row = u["per_task"][task]
        results.append({
            "task": {"type": "text-generation", "name": f"{task} prompts from design requests"},
            "dataset": {"name": f"udrl {report.get('query_set', 'in-distribution')} queries "
                                f"({report['queries']} queries, {report['requests']} requests)",
                        "type": "udrl-gemma"},
            "metrics": [
                {"type": "cosine_similarity", "name": "MiniLM relevance", "value": round(row["relevance_mean"], 4)},
                {"type": "ratio", "name": "relevance / teacher (Gemma 3 270M)", "value": round(ratio, 4)},
                {"type": "accuracy", "name": "length within 1 word", "value": round(row["length_within1"], 4)},
            ],
        })
    data = {
        "license": LICENSE, "license_name": LICENSE_NAME, "license_link": LICENSE_LINK,
        "library_name": "udrl-edge", "pipeline_tag": "text-generation", "language": ["en"],
        "tags": ["gguf", "onnx", "coreml", "gpt2", "upside-down-rl", "prompt-generation", "on-device"],
        "datasets": ["udrl-gemma"],
        "model-index": [{"name": title, "results": results}],
    }
    return ["---", yaml.safe_dump(data, sort_keys=False, allow_unicode=True).rstrip(), "---", ""]


def build_card(config: CardConfig) -> Path:
    """Write README.md and the plots into ``config.out``; returns the card's path."""
    from .quality import markdown

    report = _load_json(config.eval)
    if "teacher" not in report:
        raise UdrlError(f"{config.eval} has no teacher figures; run `udrl eval` without --no-teacher")
    ablation = {name: _load_json(path) for name, path in config.ablation.items()}
    runs = {name: _run_info(Path(path)) for name, path in config.runs.items()}
    shipped_run = _run_info(Path(config.shipped_run)) if config.shipped_run else runs.get("udrl")
    exports = [row for path in config.exports for row in _load_json(path)]
    data = _load_json(config.data_card) if config.data_card else None
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    plot_relevance(report, ablation, out / "card-eval.png")
    plotted = {"shipped": shipped_run, **runs} if config.shipped_run else runs
    if plotted:
        plot_losses(plotted, out / "card-loss.png")

    shipped = bundled_name(report["model"], out)
    lines = front_matter(report, config.title) + [f"# {config.title}: the default udrl-edge model", ""]
    lines += [f"A {report['n_params'] / 1e6:.1f}M-parameter GPT-2 policy trained with upside-down reinforcement "
              "learning to write prompts on command — text-to-image prompts, search queries, headlines and tags "
              "— from a design request, at a requested length in words and relevance level. It ships inside "
              f"the `udrl-edge` package as `{shipped}`: `udrl.load()` with no path opens it.", ""]
    lines += ["```python", "import udrl", "", "with udrl.load() as model:",
              '    print(model.generate("poster for a summer jazz festival by the sea", task="image", length=12).text)',
              "```", ""]

    lines += ["## Targets", "",
              f"Measured in one `udrl eval` run on {report['requests']} requests over {report['queries']} "
              + QUERY_SET_WORDS.get(report.get("query_set", "in-distribution"), "held-out queries")
              + f", the shipped `{shipped}` and the teacher answering the same requests "
              "on this machine's CPU, both greedy.", ""]
    lines += _table(["target", "measured", "detail", "status"],
                    [(name, value, detail, _met(ok)) for name, value, detail, ok in targets(report)])
    lines += ["", "## Evaluation against the teacher", "",
              "Relevance is the MiniLM (all-MiniLM-L6-v2) cosine between request and output, the judge that labelled "
              "the training data. The model runs with the SDK's defaults: the highest reward level, the length guard on, "
              "no repeated pair of generated tokens, no word twice in a row and no content word a third time, whole words "
              "where the manifest lists spelling words, query focus at the manifest's bonus (docs/decoding.md); the "
              "teacher is the Gemma 3 270M "
              "few-shot prompt of the distillation, asked for the same length.", "", markdown(report).rstrip(), "",
              focus_summary(report), "", "![evaluation](card-eval.png)", ""]

    focus_reports = [config.focus] if isinstance(config.focus, str) else list(config.focus or [])
    if focus_reports:
        from .focus import markdown as focus_markdown

        lines += ["## Query focus: how the bonus was chosen", ""]
        for i, path in enumerate(focus_reports):
            focus_report = _load_json(path)
            # Reports written before the slack existed held the floor exactly.
            slack = focus_report.get("format_slack", 0.0)
            floor = (f"its share of well-formed outputs is at most {slack * 100:g} percentage point under focus "
                     "off's, or under the teacher's where the teacher writes fewer" if slack else
                     "it writes no fewer well-formed outputs than with focus off, or than the teacher where it writes "
                     "fewer")
            per_length = focus_report.get("per_length", False)
            tasks = ", ".join(focus_report["chosen"])
            lines += [("`udrl focus` ran the model at every bonus of a grid and the teacher once, on held-out queries "
                       "the evaluation above does not use. " if i == 0 else
                       f"Then `udrl focus --tasks {tasks}{' --per-length' if per_length else ''}` chose again for "
                       f"{tasks}, on the same queries, the teacher run again. ")
                      + ("Per task and requested length" if per_length else "Per task") + " the bonus is the largest "
                      "at which the model takes no larger share of its output words from the request than the teacher "
                      "does" + (" on the same requests at that length" if per_length else "") + " (or, where focus off "
                      f"already takes more, than focus off does) and {floor} (0 when none qualifies), refined by "
                      "halving the step above the grid's choice (when the report has refinements). Relevance, which "
                      "only rises with the bonus, plays no part.", "", focus_markdown(focus_report).rstrip(), ""]

    if ablation:
        lines += ["## Ablation: what the commands are worth", "",
                  "The same recipe and budget (steps, batch, schedule, seed, data) trained three times, changing only "
                  "the commands in the prompt. Evaluated on the same held-out requests with the length guard and query "
                  "focus **off**, so relevance and length adherence are what each model learned by itself.", ""]
        tasks = sorted(report["udrl"]["per_task"])
        rows = []
        for name, rep in ablation.items():
            run = runs.get(name)
            cond = run["config"]["conditioning"] if run else rep.get("conditioning", [])
            s = _model_alone(rep)
            rows.append([name, _variant(cond), f"{run['final'].get('val_loss', float('nan')):.3f}" if run else "",
                         *(f"{s['per_task'][t]['relevance_mean']:.3f}" for t in tasks),
                         f"{s['overall']['relevance_mean']:.3f}", _pct(s["overall"]["length_within1"]),
                         f"{s['overall']['length_mae']:.2f}"])
        lines += _table(["variant", "commands", "val loss", *(f"relevance {t}" for t in tasks), "relevance all",
                         "within ±1 word", "length MAE"], rows)
        lines += ["", "Validation loss is not comparable across variants (fewer commands leave more to predict); "
                  "relevance and adherence are.", ""]
        diffs = sorted({d for run in runs.values() if shipped_run for d in recipe_differences(run, shipped_run)})
        if diffs:
            lines += ["The ablation runs are an earlier recipe or dataset than the shipped model's (below), so their rows compare "
                      "with each other, not with the shipped model: " + "; ".join(diffs) + ".", ""]

    if data:
        lines += ["## Data", "",
                  f"`data/udrl-gemma.jsonl.gz`: {data['records'] - data.get('augmented_records', 0):,} outputs of the "
                  f"teacher ({_teacher_model(data)}) for {data['distinct_queries']:,} design requests (written by the "
                  "teacher from seed topics, or composed by `udrl compose`)"
                  + (f" and {data['augmented_records']:,} copy-augmented records" if data.get("augmented_records") else "")
                  + ", every one judged and relabelled with its achieved length and reward level "
                  f"(edges {data['reward_edges']} on the judge's score). Per task:", ""]
        lines += _table(["task", "records", "mean words", "mean relevance"],
                        [(t, f"{v['records']:,}", v["mean_words"], v["mean_score"]) for t, v in data["per_task"].items()])
        lines += ["", "The dataset card (`data/udrl-gemma.card.md`) has the distributions and what was dropped. "
                  "The outputs derive from Gemma 3 and are subject to the Gemma terms of use.", ""]

    main = shipped_run or next(iter(runs.values()), None)
    if main:
        c, m, stages = main["config"], main["manifest"], main["stages"]
        threads = c.get("threads") or "default"
        timing = (f"the shipped run took {_stage_minutes(main)} on {threads} thread(s)" if config.shipped_run else
                  f"`make model` trains the variants side by side, {threads} thread(s) each: "
                  + ", ".join(f"{name} {_stage_minutes(info)}" for name, info in runs.items()))
        recipes = [f"`{name}`" if (name := recipe_of(stage["config"])) else f"stage {i + 1} (no committed recipe)"
                   for i, stage in enumerate(stages)]
        first_init = stages[0]["config"].get("init")
        start = "from scratch" if not first_init else (
            "from an earlier model, its weights moved to a new BPE (`--retokenize`)"
            if stages[0]["config"].get("retokenize") else f"from {first_init}")
        how = (f"{recipes[0]}, trained {start} on CPU" if len(stages) == 1 else
               f"Trained on CPU in {len(stages)} stages ({', then '.join(recipes)}), the first {start}, each "
               "after it starting from the previous one's weights with a warm-up and cosine cycle of its own")
        lines += ["## Training recipe", "",
                  f"{how}: {m['model'].get('n_params', 0) / 1e6:.2f}M "
                  f"parameters ({m['model'].get('n_layer')} layers, {m['model'].get('n_embd')} wide, context "
                  f"{m['model'].get('n_ctx')}), byte-level BPE of {m['model'].get('vocab_size', 0):,} tokens trained on the data; "
                  "loss on output tokens only; AdamW, warm-up then cosine decay; prompt "
                  f"`{m.get('template')}`, output prefix {m.get('output_prefix', '')!r}. Wall clock: {timing}.", ""]
        if len(stages) == 1:
            lines += _table(["option", "value"], [(k, value) for k in RECIPE_KEYS
                                                  if (value := _stage_option(stages[0], k)) != ""])
        else:
            keys = [k for k in RECIPE_KEYS if any(_stage_option(stage, k) != "" for stage in stages)]
            # File names only: a rollout's records live under the run directory of whoever trained it.
            data = [", ".join(Path(p).name for p in stage["config"].get("data", [])) for stage in stages]
            lines += _table(["option", *(f"stage {i + 1}" for i in range(len(stages)))],
                            [("data", *data), *((k, *(_stage_option(stage, k) for stage in stages)) for k in keys)])
        if plotted:
            lines += ["", "![training](card-loss.png)", ""]

    if exports:
        lines += ["## Artifacts", "", "Every export is checked against the PyTorch checkpoint before it is written.", ""]
        lines += _table(["file", "format", "size", "checks"],
                        [(Path(e["path"]).name, f"{e['format']}/{e['quant']}", f"{e['size_bytes'] / 1e6:.1f} MB",
                          "; ".join(f"{k}: {v}" for k, v in e["checks"].items()))
                         for e in exports])
        lines += [""]

    missed = [(name, value) for name, value, _, ok in targets(report) if not ok]
    if missed or config.notes:
        lines += ["## Gaps and next steps", ""]
        lines += [f"- Missed: {name} — measured {value}." for name, value in missed]
        if config.notes:
            try:
                lines += ["", Path(config.notes).read_text().rstrip(), ""]
            except OSError as exc:
                raise UdrlError(f"cannot read the card notes {config.notes}: {exc}") from None
        lines += [""]

    stage_count = len(main["stages"]) if main else 1
    lines += ["## Reproduce", "", "```bash",
              (f"make model   # train this model ({stage_count} stage{'s' * (stage_count > 1)}) and the ablation "
               "variants, export, evaluate, write this card"),
              "```", "", "## Limitations", "",
              "- Trained on outputs of a 270M teacher: it inherits the teacher's style and mistakes, and relevance is "
              "measured by the same small judge that labelled the data.",
              "- English design requests only; queries longer than the context are refused, never cut.",
              "- Core ML numeric parity is checked on macOS only; on Linux the converted graph is checked in torch.", ""]
    card = out / "README.md"
    write_atomic(card, "\n".join(lines))
    return card
