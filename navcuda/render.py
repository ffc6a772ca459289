"""Rendering directions: strips over t, image grids and their PNG files.

A *strip* of a direction is ``G_{theta + t xi}(z)`` for a row of ``t`` values; a direction grid
stacks one strip per (direction, z). Files are written atomically: to a temporary file beside the
target, then renamed, so an interrupted run never leaves a half-written PNG.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from navcuda.models.stylegan2 import Generator, NoiseMode
from navcuda.shift import Direction, synthesize_shifted

__all__ = ["render_strips", "save_grid", "to_uint8", "atomic_save_image"]


@torch.no_grad()
def render_strips(
    generator: Generator,
    directions: Sequence[Direction],
    ws: torch.Tensor,
    ts: Sequence[float] | torch.Tensor,
    noise_mode: NoiseMode = "const",
    batch_size: int = 16,
) -> torch.Tensor:
    """Images ``[K, N, T, C, H, W]``: K directions, N latents ``ws [N, ...]``, T shifts ``ts``.

    All (direction, latent, t) triples are rendered in batches of ``batch_size`` with one shift per
    sample.
    """
    ts_ = torch.as_tensor(ts, dtype=torch.float32).flatten()
    k, n, t = len(directions), ws.shape[0], ts_.numel()
    if k == 0 or n == 0 or t == 0:
        raise ValueError(f"need at least one direction, latent and t (got {k}, {n}, {t})")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    triples = [(i, j, m) for i in range(k) for j in range(n) for m in range(t)]
    out = []
    for start in range(0, len(triples), batch_size):
        chunk = triples[start : start + batch_size]
        dirs = [directions[i] for i, _, _ in chunk]
        w = ws[[j for _, j, _ in chunk]]
        tt = ts_[[m for _, _, m in chunk]].to(w.device)
        out.append(synthesize_shifted(generator, w, dirs, tt, noise_mode).float().cpu())
    images = torch.cat(out)
    return images.reshape(k, n, t, *images.shape[1:])


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """``[..., C, H, W]`` floats in [-1, 1] -> ``[..., H, W, C]`` uint8 (values clipped)."""
    x = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.movedim(-3, -1).numpy()


def atomic_save_image(image: Image.Image, path: str | os.PathLike, **save_kwargs) -> Path:
    """Save a PIL image to ``path`` atomically (temporary file + rename); returns the path."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            image.save(f, format=save_kwargs.pop("format", None) or _format_of(p), **save_kwargs)
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return p


def _format_of(p: Path) -> str:
    ext = p.suffix.lower().lstrip(".")
    formats = {"png": "PNG", "jpg": "JPEG", "jpeg": "JPEG", "gif": "GIF", "webp": "WEBP"}
    if ext not in formats:
        raise ValueError(f"unsupported image extension {p.suffix!r}; use one of {sorted(formats)}")
    return formats[ext]


def save_grid(
    images: torch.Tensor, path: str | os.PathLike, nrow: int | None = None, padding: int = 2
) -> Path:
    """Tile images into one PNG, atomically.

    ``images``: ``[N, C, H, W]`` (tiled ``nrow`` per row, default ceil(sqrt(N))) or
    ``[R, T, C, H, W]`` (one row per leading index). Values in [-1, 1]; C is 1 or 3.
    """
    if images.ndim == 5:
        nrow = images.shape[1]
        images = images.flatten(0, 1)
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(
            f"expected [N, C, H, W] or [R, T, C, H, W] with C in (1, 3), got {list(images.shape)}"
        )
    n, c, h, w = images.shape
    nrow = nrow or int(np.ceil(np.sqrt(n)))
    rows = (n + nrow - 1) // nrow
    canvas = np.full(
        (rows * (h + padding) + padding, nrow * (w + padding) + padding, 3), 255, np.uint8
    )
    arr = to_uint8(images)
    if c == 1:
        arr = np.repeat(arr, 3, axis=-1)
    for idx in range(n):
        r, col = divmod(idx, nrow)
        y, x = padding + r * (h + padding), padding + col * (w + padding)
        canvas[y : y + h, x : x + w] = arr[idx]
    return atomic_save_image(Image.fromarray(canvas), path)
