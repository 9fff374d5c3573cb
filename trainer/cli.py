"""The trainer's commands (train, recipe, compose, distill, judge, eval, focus, rollout, card,
synth), registered into the ``udrl`` command through an entry point.

Nothing heavy is imported here, so ``udrl --help`` stays fast and works without the train extra;
torch and transformers load when a training subcommand actually runs.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

from udrl.errors import UdrlError

from .training.config import add_flags

_NEEDS = "the trainer needs the 'train' extra: pip install 'udrl-edge[train]'"


def _config_from_args(args: argparse.Namespace) -> Any:
    from .training.config import TrainConfig

    base = TrainConfig.from_json_file(args.config).to_dict() if args.config else {}
    for field in dataclasses.fields(TrainConfig):
        value = getattr(args, field.name, None)
        if value is not None and value is not False:
            base[field.name] = value
    return TrainConfig.from_dict(base)


def _cmd_train(args: argparse.Namespace) -> int:
    try:
        from .training.loop import train
    except ImportError as exc:
        raise UdrlError(f"{_NEEDS} ({exc})") from None
    config = _config_from_args(args)
    if not config.data and not config.resume:
        raise UdrlError("no training data: pass --data FILE (JSONL records), or --resume")
    train(config)
    return 0


def _cmd_synth(args: argparse.Namespace) -> int:
    from .distill.synthetic import write_synthetic

    path = write_synthetic(args.out, n=args.n, seed=args.seed)
    print(f"wrote {args.n} synthetic records to {path}")
    return 0


def _cmd_recipe(args: argparse.Namespace) -> int:
    from .recipe import run_recipe

    finals = run_recipe(args.recipe, args.out, only=args.only, threads=args.threads, keep=args.keep, until=args.until)
    for name, run in finals.items():
        print(f"{name}: {run / 'model'}")
    return 0


def _cmd_compose(args: argparse.Namespace) -> int:
    from udrl.files import write_atomic

    from .distill.compose import ComposeConfig, compose_queries, compose_topics

    config = ComposeConfig(n=args.n, seed=args.seed, exclude=args.exclude or [])
    queries = compose_queries(config)
    for path in filter(None, (args.out, args.topics_out)):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_atomic(args.out, "\n".join(queries) + "\n")
    print(f"composed {len(queries)} design requests -> {args.out}")
    if args.topics_out:
        topics = compose_topics(config)
        write_atomic(args.topics_out, "\n".join(topics) + "\n")
        print(f"{len(topics)} seed topics (subjects and trades) -> {args.topics_out}")
    return 0


def _teacher_options(args: argparse.Namespace) -> dict[str, Any]:
    if args.teacher in ("gemma", "gguf"):
        options = {"threads": args.threads}
        if args.teacher == "gguf":
            options["model"] = args.model
        return options
    if args.teacher == "http":
        return {"url": args.url, "model": args.model or "default", "chat": args.chat,
                "concurrency": args.concurrency, "timeout": args.timeout, "retries": args.retries}
    return {"model": args.model}


def _cmd_distill(args: argparse.Namespace) -> int:
    from .distill.distill import DistillConfig, distill

    if args.teacher in ("gguf", "hf") and not args.model:
        raise UdrlError(f"--teacher {args.teacher} needs --model PATH")
    if args.teacher == "http" and not args.url:
        raise UdrlError("--teacher http needs --url (an OpenAI-compatible server, e.g. http://127.0.0.1:8000)")
    if not args.queries and not args.topics:
        raise UdrlError("no source of queries: give --queries FILE, --topics FILE, or both")
    task_files = args.task_file or []
    if args.tasks:
        tasks = args.tasks
    elif task_files:  # a task file's data is for that task alone, unless --tasks says more
        from .taskfile import TaskRegistry

        tasks = [TaskRegistry().add_file(f).name for f in task_files]
    else:
        tasks = ["image", "search", "headline", "tags"]
    config = DistillConfig(out_dir=args.out, queries=args.queries, topics=args.topics, n_queries=args.n_queries,
                           exclude=args.exclude or [], tasks=tasks, task_files=task_files,
                           tasks_per_query=args.tasks_per_query,
                           samples_per_task=args.samples_per_task, seed=args.seed,
                           batch_size=args.batch_size, temperature=args.temperature)
    distill(config, teacher_kind=args.teacher, teacher_options=_teacher_options(args))
    return 0


def _cmd_judge(args: argparse.Namespace) -> int:
    from .distill.augment import AugmentConfig
    from .distill.relabel import RelabelConfig, judge_file

    augment = AugmentConfig(copies=args.augment_copies, words_per_copy=args.augment_words, seed=args.seed)
    judge_file(args.raw, args.out, RelabelConfig(reward_levels=args.reward_levels, length_max=args.length_max,
                                                 drop_repetitions=args.drop_repetitions,
                                                 drop_example_echoes=args.drop_example_echoes,
                                                 drop_open_quotes=args.drop_open_quotes, augment=augment))
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from .evaluate.quality import EvalConfig, evaluate_quality, markdown

    config = EvalConfig(model=args.model, data=args.data, query_set=args.set, queries=args.queries,
                        teacher=not args.no_teacher, length_guard=not args.no_length_guard, threads=args.threads,
                        second_judge=not args.no_second_judge, tasks=args.tasks, task_files=args.task_file or [],
                        before=args.before, out=args.out)
    print(markdown(evaluate_quality(config)))
    return 0


def _pairs(values: list[str] | None, flag: str) -> dict[str, str]:
    pairs = {}
    for value in values or []:
        name, sep, path = value.partition("=")
        if not sep or not name or not path:
            raise UdrlError(f"{flag} takes NAME=PATH, got {value!r}")
        pairs[name] = path
    return pairs


def _cmd_focus(args: argparse.Namespace) -> int:
    from .evaluate.focus import DEFAULT_GRID, FocusConfig, markdown, tune_focus

    config = FocusConfig(model=args.model, data=args.data, query_set=args.set, first_query=args.first_query,
                         queries=args.queries,
                         grid=args.grid or DEFAULT_GRID, refine=args.refine, threads=args.threads, write=args.write,
                         out=args.out, teacher_from=args.teacher_from, tasks=args.tasks,
                         task_files=args.task_file or [], per_length=args.per_length)
    print(markdown(tune_focus(config)))
    return 0


def _cmd_rollout(args: argparse.Namespace) -> int:
    from .distill.rollout import RolloutConfig, rollout

    rollout(RolloutConfig(model=args.model, data=args.data, out=args.out, tasks=args.tasks, samples=args.samples,
                          temperature=args.temperature, top_p=args.top_p, queries=args.queries, seed=args.seed,
                          threads=args.threads, copy_guard=args.copy_guard,
                          drop_fragments=args.drop_fragments))
    return 0


def _cmd_card(args: argparse.Namespace) -> int:
    from .evaluate.card import CardConfig, build_card

    config = CardConfig(eval=args.eval, out=args.out, ablation=_pairs(args.ablation, "--ablation"),
                        runs=_pairs(args.run, "--run"), exports=args.export or [], data_card=args.data_card,
                        notes=args.notes, shipped_run=args.shipped_run, focus=args.focus)
    print(build_card(config))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add the trainer's subcommands to the ``udrl`` parser."""
    p = sub.add_parser("train", help="train a command-conditioned GPT-2 policy (UDRL)")
    p.add_argument("--config", metavar="JSON", help="TrainConfig as JSON; flags override it")
    add_flags(p)  # one per TrainConfig field
    p.set_defaults(func=_cmd_train)

    c = sub.add_parser("card", help="write the model card (markdown + plots) from eval, ablation and run files")
    c.add_argument("--eval", required=True, metavar="JSON", help="udrl eval report of the shipped artifact (with teacher)")
    c.add_argument("--ablation", action="append", metavar="NAME=JSON", help="eval report of a variant (guard off)")
    c.add_argument("--run", action="append", metavar="NAME=DIR", help="training run directory of a variant")
    c.add_argument("--shipped-run", metavar="DIR",
                   help="run directory of the shipped model when it is not the ablation's udrl run")
    c.add_argument("--export", action="append", metavar="JSON", help="udrl export --report file")
    c.add_argument("--data-card", metavar="JSON", help="the dataset card JSON")
    c.add_argument("--notes", metavar="MD", help="markdown for the 'Gaps and next steps' section")
    c.add_argument("--focus", metavar="JSON", action="append",
                   help="udrl focus report that chose the query-focus bonus; repeatable, in the order they ran")
    c.add_argument("--out", required=True, metavar="DIR", help="where README.md and the plots go")
    c.set_defaults(func=_cmd_card)

    d = sub.add_parser("distill", help="have a teacher LLM write outputs for design requests (resumable)")
    d.add_argument("--queries", metavar="FILE", help="design requests, one per line (after those from --topics)")
    d.add_argument("--topics", metavar="FILE", help="seed topics; the teacher writes the requests")
    d.add_argument("--n-queries", type=int, default=2500, help="requests to generate from --topics")
    d.add_argument("--exclude", action="append", metavar="FILE",
                   help="queries never to use, one per line (repeatable; the hand-written set always is)")
    d.add_argument("--out", default="data/distill", help="output directory (resumed if it exists)")
    d.add_argument("--teacher", choices=["gemma", "gguf", "http", "hf"], default="gemma",
                   help="gemma: the bundled Gemma 3 270M GGUF (default)")
    d.add_argument("--model", help="GGUF file (gguf), model name (http) or directory (hf)")
    d.add_argument("--url", help="OpenAI-compatible base URL (http)")
    d.add_argument("--chat", action="store_true", help="use /v1/chat/completions (instruct teachers)")
    d.add_argument("--concurrency", type=int, default=4, help="parallel HTTP requests")
    d.add_argument("--timeout", type=float, default=60.0, help="seconds per HTTP request")
    d.add_argument("--retries", type=int, default=3, help="HTTP retries with exponential backoff")
    d.add_argument("--threads", type=int, help="llama.cpp threads")
    d.add_argument("--tasks", nargs="+", help="tasks to distil (default: the four shipped ones, or the "
                   "--task-file tasks alone)")
    d.add_argument("--task-file", action="append", metavar="TOML",
                   help="a task of one's own (trainer/taskfile.py; the shipped ones are trainer/tasks/*.toml)")
    d.add_argument("--tasks-per-query", type=int, help="give each query only this many of the tasks, "
                   "chosen by its hash (default: every task)")
    d.add_argument("--samples-per-task", type=int, default=1)
    d.add_argument("--batch-size", type=int, default=64, help="jobs per fsynced write and teacher call")
    d.add_argument("--temperature", type=float, default=0.8)
    d.add_argument("--seed", type=int, default=0)
    d.set_defaults(func=_cmd_distill)

    j = sub.add_parser("judge", help="score a distillation log with MiniLM and relabel it for training")
    j.add_argument("raw", nargs="+", help="raw.jsonl written by udrl distill (several: judged as one dataset)")
    j.add_argument("--out", required=True, help="training records to write (.jsonl or .jsonl.gz) + card")
    j.add_argument("--reward-levels", type=int, default=3)
    j.add_argument("--length-max", type=int, default=48)
    j.add_argument("--augment-copies", type=int, default=0, help="copy-augmented records per teacher record "
                   "(a request word swapped for an English word, in the request and the output; see augment.py)")
    j.add_argument("--augment-words", type=int, default=1, help="request words swapped per augmented copy")
    j.add_argument("--keep-repetitions", dest="drop_repetitions", action="store_false",
                   help="keep outputs that repeat a word or a tag (default: they are left out)")
    j.add_argument("--keep-example-echoes", dest="drop_example_echoes", action="store_false",
                   help="keep outputs that copy a four-word phrase of one of the task's few-shot examples "
                   "(default: they are left out)")
    j.add_argument("--keep-open-quotes", dest="drop_open_quotes", action="store_false",
                   help="keep outputs that open a quotation and never close it (default: they are left out)")
    j.add_argument("--seed", type=int, default=0)
    j.set_defaults(func=_cmd_judge)

    e = sub.add_parser("eval", help="relevance, length adherence, format, diversity and latency vs the teacher")
    e.add_argument("model", help="artifact to evaluate (.gguf, .onnx, checkpoint directory)")
    e.add_argument("--data", action="append", default=None, required=True, help="the training data (held-out split)")
    e.add_argument("--set", choices=["handwritten", "handwritten-tune", "in-distribution"], default="handwritten",
                   help="handwritten: the evaluation half of the hand-written requests (default; no choice looks at "
                        "it); handwritten-tune: the tuning half; in-distribution: the data's held-out queries")
    e.add_argument("--queries", type=int, help="how many queries of the set (default: all hand-written, 100 held-out)")
    e.add_argument("--no-second-judge", action="store_true",
                   help="skip all-mpnet-base-v2 (the judge that only reports)")
    e.add_argument("--no-teacher", action="store_true", help="skip running the teacher on the same requests")
    e.add_argument("--no-length-guard", action="store_true")
    e.add_argument("--tasks", nargs="+", metavar="TASK", help="the model's tasks to ask (default: all)")
    e.add_argument("--task-file", action="append", metavar="TOML",
                   help="a task of one's own the model was fine-tuned on (teacher prompt, format rules); repeatable")
    e.add_argument("--before", metavar="MODEL", help="also run this model ('default': the bundled one) on the same "
                   "requests and report relevance after / before per task")
    e.add_argument("--threads", type=int, default=2)
    e.add_argument("--out", help="JSON report path")
    e.set_defaults(func=_cmd_eval)

    f = sub.add_parser("focus", help="choose the query-focus bonus per task beside the teacher (tuning requests)")
    f.add_argument("model", help="artifact to run (.gguf fastest)")
    f.add_argument("--data", action="append", required=True, help="the training data (lengths; held-out split)")
    f.add_argument("--set", choices=["handwritten-tune", "in-distribution"], default="handwritten-tune",
                   help="handwritten-tune: the tuning half of the hand-written requests (default); "
                        "in-distribution: held-out training queries")
    f.add_argument("--first-query", type=int, help="first query of the set (default: 0; 100 in-distribution, "
                   "after the 100 eval uses)")
    f.add_argument("--queries", type=int, help="how many (default: the whole tuning half; 100 in-distribution)")
    f.add_argument("--grid", type=float, nargs="+", metavar="BONUS", help="bonuses to try (default 0-6, 8, 10)")
    f.add_argument("--refine", type=int, default=3, metavar="N",
                   help="halvings of the grid step above each task's choice (default 3; 0 keeps the grid's choice)")
    f.add_argument("--tasks", nargs="+", metavar="TASK",
                   help="tune only these (default: all of the model's; --write keeps the others' bonus)")
    f.add_argument("--task-file", action="append", metavar="TOML",
                   help="a task of one's own the model was fine-tuned on (teacher prompt, format rules); repeatable")
    f.add_argument("--per-length", action="store_true",
                   help="choose a bonus per task and requested length, each held to the teacher's copying at that "
                        "length (written as [length, bonus] points)")
    f.add_argument("--threads", type=int, default=2)
    f.add_argument("--write", metavar="DIR", help="checkpoint directory whose manifest gets the chosen bonus")
    f.add_argument("--out", help="JSON report path")
    f.add_argument("--teacher-from", metavar="JSON",
                   help="an earlier focus report on the same requests: take the teacher's figures from it "
                        "instead of running the teacher again (greedy, so the same outputs)")
    f.set_defaults(func=_cmd_focus)

    r = sub.add_parser("rollout", help="a second UDRL round: the student answers its training queries, "
                       "judged and relabelled (resumable)")
    r.add_argument("model", help="the trained student artifact (.gguf fastest)")
    r.add_argument("--data", action="append", required=True, help="the data it was trained on (its training split)")
    r.add_argument("--out", required=True, help="records to write (.jsonl or .jsonl.gz); resumed if its log exists")
    r.add_argument("--tasks", nargs="+", metavar="TASK", help="tasks to ask (default: all of the model's)")
    r.add_argument("--samples", type=int, default=8, help="outputs per query, task and length (default 8)")
    r.add_argument("--temperature", type=float, default=0.8)
    r.add_argument("--top-p", type=float, default=0.95)
    r.add_argument("--queries", type=int, help="only the first N training queries (default: all)")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--threads", type=int, default=2)
    r.add_argument("--no-copy-guard", dest="copy_guard", action="store_false",
                   help="keep every reward level, even one whose records copy more of the request than the "
                        "data's at that task and level (default: such levels are left out)")
    r.add_argument("--keep-fragments", dest="drop_fragments", action="store_false",
                   help="keep samples with a piece that is neither an English word nor a word of the request "
                        "(default: they are left out, like the teacher's repetition loops)")
    r.set_defaults(func=_cmd_rollout)

    rc = sub.add_parser("recipe", help="train a model's stages and second round from a recipe file (resumable)")
    rc.add_argument("recipe", help="recipe JSON (trainer/recipes/mini-recipe.json: the shipped model)")
    rc.add_argument("--out", required=True, metavar="DIR", help="run directories (resumed where they exist)")
    rc.add_argument("--only", nargs="+", metavar="VARIANT", help="train only these variants (default: all)")
    rc.add_argument("--threads", type=int, help="torch threads per run (default: the CPUs shared out)")
    rc.add_argument("--keep", metavar="DIR", help="also keep each finished stage's weights as DIR/NAME-stageN-f16.gguf "
                    "(commit them to go on on another machine; a kept stage counts as done)")
    rc.add_argument("--until", type=int, metavar="N", help="stop after stage N (default: every stage, then round 2)")
    rc.set_defaults(func=_cmd_recipe)

    q = sub.add_parser("compose", help="compose design requests from word lists (artefact x subject x details)")
    q.add_argument("--n", type=int, default=24000, help="distinct requests to write")
    q.add_argument("--out", required=True, metavar="FILE", help="one request per line")
    q.add_argument("--exclude", action="append", metavar="FILE",
                   help="queries never to produce, one per line (repeatable; the hand-written set always is)")
    q.add_argument("--topics-out", metavar="FILE",
                   help="also write seed topics for `udrl distill --topics`: the subjects and Faker's trades")
    q.add_argument("--seed", type=int, default=0)
    q.set_defaults(func=_cmd_compose)

    s = sub.add_parser("synth", help="write a synthetic dataset (tests and the tiny demo)")
    s.add_argument("out", help="JSONL file to write")
    s.add_argument("--n", type=int, default=2000, help="number of records")
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=_cmd_synth)
