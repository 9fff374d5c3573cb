"""What the trainer's long jobs share: an append-only log to resume from, stable seeds, batches, a
progress bar. Distillation and the second UDRL round (`rollout.py`) are both built on them."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

from .errors import DatasetError


class JsonlLog:
    """An append-only JSONL file of rows with unique ``id``s, safe to reopen after a crash."""

    def __init__(self, path: Path):
        self.path = path
        self.rows: list[dict[str, Any]] = []
        if path.exists():
            data = path.read_bytes()
            complete = data[: data.rfind(b"\n") + 1]
            if len(complete) != len(data):  # a torn last line from a killed run: drop it
                with open(path, "r+b") as f:
                    f.truncate(len(complete))
            self.rows = [json.loads(line) for line in complete.decode().splitlines() if line.strip()]
        self.ids = {r["id"] for r in self.rows}
        if len(self.ids) != len(self.rows):
            raise DatasetError(f"{path} has duplicate ids: it was not written by udrl distill")

    def append(self, rows: Sequence[dict[str, Any]]) -> None:
        fresh = [r for r in rows if r["id"] not in self.ids]
        with open(self.path, "a", encoding="utf-8") as f:
            f.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in fresh))
            f.flush()
            os.fsync(f.fileno())
        self.rows.extend(fresh)
        self.ids.update(r["id"] for r in fresh)


def query_id(query: str) -> str:
    """A short stable id of a query, the middle part of job ids."""
    return hashlib.sha1(query.encode()).hexdigest()[:16]


def stable_int(*parts: Any) -> int:
    """A 32-bit integer from the parts' text: per-job seeds and choices that survive a restart."""
    return int.from_bytes(hashlib.sha256(":".join(map(str, parts)).encode()).digest()[:4], "little")


def batches(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    """Consecutive slices of ``items`` of at most ``size``."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def progress_bar(total: int, initial: int, desc: str) -> tqdm:
    """A samples/s progress bar with an ETA; every 30 s when stderr is not a terminal (a log file)."""
    return tqdm(total=total, initial=initial, desc=desc, unit="sample", dynamic_ncols=True,
                mininterval=1.0 if sys.stderr.isatty() else 30.0)
