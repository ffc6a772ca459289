"""The studio's exports: the edited PNG, a GIF / MP4 of the edit's sweep, the recipe. Each file
is written atomically (:mod:`navcuda.io.atomic`): a failed export leaves nothing behind."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from navcuda.models.interface import ShiftableGenerator
from navcuda.recipe import DirectionSource, LatentInput, Recipe, SeedInput, noise_mode_for
from navcuda.rendering import save_gif, strip_frames

__all__ = ["KINDS", "SWEEP", "sweep_images", "write_export"]

#: What the studio exports.
KINDS = ("png", "gif", "mp4", "recipe")
#: Shift factors of an exported sweep (GIF / MP4): the edit grows from none to all of it.
SWEEP = tuple(float(x) for x in np.linspace(0.0, 1.0, 9))


def write_export(
    kind: str,
    folder: Path,
    stem: str,
    recipe: Recipe,
    image: torch.Tensor | None = None,
    strip: torch.Tensor | None = None,
) -> Path:
    """Write an edit as ``kind`` (one of :data:`KINDS`) to ``folder / stem.<ext>``: its
    ``recipe``, its ``image`` ``[1, C, H, W]`` as the PNG ``navcuda edit --recipe`` writes
    (greyscale models: mode L), or its ``strip`` ``[1, T, C, H, W]`` (:func:`sweep_images`) as a
    GIF or MP4."""
    if kind == "recipe":
        return recipe.save(folder / f"{stem}.recipe.json")
    if kind == "png":
        from navcuda.rendering import atomic_save_image, to_image

        return atomic_save_image(to_image(image), folder / f"{stem}.png")
    labels = [f"edit x {s:.2f}" for s in SWEEP]
    if kind == "gif":
        return save_gif(strip, folder / f"{stem}.gif", frame_labels=labels)
    from navcuda.video import save_video

    frames = strip_frames(strip, frame_labels=labels, bounce=True)
    return save_video(frames, folder / f"{stem}.mp4")


@torch.no_grad()
def sweep_images(
    g: ShiftableGenerator, recipe: Recipe, sources: Sequence[DirectionSource]
) -> torch.Tensor:
    """``[1, T, C, H, W]``: the recipe's input with its whole edit scaled by each factor of
    :data:`SWEEP` (0: unedited, 1: the edit as shown), one batch."""
    from navcuda.project import noise_override
    from navcuda.shift import synthesize_shifted

    factors = torch.tensor(SWEEP, dtype=g.dtype, device=g.device)
    n = factors.numel()
    combo = recipe.resolve(sources)
    inp = recipe.input
    if isinstance(inp, SeedInput):
        x = g.sample_seeds([inp.seed], truncation_psi=inp.truncation, label=inp.label)
        x = x.take([0] * n)
        noise = None
    else:
        assert isinstance(inp, LatentInput)
        ws = inp.ws.to(g.device, g.dtype)
        x = g.from_latents(ws.expand(n, *ws.shape[1:]))
        noise = inp.noise
    noise_mode = noise_mode_for(g, recipe)
    with noise_override(g, noise):
        if combo is None:
            images = synthesize_shifted(g, x, noise_mode=noise_mode)
        else:
            images = synthesize_shifted(g, x, combo.scaled(factors), noise_mode=noise_mode)
    return images.float().cpu()[None]
