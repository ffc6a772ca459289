"""Toy world: a deterministic procedural renderer of cartoon faces from known factors.

Public API:

* :data:`FACTORS`, :data:`FACTOR_NAMES`, :data:`NUM_FACTORS`, :data:`FACTOR_INDEX`,
  :func:`sample_factors`, :func:`describe_factors`, :func:`to_natural` — the
  ground-truth factor table (normalised factors in ``[0, 1]``, uniform prior).
* :func:`render` — ``[B, F]`` factors -> ``[B, 3, H, W]`` float32 images in ``[-1, 1]``.
* :func:`render_numpy` — uint8 images (grids and files: :mod:`navcuda.rendering`).
* :class:`ToyWorld` — seeded infinite data set of ``(images, factors)`` batches.
"""

from .factors import (
    FACTOR_INDEX,
    FACTOR_NAMES,
    FACTORS,
    NUM_FACTORS,
    PRIOR,
    Factor,
    describe_factors,
    sample_factors,
    to_natural,
)
from .render import (
    MIN_RESOLUTION,
    ToyWorld,
    hsv_to_rgb,
    render,
    render_numpy,
)

__all__ = [
    "FACTORS",
    "FACTOR_INDEX",
    "FACTOR_NAMES",
    "MIN_RESOLUTION",
    "NUM_FACTORS",
    "PRIOR",
    "Factor",
    "ToyWorld",
    "describe_factors",
    "hsv_to_rgb",
    "render",
    "render_numpy",
    "sample_factors",
    "to_natural",
]
