"""Shared figure: a heat-map over the toy world's factors (columns) for the evaluation reports."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from navcuda.toyworld import FACTOR_NAMES

__all__ = ["factor_heatmap"]


def factor_heatmap(
    grid,
    row_labels: Sequence[str],
    title: str,
    path: str | os.PathLike,
    *,
    cmap: str,
    vmin: float = 0.0,
    vmax: float | None = None,
    row_height: float = 0.45,
    annotate_from: float | None = None,
) -> Path:
    """Save ``grid [rows, len(FACTOR_NAMES)]`` (NaN = blank) as a PNG heat-map, atomically.

    Cells ``>= annotate_from`` are labelled with their value (None: no labels).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from navcuda.rendering import atomic_save_figure

    fig, ax = plt.subplots(
        figsize=(1.0 + 0.55 * len(FACTOR_NAMES), 1.2 + row_height * len(row_labels)), dpi=120
    )
    im = ax.imshow(grid, vmin=vmin, vmax=vmax, cmap=cmap, aspect="auto")
    if annotate_from is not None:
        for i in range(grid.shape[0]):
            for j in range(grid.shape[1]):
                if grid[i, j] >= annotate_from:
                    ax.text(j, i, f"{grid[i, j]:.2f}", ha="center", va="center", fontsize=7,
                            color="black" if grid[i, j] > 0.6 else "white")  # fmt: skip
    ax.set_xticks(range(len(FACTOR_NAMES)))
    ax.set_xticklabels([f.replace("_", " ") for f in FACTOR_NAMES], rotation=45, ha="right")
    ax.set_yticks(range(len(row_labels)))
    ax.set_yticklabels(row_labels)
    ax.set_title(title)
    fig.colorbar(im, ax=ax, fraction=0.03)
    fig.tight_layout()
    return atomic_save_figure(fig, path)
