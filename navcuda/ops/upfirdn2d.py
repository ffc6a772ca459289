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

Upsampling (``up > 1``, ``down = 1``; the generator's RGB skip branch: ``up = 2``, the 4x4
``[1, 3, 3, 1]`` filter with gain 4, pads (2, 1), 3 channels) runs as one depthwise transposed
convolution, pure torch (:func:`_transposed_upfirdn2d`): zero insertion followed by a
convolution is a transposed convolution with ``stride = up``, so the zero-inserted copy is never
built and its zeros are never multiplied. The geometry maps exactly onto ``conv_transpose2d``'s
``padding = kh - 1 - p0`` (per axis) and ``output_padding = up - 1 + p1 - p0`` when
``p0 <= k - 1`` and ``p0 - up + 1 <= p1 <= p0``; other pads crop or zero-pad its result
(:func:`_transposed_plan`). On the CPU, float32 and bfloat16 run channels-last, where oneDNN's
depthwise kernels are fastest, and return the result channels-last. Forward + backward on a
2-core CPU (``benchmarks/test_bench_upfirdn2d.py``, medians): [8, 3, 512, 512] (a 1024-px
model's last skip) 1063 ms -> 115 ms (9.3x), [8, 3, 128, 128] 39 -> 2.1 ms (18.7x),
[32, 3, 32, 32] (the bundled model's last skip) 2.7 -> 0.81 ms (3.4x).
"""

from __future__ import annotations

import operator

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


def _check_factor(name: str, value: object) -> int:
    """``up`` or ``down``: an integer >= 1 (0 and negative factors used to pass as 1)."""
    if isinstance(value, bool):
        raise TypeError(f"{_OP}: {name} must be an integer >= 1, got {value!r}")
    try:
        factor = operator.index(value)
    except TypeError:
        raise TypeError(
            f"{_OP}: {name} must be an integer >= 1, got {type(value).__name__} {value!r}"
        ) from None
    if factor < 1:
        raise ValueError(f"{_OP}: {name} must be an integer >= 1, got {factor}")
    return factor


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
    Output: ``[B, C, (H*up + p0 + p1 - kh) // down + 1, ...]``. ``up`` and ``down`` are integers
    >= 1 (ValueError otherwise).
    """
    up, down = _check_factor("up", up), _check_factor("down", down)
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
    semantics.

    ``impl`` is ``"auto"``, ``"ref"`` or ``"native"`` (``$NAVCUDA_IMPL`` overrides ``"auto"``, see
    :mod:`navcuda.ops._native`); ``"ref"`` always runs :func:`ref_upfirdn2d`. Otherwise:

    - blur (``up = down = 1``): the native ``fir2d`` as chosen by ``_native.resolve_impl``
      (``"auto"`` runs the reference instead: with a warning where ``_C`` cannot run the
      kernel, by choice for channels-last ``x`` and on CUDA; ``"native"`` raises where ``_C``
      cannot run it);
    - upsampling (``up > 1``, ``down = 1``): ``"native"``, and ``"auto"`` except where
      :data:`navcuda.ops._native.AUTO_REFERENCE` names this op for ``x``'s device (CUDA:
      cuDNN's zero-insert-and-convolve was measured faster there), take the transposed
      depthwise convolution (:func:`_transposed_upfirdn2d`, pure torch, so it needs no ``_C`` and
      runs on every device and floating dtype torch's ``conv_transpose2d`` does; on the CPU
      its result is channels-last, see :func:`_transposed_upfirdn2d`), except for the
      degenerate geometries of :func:`_transposed_plan` (an output window that lies entirely
      outside the filtered image, or an empty output), an empty or non-floating ``x``, and a
      malformed ``x`` or ``f`` (the reference raises), which run the reference;
    - ``down > 1``: the reference.

    A filter that requires a gradient always runs the reference (the fast paths treat ``f`` as a
    constant); every path is differentiable w.r.t. ``x``. ``up`` and ``down`` must be integers
    >= 1 (ValueError naming the argument otherwise).
    """
    up, down = _check_factor("up", up), _check_factor("down", down)
    if f.requires_grad or down != 1:
        return ref_upfirdn2d(x, f, up=up, down=down, pad=pad)
    if up > 1:
        requested = _native.requested_impl(_OP, impl)
        by_choice = requested == "auto" and _native.auto_prefers_reference(_OP, x.device.type)
        if requested == "ref" or by_choice or x.ndim != 4 or f.ndim != 2:
            return ref_upfirdn2d(x, f, up=up, pad=pad)  # (the reference raises on bad shapes)
        plan = _transposed_plan(x.shape[2], x.shape[3], f.shape[0], f.shape[1], up, pad)
        if plan is None or not x.is_floating_point() or x.numel() == 0:
            return ref_upfirdn2d(x, f, up=up, pad=pad)
        return _transposed_upfirdn2d(x, f, up, plan)
    ho, wo = _check_blur_args(x, f, pad)
    if _native.resolve_impl(_OP, impl, x) == "ref":
        return ref_upfirdn2d(x, f, pad=pad)
    weight = torch.flip(f, [0, 1]).to(device=x.device, dtype=x.dtype).contiguous()
    return torch.ops.navcuda.fir2d(x, weight, int(pad[0]), int(pad[0]), ho, wo)


# ------------------------------------------------------------------------- upsampling (up > 1)
# dtypes whose CPU transposed convolutions oneDNN runs, fastest channels-last.
_CPU_CHANNELS_LAST_DTYPES = frozenset({torch.float32, torch.bfloat16})

# Zero-insertion followed by a convolution is a transposed convolution. Along one axis (input
# length n, filter f of length k, pads p0/p1), the reference computes
#     out[o] = sum_i x[i] * f[o + k - 1 - p0 - i*up],        o = 0 .. n*up + p0 + p1 - k,
# i.e. the window [a, e) = [k - 1 - p0, n*up + p1) of the "full" transposed convolution
#     full[t] = sum_i x[i] * f[t - i*up],                     zero outside [0, s), s = (n-1)*up + k,
# with the filter NOT flipped: a transposed convolution scatters x[i] * f[j] to t = i*up + j, a
# true convolution, whereas the reference flips f for conv2d, a correlation. conv_transpose2d(x, w,
# stride=up, padding=P, output_padding=q) returns full[P : s - P + q] (q < up; any P >= 0, also
# P > k - 1). So P = a and q = up - 1 + p1 - p0 reproduce the reference exactly when
#     p0 <= k - 1  and  p0 - up + 1 <= p1 <= p0
# (the generator's skip upsampling: up = 2, k = 4, pads (2, 1) -> P = 1, q = 0). Otherwise the
# result is cropped (F.pad with negative pads) or zero-padded where the window leaves [0, s).


def _axis_plan(n: int, k: int, up: int, p0: int, p1: int) -> tuple[int, int, int, int] | None:
    """``(padding, output_padding, before, after)`` for one axis: ``conv_transpose2d``'s padding
    and output padding, then the amounts to pad (> 0, zeros) or crop (< 0) its output by before
    and after. ``None`` for geometries left to the reference: an empty output, or a window that
    lies entirely where the full transposed convolution is zero."""
    a, e, s = k - 1 - p0, n * up + p1, (n - 1) * up + k
    if e <= a or a >= s or e <= 0:
        return None
    padding = max(a, 0)
    op = min(max(e - (s - padding), 0), up - 1)
    if s - padding + op < min(e, s) or s - 2 * padding + op <= 0:
        # Cropping by `padding` would lose non-zero samples at the end (p1 far above p0) or leave
        # nothing (p0 very negative): take the full transposed convolution and crop it instead.
        padding, op = 0, 0
    end = s - padding + op  # one past the last sample conv_transpose2d returns
    return padding, op, padding - a, e - end


def _transposed_plan(
    h: int, w: int, kh: int, kw: int, up: int, pad: tuple[int, int]
) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int, int, int]] | None:
    """How :func:`_transposed_upfirdn2d` computes ``upfirdn2d(x [., ., h, w], f [kh, kw], up,
    pad=pad)``: ``(padding, output_padding, post)`` with ``post`` the ``F.pad`` pads of the
    result (``(0, 0, 0, 0)``: none), or ``None`` when the reference must run."""
    p0, p1 = (int(p) for p in pad)
    ry, rx = _axis_plan(h, kh, up, p0, p1), _axis_plan(w, kw, up, p0, p1)
    if ry is None or rx is None:
        return None
    return (ry[0], rx[0]), (ry[1], rx[1]), (rx[2], rx[3], ry[2], ry[3])


def _transposed_upfirdn2d(
    x: torch.Tensor,
    f: torch.Tensor,
    up: int,
    plan: tuple[tuple[int, int], tuple[int, int], tuple[int, int, int, int]],
) -> torch.Tensor:
    """``upfirdn2d(x, f, up, down=1, pad)`` as one depthwise ``conv_transpose2d`` (``groups=C``,
    ``stride=up``, the filter unflipped) with the geometry ``plan`` from :func:`_transposed_plan`.

    Memory format: on the CPU, float32 and bfloat16 convolutions run on a channels-last copy of
    ``x`` (a no-op when ``x`` already is; 2.7 ms for [8, 3, 512, 512]), where oneDNN's depthwise
    transposed convolution is 1.7-5x faster than in NCHW for 3 channels (forward, [32, 3, 32, 32]
    to [8, 3, 512, 512] on a 2-core CPU; 53 ms against 281 ms at the largest), and the result is
    returned channels-last, as the convolution leaves it. Converting it back would cost nearly as
    much as the convolution ([8, 3, 1024, 1024]: 46 ms), while the generator's next op,
    ``y + upsample(skip)``, takes ``y``'s layout: channels-last in the CPU eval route (no
    conversion at all), NCHW otherwise, where the mixed-layout add costs 15 ms more than an NCHW
    one (49 against 34 ms). Upsample + add + backward: 177 ms channels-last, 224 ms converted
    back to NCHW (within 10% of each other at the smaller sizes). Other dtypes on the CPU
    (float64, float16: no oneDNN kernel, channels-last is slower) and other devices run in
    ``x``'s own layout, and the result follows it.
    """
    padding, output_padding, post = plan
    c, (kh, kw) = x.shape[1], f.shape
    weight = f.to(device=x.device, dtype=x.dtype).reshape(1, 1, kh, kw).expand(c, 1, kh, kw)
    if x.device.type == "cpu" and x.dtype in _CPU_CHANNELS_LAST_DTYPES:
        x = x.contiguous(memory_format=torch.channels_last)
    y = F.conv_transpose2d(
        x,
        weight.contiguous(),
        stride=up,
        padding=padding,
        output_padding=output_padding,
        groups=c,
    )
    if any(post):
        y = F.pad(y, post)
    return y


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
# already flipped filter) over implicitly zero-padded input; see csrc/fir2d.h. Called directly
# (torch.ops.navcuda.fir2d), it checks devices, dtypes and ranks here; the C++ entry points check
# the sizes (filter, pads, output) against the buffers.


@torch.library.custom_op("navcuda::fir2d", mutates_args=())
def _fir2d_op(
    x: torch.Tensor, w: torch.Tensor, pad_y: int, pad_x: int, ho: int, wo: int
) -> torch.Tensor:
    T = _native.OpTensor
    _native.check_op_tensors("navcuda::fir2d", T("x", x, 4), T("w", w, 2))
    x = x.contiguous()
    w = w.contiguous()
    b, c, h, wd = x.shape
    out = x.new_empty(b, c, ho, wo)
    if out.numel() > 0:
        _native.run_kernel(
            "fir2d", x.device,
            _native.buffer(x), _native.buffer(w), _native.buffer(out),
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
