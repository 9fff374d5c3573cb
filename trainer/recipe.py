"""`udrl recipe`: the shipped model's training as one resumable runner over committed recipe files.

A recipe (``trainer/recipes/mini-recipe.json``) names the training stages (train configs, each
stage after the first starting from the previous stage's weights with a warm-up and cosine cycle of
its own), the variants trained side by side through them (a name and its conditioning: the UDRL
model and its ablations), and a second UDRL round for one variant: its last stage, query focus
chosen on the hand-written tuning half, answers its training queries (`udrl rollout`) and one
more stage trains on the data plus the judged answers.

Started again after an interruption (or in a later session), it does only what is not done: a
finished run (its ``model`` directory published) is skipped, an interrupted one resumed from its
last checkpoint, the rollout resumed from its log. Each variant's final run lands in ``OUT/NAME``,
earlier ones in ``OUT/stageN/NAME``.

A recipe longer than one sitting (the shipped one is about five hours a variant on two cores) can
be carried to another machine: with ``--keep DIR`` each finished stage's weights are also written
as a gzipped f16 GGUF, ``DIR/NAME-stageN-f16.gguf.gz`` (commit it; gzip keeps the mini model's 53 MB
under 50). On a machine without the run directory a
stage with a kept file (or a later one) counts as done, and the next stage starts from the kept
weights, rebuilt into ``OUT/stageN/NAME/model``. The second round's focus report and judged
rollout are written in DIR too. (Kept weights are f16; a stage continued on the same machine
starts from the fp32 ones.) ``--until N`` stops after stage N, so that one sitting ends on a kept
stage.

    udrl recipe trainer/recipes/mini-recipe.json --out runs/model --keep data/stages --until 1
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from udrl.errors import UdrlError

from .errors import ConfigError
from .training.checkpoint import RUN_CONFIG


@dataclasses.dataclass
class Round2:
    variant: str  # which variant gets the round
    config: str  # its train config
    tasks: list[str]  # tasks the rollout asks for
    samples: int = 8
    queries: int | None = None  # only the first N training queries (by hash order); None: all


@dataclasses.dataclass
class Recipe:
    stages: list[str]  # train configs, in order
    variants: dict[str, list[str]]  # name -> conditioning
    round2: Round2 | None = None
    data: list[str] | None = None  # overrides the configs' data (default: theirs)

    @classmethod
    def from_file(cls, path: str | Path) -> Recipe:
        """Read and check a recipe file; config paths are relative to the file's directory."""
        path = Path(path)
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"recipe not found: {path}") from None
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path} is not valid JSON: {exc}") from exc
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: a recipe is a JSON object")
        unknown = set(raw) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ConfigError(f"{path}: unknown recipe key(s) {sorted(unknown)}; allowed: stages, variants, round2, data")
        if not raw.get("stages") or not raw.get("variants"):
            raise ConfigError(f"{path}: a recipe needs 'stages' (train configs) and 'variants' (name -> conditioning)")
        here = path.parent
        stages = [str(here / s) for s in raw["stages"]]
        round2 = None
        if raw.get("round2"):
            r = dict(raw["round2"])
            missing = {"variant", "config", "tasks"} - set(r)
            if missing:
                raise ConfigError(f"{path}: round2 needs {sorted(missing)}")
            round2 = Round2(variant=r["variant"], config=str(here / r["config"]), tasks=list(r["tasks"]),
                            samples=int(r.get("samples", 8)),
                            queries=int(r["queries"]) if r.get("queries") is not None else None)
            if round2.variant not in raw["variants"]:
                raise ConfigError(f"{path}: round2 variant {round2.variant!r} is not one of {sorted(raw['variants'])}")
        for config in stages + ([round2.config] if round2 else []):
            if not Path(config).is_file():
                raise ConfigError(f"{path}: train config not found: {config}")
        return cls(stages=stages, variants=dict(raw["variants"]), round2=round2, data=raw.get("data"))


def run_dirs(recipe: Recipe, out: Path, name: str) -> list[Path]:
    """Each stage's run directory for one variant, the round's last (the final one is ``out/name``)."""
    count = len(recipe.stages) + (1 if recipe.round2 and recipe.round2.variant == name else 0)
    return [out / name if i == count else out / f"stage{i}" / name for i in range(1, count + 1)]


def _udrl(*args: str) -> list[str]:
    return [sys.executable, "-m", "udrl", *args]


def kept_file(keep: Path, name: str, stage: int) -> Path:
    """Where ``--keep`` puts a variant's weights after a stage."""
    return keep / f"{name}-stage{stage}-f16.gguf.gz"


def _compress_atomic(source: Path, target: Path) -> None:
    """gzip ``source`` into ``target`` so that a reader never sees a partial file; removes ``source``."""
    partial = target.with_name(f".{target.name}.tmp")
    with open(source, "rb") as f, gzip.open(partial, "wb", compresslevel=6) as g:
        shutil.copyfileobj(f, g, 1 << 20)
    os.replace(partial, target)
    source.unlink()


def _train_command(config: str, run: Path, previous: Path | None, conditioning: Sequence[str],
                   data: Sequence[str] | None, threads: int) -> list[str]:
    if (run / RUN_CONFIG).exists():
        return _udrl("train", "--resume", "--out", str(run), "--threads", str(threads))
    cmd = _udrl("train", "--config", config, "--out", str(run), "--conditioning", *conditioning,
                "--threads", str(threads))
    if previous is not None:
        cmd += ["--init", str(previous / "model")]
    for path in data or []:
        cmd += ["--data", path]
    return cmd


def _run_all(commands: Sequence[tuple[list[str], Path]], threads: int) -> None:
    """Start the commands side by side (``threads`` torch threads each), each logging to its file;
    raise naming the first that failed."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    procs = []
    for cmd, log in commands:
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as f:
            procs.append((subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env), log))
    failed = [log for proc, log in procs if proc.wait() != 0]
    if failed:
        raise UdrlError(f"a recipe step failed; see {failed[0]} (run the recipe again to resume)")


def _kept_later(keep: Path | None, name: str, stage: int, stages: int) -> bool:
    return keep is not None and any(kept_file(keep, name, s).is_file() for s in range(stage, stages + 1))


def _bring_back(run: Path, keep: Path | None, name: str, stage: int) -> Path:
    """A finished stage's run directory, its model rebuilt from the kept GGUF when the run is not here."""
    if not (run / "model").is_dir() and keep is not None and kept_file(keep, name, stage).is_file():
        from udrl.converters.from_gguf import checkpoint_from_gguf

        run.mkdir(parents=True, exist_ok=True)
        unpacked = run / "kept-f16.gguf"
        with gzip.open(kept_file(keep, name, stage), "rb") as g, open(unpacked, "wb") as f:
            shutil.copyfileobj(g, f, 1 << 20)
        checkpoint_from_gguf(unpacked, run / "model")
        unpacked.unlink()
    return run


def run_recipe(recipe_path: str | Path, out: str | Path, only: Sequence[str] | None = None,
               threads: int | None = None, keep: str | Path | None = None, until: int | None = None,
               log: Any = print) -> dict[str, Path]:
    """Run (or resume) a recipe; returns each variant's final run directory (with ``until``, its
    run directory of that stage). ``keep`` and ``until``: see the module docstring."""
    recipe = Recipe.from_file(recipe_path)
    out = Path(out)
    keep = Path(keep) if keep is not None else None
    names = list(only) if only else list(recipe.variants)
    unknown = [n for n in names if n not in recipe.variants]
    if unknown:
        raise ConfigError(f"unknown variant(s) {unknown}; the recipe has {list(recipe.variants)}")
    stages = len(recipe.stages)
    if until is not None and not 1 <= until <= stages:
        raise ConfigError(f"--until {until}: the recipe has stages 1 to {stages}")
    threads = threads or max(1, (os.cpu_count() or 1) // len(names))
    last = until or stages
    for stage, config in enumerate(recipe.stages[:last], 1):
        steps = []
        for name in names:
            dirs = run_dirs(recipe, out, name)
            run = dirs[stage - 1]
            if (run / "model").is_dir() or _kept_later(keep, name, stage, stages):
                continue
            previous = _bring_back(dirs[stage - 2], keep, name, stage - 1) if stage > 1 else None
            steps.append((_train_command(config, run, previous, recipe.variants[name],
                                         recipe.data, threads), out / f"{name}.stage{stage}.log"))
        if steps:
            log(f"stage {stage}/{stages}: training {len(steps)} run(s), {threads} thread(s) each")
            _run_all(steps, threads)
        if keep is not None:
            for name in names:
                run = run_dirs(recipe, out, name)[stage - 1]
                if (run / "model").is_dir() and not _kept_later(keep, name, stage, stages):
                    log(f"stage {stage}: keeping {name}'s weights in {kept_file(keep, name, stage)}")
                    keep.mkdir(parents=True, exist_ok=True)
                    exported = run / "kept-f16.gguf"
                    cmd = _udrl("export", str(run / "model"), "--format", "gguf", "--quant", "f16",
                                "--out", str(exported), "--force")
                    _run_all([(cmd, out / f"{name}.stage{stage}.log")], threads)
                    _compress_atomic(exported, kept_file(keep, name, stage))
    if until is not None:
        return {name: run_dirs(recipe, out, name)[until - 1] for name in names}
    if recipe.round2 and recipe.round2.variant in names:
        _round2(recipe, out, keep, log)
    return {name: run_dirs(recipe, out, name)[-1] for name in names}


def _round2(recipe: Recipe, out: Path, keep: Path | None, log: Any) -> None:
    r2 = recipe.round2
    assert r2 is not None
    dirs = run_dirs(recipe, out, r2.variant)
    last, final = dirs[-2], dirs[-1]
    if (final / "model").is_dir():
        return
    _bring_back(last, keep, r2.variant, len(recipe.stages))
    data = recipe.data or json.loads(Path(recipe.stages[-1]).read_text())["data"]
    gguf = last / "model-q8_0.gguf"
    # With --keep the round's products travel too: the focus report and the judged rollout.
    focus_report = (keep or out) / f"{r2.variant}-focus-stage{len(recipe.stages)}.json"
    rollout_out = keep / f"{r2.variant}-round2-rollout.jsonl.gz" if keep else out / "rollout" / "round2.jsonl.gz"
    threads = str(os.cpu_count() or 1)
    if not focus_report.exists() or not gguf.exists():  # the focused GGUF is remade on a new machine
        log(f"round 2: query focus of {last} on the hand-written tuning half")
        steps = [_udrl("export", str(last / "model"), "--format", "gguf", "--quant", "q8_0", "--force"),
                 _udrl("focus", str(gguf), *[a for d in data for a in ("--data", d)], "--write", str(last / "model"),
                       "--out", str(focus_report), "--threads", threads),
                 _udrl("export", str(last / "model"), "--format", "gguf", "--quant", "q8_0", "--force")]
        for cmd in steps:
            _run_all([(cmd, out / f"{r2.variant}.round2.log")], int(threads))
    if not rollout_out.exists():
        log(f"round 2: {gguf} answers its training queries ({', '.join(r2.tasks)})")
        cmd = _udrl("rollout", str(gguf), *[a for d in data for a in ("--data", d)], "--tasks", *r2.tasks,
                    "--samples", str(r2.samples), "--out", str(rollout_out), "--threads", threads,
                    *(["--queries", str(r2.queries)] if r2.queries else []))
        _run_all([(cmd, out / f"{r2.variant}.round2.log")], int(threads))
    log("round 2: the last stage")
    cmd = _train_command(r2.config, final, last, recipe.variants[r2.variant], [*data, str(rollout_out)],
                         int(threads))
    _run_all([(cmd, out / f"{r2.variant}.stage{len(dirs)}.log")], int(threads))
