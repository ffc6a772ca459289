"""Rendering directions: strips over t, image grids and their PNG files.

A *strip* of a direction is ``G_{theta + t xi}(z)`` for a row of ``t`` values; a direction grid
stacks one strip per (direction, z). Files are written atomically: to a temporary file beside the
target, then renamed, so an interrupted run never leaves a half-written PNG.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from navcuda._checks import positive_int
from navcuda.io.atomic import atomic_path
from navcuda.io.directions import DirectionSet
from navcuda.models.interface import Inputs, ShiftableGenerator
from navcuda.shift import Direction, as_inputs, synthesize_shifted

__all__ = [
    "RenderResult",
    "atomic_save_figure",
    "atomic_save_image",
    "inputs_for",
    "render",
    "render_strips",
    "save_gif",
    "save_grid",
    "to_uint8",
]


@torch.no_grad()
def render_strips(
    generator: ShiftableGenerator,
    directions: Sequence[Direction],
    inputs: Inputs | torch.Tensor,
    ts: Sequence[float] | torch.Tensor,
    noise_mode: str | None = None,
    batch_size: int = 16,
    progress: bool = False,
) -> torch.Tensor:
    """Images ``[K, N, T, C, H, W]``: K directions, N inputs (:class:`Inputs`, or StyleGAN
    ``ws [N, ...]``), T shifts.

    ``ts`` is ``[T]`` (the same shifts for every direction) or ``[K, T]`` (one row per direction).
    All (direction, latent, t) triples are rendered in batches of ``batch_size``, one shift per
    sample.
    """
    inputs = as_inputs(generator, inputs)
    k, n = len(directions), len(inputs)
    ts_ = torch.as_tensor(ts, dtype=torch.float32)
    if ts_.ndim == 1:
        ts_ = ts_.expand(k, -1)
    if ts_.ndim != 2 or ts_.shape[0] != k:
        raise ValueError(f"ts must be [T] or [K={k}, T], got {list(ts_.shape)}")
    t = ts_.shape[1]
    if k == 0 or n == 0 or t == 0:
        raise ValueError(f"need at least one direction, latent and t (got {k}, {n}, {t})")
    positive_int(batch_size, "batch_size")
    triples = [(i, j, m) for i in range(k) for j in range(n) for m in range(t)]
    out = []
    starts = range(0, len(triples), batch_size)
    for start in tqdm(starts, desc="render", unit="batch", disable=not progress):
        chunk = triples[start : start + batch_size]
        dirs = [directions[i] for i, _, _ in chunk]
        x = inputs.take([j for _, j, _ in chunk])
        tt = torch.stack([ts_[i, m] for i, _, m in chunk]).to(generator.device)
        out.append(synthesize_shifted(generator, x, dirs, tt, noise_mode).float().cpu())
    images = torch.cat(out)
    return images.reshape(k, n, t, *images.shape[1:])


@dataclass
class RenderResult:
    """Output of :func:`render`: ``images [K, N, T, C, H, W]``, the absolute ``ts [K, T]`` used,
    the directions' names and the files written (empty when no output folder was given)."""

    images: torch.Tensor
    ts: torch.Tensor
    names: list[str]
    files: list[Path] = field(default_factory=list)


def render(
    generator: ShiftableGenerator,
    directions: DirectionSet | Sequence[Direction] | Direction,
    z_or_seeds: Inputs | torch.Tensor | Sequence[int] | int = 4,
    ts: Sequence[float] | None = None,
    relative: bool = True,
    output_dir: str | os.PathLike | None = None,
    gif: bool = False,
    truncation_psi: float = 0.7,
    noise_mode: str | None = None,
    batch_size: int = 16,
    progress: bool = True,
    label: int | Sequence[int] | None = None,
) -> RenderResult:
    """Render every direction over a row of shifts for several latents.

    Args:
        directions: a direction set, a list of directions or one direction.
        z_or_seeds: a list of seeds, a count N (seeds 0..N-1), the generator's
            :class:`~navcuda.models.interface.Inputs`, or (StyleGAN) latents ``[N, z_dim]``.
        ts: shifts (default ``-2, -1, 0, 1, 2``). With ``relative=True`` they are multiples of each
            direction's recommended amplitude (directions without one use 1.0); otherwise
            absolute Frobenius norms.
        output_dir: when given, writes ``{i:02d}_{name}.png`` (rows: latents, columns: t) per
            direction, and with ``gif=True`` an animated ``{i:02d}_{name}.gif`` sweeping t.
        truncation_psi: 0.7 by default (:func:`navcuda.generate` defaults to 1.0).
        noise_mode: StyleGAN's noise: ``"const"`` (default), ``"random"`` or ``"none"``.
        label: a conditional generator's class, one for all latents or one per latent (None:
            drawn with each seed's latent).
        batch_size: images per synthesis call (bounds memory).
        progress: show a progress bar.

    Returns:
        :class:`RenderResult`.
    """
    dirs = _as_directions(directions)
    inputs = inputs_for(generator, z_or_seeds, truncation_psi, label)
    rel = torch.as_tensor([-2.0, -1.0, 0.0, 1.0, 2.0] if ts is None else list(ts))
    if rel.ndim != 1 or rel.numel() == 0 or not torch.isfinite(rel).all():
        raise ValueError("ts must be a non-empty list of finite numbers")
    scale = torch.tensor(
        [(d.amplitude if (relative and d.amplitude) else 1.0) for d in dirs], dtype=torch.float32
    )
    abs_ts = scale[:, None] * rel[None, :].float()
    images = render_strips(generator, dirs, inputs, abs_ts, noise_mode, batch_size, progress)
    names = [d.name or f"direction{i}" for i, d in enumerate(dirs)]
    result = RenderResult(images, abs_ts, names)
    if output_dir is not None:
        out = Path(output_dir)
        for i, name in enumerate(names):
            stem = f"{i:02d}_{_safe(name)}"
            result.files.append(save_grid(images[i], out / f"{stem}.png"))
            if gif:
                result.files.append(save_gif(images[i], out / f"{stem}.gif"))
    return result


def _as_directions(directions) -> list[Direction]:
    if isinstance(directions, Direction):
        return [directions]
    dirs = list(directions)
    if not dirs:
        raise ValueError("no directions to render")
    return dirs


def inputs_for(
    generator: ShiftableGenerator,
    z_or_seeds: Inputs | torch.Tensor | Sequence[int] | int,
    truncation_psi: float = 1.0,
    label: int | Sequence[int] | None = None,
) -> Inputs:
    """The inputs of a render: ``Inputs`` as they are; a count ``N`` (seeds ``0..N-1``) or a
    list of seeds (one input per seed, :meth:`~ShiftableGenerator.sample_seeds`); or, for StyleGAN
    generators, latents ``z [N, z_dim]``."""
    if isinstance(z_or_seeds, Inputs):
        return z_or_seeds
    if isinstance(z_or_seeds, torch.Tensor):
        from_z = getattr(generator, "from_z", None)
        if from_z is None:
            raise ValueError(
                f"{generator.architecture} takes seeds or navcuda Inputs, not a z tensor"
            )
        with torch.no_grad():
            return from_z(z_or_seeds.to(generator.device), truncation_psi)
    seeds = list(range(z_or_seeds)) if isinstance(z_or_seeds, int) else list(z_or_seeds)
    if not seeds:
        raise ValueError("no latents: give a count, seeds, navcuda Inputs or a z tensor")
    return generator.sample_seeds(seeds, truncation_psi=truncation_psi, label=label)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:60] or "direction"


def save_gif(
    strip: torch.Tensor, path: str | os.PathLike, frame_ms: int = 120, padding: int = 2
) -> Path:
    """Animated GIF of ``strip [N, T, C, H, W]``: frame m shows the N latents side by side at the
    m-th shift; the animation goes forth and back. Written atomically."""
    if strip.ndim != 5:
        raise ValueError(f"expected [N, T, C, H, W], got {list(strip.shape)}")
    frames = [
        Image.fromarray(_tile(strip[:, m], nrow=strip.shape[0], padding=padding))
        for m in range(strip.shape[1])
    ]
    seq = frames + frames[-2:0:-1]
    return atomic_save_image(
        seq[0], path, format="GIF", save_all=True, append_images=seq[1:], duration=frame_ms, loop=0
    )


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """``[..., C, H, W]`` floats in [-1, 1] -> ``[..., H, W, C]`` uint8 (values clipped)."""
    x = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.movedim(-3, -1).numpy()


def atomic_save_image(image: Image.Image, path: str | os.PathLike, **save_kwargs) -> Path:
    """Save a PIL image to ``path`` atomically (temporary file + rename); returns the path."""
    p = Path(path)
    fmt = save_kwargs.pop("format", None) or _format_of(p)
    with atomic_path(p) as tmp:
        image.save(tmp, format=fmt, **save_kwargs)
    return p


def atomic_save_figure(fig, path: str | os.PathLike, dpi: int | None = None) -> Path:
    """Save a matplotlib figure as PNG atomically and close it; returns the path."""
    import matplotlib.pyplot as plt

    p = Path(path)
    try:
        with atomic_path(p) as tmp:
            fig.savefig(tmp, format="png", dpi=dpi)
    finally:
        plt.close(fig)
    return p


def _format_of(p: Path) -> str:
    ext = p.suffix.lower().lstrip(".")
    formats = {"png": "PNG", "jpg": "JPEG", "jpeg": "JPEG", "gif": "GIF", "webp": "WEBP"}
    if ext not in formats:
        raise ValueError(f"unsupported image extension {p.suffix!r}; use one of {sorted(formats)}")
    return formats[ext]


def _tile(images: torch.Tensor, nrow: int, padding: int) -> np.ndarray:
    n, c, h, w = images.shape
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
    return canvas


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
    nrow = nrow or int(np.ceil(np.sqrt(images.shape[0])))
    return atomic_save_image(Image.fromarray(_tile(images, nrow, padding)), path)
