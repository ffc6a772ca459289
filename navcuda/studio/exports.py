"""The studio's exports: the edited PNG, a GIF / MP4 of the edit's sweep, the recipe. Each file
is written atomically (:mod:`navcuda.io.atomic`): a failed export leaves nothing behind."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch

from navcuda.recipe import LatentInput, SeedInput
from navcuda.rendering import save_gif, strip_frames

if TYPE_CHECKING:
    from navcuda.studio.session import EditState, Studio

__all__ = ["KINDS", "export_state", "sweep_images"]

#: What the studio exports.
KINDS = ("png", "gif", "mp4", "recipe")


def export_state(studio: Studio, state: EditState, kind: str, stem: str) -> Path:
    """Write ``state``'s edit as ``kind`` to ``studio.export_dir / stem.<ext>``."""
    from navcuda.studio.session import StudioError

    if kind not in KINDS:
        raise StudioError(f"unknown export {kind!r}: one of {', '.join(KINDS)}")
    folder = studio.export_dir
    if folder.exists() and not folder.is_dir():
        raise OSError(f"{folder} is a file, not a folder")
    recipe = studio.recipe(state)
    if kind == "recipe":
        return recipe.save(folder / f"{stem}.recipe.json")
    if kind == "png":  # the file navcuda edit --recipe writes (greyscale models: mode L)
        from navcuda.rendering import atomic_save_image, to_image

        return atomic_save_image(to_image(studio.render_tensor(state)), folder / f"{stem}.png")
    strip = sweep_images(studio, state)  # [1, T, C, H, W]
    labels = [f"edit x {s:.2f}" for s in _factors()]
    if kind == "gif":
        return save_gif(strip, folder / f"{stem}.gif", frame_labels=labels)
    from navcuda.video import save_video

    frames = strip_frames(strip, frame_labels=labels, bounce=True)
    return save_video(frames, folder / f"{stem}.mp4")


def _factors() -> list[float]:
    from navcuda.studio.session import SWEEP

    return list(SWEEP)


@torch.no_grad()
def sweep_images(studio: Studio, state: EditState) -> torch.Tensor:
    """``[1, T, C, H, W]``: the input with the whole edit scaled by each factor of
    :data:`~navcuda.studio.session.SWEEP` (0: unedited, 1: the edit as shown), one batch."""
    from navcuda.project import noise_override
    from navcuda.shift import synthesize_shifted

    g = studio.generator
    recipe = studio.recipe(state)
    factors = torch.tensor(_factors(), dtype=g.dtype, device=g.device)
    n = factors.numel()
    combo = recipe.resolve(studio.sources)
    inp = recipe.input
    with studio._lock:
        if isinstance(inp, SeedInput):
            x = g.sample_seeds([inp.seed], truncation_psi=inp.truncation, label=inp.label)
            x = x.take([0] * n)
            noise = None
        else:
            assert isinstance(inp, LatentInput)
            ws = inp.ws.to(g.device, g.dtype)
            x = g.from_latents(ws.expand(n, *ws.shape[1:]))
            noise = inp.noise
        with noise_override(g, noise):
            if combo is None:
                images = synthesize_shifted(g, x, noise_mode=recipe.noise_mode)
            else:
                images = synthesize_shifted(
                    g, x, combo.scaled(factors), noise_mode=recipe.noise_mode
                )
    return images.float().cpu()[None]
