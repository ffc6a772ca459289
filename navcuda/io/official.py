"""Import direction files published with the paper's official code (yandex-research/navigan).

Their format is a ``torch.save``d dict ``{'layer_ix': int, 'shift': Tensor[1, 1, out, in, k, k]}``
where ``shift`` is the recommended shift itself (its norm is the recommended amplitude) of the raw
kernel of ``convs[layer_ix]``.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from navcuda.shift import Direction

__all__ = ["load_official_direction"]


def load_official_direction(path: str | os.PathLike, name: str | None = None) -> Direction:
    """Read an official ``{'layer_ix', 'shift'}`` file as a weight-basis :class:`Direction`.

    The direction is the unit-norm shift; ``amplitude`` is the norm of the stored shift. The file is
    read with ``torch.load(weights_only=True)``: no code in it can run.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"official direction file not found: {p}")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - re-raised with the file named
        raise ValueError(f"{p} is not a readable torch file of the official format: {exc}") from exc
    if not isinstance(obj, dict) or "layer_ix" not in obj or "shift" not in obj:
        found = sorted(obj) if isinstance(obj, dict) else type(obj).__name__
        raise ValueError(
            f"{p} is not an official direction file: expected a dict with keys "
            f"'layer_ix' and 'shift', found {found}"
        )
    shift, ix = obj["shift"], obj["layer_ix"]
    if not isinstance(shift, torch.Tensor) or not shift.is_floating_point():
        raise ValueError(f"{p}: 'shift' must be a floating tensor, got {type(shift).__name__}")
    if not isinstance(ix, int) or isinstance(ix, bool) or ix < 0:
        raise ValueError(f"{p}: 'layer_ix' must be a non-negative int, got {ix!r}")
    while shift.ndim > 4 and shift.shape[0] == 1:
        shift = shift[0]
    if shift.ndim != 4:
        raise ValueError(
            f"{p}: 'shift' must be [1, 1, out, in, k, k] or [out, in, k, k], "
            f"got {list(obj['shift'].shape)}"
        )
    amplitude = float(shift.double().norm())
    if amplitude == 0.0 or not torch.isfinite(shift).all():
        raise ValueError(f"{p}: 'shift' is zero or contains NaN/Inf")
    return Direction(
        layer=f"convs.{ix}",
        basis="weight",
        coefficients=shift.double() / amplitude,
        name=name if name is not None else p.stem,
        amplitude=amplitude,
        meta={"source": "navigan", "file": p.name},
    )
