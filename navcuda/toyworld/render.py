"""Deterministic, vectorised procedural renderer of cartoon faces.

:func:`render` turns a batch of normalised factors (see
:mod:`navcuda.toyworld.factors`) into RGB images in ``[-1, 1]`` (the GAN's
convention).  Every shape is a signed-distance function (SDF) in normalised image
coordinates (the image spans ``[-1, 1]``, ``y`` points down), converted to a
coverage ``clamp(0.5 - d * res / 2, 0, 1)``, i.e. an anti-aliasing ramp exactly one
pixel wide.  Geometry is therefore resolution independent: 32 px and 64 px show the
same picture at two sizes.

Layers, back to front: background (hue factor, vertical shading), hair (an
ellipse behind the head, cut by a horizontal line set by ``hair_length``), head
(ellipse, skin hue), fringe (hair over the forehead), eyes (white ellipses), pupils
(offset by ``gaze_x``), nose (vertical capsule, darker skin), brows (horizontal
capsules), mouth (thick parabolic arc).  Strokes are at least ``0.13`` units thick,
about 2 px at 32 px and 4 px at 64 px.

Everything is computed for the whole batch with broadcast tensor ops (no Python
loop over samples), on the device of the input factors.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch import Tensor

from navcuda._checks import positive_int

from .factors import FACTOR_INDEX, FACTOR_NAMES, NUM_FACTORS, sample_factors, to_natural

__all__ = [
    "MIN_RESOLUTION",
    "ToyWorld",
    "hsv_to_rgb",
    "render",
    "render_numpy",
]

MIN_RESOLUTION = 16

# ---------------------------------------------------------------------------
# Fixed layout (normalised image units, y down) and palette.  Part of the data
# set's definition, like the factor table.
# ---------------------------------------------------------------------------
HEAD_TOP = -0.58  # the top of the head stays put; head_height moves the chin
EYE_Y = -0.03  # eye centre line
EYE_ASPECT = 1.1  # vertical / horizontal eye radius
PUPIL_FRAC = 0.55  # pupil radius / horizontal eye radius
NOSE_TOP = EYE_Y + 0.05  # top of the nose's core segment
NOSE_RADIUS = 0.07
BROW_HALF_LEN = 0.10
BROW_RADIUS = 0.065
MOUTH_Y = 0.45  # mean height of the mouth arc
MOUTH_RADIUS = 0.07
MOUTH_SEGMENTS = 5  # polyline segments per half of the mouth arc
HAIR_PAD_X = 0.15  # hair ellipse half-width = head half-width + pad
HAIR_PAD_Y = 0.13
HAIR_SHIFT_Y = -0.04  # hair ellipse centre relative to the head centre
FRINGE_GROW = 0.04  # the fringe overlaps the hair behind the head by this much

BG_SAT, BG_VAL_TOP, BG_VAL_BOTTOM = 0.45, 0.80, 0.62
HAIR_SAT, HAIR_VAL = 0.75, 0.50
SKIN_SAT, SKIN_VAL = 0.42, 0.95
NOSE_SAT, NOSE_VAL = 0.55, 0.72
EYE_WHITE_RGB = (0.97, 0.97, 0.97)
PUPIL_RGB = (0.07, 0.07, 0.12)
BROW_RGB = (0.20, 0.13, 0.10)
MOUTH_HSV = (350.0, 0.70, 0.55)


def hsv_to_rgb(h: Tensor, s: Tensor | float, v: Tensor | float) -> Tensor:
    """Convert HSV to RGB (broadcasting, differentiable almost everywhere).

    Args:
        h: hue in degrees, any shape, float (taken modulo 360).
        s: saturation in ``[0, 1]``, broadcastable with ``h``.
        v: value in ``[0, 1]``, broadcastable with ``h``.

    Returns:
        Tensor of shape ``broadcast(h, s, v).shape + (3,)``, same float dtype as
        ``h``, RGB in ``[0, 1]``.
    """
    h6 = torch.remainder(h, 360.0) / 60.0
    n = torch.tensor([5.0, 3.0, 1.0], dtype=h.dtype, device=h.device)
    k = torch.remainder(n + h6.unsqueeze(-1), 6.0)
    ramp = torch.clamp(torch.minimum(k, 4.0 - k), 0.0, 1.0)
    s = torch.as_tensor(s, dtype=h.dtype, device=h.device).unsqueeze(-1)
    v = torch.as_tensor(v, dtype=h.dtype, device=h.device).unsqueeze(-1)
    return v - v * s * ramp


_GRID_CACHE: dict[tuple[int, str], tuple[Tensor, Tensor]] = {}


def _grid(resolution: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """Pixel-centre coordinates: ``x`` of shape [1, 1, W], ``y`` of shape [1, H, 1]."""
    key = (resolution, str(device))
    if key not in _GRID_CACHE:
        c = (torch.arange(resolution, dtype=torch.float32, device=device) + 0.5) * (
            2.0 / resolution
        ) - 1.0
        _GRID_CACHE[key] = (c.view(1, 1, -1), c.view(1, -1, 1))
    return _GRID_CACHE[key]


def _ellipse_sdf(px: Tensor, py: Tensor, rx: Tensor, ry: Tensor) -> Tensor:
    """Approximate signed distance to an axis-aligned ellipse centred at 0.

    Uses ``k0 * (k0 - 1) / k1`` with ``k0 = |p / r|``, ``k1 = |p / r^2|``: exact
    on the boundary to first order, which is all the 1-px coverage ramp needs.
    """
    ax, ay = px / rx, py / ry
    k0 = torch.sqrt(ax * ax + ay * ay)
    bx, by = ax / rx, ay / ry
    k1 = torch.sqrt(bx * bx + by * by).clamp_min(1e-6)
    return k0 * (k0 - 1.0) / k1


def _validate(factors: Tensor, resolution: int) -> None:
    if not isinstance(factors, Tensor):
        raise TypeError(f"factors must be a torch.Tensor, got {type(factors).__name__}")
    if not factors.is_floating_point():
        raise TypeError(f"factors must have a floating dtype, got {factors.dtype}")
    if factors.dim() != 2 or factors.shape[1] != NUM_FACTORS:
        raise ValueError(f"factors must have shape [B, {NUM_FACTORS}], got {tuple(factors.shape)}")
    if isinstance(resolution, bool) or not isinstance(resolution, int):
        raise TypeError(f"resolution must be an int, got {type(resolution).__name__}")
    if resolution < MIN_RESOLUTION:
        raise ValueError(f"resolution must be >= {MIN_RESOLUTION}, got {resolution}")
    if factors.numel() == 0:
        return
    bad_nan = torch.isnan(factors).any(dim=0)
    if bool(bad_nan.any()):
        names = [FACTOR_NAMES[i] for i in torch.nonzero(bad_nan).flatten().tolist()]
        raise ValueError(f"factors contain NaN in column(s) {names}")
    bad = ((factors < 0) | (factors > 1)).any(dim=0)
    if bool(bad.any()):
        i = int(torch.nonzero(bad).flatten()[0])
        col = factors[:, i]
        raise ValueError(
            f"factor {FACTOR_NAMES[i]!r} (column {i}) must lie in [0, 1]; got values in "
            f"[{float(col.min()):.4g}, {float(col.max()):.4g}]"
        )


def render(factors: Tensor, resolution: int = 64) -> Tensor:
    """Render a batch of cartoon faces.

    Args:
        factors: ``[B, NUM_FACTORS]`` floating tensor of normalised factors, each
            in ``[0, 1]`` (column order :data:`FACTOR_NAMES`).  Any float dtype and
            device; computation is float32 on that device.
        resolution: output side ``H = W`` in pixels, an int ``>= 16``.

    Returns:
        ``[B, 3, H, W]`` float32 tensor, RGB in ``[-1, 1]``, on the factors' device.
        The output is a pure function of ``(factors, resolution)``.

    Raises:
        TypeError: ``factors`` not a floating tensor, or ``resolution`` not an int.
        ValueError: wrong shape, NaN, a value outside ``[0, 1]`` (the message names
            the factor), or ``resolution < 16``.
    """
    _validate(factors, resolution)
    f = factors.detach().to(torch.float32)
    dev = f.device
    b = f.shape[0]
    nat = to_natural(f).view(b, NUM_FACTORS, 1, 1)

    def p(name: str) -> Tensor:  # per-sample natural value, shape [B, 1, 1]
        return nat[:, FACTOR_INDEX[name]]

    x, y = _grid(resolution, dev)
    ax = x.abs()
    scale = resolution / 2.0  # pixels per normalised unit

    def cov(d: Tensor) -> Tensor:  # SDF -> coverage [B, 1, H, W], 1-px ramp
        return torch.clamp(0.5 - d * scale, 0.0, 1.0).unsqueeze(1)

    def rgb(c: tuple[float, float, float]) -> Tensor:
        return torch.tensor(c, dtype=torch.float32, device=dev).view(1, 3, 1, 1)

    def hsv(h: Tensor, s: float, v: float) -> Tensor:  # h [B,1,1] -> [B,3,1,1]
        return hsv_to_rgb(h.view(b), s, v).view(b, 3, 1, 1)

    # Background: pastel hue, value shaded from top to bottom.
    t = (y + 1.0) * 0.5  # [1, H, 1], 0 at top
    shade = (BG_VAL_TOP + (BG_VAL_BOTTOM - BG_VAL_TOP) * t).unsqueeze(1)  # [1,1,H,1]
    img = (hsv(p("background_hue"), BG_SAT, 1.0) * shade).expand(b, 3, resolution, resolution)

    # Hair behind the head: ellipse around the head, cut below hair_length.
    hw, hh = p("head_width"), p("head_height")
    head_cy = HEAD_TOP + hh
    hair_rgb = hsv(p("hair_hue"), HAIR_SAT, HAIR_VAL)
    d_hair = _ellipse_sdf(x, y - (head_cy + HAIR_SHIFT_Y), hw + HAIR_PAD_X, hh + HAIR_PAD_Y)
    d_hair = torch.maximum(d_hair, y - p("hair_length"))
    img = torch.lerp(img, hair_rgb, cov(d_hair))

    # Head.
    skin_h = p("skin_hue")
    d_head = _ellipse_sdf(x, y - head_cy, hw, hh)
    img = torch.lerp(img, hsv(skin_h, SKIN_SAT, SKIN_VAL), cov(d_head))

    # Fringe: the part of the head above a horizontal line.
    # (the head outline is grown by FRINGE_GROW so no skin seam shows between the
    # fringe and the hair behind the head).
    d_fringe = torch.maximum(d_head - FRINGE_GROW, y - (HEAD_TOP + p("fringe_length")))
    img = torch.lerp(img, hair_rgb, cov(d_fringe))

    # Eyes (mirror-symmetric about x = 0).
    sp, er = p("eye_spacing"), p("eye_size")
    ey = y - EYE_Y
    d_eye = _ellipse_sdf(ax - sp, ey, er, er * EYE_ASPECT)
    img = torch.lerp(img, rgb(EYE_WHITE_RGB), cov(d_eye))

    # Pupils: both shifted by the same gaze offset, clipped to the eye white.
    pr = er * PUPIL_FRAC
    shift = p("gaze_x") * (er - 0.5 * pr)  # at the extremes the eye outline clips the pupil
    qx = (x - shift).abs() - sp
    d_pupil = torch.sqrt(qx * qx + ey * ey) - pr
    img = torch.lerp(img, rgb(PUPIL_RGB), cov(torch.maximum(d_pupil, d_eye)))

    # Nose: vertical capsule, a darker shade of the skin.
    ny = y - torch.minimum(y.clamp_min(NOSE_TOP), NOSE_TOP + p("nose_length"))
    d_nose = torch.sqrt(x * x + ny * ny) - NOSE_RADIUS
    img = torch.lerp(img, hsv(skin_h, NOSE_SAT, NOSE_VAL), cov(d_nose))

    # Brows: horizontal capsules centred above the eyes.
    bx = ax - sp
    bx = bx - torch.clamp(bx, -BROW_HALF_LEN, BROW_HALF_LEN)
    by = y - (EYE_Y - p("brow_height"))
    d_brow = torch.sqrt(bx * bx + by * by) - BROW_RADIUS
    img = torch.lerp(img, rgb(BROW_RGB), cov(d_brow))

    # Mouth: thick parabolic arc y = MOUTH_Y + c * (0.5 - (x / w)^2) for |x| <= w,
    # where the sag c (centre below corners) is the curvature factor times w.  The
    # arc is a polyline of MOUTH_SEGMENTS capsules per (mirror-symmetric) half.
    mw = p("mouth_width")
    mc = p("mouth_curvature") * mw
    d2_mouth = None
    prev_x = torch.zeros_like(mw)
    prev_y = MOUTH_Y + 0.5 * mc
    for k in range(1, MOUTH_SEGMENTS + 1):
        u = k / MOUTH_SEGMENTS
        nx, ny_ = mw * u, MOUTH_Y + mc * (0.5 - u * u)
        sx, sy = nx - prev_x, ny_ - prev_y
        px, py = ax - prev_x, y - prev_y
        hseg = ((px * sx + py * sy) / (sx * sx + sy * sy)).clamp(0.0, 1.0)
        qx, qy = px - sx * hseg, py - sy * hseg
        d2 = qx * qx + qy * qy
        d2_mouth = d2 if d2_mouth is None else torch.minimum(d2_mouth, d2)
        prev_x, prev_y = nx, ny_
    d_mouth = torch.sqrt(d2_mouth) - MOUTH_RADIUS
    mouth_rgb = hsv_to_rgb(torch.tensor(MOUTH_HSV[0], device=dev), *MOUTH_HSV[1:])
    img = torch.lerp(img, mouth_rgb.view(1, 3, 1, 1), cov(d_mouth))

    return img * 2.0 - 1.0


def render_numpy(factors: Tensor, resolution: int = 64) -> np.ndarray:
    """:func:`render` then :func:`to_uint8`: ``[B, H, W, 3]`` uint8 numpy array."""
    from navcuda.rendering import to_uint8

    return to_uint8(render(factors, resolution))


class ToyWorld:
    """Infinite data set of ``(image, factors)`` pairs drawn from the prior.

    Args:
        resolution: image side in pixels (``>= 16``).
        seed: seed of the generator used by :meth:`sample` when none is given,
            and the default seed of :meth:`batches`.
    """

    def __init__(self, resolution: int = 64, seed: int = 0) -> None:
        if isinstance(resolution, bool) or not isinstance(resolution, int):
            raise TypeError(f"resolution must be an int, got {type(resolution).__name__}")
        if resolution < MIN_RESOLUTION:
            raise ValueError(f"resolution must be >= {MIN_RESOLUTION}, got {resolution}")
        self.resolution = resolution
        self.seed = seed
        self.num_factors = NUM_FACTORS
        self.factor_names = FACTOR_NAMES
        self._generator = torch.Generator().manual_seed(seed)

    def sample(self, n: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Draw ``n`` samples.

        Args:
            n: number of samples.
            generator: CPU generator to draw factors from; defaults to this world's
                own generator (seeded with ``seed``, advancing across calls).

        Returns:
            ``(images, factors)``: ``[n, 3, R, R]`` float32 in ``[-1, 1]`` and
            ``[n, NUM_FACTORS]`` float32 in ``[0, 1)``, both on the CPU.
        """
        gen = self._generator if generator is None else generator
        factors = sample_factors(n, generator=gen)
        return render(factors, self.resolution), factors

    def batches(self, batch_size: int, seed: int | None = None) -> Iterator[tuple[Tensor, Tensor]]:
        """Infinite iterator of ``(images, factors)`` batches of ``batch_size``.

        The sequence depends only on ``seed`` (default: this world's seed) and
        ``batch_size``: two iterators made with the same arguments yield the same
        batches.  Shapes and ranges as in :meth:`sample`.
        """
        positive_int(batch_size, "batch_size")
        gen = torch.Generator().manual_seed(self.seed if seed is None else seed)
        while True:
            yield self.sample(batch_size, generator=gen)
