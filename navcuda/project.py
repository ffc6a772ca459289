"""Real images: loading, projection into W / W+ and editing of the projection.

The projector follows the NVlabs StyleGAN2(-ADA) ``projector.py``: the latent starts at ``w_avg``
and is optimised with Adam under a learning-rate ramp (cosine ramp-down over the last 25 %, linear
ramp-up over the first 5 %) while Gaussian noise of scale ``w_std * 0.05`` (ramped down
quadratically to zero at 75 % of the steps) is added to it; the per-layer noise buffers are
optimised too, penalised by their multi-scale autocorrelation and renormalised to zero mean and
unit variance after every step. The loss is ``metric_weight * metric(synth, target)`` (any callable
``metric(a, b) -> [B]`` on images in [-1, 1] at the generator's resolution, e.g. an LPIPS distance)
plus ``mse_weight`` times the pixel MSE, plus ``noise_weight`` times the noise regulariser.

The generator's own noise buffers are never modified: rendering with the projected noise goes
through :func:`noise_override`, which swaps the buffers for the duration of a ``with`` block.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError
from tqdm.auto import tqdm

from navcuda._checks import positive_int
from navcuda.grad_mode import differentiates
from navcuda.io.directions import DirectionSet
from navcuda.models.interface import GeneratorError, ShiftableGenerator
from navcuda.shift import Direction

__all__ = [
    "MIN_IMAGE_SIZE",
    "Metric",
    "Projection",
    "load_image",
    "noise_buffers",
    "noise_override",
    "project",
    "select_direction",
]

#: Smallest accepted side of an input image, in pixels.
MIN_IMAGE_SIZE = 16

Metric = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


# --------------------------------------------------------------------------- images
def load_image(path: str | os.PathLike, resolution: int, channels: int = 3) -> torch.Tensor:
    """Read an image file as a ``[1, channels, resolution, resolution]`` float tensor in [-1, 1].

    Policy: the EXIF orientation is applied; transparent pixels are composited on white; the
    image is converted to RGB (``channels=3``) or greyscale (``channels=1``), **centre-cropped to a
    square** (the shorter side is kept whole) and then resized to ``resolution`` with an
    antialiased (Lanczos) filter, up or down.

    16-bit greyscale images (PNG, TIFF, PGM) are rescaled to 8 bits (``v / 257``, rounded), so
    65535 is white. Sample formats without an unambiguous 0..255 range (32-bit float ``F``,
    32-bit integer ``I`` from TIFF, ...) are refused.

    Raises ``FileNotFoundError`` for a missing path and ``ValueError`` (naming the path) for a
    directory, an unreadable or non-image file, an image whose sample format cannot be
    interpreted, or an image smaller than :data:`MIN_IMAGE_SIZE` pixels on a side.
    """
    p = Path(path)
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    if resolution < 1:
        raise ValueError(f"resolution must be positive, got {resolution}")
    if not p.exists():
        raise FileNotFoundError(f"image not found: {p}")
    if p.is_dir():
        raise ValueError(f"{p} is a directory, not an image file")
    try:
        with Image.open(p) as im:
            im.load()
            fmt = im.format
            img = ImageOps.exif_transpose(im)
    except UnidentifiedImageError:
        raise ValueError(
            f"{p} is not an image file that Pillow can read (PNG, JPEG, WebP, ...)"
        ) from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ValueError(f"cannot read image {p}: {exc}") from exc
    w, h = img.size
    if min(w, h) < MIN_IMAGE_SIZE:
        raise ValueError(
            f"image {p} is {w}x{h} pixels; at least {MIN_IMAGE_SIZE} px on each side is needed"
        )
    img = _to_8bit(img, fmt, p)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, rgba)
    img = img.convert("RGB" if channels == 3 else "L")
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    img = img.crop((left, top, left + side, top + side))
    if side != resolution:
        img = img.resize((resolution, resolution), Image.Resampling.LANCZOS)
    arr = np.asarray(img, dtype=np.float32).reshape(resolution, resolution, channels)
    return (torch.from_numpy(arr.copy()).permute(2, 0, 1)[None] / 127.5) - 1.0


#: Pillow modes with 8-bit samples (or 1-bit), which ``convert("RGB")`` / ``"L"`` read correctly.
_8BIT_MODES = frozenset(
    {"1", "L", "P", "RGB", "RGBA", "RGBX", "RGBa", "CMYK", "YCbCr", "LA", "PA", "HSV"}
)
#: Unsigned 16-bit greyscale (``convert`` would clip every value above 255 to white).
_16BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})
#: Formats whose Pillow plugin gives mode ``"I"`` only for unsigned samples of at most 16 bits:
#: PNG (16-bit greyscale, in older Pillow) and PGM/PPM (maxval above 255, scaled to 16 bits).
#: Elsewhere (TIFF, ...) ``"I"`` holds 32-bit integers with no known white level.
_I_IS_16BIT_FORMATS = frozenset({"PNG", "PPM"})


def _to_8bit(img: Image.Image, fmt: str | None, path: Path) -> Image.Image:
    """``img`` with 8-bit samples: 16-bit greyscale rescaled, uninterpretable modes refused."""
    mode = img.mode
    if mode in _8BIT_MODES:
        return img
    if mode in _16BIT_MODES or (mode == "I" and fmt in _I_IS_16BIT_FORMATS):
        a = np.asarray(img).astype(np.float64)
        if a.size and (a.min() < 0 or a.max() > 65535):
            raise ValueError(
                f"image {path} (mode {mode!r}) has samples outside the 16-bit range 0..65535 "
                f"({a.min():g}..{a.max():g}); convert it to 8-bit RGB first (e.g. with an image "
                "editor or Pillow's Image.convert after scaling)"
            )
        return Image.fromarray(np.round(a / 257.0).astype(np.uint8))
    what = {
        "F": "32-bit floating-point samples",
        "I": "32-bit integer samples",
    }.get(mode, "an unsupported sample format or colour space")
    raise ValueError(
        f"image {path} has Pillow mode {mode!r} ({what}{f', format {fmt}' if fmt else ''}): its "
        "black and white levels are unknown, so it cannot be read unambiguously; convert it to "
        "8-bit RGB (or 8/16-bit greyscale) PNG or JPEG first"
    )


# --------------------------------------------------------------------------- noise
def noise_buffers(generator: ShiftableGenerator) -> dict[str, torch.Tensor]:
    """The generator's noise buffers by name (``noise_0``, ...), in layer order (not copies)."""
    bufs = dict(generator.noises.named_buffers(recurse=False))
    return dict(sorted(bufs.items(), key=lambda kv: int(kv[0].rsplit("_", 1)[1])))


@contextlib.contextmanager
def noise_override(
    generator: ShiftableGenerator, noise: Mapping[str, torch.Tensor] | None
) -> Iterator[ShiftableGenerator]:
    """Render with explicit noise tensors: inside the block, ``noise_mode="const"`` uses ``noise``.

    ``noise`` maps buffer names (``noise_0``, ...) to tensors of the buffers' shapes (a subset is
    fine; ``None`` changes nothing). The tensors are used as given (they may require grad), and
    the original buffers are restored on exit, also after an exception.
    """
    if not noise:
        yield generator
        return
    current = noise_buffers(generator)
    for name, t in noise.items():
        if name not in current:
            raise KeyError(f"no noise buffer {name!r}; the generator has {sorted(current)}")
        if tuple(t.shape) != tuple(current[name].shape):
            raise ValueError(
                f"noise {name} must have shape {list(current[name].shape)}, got {list(t.shape)}"
            )
    saved = {name: current[name] for name in noise}
    try:
        for name, t in noise.items():
            generator.noises._buffers[name] = t.to(current[name].device)
        yield generator
    finally:
        for name, t in saved.items():
            generator.noises._buffers[name] = t


def _noise_regularizer(noises: Sequence[torch.Tensor]) -> torch.Tensor:
    """NVlabs: squared autocorrelation at lag 1 (x and y) over a pyramid down to 8x8."""
    reg = torch.zeros((), device=noises[0].device)
    for v in noises:
        n = v[None, None] if v.ndim == 2 else v
        while True:
            reg = reg + (n * torch.roll(n, shifts=1, dims=3)).mean() ** 2
            reg = reg + (n * torch.roll(n, shifts=1, dims=2)).mean() ** 2
            if n.shape[2] <= 8:
                break
            n = F.avg_pool2d(n, kernel_size=2)
    return reg


# --------------------------------------------------------------------------- projection
@dataclass
class Projection:
    """Result of :func:`project`.

    Attributes:
        ws: the projected latent, ``[1, num_ws, w_dim]`` (W+) or ``[1, w_dim]`` (W).
        noise: the optimised noise buffers by name (render with :func:`noise_override`).
        image: the final reconstruction ``[1, C, R, R]``, about [-1, 1] and not clamped (``ws``
            and ``noise``).
        history: one dict per step: ``loss``, ``mse``, ``metric`` (NaN without one), ``noise_reg``
            and ``lr``.
        mode: ``"w"`` or ``"w+"``.
    """

    ws: torch.Tensor
    noise: dict[str, torch.Tensor]
    image: torch.Tensor
    history: list[dict[str, float]] = field(default_factory=list)
    mode: str = "w+"

    @property
    def losses(self) -> list[float]:
        """The total loss of every step."""
        return [h["loss"] for h in self.history]

    def render(
        self,
        generator: ShiftableGenerator,
        direction: Direction | None = None,
        t: float = 0.0,
    ) -> torch.Tensor:
        """``G_{theta + t xi}`` at the projected latent and noise: ``[1, C, R, R]``."""
        from navcuda.shift import synthesize_shifted

        with torch.no_grad(), noise_override(generator, self.noise):
            return synthesize_shifted(generator, self.ws, direction, t, "const")


def _check_projectable(generator: object) -> None:
    """Projection follows the NVlabs StyleGAN projector: it needs W (a mapping and ``w_avg``)
    and the per-layer noise inputs."""
    needs = ("mapping", "w_avg", "num_ws", "synthesis", "noises", "config")
    missing = [a for a in needs if not hasattr(generator, a)]
    if missing:
        name = getattr(generator, "architecture", type(generator).__name__)
        raise GeneratorError(
            f"projecting a photo needs a StyleGAN2 generator (W, w_avg and noise inputs); "
            f"{name} lacks {', '.join(missing)}: edit generated samples (--seed) instead"
        )


@differentiates
def project(
    generator: ShiftableGenerator,
    target: torch.Tensor,
    steps: int = 1000,
    mode: Literal["w", "w+"] = "w+",
    metric: Metric | None = None,
    metric_weight: float = 1.0,
    mse_weight: float = 1.0,
    optimize_noise: bool = True,
    noise_weight: float = 1e5,
    initial_lr: float = 0.1,
    initial_noise_factor: float = 0.05,
    lr_rampdown_length: float = 0.25,
    lr_rampup_length: float = 0.05,
    noise_ramp_length: float = 0.75,
    w_std_samples: int = 10000,
    seed: int = 0,
    progress: bool = True,
) -> Projection:
    """Find the latent (and noise) whose image matches ``target`` (NVlabs recipe, see module doc).

    Args:
        target: ``[1, C, R, R]`` or ``[C, R, R]`` in [-1, 1] at the generator's resolution
            (see :func:`load_image`).
        steps: optimisation steps (NVlabs: 1000).
        mode: ``"w"`` (one latent for all layers) or ``"w+"`` (one per layer, ``num_ws``).
        metric: optional perceptual distance ``metric(a, b) -> [B]``; weighted by
            ``metric_weight``. ``mse_weight`` weights the pixel MSE (0 disables it).
        optimize_noise: also optimise the noise buffers (initialised from ``seed``), with the
            autocorrelation regulariser weighted by ``noise_weight``; otherwise the generator's
            stored noise is used as is.
        w_std_samples: mapping samples used to estimate the spread of W (for the latent noise).
        seed: seeds the initial noise maps, the W samples and the latent noise.

    Returns:
        :class:`Projection`.
    """
    if mode not in ("w", "w+"):
        raise ValueError(f"mode must be 'w' or 'w+', got {mode!r}")
    positive_int(steps, "steps")
    if metric is None and mse_weight <= 0:
        raise ValueError("nothing to optimise: give a metric or a positive mse_weight")
    _check_projectable(generator)
    cfg = generator.config
    dev = generator.w_avg.device
    target = torch.as_tensor(target)
    if target.ndim == 3:
        target = target[None]
    want = (1, cfg.img_channels, cfg.resolution, cfg.resolution)
    if tuple(target.shape) != want:
        raise ValueError(f"target must have shape {list(want)}, got {list(target.shape)}")
    target = target.to(dev, torch.float32)

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        z = torch.randn(w_std_samples, cfg.z_dim, generator=gen).to(dev)
        w_samples = generator.mapping(z)
        w_avg = generator.w_avg.detach().float()
        w_std = float(((w_samples - w_avg).square().sum() / w_std_samples) ** 0.5)

    w_start = w_avg[None].clone()
    if mode == "w+":
        w_start = w_start[:, None].repeat(1, generator.num_ws, 1)
    w_opt = w_start.clone().requires_grad_(True)
    bufs = noise_buffers(generator)
    if optimize_noise:
        noise = {
            k: torch.randn(v.shape, generator=gen).to(dev).requires_grad_(True)
            for k, v in bufs.items()
        }
    else:
        noise = {k: v.detach().clone() for k, v in bufs.items()}
    params = [w_opt] + (list(noise.values()) if optimize_noise else [])
    opt = torch.optim.Adam(params, betas=(0.9, 0.999), lr=initial_lr)

    history: list[dict[str, float]] = []
    requires = [p.requires_grad for p in generator.parameters()]
    for p in generator.parameters():
        p.requires_grad_(False)
    try:
        with noise_override(generator, noise):
            bar = tqdm(range(steps), desc="project", unit="step", disable=not progress)
            for step in bar:
                t = step / steps
                w_noise_scale = (
                    w_std * initial_noise_factor * max(0.0, 1.0 - t / noise_ramp_length) ** 2
                )
                lr_ramp = min(1.0, (1.0 - t) / lr_rampdown_length)
                lr_ramp = 0.5 - 0.5 * math.cos(lr_ramp * math.pi)
                lr_ramp = lr_ramp * min(1.0, t / lr_rampup_length) if lr_rampup_length > 0 else 1
                lr = initial_lr * lr_ramp
                for g in opt.param_groups:
                    g["lr"] = lr
                w_noise = torch.randn(w_opt.shape, generator=gen).to(dev) * w_noise_scale
                synth = generator.synthesis(w_opt + w_noise, noise_mode="const")
                mse = (synth - target).square().mean()
                loss = mse_weight * mse if mse_weight > 0 else synth.new_zeros(())
                dist = float("nan")
                if metric is not None:
                    d = metric(synth, target).sum()
                    loss = loss + metric_weight * d
                    dist = float(d.detach())
                reg = _noise_regularizer(list(noise.values())) if optimize_noise else None
                if reg is not None:
                    loss = loss + noise_weight * reg
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if optimize_noise:
                    with torch.no_grad():
                        for buf in noise.values():
                            buf -= buf.mean()
                            buf *= buf.square().mean().rsqrt()
                history.append(
                    {
                        "loss": float(loss.detach()),
                        "mse": float(mse.detach()),
                        "metric": dist,
                        "noise_reg": float("nan") if reg is None else float(reg.detach()),
                        "lr": lr,
                    }
                )
                if progress:
                    last = history[-1]
                    bar.set_postfix(loss=f"{last['loss']:.4g}", mse=f"{last['mse']:.4g}")
            with torch.no_grad():
                final = generator.synthesis(w_opt, noise_mode="const").detach()
    finally:
        for p, r in zip(generator.parameters(), requires, strict=True):
            p.requires_grad_(r)
    return Projection(
        ws=w_opt.detach().clone(),
        noise={k: v.detach().clone() for k, v in noise.items()},
        image=final,
        history=history,
        mode=mode,
    )


# --------------------------------------------------------------------------- editing helpers
def select_direction(direction_set: DirectionSet, spec: str | int) -> Direction:
    """A direction by name (case-insensitive) or by index (``"3"``, ``-1``).

    A name that matches wins over an index. Unknown names raise ``KeyError`` listing the known
    names; out-of-range indices raise ``KeyError`` too (saying the valid range).
    """
    if isinstance(spec, int):
        return direction_set[spec]
    text = str(spec).strip()
    if any(n is not None and n.lower() == text.lower() for n in direction_set.names):
        return direction_set.by_name(text)
    try:
        index = int(text)
    except ValueError:
        return direction_set.by_name(text)  # raises KeyError listing the known names
    k = len(direction_set)
    if not -k <= index < k:
        raise KeyError(
            f"direction index {index} out of range: the set has {k} directions (0..{k - 1})"
        )
    return direction_set[index]
