"""Upsample, FIR-filter, downsample: the resampling primitive of StyleGAN2.

`upfirdn2d(x, f, up, down, pad, gain)` zero-inserts ``up - 1`` pixels between input pixels, pads,
convolves every channel with the 2-D filter ``f`` and keeps every ``down``-th pixel. It is used by
the generator for the blur after a transposed convolution and for upsampling the RGB skip branch.

Only the pure-torch reference exists: the op is cheap next to the modulated convolutions around
it (one depthwise 4x4 filter), so a native path would not pay for itself.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["make_filter", "ref_upfirdn2d", "upfirdn2d"]


def make_filter(taps: tuple[float, ...] | list[float], gain: float = 1.0) -> torch.Tensor:
    """Separable 2-D FIR filter from 1-D taps, normalised to sum ``gain``.

    Returns a float32 tensor ``[len(taps), len(taps)]`` (the outer product of the taps).
    """
    k = torch.as_tensor(taps, dtype=torch.float32)
    if k.ndim != 1 or k.numel() == 0:
        raise ValueError(
            f"filter taps must be a non-empty 1-D sequence, got shape {tuple(k.shape)}"
        )
    k2 = torch.outer(k, k)
    return k2 / k2.sum() * gain


def ref_upfirdn2d(
    x: torch.Tensor,
    f: torch.Tensor,
    up: int = 1,
    down: int = 1,
    pad: tuple[int, int] = (0, 0),
) -> torch.Tensor:
    """Reference upfirdn2d on ``x [B, C, H, W]`` with filter ``f [kh, kw]``.

    ``pad = (p0, p1)`` pads (or crops, when negative) both spatial axes by ``p0`` before and ``p1``
    after, after upsampling. The filter is applied as a true convolution (flipped), matching
    rosinality's and NVlabs' ``upfirdn2d``.
    Output: ``[B, C, (H*up + p0 + p1 - kh) // down + 1, ...]``.
    """
    if x.ndim != 4:
        raise ValueError(f"upfirdn2d expects x of shape [B, C, H, W], got {tuple(x.shape)}")
    if f.ndim != 2:
        raise ValueError(f"upfirdn2d expects a 2-D filter, got shape {tuple(f.shape)}")
    b, c, h, w = x.shape
    p0, p1 = pad
    if up > 1:
        z = x.new_zeros(b, c, h, up, w, up)
        z[:, :, :, 0, :, 0] = x
        x = z.reshape(b, c, h * up, w * up)
    x = F.pad(x, [max(p0, 0), max(p1, 0), max(p0, 0), max(p1, 0)])
    if p0 < 0 or p1 < 0:
        hh, ww = x.shape[2], x.shape[3]
        x = x[:, :, max(-p0, 0) : hh - max(-p1, 0), max(-p0, 0) : ww - max(-p1, 0)]
    kh, kw = f.shape
    weight = torch.flip(f, [0, 1]).to(dtype=x.dtype, device=x.device)
    weight = weight.view(1, 1, kh, kw).expand(c, 1, kh, kw)
    x = F.conv2d(x, weight, groups=c)
    if down > 1:
        x = x[:, :, ::down, ::down]
    return x


def upfirdn2d(
    x: torch.Tensor,
    f: torch.Tensor,
    up: int = 1,
    down: int = 1,
    pad: tuple[int, int] = (0, 0),
) -> torch.Tensor:
    """Public entry point; see :func:`ref_upfirdn2d` for shapes and semantics."""
    return ref_upfirdn2d(x, f, up=up, down=down, pad=pad)
