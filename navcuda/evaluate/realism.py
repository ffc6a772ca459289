"""Realism versus shift: Fréchet distance of edited samples to real data (paper Fig. 7, 11, 14).

For each direction and each ``t`` of a grid, ``n_samples`` images ``G_{theta + t xi}(z)`` are
embedded by a feature function and compared with the statistics of real images by the Fréchet
distance. On the toy world the features are the factor regressor's penultimate layer ("toy-FD",
the offline stand-in for FID); with user-supplied Inception weights, real FID. Latent-space
directions (GANSpace, SeFa) go through the same code, so parameter and latent edits share one plot.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from navcuda.models.interface import ShiftableGenerator
from navcuda.shift import Direction, synthesize_shifted

__all__ = ["RealismCurve", "realism_curves", "plot_realism"]

FeatureFn = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class RealismCurve:
    """Fréchet distance ``distances[i]`` of edited samples at shift ``ts[i]`` (absolute norms;
    ``relative_ts`` are the same shifts in units of the recommended amplitude)."""

    name: str
    method: str
    ts: list[float]
    relative_ts: list[float]
    distances: list[float]

    def to_dict(self) -> dict:
        return asdict(self)


@torch.no_grad()
def realism_curves(
    generator: ShiftableGenerator,
    directions: Sequence[Direction],
    real_stats: tuple[torch.Tensor, torch.Tensor],
    feature_fn: FeatureFn,
    relative_ts: Sequence[float] = (-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0),
    n_samples: int = 512,
    batch_size: int = 64,
    seed: int = 0,
    truncation_psi: float = 1.0,
    progress: bool = True,
    label: int | None = None,
) -> list[RealismCurve]:
    """One curve per direction; ``t`` is ``relative_ts`` times each direction's amplitude.

    ``real_stats`` = ``(mu [D], sigma [D, D])`` of real features; ``feature_fn`` maps images in
    [-1, 1] to ``[B, D]``. The same latents are used for every (direction, t), so curves differ only
    by the edit (a conditional generator's ``label``: one class for all, None: drawn with the
    latents).
    """
    from navcuda.metrics.frechet import feature_statistics, frechet_distance

    if n_samples < 2:
        raise ValueError(f"n_samples must be >= 2, got {n_samples}")
    inputs = generator.sample(n_samples, seed, truncation_psi=truncation_psi, label=label)
    mu_r, sig_r = real_stats
    curves = []
    total = len(directions) * len(relative_ts)
    bar = tqdm(total=total, desc="realism", disable=not progress)
    for d in directions:
        if not d.amplitude:
            raise ValueError(f"direction {d.name!r} has no recommended amplitude")
        dists, abs_ts = [], []
        for rel in relative_ts:
            t = float(rel) * d.amplitude
            feats = []
            for chunk in inputs.chunks(batch_size):
                n = len(chunk)
                img = synthesize_shifted(generator, chunk, [d] * n, torch.full((n,), t))
                feats.append(feature_fn(img).double().cpu())
            mu, sig = feature_statistics(torch.cat(feats))
            dists.append(float(frechet_distance(mu, sig, mu_r, sig_r)))
            abs_ts.append(t)
            bar.update(1)
        curves.append(
            RealismCurve(
                d.name or "direction",
                d.meta.get("method", "?"),
                abs_ts,
                list(map(float, relative_ts)),
                dists,
            )
        )
    bar.close()
    return curves


def plot_realism(
    curves: Sequence[RealismCurve], path: str | os.PathLike, title: str = "", metric: str = "FD"
) -> Path:
    """Line plot of every curve (x: shift in units of the recommended amplitude), saved
    atomically as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from navcuda.rendering import atomic_save_figure

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    for c in curves:
        style = "--" if c.method in ("ganspace", "sefa") else "-"
        ax.plot(c.relative_ts, c.distances, style, marker="o", ms=3, label=f"{c.name} ({c.method})")
    ax.set_xlabel("shift t / recommended amplitude")
    ax.set_ylabel(metric)
    ax.set_title(title or f"realism vs shift ({metric})")
    ax.grid(alpha=0.3)
    if len(curves) <= 12:
        ax.legend(fontsize=7)
    fig.tight_layout()
    return atomic_save_figure(fig, path)
