"""PNG figures (matplotlib, headless)."""

from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from .fileio import atomic_path  # noqa: E402


def save_figure(fig, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)


def zipf_plot(counts, path, title: str) -> None:
    """Log-log rank vs frequency of the vocabulary's tokens."""
    ranks = range(1, len(counts) + 1)
    fig, ax = plt.subplots(figsize=(5.5, 4))
    ax.loglog(ranks, counts, marker=".", linestyle="-")
    ax.set_xlabel("rank")
    ax.set_ylabel("frequency")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    save_figure(fig, path)
