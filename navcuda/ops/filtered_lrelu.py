"""Filtered leaky ReLU: StyleGAN3's alias-free nonlinearity, as a pure-torch op.

:func:`filtered_lrelu` upsamples ``x`` with a low-pass FIR filter, applies the bias, the leaky
ReLU with its gain and the clamp at the higher sampling rate, then low-pass filters and
downsamples (Karras et al. 2021, "Alias-Free Generative Adversarial Networks", section 3.2; the
semantics of NVlabs' ``torch_utils.ops.filtered_lrelu`` reference). It is composed of navcuda's
:func:`~navcuda.ops.upfirdn2d.upfirdn2d` and :func:`~navcuda.ops.bias_act.ref_bias_act` on
their pure-torch paths only (``up > 1``: the transposed depthwise convolution, otherwise the
reference), so it supports double backward and forward-mode AD. There is no native kernel.

Filters: navcuda's ``upfirdn2d`` takes 2-D filters; a 1-D (separable) filter ``f`` runs as
NVlabs runs it, two passes, with the 2-D filters ``f[None, :]`` (rows; it also upsamples and pads)
and ``f[:, None]`` (columns): ``2 k`` products per output sample instead of the ``k^2`` of the
outer product ``f f^T`` (StyleGAN3's 12- and 24-tap filters: 12x fewer).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from navcuda.ops.bias_act import ref_bias_act
from navcuda.ops.upfirdn2d import ref_upfirdn2d, upfirdn2d

__all__ = ["filtered_lrelu", "parse_padding"]


def parse_padding(padding: int | Sequence[int]) -> tuple[int, int, int, int]:
    """``padding`` as ``(x0, x1, y0, y1)``: an int pads every side, ``[x, y]`` both sides of each
    axis, ``[x0, x1, y0, y1]`` each side (NVlabs' convention; negative values crop)."""
    if isinstance(padding, bool):
        raise TypeError("filtered_lrelu: padding must be an int or a sequence of ints, got a bool")
    if isinstance(padding, int):
        return (padding,) * 4
    pads = [int(p) for p in padding]
    if len(pads) == 2:
        return pads[0], pads[0], pads[1], pads[1]
    if len(pads) == 4:
        return pads[0], pads[1], pads[2], pads[3]
    raise ValueError(
        f"filtered_lrelu: padding must be an int, [x, y] or [x0, x1, y0, y1], got {padding!r}"
    )


def _prepare_filter(f: torch.Tensor | None, x: torch.Tensor, flip: bool, name: str):
    """``f`` cast to ``x``, flipped for ``flip_filter`` (navcuda's upfirdn2d convolves, i.e.
    flips): ``[taps]`` (separable) or ``[h, w]``; None becomes the 1x1 identity."""
    if f is None:
        return torch.ones((1, 1), dtype=x.dtype, device=x.device)
    if not isinstance(f, torch.Tensor) or f.ndim not in (1, 2) or f.numel() == 0:
        got = list(f.shape) if isinstance(f, torch.Tensor) else type(f).__name__
        raise ValueError(
            f"filtered_lrelu: {name} must be None, a 1-D [taps] (separable) or a 2-D [h, w] "
            f"filter, got {got}"
        )
    f = f.to(device=x.device, dtype=x.dtype)
    return f.flip(list(range(f.ndim))) if flip else f


def _filter(
    x: torch.Tensor, f: torch.Tensor, up: int, pad: tuple[int, int], gain: float = 1.0
) -> torch.Tensor:
    """upfirdn2d without downsampling on a pure-torch path: upsampling by navcuda's
    :func:`upfirdn2d` (a transposed convolution), filtering alone by :func:`ref_upfirdn2d` (the
    native blur has no forward-mode AD and takes filters up to 16 taps). A 1-D filter ``f`` runs
    as a row pass ``f[None, :]`` (which upsamples and pads both axes) and a column pass
    ``f[:, None]``: ``2 k`` products per output instead of ``k^2``. ``gain`` scales the
    result (the first pass's filter)."""
    first = (f if f.ndim == 2 else f[None, :]) * gain
    x = upfirdn2d(x, first, up=up, pad=pad) if up > 1 else ref_upfirdn2d(x, first, pad=pad)
    return x if f.ndim == 2 else ref_upfirdn2d(x, f[:, None])


def _upsample(x: torch.Tensor, f: torch.Tensor, up: int, pads: tuple[int, int, int, int]):
    """Zero-insert by ``up``, pad by ``(x0, x1, y0, y1)``, filter with ``f`` times ``up**2``.

    navcuda's upfirdn2d pads both axes alike: unequal pads run with the larger pad of each side
    on both axes and the extra output rows or columns cropped (output sample ``o`` of a pad ``p``
    is output sample ``o + (m - p)`` of a pad ``m >= p``)."""
    x0, x1, y0, y1 = pads
    m0, m1 = max(x0, y0), max(x1, y1)
    y = _filter(x, f, up, (m0, m1), up * up)
    if (x0, x1) == (y0, y1):
        return y
    h, w = y.shape[2], y.shape[3]
    return y[:, :, m0 - y0 : h - (m1 - y1), m0 - x0 : w - (m1 - x1)]


def _downsample(x: torch.Tensor, f: torch.Tensor, down: int) -> torch.Tensor:
    """Filter with ``f`` (valid outputs), keep every ``down``-th sample of both axes (a
    separable filter's column pass runs on the kept columns only)."""
    if f.ndim == 2:
        return ref_upfirdn2d(x, f, down=down)
    x = ref_upfirdn2d(x, f[None, :])[:, :, :, ::down]
    return ref_upfirdn2d(x, f[:, None])[:, :, ::down, :]


def filtered_lrelu(
    x: torch.Tensor,
    fu: torch.Tensor | None = None,
    fd: torch.Tensor | None = None,
    b: torch.Tensor | None = None,
    up: int = 1,
    down: int = 1,
    padding: int | Sequence[int] = 0,
    gain: float = math.sqrt(2.0),
    slope: float = 0.2,
    clamp: float | None = None,
    flip_filter: bool = False,
) -> torch.Tensor:
    """Bias, upsample, leaky ReLU, clamp, downsample ``x [B, C, H, W]`` (StyleGAN3's filtered
    leaky ReLU).

    For every channel, in this order:

    1. add the bias ``b [C]`` (None: no bias);
    2. upsample by ``up``: insert ``up - 1`` zeros after every pixel along both axes;
    3. pad with zeros by ``padding`` (``int``, ``[x, y]`` or ``[x0, x1, y0, y1]``, in samples of
       the upsampled image; negative values crop);
    4. convolve with the upsampling filter ``fu`` times ``up**2`` (keeps the signal's DC gain),
       keeping only outputs whose whole footprint lies in the padded image;
    5. leaky ReLU with negative ``slope``, times ``gain``;
    6. clamp to ``[-clamp, clamp]`` (None: no clamp);
    7. convolve with the downsampling filter ``fd`` (valid outputs only), keep every
       ``down``-th sample along both axes.

    Filters are float tensors ``[taps]`` (separable: the 2-D filter is ``f f^T``), ``[h, w]``
    (non-separable, e.g. StyleGAN3-R's radial filters) or None (the 1x1 identity); they are
    convolved (flipped) as NVlabs does, or correlated with ``flip_filter=True``, and cast to
    ``x``'s dtype. Output ``[B, C, H_out, W_out]`` with ``W_out = (W*up + x0 + x1 - (fu_w - 1) -
    (fd_w - 1) + (down - 1)) // down`` (``H_out`` likewise).

    Pure torch (module docstring): differentiable w.r.t. ``x`` and ``b`` any number of times,
    forward-mode AD included; the filters are constants.
    """
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or not x.is_floating_point():
        got = f"{x.dtype} {list(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"filtered_lrelu: x must be a floating tensor [B, C, H, W], got {got}")
    for name, v in (("up", up), ("down", down)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"filtered_lrelu: {name} must be an integer >= 1, got {v!r}")
    if not (float(gain) > 0 and float(slope) >= 0):
        raise ValueError(f"filtered_lrelu: need gain > 0 and slope >= 0, got {gain}, {slope}")
    pads = parse_padding(padding)
    f_up = _prepare_filter(fu, x, flip_filter, "fu")
    f_down = _prepare_filter(fd, x, flip_filter, "fd")
    if b is not None:
        x = ref_bias_act(x, b.to(x.dtype), dim=1, act="linear")
    x = _upsample(x, f_up, up, pads)
    x = ref_bias_act(x, None, act="lrelu", alpha=float(slope), gain=float(gain), clamp=clamp)
    return _downsample(x, f_down, down)
