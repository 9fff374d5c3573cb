"""`udrl focus`: choose a trained model's query-focus bonus per task, beside the teacher.

Query focus (see `udrl.generate`) adds a logit bonus to the request's content words the output does
not contain yet. The judge rewards copying the request, so relevance only rises with the bonus and
cannot be what chooses it. Instead, on requests the evaluation never uses (by default the tuning
half of the hand-written requests, `handwritten.py`, whose evaluation half `udrl eval` scores; or,
with ``query_set="in-distribution"``, held-out training queries 100 to 199, after the 100 that
`udrl eval --set in-distribution` takes), the model answers at every bonus of a grid and the
teacher answers once, and per task the chosen bonus is the largest at which

- the model takes no larger share of its output words from the request than the teacher does or,
  where with focus off it already takes more, than it does with focus off (a bonus that pushes
  function words down, `focus.push_function_words`, can put request words in place of padding
  without copying more), and
- the model's share of well-formed outputs is at most ``FORMAT_SLACK`` (half a percentage point)
  under focus off's, or under the teacher's where the teacher writes fewer. A share of valid
  formats is counted over a few hundred outputs per task, and a bonus that changes a greedy path
  here and there moves it by one or two outputs either way: without the slack one headline or tag
  list fewer than focus off, out of 657, ruled out every bonus above it;

0 (off) when no bonus qualifies. The grid is coarse, and a task's share can sit a hair above or below
the teacher's at a grid point, so the choice is then refined per task: ``refine`` times, the model
answers that task's requests halfway between the best qualifying bonus so far and the next bonus
up that does not qualify, and the half that keeps the rule is kept. With the default three
halvings the chosen bonus lands within 1/8 of a grid step of where the model's share meets the
teacher's, instead of up to a whole step below it.

With ``per_length`` the same choice is made per task and requested length: the rule compares the
model's outputs at one length with the teacher's answers to the same requests, so a bonus may be
lower where the model copies more than the teacher (short outputs) and higher where it copies
less (long ones), each held to the teacher's copying at that length; the manifest then holds the
task's bonus as [length, bonus] points (`udrl.manifest.focus_at` reads lengths between them).
A single bonus holds the mean over lengths to the teacher's instead, so a task's short outputs
copy more than the teacher's and its long ones drift from the request. ``--write DIR`` puts the result into a
checkpoint directory's manifest, so every artifact exported from it afterwards carries it. The
bonus is chosen under the model's own focus rule (its manifest's ``focus_split_words`` and
``focus_push_function_words``), so the checkpoint written to must say the same.

The teacher answers greedily, so on the same requests it writes the same outputs: ``--teacher-from
REPORT`` takes its figures from an earlier focus report on the same requests (same set, queries and
request list, checked by the report's ``requests_sha256``) instead of running it again, which is most
of the run's time on two cores.

    udrl focus runs/mini/model-q8_0.gguf --data data/udrl-gemma.jsonl.gz --write runs/mini/model
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from udrl.errors import UdrlError
from udrl.files import write_atomic
from udrl.manifest import describe_focus, focus_bias_from_json, load_manifest, save_manifest

from ..judge import Judge
from ..taskfile import TASKS
from .quality import EvalConfig, judged_rows, plan_requests, run_model, run_teacher, score, summarise, tasks_to_ask

DEFAULT_GRID = (0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0)


@dataclasses.dataclass
class FocusConfig:
    model: str  # the artifact to run (a GGUF is fastest)
    data: list[str]  # the training data: the lengths each task is asked at (and its held-out split)
    query_set: str = "handwritten-tune"  # or "in-distribution" (the training data's held-out queries)
    # Queries [first_query, first_query + queries) of the set; None: all of the tuning half, or
    # held-out queries 100 to 199 (eval uses the first 100).
    first_query: int | None = None
    queries: int | None = None
    grid: Sequence[float] = DEFAULT_GRID
    threads: int = 2
    refine: int = 3  # halvings of the grid step above each task's choice
    write: str | None = None  # checkpoint directory whose manifest gets the chosen bonus
    out: str | None = None  # JSON report path
    teacher_from: str | None = None  # an earlier focus report on the same requests: reuse its teacher
    tasks: list[str] | None = None  # the tasks to tune (None: all of the model's); the others keep their bonus
    task_files: list[str] = dataclasses.field(default_factory=list)  # tasks of one's own the model was taught
    per_length: bool = False  # a bonus per task and requested length, as [length, bonus] points


# How far under its floor (focus off's or the teacher's) a bonus's share of well-formed outputs may
# fall: half a percentage point, three outputs of a task's 657 on the tuning half.
FORMAT_SLACK = 0.005


def choose(rows: Mapping[float, Mapping[str, Any]], teacher: Mapping[str, Any],
           slack: float = FORMAT_SLACK) -> float:
    """The largest bonus that `qualifies`; 0.0 when none does. ``rows`` maps bonus -> one task's
    summary from `score`, 0.0 (focus off) among them."""
    off = rows[0.0]
    return max((b for b, s in rows.items() if qualifies(s, teacher, off, slack)), default=0.0)


def qualifies(summary: Mapping[str, Any], teacher: Mapping[str, Any], off: Mapping[str, Any],
              slack: float = FORMAT_SLACK) -> bool:
    """The rule at one bonus: copies no more of the request than the teacher or, where the model
    with focus off already copies more, than focus off (focus that pushes function words down can
    put request words in the place of padding without copying more); and is well-formed to within
    ``slack`` of focus off or, where the teacher is less well-formed than that, the teacher."""
    floor = min(off["format_valid"], teacher["format_valid"]) - slack
    ceiling = max(teacher["query_word_share"], off["query_word_share"])
    return summary["query_word_share"] <= ceiling and summary["format_valid"] >= floor


def refine(task_rows: dict[float, Mapping[str, Any]], teacher: Mapping[str, Any],
           run: Callable[[float], Mapping[str, Any]], rounds: int, slack: float = FORMAT_SLACK) -> float:
    """Bisect between the grid's choice and the next bonus up for ``rounds`` halvings; ``run(bonus)``
    scores one task at one bonus and its result is added to ``task_rows``. Returns the largest bonus
    that keeps the rule among all tried (the grid's choice when no midpoint does)."""
    off = task_rows[0.0]
    low = choose(task_rows, teacher, slack)
    above = [b for b in task_rows if b > low]
    if not above:
        return low
    high = min(above)
    for _ in range(rounds):
        mid = (low + high) / 2
        task_rows[mid] = run(mid)
        if qualifies(task_rows[mid], teacher, off, slack):
            low = mid
        else:
            high = mid
    return low


def tune_focus(config: FocusConfig, judge: Judge | None = None) -> dict[str, Any]:
    """Run the grid and the teacher, choose per task; returns (and writes, with ``out``) the report.
    The tasks of ``config.task_files`` are known for the length of the call only."""
    with TASKS.extended(config.task_files):
        return _tune_focus(config, judge)


def _tune_focus(config: FocusConfig, judge: Judge | None) -> dict[str, Any]:
    from udrl.artifacts import read_manifest

    grid = sorted({float(b) for b in config.grid} | {0.0})
    if any(b < 0 for b in grid):
        raise UdrlError(f"focus bonuses must be >= 0, got {list(config.grid)}")
    if config.refine < 0:
        raise UdrlError(f"refine is a number of halvings, 0 or more; got {config.refine}")
    write_to = None
    if config.write:
        write_to = load_manifest(config.write)  # fail before the long run, not after it
    manifest = read_manifest(config.model)
    if write_to is not None and write_to.tasks != manifest.tasks:
        raise UdrlError(f"{config.write} has tasks {list(write_to.tasks)}, the model {list(manifest.tasks)}: "
                        "write the bonus into the checkpoint the model was exported from")
    if write_to is not None:
        for rule, theirs, ours in (("split_words", write_to.focus_split_words, manifest.focus_split_words),
                                   ("push_function_words", write_to.focus_push_function_words,
                                    manifest.focus_push_function_words)):
            if theirs != ours:
                raise UdrlError(f"{config.write} says focus {rule} {theirs}, the model {ours}: the bonus is chosen "
                                "under the model's rule, so write it into the checkpoint the model was exported from")
    if config.query_set not in ("handwritten-tune", "in-distribution"):
        raise UdrlError(f"focus tunes on 'handwritten-tune' or 'in-distribution', not {config.query_set!r}: "
                        "the evaluation half is looked at by no choice")
    in_distribution = config.query_set == "in-distribution"
    first = config.first_query if config.first_query is not None else (100 if in_distribution else 0)
    count = config.queries if config.queries is not None else (100 if in_distribution else None)
    eval_config = EvalConfig(model=config.model, data=config.data, query_set=config.query_set,
                             queries=count, first_query=first, threads=config.threads, second_judge=False,
                             tasks=config.tasks, task_files=config.task_files)
    tasks = tasks_to_ask(eval_config, manifest.tasks)
    requests = plan_requests(eval_config, tasks, (manifest.length_min, manifest.length_max), manifest.tasks)
    judge = judge or Judge(threads=config.threads)
    n_queries = len({r.query for r in requests})
    fingerprint = requests_sha256(requests)
    if config.teacher_from:  # read before the grid, so that a wrong report fails at once
        teacher_figures, about, teacher_cells = teacher_from_report(config.teacher_from, config.query_set,
                                                                    [first, first + n_queries], fingerprint,
                                                                    per_length=config.per_length)
    else:
        teacher_out, teacher_lat, about = run_teacher(eval_config, requests)
        teacher_rows = judged_rows(requests, teacher_out, teacher_lat, judge)
        teacher_figures = {t: _figures(s) for t, s in summarise(teacher_rows)["per_task"].items()}
        teacher_cells = _cell_figures(requests, teacher_rows)
    rows_at = {b: judged_rows(requests, *run_model(eval_config, requests, focus=b), judge) for b in grid}
    by_bonus = {b: summarise(rows) for b, rows in rows_at.items()}
    chosen: dict[str, Any] = {}
    refined: dict[str, Any] = {}
    model_at_length: dict[str, dict[str, dict[str, Any]]] = {str(b): {} for b in grid}
    # A cell is one task, or with per_length one task at one requested length: its bonus is chosen
    # beside the teacher's figures on the same requests.
    cells = sorted({(r.task, r.length if config.per_length else None) for r in requests},
                   key=lambda c: (tasks.index(c[0]), c[1] or 0))
    for task, length in cells:
        cell = [i for i, r in enumerate(requests) if r.task == task and length in (None, r.length)]
        cell_requests = [requests[i] for i in cell]

        def run_cell(bonus: float, task: str = task, cell_requests: list = cell_requests) -> Mapping[str, Any]:
            return score(cell_requests, *run_model(eval_config, cell_requests, focus=bonus), judge)["per_task"][task]

        rows = {b: summarise([at[i] for i in cell])["per_task"][task] for b, at in rows_at.items()}
        teacher = teacher_figures[task] if length is None else teacher_cells[task][str(length)]
        if length is not None:  # the grid's figures, before refine adds its midpoints
            for b, s in rows.items():
                model_at_length[str(b)].setdefault(task, {})[str(length)] = _figures(s)
        bonus = refine(rows, teacher, run_cell, config.refine)
        tried = {str(b): _figures(s) for b, s in sorted(rows.items()) if b not in by_bonus}
        if length is None:
            chosen[task], refined[task] = bonus, tried
        else:
            chosen.setdefault(task, []).append([length, bonus])
            refined.setdefault(task, {})[str(length)] = tried
    extra: dict[str, Any] = {"teacher_by_length": teacher_cells} if teacher_cells else {}
    if config.per_length:
        extra["model_at_length"] = model_at_length
    report = {"model": config.model, "requests": len(requests), "requests_sha256": fingerprint,
              "query_set": config.query_set, "queries": [first, first + n_queries], "grid": grid,
              "chosen": chosen, "format_slack": FORMAT_SLACK, "teacher_model": about, "teacher": teacher_figures,
              **({"teacher_from": config.teacher_from} if config.teacher_from else {}),
              "model_at": {str(b): {t: _figures(s) for t, s in rep["per_task"].items()}
                           for b, rep in by_bonus.items()},
              "refined": refined, "per_length": config.per_length, **extra}
    if write_to is not None:
        written = {t: focus_bias_from_json(b) for t, b in chosen.items()}
        save_manifest(write_to.replace(focus_bias={**write_to.focus_bias, **written}), config.write)
        report["written_to"] = config.write
    if config.out:
        Path(config.out).parent.mkdir(parents=True, exist_ok=True)
        write_atomic(Path(config.out), json.dumps(report, indent=2) + "\n")
    return report


def requests_sha256(requests: Sequence[Any]) -> str:
    """A fingerprint of a request list (query, task, length, in order): equal lists, equal teacher outputs."""
    text = "\n".join(json.dumps([r.query, r.task, r.length]) for r in requests)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def teacher_from_report(path: str | Path, query_set: str, queries: list[int], fingerprint: str,
                        per_length: bool = False) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """The teacher's per-task figures, its description and its figures per task and length (empty
    when the report has none) from an earlier focus report, if it was run on the same requests; a
    clear error otherwise, or when ``per_length`` needs figures per length the report lacks."""
    try:
        report = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UdrlError(f"--teacher-from {path}: not a readable focus report ({e})") from e
    if not isinstance(report, dict) or not isinstance(report.get("teacher"), dict):
        raise UdrlError(f"--teacher-from {path}: not a focus report (no 'teacher' figures)")
    if report.get("requests_sha256") != fingerprint or report.get("query_set") != query_set \
            or report.get("queries") != queries:
        raise UdrlError(f"--teacher-from {path}: its teacher answered other requests (set "
                        f"{report.get('query_set')!r}, queries {report.get('queries')}) than this run "
                        f"({query_set!r}, queries {queries}, requests {fingerprint[:12]}); run the teacher "
                        "instead (leave out --teacher-from)")
    cells = report.get("teacher_by_length") or {}
    if per_length and not cells:
        raise UdrlError(f"--teacher-from {path}: the report has the teacher's figures per task only, and a "
                        "bonus per length needs them per length; run the teacher instead (leave out --teacher-from)")
    return report["teacher"], report.get("teacher_model", {}), cells


def _cell_figures(requests: Sequence[Any], rows: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """`_figures` per task and requested length ({task: {"length": figures}}) of `judged_rows` output."""
    cells: dict[str, dict[str, Any]] = {}
    for task, length in sorted({(r.task, r.length) for r in requests}):
        part = [row for r, row in zip(requests, rows) if r.task == task and r.length == length]
        cells.setdefault(task, {})[str(length)] = _figures(summarise(part)["per_task"][task])
    return cells


def _figures(summary: Mapping[str, Any]) -> dict[str, float]:
    return {k: summary[k] for k in ("relevance_mean", "query_word_share", "format_valid")}


def markdown(report: Mapping[str, Any]) -> str:
    """Per task (and, for a bonus per length, per task and length): the teacher's share from the
    request, the model's at each bonus, the choice."""
    grid = report["grid"]

    def cell(s: Mapping[str, Any]) -> str:
        return f"{s['query_word_share']:.3f} ({s['format_valid']:.0%}) rel {s['relevance_mean']:.3f}"

    head = " | ".join(f"bonus {b:g}" for b in grid)
    lines = [f"| task | teacher share (format) | {head} | chosen |", "|" + " --- |" * (len(grid) + 3)]
    for task, bonus in report["chosen"].items():
        t = report["teacher"][task]
        cells = [cell(report["model_at"][str(b)][task]) for b in grid]
        lines.append(f"| {task} | {t['query_word_share']:.3f} ({t['format_valid']:.0%}) | " + " | ".join(cells)
                     + f" | **{describe_focus(bonus)}** |")
    lines += ["", f"Cells: the model's share of output words taken from the request (format valid) and its "
                  f"relevance, on {report['requests']} requests over held-out queries "
                  f"{report['queries'][0]} to {report['queries'][1] - 1}."]
    if report.get("per_length"):
        lines += ["", "Chosen per requested length, each beside the teacher's answers to the same requests:", "",
                  f"| task | length | teacher share (format) | {head} | chosen |", "|" + " --- |" * (len(grid) + 4)]
        for task, points in report["chosen"].items():
            for length, bonus in points:
                t = report["teacher_by_length"][task][str(length)]
                cells = [cell(report["model_at_length"][str(b)][task][str(length)]) for b in grid]
                lines.append(f"| {task} | {length} | {t['query_word_share']:.3f} ({t['format_valid']:.0%}) | "
                             + " | ".join(cells) + f" | **{bonus:g}** |")
    tried = {task: rows for task, rows in report.get("refined", {}).items() if rows}
    if tried:
        lines += ["", "Refined between the grid's choice and the next bonus up (the same cells):", ""]
        for task, rows in tried.items():
            by_length = rows if report.get("per_length") else {"": rows}
            for length, part in by_length.items():
                if part:
                    lines.append(f"- {task}{f' at {length} words' if length else ''}: " + "; ".join(
                        f"bonus {float(b):g}: {cell(s)}" for b, s in part.items()))
    return "\n".join(lines) + "\n"
