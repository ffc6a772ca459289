"""Naming directions automatically from the toy world's factor scores.

For each direction, :func:`navcuda.metrics.factor_scores.score_edit` measures how much every ground
truth factor moves per unit t. A direction is named after its top factor when its disentanglement
(share of the total change taken by that factor) reaches ``min_disentanglement``; among directions
with the same top factor only the most disentangled keeps the name. Named directions are oriented
so that positive t increases the factor ("nose length" makes the nose longer).
"""

from __future__ import annotations

import torch

from navcuda.io.directions import DirectionSet
from navcuda.models.interface import ShiftableGenerator

__all__ = ["name_by_factors"]


def name_by_factors(
    generator: ShiftableGenerator,
    directions: DirectionSet,
    min_disentanglement: float = 0.25,
    n_samples: int = 16,
    seed: int = 0,
    keep_unnamed: bool = False,
    progress: bool = False,
) -> DirectionSet:
    """A copy of ``directions`` with factor names (see the module docstring).

    Returns only the named directions unless ``keep_unnamed`` (unnamed ones then keep their
    names); scores go to ``extra["factor_scores"]`` (one dict per kept direction, ``named``:
    whether it was named after its top factor). ``progress``: a progress bar over
    the directions scored.
    """
    from navcuda.metrics.factor_scores import score_edit

    if not 0 <= min_disentanglement <= 1:  # also refuses NaN
        raise ValueError(f"min_disentanglement must lie in [0, 1], got {min_disentanglement!r}")
    from tqdm.auto import tqdm

    scores = []
    for d in tqdm(directions, desc="naming", unit="dir", disable=not progress):
        amp = d.amplitude or 1.0
        ts = torch.linspace(-amp, amp, 5)
        scores.append(score_edit(generator, d, ts, n_samples=n_samples, seed=seed))
    best: dict[str, int] = {}
    for i, s in enumerate(scores):
        if s.disentanglement < min_disentanglement:
            continue
        j = best.get(s.top_factor)
        if j is None or s.disentanglement > scores[j].disentanglement:
            best[s.top_factor] = i
    if not best and not keep_unnamed:
        top = max(s.disentanglement for s in scores)
        raise ValueError(
            f"no direction reaches disentanglement {min_disentanglement:g} (the best reaches "
            f"{top:.2f}): lower min_disentanglement (CLI: --min-disentanglement) or keep the "
            "unnamed directions (--keep-unnamed)"
        )
    keep = sorted(best.values()) if not keep_unnamed else list(range(len(directions)))
    out = directions.subset(keep)
    named = {i: f for f, i in best.items()}
    coeffs = out.coefficients.clone()
    names: list[str | None] = []
    info = []
    for row, i in enumerate(keep):
        s = scores[i]
        if i in named:
            sign = 1.0 if float(s.effect[s.top_index]) >= 0 else -1.0
            coeffs[row] = coeffs[row] * sign
            names.append(named[i].replace("_", " "))
        else:
            sign = 1.0
            names.append(out.names[row])
        info.append(
            {
                "source_index": i,
                "named": i in named,
                "top_factor": s.top_factor,
                "disentanglement": s.disentanglement,
                "effect_per_amplitude": float(s.effect[s.top_index])
                * sign
                * (out.amplitudes[row].item()),
            }
        )
    out.coefficients = coeffs
    out.names = names
    out.extra = {**out.extra, "factor_scores": info, "named_by": "toy-world factor regressor"}
    return out
