"""Figures the trainer draws (loss curves, the card's plots, the dataset card's histograms)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def save_figure(fig: Any, path: Path) -> Path:
    """Write a matplotlib figure through a temporary file, so a reader never sees half a PNG."""
    import matplotlib.pyplot as plt

    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)
    return path
