"""Locality of an edit: where in the image does a direction change pixels? (paper §5, Fig. 9)

The heat-map of a direction is the per-pixel squared difference between ``G_theta(z)`` and
``G_{theta + t xi}(z)``, averaged over colour channels, ``n_z`` latents and ``n_t`` shifts spread
over ``[-T, T]`` (the paper: 1600 z x 20 t in [-100, 100]; ``T`` defaults to the direction's
recommended amplitude). The locality score is the share of the map's total energy that falls in its
``top_fraction`` most-changed pixels: 1.0 means all change is concentrated in that fraction of the
image, ``top_fraction`` means the change is spread uniformly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from navcuda._checks import positive_int
from navcuda.models.interface import ShiftableGenerator
from navcuda.shift import Direction, synthesize_shifted

__all__ = ["LocalityResult", "locality_map", "locality_score", "save_heatmaps"]


@dataclass
class LocalityResult:
    """``heatmap [H, W]`` (mean squared change, float64), its ``score`` and the settings used."""

    name: str
    heatmap: torch.Tensor
    score: float
    t_max: float
    n_z: int
    n_t: int


def locality_score(heatmap: torch.Tensor, top_fraction: float = 0.1) -> float:
    """Share of the total squared change inside the ``top_fraction`` most-changed pixels."""
    if not 0 < top_fraction <= 1:
        raise ValueError(f"top_fraction must be in (0, 1], got {top_fraction}")
    flat = heatmap.flatten().double()
    if not torch.isfinite(flat).all() or (flat < 0).any():
        raise ValueError("the heat-map must be finite and non-negative")
    total = float(flat.sum())
    if total == 0.0:
        return float("nan")
    n = max(1, round(top_fraction * flat.numel()))
    return float(flat.topk(n).values.sum()) / total


@torch.no_grad()
def locality_map(
    generator: ShiftableGenerator,
    direction: Direction,
    n_z: int = 64,
    n_t: int = 20,
    t_max: float | None = None,
    seed: int = 0,
    batch_size: int = 32,
    truncation_psi: float = 1.0,
    top_fraction: float = 0.1,
    progress: bool = False,
    label: int | None = None,
) -> LocalityResult:
    """Heat-map and locality score of one direction (see the module docstring); ``label``: a
    conditional generator's class (None: drawn with the latents)."""
    t_abs = t_max if t_max is not None else direction.amplitude
    if t_abs is None or not t_abs > 0:
        raise ValueError(
            f"direction {direction.name!r} has no recommended amplitude: pass t_max explicitly"
        )
    positive_int(n_z, "n_z")
    positive_int(n_t, "n_t")
    dev = generator.device
    inputs = generator.sample(n_z, seed, truncation_psi=truncation_psi, label=label)
    ts = torch.linspace(-t_abs, t_abs, n_t + 1 if n_t % 2 == 0 else n_t)
    ts = ts[ts != 0][:n_t] if (ts == 0).any() else ts
    base = torch.cat([generator.render(c) for c in inputs.chunks(batch_size)])
    pairs = [(j, float(t)) for j in range(n_z) for t in ts]
    acc = None
    for start in tqdm(range(0, len(pairs), batch_size), disable=not progress, desc="locality"):
        chunk = pairs[start : start + batch_size]
        idx = torch.tensor([j for j, _ in chunk], device=dev)
        tt = torch.tensor([t for _, t in chunk], device=dev)
        img = synthesize_shifted(generator, inputs.take(idx), [direction] * len(chunk), tt)
        sq = (img - base[idx]).double().square().mean(dim=1).sum(dim=0)
        acc = sq if acc is None else acc + sq
    heat = (acc / len(pairs)).cpu()
    return LocalityResult(
        name=direction.name or "direction",
        heatmap=heat,
        score=locality_score(heat, top_fraction),
        t_max=float(t_abs),
        n_z=n_z,
        n_t=len(ts),
    )


def save_heatmaps(results: list[LocalityResult], path, ncols: int = 8):
    """One heat-map panel per direction (titled with its name and score), saved atomically."""
    import math

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from navcuda.rendering import atomic_save_figure

    if not results:
        raise ValueError("no locality results to draw")
    cols = min(ncols, len(results))
    rows = math.ceil(len(results) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.8 * cols, 1.9 * rows), dpi=110, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, r in zip(axes.flat, results, strict=False):
        ax.imshow(r.heatmap.numpy(), cmap="inferno")
        ax.set_title(f"{r.name}\nlocality {r.score:.2f}", fontsize=7)
    fig.tight_layout()
    return atomic_save_figure(fig, path)
