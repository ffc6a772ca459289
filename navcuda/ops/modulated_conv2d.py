"""StyleGAN2 modulated (and demodulated) convolution, with an optional weight shift per sample.

For sample ``b`` with style ``s_b [in]`` and raw kernel ``W [out, in, kh, kw]`` plus an optional
additive shift ``delta`` (shared ``[out, in, kh, kw]`` or per-sample ``[B, out, in, kh, kw]``)::

    w_b      = scale * (W + delta_b) * s_b[None, :, None, None]      scale = 1 / sqrt(in * kh * kw)
    w_b      = w_b * (sum_{i,k} w_b[o, i, k]^2 + 1e-8)^(-1/2)          (if demodulate)
    y_b      = conv(x_b, w_b)     (with up=2: transposed stride-2 conv, then a [1,3,3,1] blur)

The shift acts on the raw kernel before the equalized-lr scale, the modulation and the demodulation,
as in the official code of the paper.

This module holds the reference: the per-sample weights are materialised and applied as one grouped
convolution, exactly as rosinality's ``ModulatedConv2d`` does. It is the test oracle for the fused
strategies of the kernels issue. ``grouped=False`` selects the equivalent *dense* form (modulate the
activations, one ordinary convolution with the shared kernel, scale the outputs by the demodulation
coefficients), which NVlabs uses for training; it needs a shared (or no) shift.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from navcuda.ops.upfirdn2d import ref_upfirdn2d

__all__ = ["modulated_conv2d", "ref_modulated_conv2d", "ref_modulated_weight"]


def ref_modulated_weight(
    weight: torch.Tensor,
    styles: torch.Tensor,
    delta: torch.Tensor | None = None,
    demodulate: bool = True,
) -> torch.Tensor:
    """Per-sample modulated kernels ``[B, out, in, kh, kw]``.

    From the raw ``weight [out, in, kh, kw]``, ``styles [B, in]`` and an optional ``delta``
    (``[out, in, kh, kw]`` or ``[B, out, in, kh, kw]``).
    """
    out_c, in_c, kh, kw = weight.shape
    scale = 1.0 / math.sqrt(in_c * kh * kw)
    w = weight.unsqueeze(0)
    if delta is not None:
        w = w + (delta if delta.ndim == 5 else delta.unsqueeze(0))
    w = scale * w * styles[:, None, :, None, None]
    if demodulate:
        dcoef = torch.rsqrt(w.square().sum(dim=(2, 3, 4)) + 1e-8)
        w = w * dcoef[:, :, None, None, None]
    return w


def ref_modulated_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    styles: torch.Tensor,
    delta: torch.Tensor | None = None,
    demodulate: bool = True,
    up: int = 1,
    blur_filter: torch.Tensor | None = None,
    grouped: bool = True,
) -> torch.Tensor:
    """Reference modulated convolution.

    Args:
        x: activations ``[B, in, H, W]``.
        weight: raw kernel ``[out, in, kh, kw]`` (odd kh == kw).
        styles: modulation ``[B, in]``.
        delta: optional additive shift of the raw kernel, ``[out, in, kh, kw]`` (all samples) or
            ``[B, out, in, kh, kw]`` (one per sample).
        demodulate: normalise every output channel of every sample's kernel to unit norm.
        up: 1 (same-size conv with padding kh // 2) or 2 (transposed stride-2 conv, then blur).
        blur_filter: ``[4, 4]`` filter for ``up=2`` (already multiplied by ``up**2``).
        grouped: materialise per-sample kernels (True) or use the dense form (False; per-sample
            ``delta`` is then not allowed).

    Returns:
        ``[B, out, H * up, W * up]``.
    """
    b, in_c, h, w_ = x.shape
    out_c, _, kh, kw = weight.shape
    if up not in (1, 2):
        raise ValueError(f"up must be 1 or 2, got {up}")
    if up == 2 and blur_filter is None:
        raise ValueError("up=2 needs the blur filter")
    if not grouped:
        if delta is not None and delta.ndim == 5:
            raise ValueError("the dense form needs a shared shift; use grouped=True for per-sample")
        return _dense_modulated_conv2d(x, weight, styles, delta, demodulate, up, blur_filter)
    wb = ref_modulated_weight(weight, styles, delta, demodulate)
    xg = x.reshape(1, b * in_c, h, w_)
    if up == 1:
        y = F.conv2d(xg, wb.reshape(b * out_c, in_c, kh, kw), padding=kh // 2, groups=b)
        return y.reshape(b, out_c, h, w_)
    wt = wb.transpose(1, 2).reshape(b * in_c, out_c, kh, kw)
    y = F.conv_transpose2d(xg, wt, stride=2, padding=0, groups=b)
    y = y.reshape(b, out_c, y.shape[2], y.shape[3])
    return _blur_after_up(y, blur_filter, kh)


def _blur_after_up(y: torch.Tensor, blur_filter: torch.Tensor, kh: int) -> torch.Tensor:
    # Blur pads so that the output is exactly 2H x 2W for the 3x3 kernel and the 4-tap filter.
    p = (blur_filter.shape[0] - 2) - (kh - 1)
    return ref_upfirdn2d(y, blur_filter, pad=((p + 1) // 2 + 1, p // 2 + 1))


def _dense_modulated_conv2d(x, weight, styles, delta, demodulate, up, blur_filter):
    """``conv(x * s, scale * (W + delta)) * dcoef``: one dense conv, no per-sample kernels."""
    out_c, in_c, kh, kw = weight.shape
    scale = 1.0 / math.sqrt(in_c * kh * kw)
    w = weight if delta is None else weight + delta
    xs = x * styles.to(x.dtype)[:, :, None, None]
    if up == 1:
        y = F.conv2d(xs, w * scale, padding=kh // 2)
    else:
        y = _blur_after_up(
            F.conv_transpose2d(xs, (w * scale).transpose(0, 1), stride=2), blur_filter, kh
        )
    if demodulate:
        # sum_{i,k} (scale W[o,i,k] s[b,i])^2 = (scale^2 sum_k W[o,i,k]^2) @ s[b]^2
        wsq = (w * scale).square().sum(dim=(2, 3))  # [out, in]
        dcoef = torch.rsqrt(styles.square() @ wsq.t() + 1e-8)  # [B, out]
        y = y * dcoef.to(y.dtype)[:, :, None, None]
    return y


def modulated_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    styles: torch.Tensor,
    delta: torch.Tensor | None = None,
    demodulate: bool = True,
    up: int = 1,
    blur_filter: torch.Tensor | None = None,
    grouped: bool = True,
) -> torch.Tensor:
    """Modulated convolution; see :func:`ref_modulated_conv2d` for shapes and semantics."""
    return ref_modulated_conv2d(x, weight, styles, delta, demodulate, up, blur_filter, grouped)
