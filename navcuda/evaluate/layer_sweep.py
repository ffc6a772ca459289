"""Layer sweep (paper §6.2, Fig. 20): which factors each layer's directions move.

A discovery method (default: the SVD baseline, cheap and deterministic) runs on every shiftable
layer; each direction is scored on the toy world (:func:`navcuda.metrics.factor_scores.score_edit`
over ``[-a, a]``, ``a`` its calibrated amplitude). A layer's **factor profile** is the total factor
change its directions produce, ``sum_dirs |effect| * a`` per factor, normalised to sum 1: where in
the generator each kind of change lives (on faces: geometry in the early layers, colours late).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from navcuda.models.interface import ShiftableGenerator
from navcuda.toyworld import FACTOR_NAMES

__all__ = ["layer_sweep", "plot_layer_sweep"]


def layer_sweep(
    generator: ShiftableGenerator,
    method: str = "svd",
    k: int = 8,
    layers: list[str] | None = None,
    threshold: float = 0.25,
    n_samples: int = 16,
    seed: int = 0,
    progress: bool = True,
    **hparams: Any,
) -> dict:
    """Run ``method`` with ``k`` directions on every shiftable layer (or ``layers``) and score them.

    Returns a JSON-able dict with, per layer, its resolution, the normalised factor ``profile``
    (``{factor: share}``), the top factor and disentanglement of every direction and the factors
    moved cleanly (disentanglement >= ``threshold``).
    """
    from navcuda.discover import discover
    from navcuda.metrics.factor_scores import score_edit

    infos = [i for i in generator.layers() if i.shiftable]
    if layers is not None:
        names = set(layers)
        infos = [i for i in infos if i.name in names or str(i.index) in names]
        if not infos:
            raise ValueError(f"none of {layers} is a shiftable layer of this model")
    out = []
    bar = tqdm(total=len(infos) * k, desc="layers", unit="dir", disable=not progress)
    for info in infos:
        ds = discover(generator, info.name, method=method, k=k, seed=seed, **hparams)
        profile = torch.zeros(len(FACTOR_NAMES), dtype=torch.float64)
        dirs = []
        for d in ds:
            amp = float(d.amplitude)
            s = score_edit(generator, d, torch.linspace(-amp, amp, 5), n_samples=n_samples,
                           seed=seed)  # fmt: skip
            profile += s.effect.abs() * amp
            dirs.append({"name": d.name, "top_factor": s.top_factor,
                         "disentanglement": s.disentanglement,
                         "effect": abs(float(s.effect[s.top_index])) * amp})  # fmt: skip
            bar.update(1)
        share = profile / profile.sum().clamp_min(1e-12)
        out.append({
            "layer": info.name, "resolution": info.resolution, "k": len(ds),
            "profile": {f: float(v) for f, v in zip(FACTOR_NAMES, share, strict=True)},
            "total_change": float(profile.sum()),
            "clean_factors": sorted({d["top_factor"] for d in dirs
                                     if d["disentanglement"] >= threshold}),
            "directions": dirs,
        })  # fmt: skip
    bar.close()
    return {"experiment": "layers", "method": method, "k": k, "threshold": threshold,
            "n_samples": n_samples, "seed": seed, "layers": out}  # fmt: skip


def plot_layer_sweep(sweep: dict, path: str | os.PathLike) -> Path:
    """Heat-map of the factor profiles: rows = layers (input to output), columns = factors."""
    import numpy as np

    from navcuda.evaluate.figures import factor_heatmap

    rows = sweep["layers"]
    grid = np.array([[r["profile"][f] for f in FACTOR_NAMES] for r in rows])
    labels = [f"{r['layer']} ({r['resolution']}px)" for r in rows]
    title = f"share of factor change per layer ({sweep['method']}, k={sweep['k']})"
    return factor_heatmap(grid, labels, title, path, cmap="magma", row_height=0.4)
