"""Upsample, FIR-filter, downsample: the resampling primitive of StyleGAN2.

`upfirdn2d(x, f, up, down, pad, gain)` zero-inserts ``up - 1`` pixels between input pixels, pads,
convolves every channel with the 2-D filter ``f`` and keeps every ``down``-th pixel. It is used by
the generator for the blur after a transposed convolution and for upsampling the RGB skip branch.

``ref_upfirdn2d`` is the pure-torch reference (pad, then a depthwise convolution). The blur case
(``up = down = 1``) has a native path, the custom op ``navcuda::fir2d`` (``csrc/fir2d.{h,cpp,cu}``,
CUDA body in ``csrc/fir2d_kernels.cuh``): a per-plane 2-D correlation with implicit zero padding,
so the padded copy is never built (the CPU kernel pads one cache-sized strip of rows at a time
into scratch and runs a separable filter, like the blur, as two 1-D passes). Its adjoint is the
same op with the flipped filter and the complementary pads, so it is differentiable any number
of times w.r.t. ``x`` (the filter is a constant; a filter that requires a gradient runs the
reference). Measured on the bundled model's
64x64 blur (B=32, 32 channels): oneDNN's NCHW depthwise conv on the padded copy and its backward
were a fifth of a Gauss-Newton HVP's time (see ``benchmarks/RESULTS.md``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from navcuda.ops import _native

__all__ = ["make_filter", "ref_upfirdn2d", "upfirdn2d"]

_OP = "upfirdn2d"


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
    # Equal non-negative pads go to the convolution (no padded copy of x); others are explicit.
    conv_pad = p0 if p0 == p1 and p0 >= 0 else 0
    if not conv_pad and (p0 or p1):
        x = F.pad(x, [max(p0, 0), max(p1, 0), max(p0, 0), max(p1, 0)])
    if p0 < 0 or p1 < 0:
        hh, ww = x.shape[2], x.shape[3]
        x = x[:, :, max(-p0, 0) : hh - max(-p1, 0), max(-p0, 0) : ww - max(-p1, 0)]
    kh, kw = f.shape
    weight = torch.flip(f, [0, 1]).to(dtype=x.dtype, device=x.device)
    weight = weight.view(1, 1, kh, kw).expand(c, 1, kh, kw)
    x = F.conv2d(x, weight, padding=conv_pad, groups=c)
    if down > 1:
        x = x[:, :, ::down, ::down]
    return x


def upfirdn2d(
    x: torch.Tensor,
    f: torch.Tensor,
    up: int = 1,
    down: int = 1,
    pad: tuple[int, int] = (0, 0),
    impl: str = "auto",
) -> torch.Tensor:
    """Upsample, filter, downsample ``x [B, C, H, W]``; see :func:`ref_upfirdn2d` for shapes and
    semantics. ``impl`` (``"auto"``, ``"ref"``, ``"native"``, see :mod:`navcuda.ops._native`)
    applies to the blur case ``up = down = 1`` with a constant filter; the other cases always
    run the reference."""
    if up != 1 or down != 1 or f.requires_grad:
        return ref_upfirdn2d(x, f, up=up, down=down, pad=pad)
    ho, wo = _check_blur_args(x, f, pad)
    if _native.resolve_impl(_OP, impl, x) == "ref":
        return ref_upfirdn2d(x, f, pad=pad)
    weight = torch.flip(f, [0, 1]).to(device=x.device, dtype=x.dtype).contiguous()
    return torch.ops.navcuda.fir2d(x, weight, int(pad[0]), int(pad[0]), ho, wo)


def _check_blur_args(x: torch.Tensor, f: torch.Tensor, pad: tuple[int, int]) -> tuple[int, int]:
    """Validate the blur case's arguments; return its output size ``(ho, wo)``."""
    _native.check_tensor(_OP, "x", x, ndim=4)
    _native.check_tensor(_OP, "f", f, ndim=2)
    if not x.is_floating_point():
        raise TypeError(f"{_OP}: x must be a floating tensor, got {x.dtype}")
    kh, kw = f.shape
    if max(kh, kw) > 16:
        raise ValueError(f"{_OP}: the native blur takes filters up to 16x16, got {kh}x{kw}")
    p0, p1 = (int(p) for p in pad)
    ho, wo = x.shape[2] + p0 + p1 - kh + 1, x.shape[3] + p0 + p1 - kw + 1
    if ho < 0 or wo < 0:
        raise ValueError(
            f"{_OP}: pad={tuple(pad)} crops more than x of shape {list(x.shape)} with a "
            f"{kh}x{kw} filter leaves (output {ho}x{wo})"
        )
    return ho, wo


# ------------------------------------------------------------------------- native custom op
# Internal: fir2d(x, w, pad_y, pad_x, ho, wo) correlates every [H, W] plane of x with w (the
# already flipped filter) over implicitly zero-padded input; see csrc/fir2d.h.


@torch.library.custom_op("navcuda::fir2d", mutates_args=())
def _fir2d_op(
    x: torch.Tensor, w: torch.Tensor, pad_y: int, pad_x: int, ho: int, wo: int
) -> torch.Tensor:
    x = x.contiguous()
    w = w.contiguous()
    b, c, h, wd = x.shape
    out = x.new_empty(b, c, ho, wo)
    if out.numel() > 0:
        _native.run_kernel(
            "fir2d", x.device,
            _native.data_ptr(x), _native.data_ptr(w), _native.data_ptr(out),
            b * c, h, wd, w.shape[0], w.shape[1], pad_y, pad_x, ho, wo,
            _native.dtype_code(x.dtype),
        )  # fmt: skip
    return out


@_fir2d_op.register_fake
def _(x, w, pad_y, pad_x, ho, wo):
    return x.new_empty(x.shape[0], x.shape[1], ho, wo)


def _fir2d_setup(ctx, inputs, output):
    x, w, pad_y, pad_x, ho, wo = inputs
    ctx.save_for_backward(w)
    ctx.geometry = (x.shape[2], x.shape[3], pad_y, pad_x)


def _fir2d_backward(ctx, g):
    # The adjoint correlation: flipped filter, complementary pads, output of the input's size.
    (w,) = ctx.saved_tensors
    h, wd, pad_y, pad_x = ctx.geometry
    kh, kw = w.shape
    flipped = torch.flip(w, [0, 1]).contiguous()
    gx = torch.ops.navcuda.fir2d(g, flipped, kh - 1 - pad_y, kw - 1 - pad_x, h, wd)
    return gx, None, None, None, None, None


_fir2d_op.register_autograd(_fir2d_backward, setup_context=_fir2d_setup)
