"""The fused epilogue of a shifted modulated convolution, one pass over memory::

    out = clamp(act(dcoef (y0 + t y1) + ns noise + bias) gain)

:func:`ref_epilogue` (plain torch), :func:`epilogue` (checked, dispatching) and the native custom
ops ``navcuda::modconv_epilogue`` / ``navcuda::modconv_epilogue_grad`` (``csrc/modconv.h``) with
their fake and autograd registrations; the forward writes the packed 1- or 2-bit codes its
backward reads instead of the output. The kernels run NCHW or channels-last (:func:`_layout`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from navcuda.ops import _native
from navcuda.ops.shifted_modconv.shifts import _FLOAT_DTYPES, _OP

# act -> (its code in the native kernels, its default gain)
_ACTS = {"linear": (0, 1.0), "lrelu": (1, math.sqrt(2.0))}


def ref_epilogue(y0, y1=None, t=None, dcoef=None, noise=None, ns=None, bias=None, *,
                 act="lrelu", alpha=0.2, gain=None, clamp=None):  # fmt: skip
    """Plain-torch ``clamp(act(dcoef (y0 + t y1) + ns noise + bias) gain)``."""
    y = y0
    if y1 is not None:
        y = y + t.view(-1, 1, 1, 1) * y1
    if dcoef is not None:
        y = y * dcoef[:, :, None, None]
    if noise is not None:
        y = y + ns.view(1, 1, 1, 1) * noise
    if bias is not None:
        y = y + bias.view(1, -1, 1, 1)
    if act == "lrelu":
        y = F.leaky_relu(y, alpha)
    gain = _ACTS[act][1] if gain is None else gain
    if gain != 1:  # a linear epilogue (tangent passes) skips the identity pass
        y = y * gain
    if clamp is not None:
        y = y.clamp(-clamp, clamp)
    return y


def epilogue(y0, y1=None, t=None, dcoef=None, noise=None, ns=None, bias=None, *, act="lrelu",
             alpha=0.2, gain=None, clamp=None, impl="auto"):  # fmt: skip
    """``clamp(act(dcoef (y0 + t y1) + ns noise + bias) gain)`` over ``[B, C, H, W]``.

    ``y1`` ``[B, C, H, W]`` with ``t [B]``; ``dcoef [B, C]``; ``noise [B or 1, 1, H, W]`` with
    ``ns [1]``; ``bias [C]``; each optional. Differentiable w.r.t. every tensor. Every argument
    is checked (shapes, one device and dtype) before any kernel runs.
    """
    _check_epilogue_args(y0, y1, t, dcoef, noise, ns, bias, act, clamp)
    return _epilogue(y0, y1, t, dcoef, noise, ns, bias, act=act, alpha=alpha, gain=gain,
                     clamp=clamp, impl=impl)  # fmt: skip


def _check_epilogue_args(y0, y1, t, dcoef, noise, ns, bias, act, clamp) -> None:
    op = "epilogue"
    y0 = _native.check_tensor(op, "y0", y0, dtypes=_FLOAT_DTYPES, ndim=4)
    b, c, h, w = y0.shape
    if (y1 is None) != (t is None):
        raise ValueError(f"{op}: y1 and t go together (both or neither)")
    if (noise is None) != (ns is None):
        raise ValueError(f"{op}: noise and ns (its strength) go together (both or neither)")
    like = {"like": y0, "like_name": "y0"}
    if y1 is not None:
        _native.check_tensor(op, "y1", y1, shape=[b, c, h, w], **like)
        _native.check_tensor(op, "t", t, shape=[b], **like)
    if dcoef is not None:
        _native.check_tensor(op, "dcoef", dcoef, shape=[b, c], **like)
    if noise is not None:
        noise = _native.check_tensor(op, "noise", noise, ndim=4, **like)
        if noise.shape[0] not in (1, b) or tuple(noise.shape[1:]) != (1, h, w):
            raise ValueError(
                f"{op}: noise must be [1 or {b}, 1, {h}, {w}], got {list(noise.shape)}"
            )
        ns = _native.check_tensor(op, "ns", ns, **like)
        if ns.numel() != 1:
            raise ValueError(f"{op}: ns must have one element, got shape {list(ns.shape)}")
    if bias is not None:
        _native.check_tensor(op, "bias", bias, shape=[c], **like)
    if act not in _ACTS:
        raise ValueError(f"{op}: act must be one of {sorted(_ACTS)}, got {act!r}")
    if clamp is not None and not (0 <= float(clamp) < math.inf):
        raise ValueError(f"{op}: clamp must be None or a finite number >= 0, got {clamp!r}")


def _epilogue(y0, y1=None, t=None, dcoef=None, noise=None, ns=None, bias=None, *, act="lrelu",
              alpha=0.2, gain=None, clamp=None, impl="auto"):  # fmt: skip
    """:func:`epilogue` without the argument checks (callers that validated them already)."""
    gain = _ACTS[act][1] if gain is None else float(gain)
    if (
        act == "linear"
        and gain == 1
        and clamp is None
        and all(v is None for v in (y1, dcoef, noise, bias))
    ):
        return y0  # the identity (a tangent pass's layer without demodulation): no pass at all
    # The native kernels read NCHW or channels-last (the output keeps y0's layout).
    if _native.resolve_impl(_OP, impl, y0, by_layout=False) == "ref":
        return ref_epilogue(y0, y1, t, dcoef, noise, ns, bias, act=act, alpha=alpha, gain=gain,
                            clamp=clamp)  # fmt: skip
    fmt = _layout(y0)
    images = [None if v is None else v.contiguous(memory_format=fmt) for v in (y0, y1)]
    rest = [None if v is None else v.contiguous() for v in (t, dcoef, noise, ns, bias)]
    # The backward of an activation or a clamp reads a 1- or 2-bit code per output (its mask),
    # not the output: written only when a backward can follow.
    want_mask = (
        (act != "linear" or clamp is not None)
        and torch.is_grad_enabled()
        and any(v is not None and v.requires_grad for v in (*images, *rest))
    )
    out, _ = torch.ops.navcuda.modconv_epilogue(
        *images, *rest, act, float(alpha), gain, -1.0 if clamp is None else float(clamp), want_mask
    )
    return out


# ------------------------------------------------------------------------- native custom ops
# Internal: arguments are validated by the callers above. Called directly
# (torch.ops.navcuda.modconv_epilogue), the ops check devices, dtypes, ranks and act here
# (_check_op); the C++ entry points check every size against the buffers.

_p = _native.buffer  # the kernel calls' buffer lists
_T = _native.OpTensor


def _check_op(op, act, first, y1, t, dcoef, noise, ns, *more: _native.OpTensor) -> None:
    _native.check_op_tensors(
        op, first, _T("y1", y1, 4), _T("t", t, 1), _T("dcoef", dcoef, 2), _T("noise", noise, 4),
        _T("ns", ns), *more,
    )  # fmt: skip
    if act not in _ACTS:
        raise ValueError(f"{op}: act must be one of {sorted(_ACTS)}, got {act!r}")


@torch.library.custom_op("navcuda::modconv_epilogue", mutates_args=())
def _epilogue_op(
    y0: torch.Tensor,
    y1: torch.Tensor | None,
    t: torch.Tensor | None,
    dcoef: torch.Tensor | None,
    noise: torch.Tensor | None,
    ns: torch.Tensor | None,
    bias: torch.Tensor | None,
    act: str,
    alpha: float,
    gain: float,
    clamp: float,
    want_mask: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(out, mask): mask holds the bias_act_grad_code of every output, packed 8 or 4 per byte
    (:func:`_empty_mask`; empty unless ``want_mask``), what the backward reads instead of the
    output."""
    _check_op("navcuda::modconv_epilogue", act, _T("y0", y0, 4), y1, t, dcoef, noise, ns,
              _T("bias", bias, 1))  # fmt: skip
    batch, channels, h, w = y0.shape
    fmt = _layout(y0)  # y1 in the same layout (epilogue() sees to it)
    out = torch.empty_like(y0, memory_format=fmt)
    mask = _empty_mask(y0, want_mask, clamp >= 0)
    bstride = 0 if noise is None or noise.shape[0] == 1 else h * w
    if out.numel() > 0:
        _native.run_kernel(
            "modconv_epilogue", y0.device,
            _p(y0, fmt), _p(y1, fmt), _p(t), _p(dcoef), _p(noise), bstride, _p(ns), _p(bias),
            _p(out, fmt), _p(mask) if want_mask else None,
            batch, channels, h * w, int(fmt == torch.channels_last),
            _native.dtype_code(y0.dtype), _ACTS[act][0], alpha, gain, clamp,
        )  # fmt: skip
    return out, mask


def _empty_mask(y0: torch.Tensor, want: bool, has_clamp: bool) -> torch.Tensor:
    """The packed codes of ``y0``'s outputs (csrc/modconv.h): one row per NCHW plane
    (``inner`` = HW codes) or, channels-last, per pixel (``inner`` = C), each code 1 bit (the
    slope sign) or, with a clamp, 2 bits: ``[rows, ceil(inner * bits / 8)]`` bytes."""
    if not want:
        return y0.new_empty(0, dtype=torch.uint8)
    b, c, h, w = y0.shape
    rows, inner = (b * h * w, c) if _layout(y0) == torch.channels_last else (b * c, h * w)
    bits = 2 if has_clamp else 1
    return y0.new_empty(rows, (inner * bits + 7) // 8, dtype=torch.uint8)


def _layout(y: torch.Tensor) -> torch.memory_format:
    """The layout the native epilogue runs ``y`` in: channels-last if ``y`` is, else NCHW."""
    return torch.channels_last if _native.is_channels_last(y) else torch.contiguous_format


@_epilogue_op.register_fake
def _(y0, y1, t, dcoef, noise, ns, bias, act, alpha, gain, clamp, want_mask):
    return torch.empty_like(y0, memory_format=_layout(y0)), _empty_mask(y0, want_mask, clamp >= 0)


@torch.library.custom_op("navcuda::modconv_epilogue_grad", mutates_args=())
def _epilogue_grad_op(
    dout: torch.Tensor,
    mask: torch.Tensor | None,
    y0: torch.Tensor | None,
    y1: torch.Tensor | None,
    t: torch.Tensor | None,
    dcoef: torch.Tensor | None,
    noise: torch.Tensor | None,
    ns: torch.Tensor | None,
    act: str,
    alpha: float,
    gain: float,
    clamp: float,
    needs: list[bool],
) -> tuple[
    torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor
]:
    """(dy0, dy1, ddcoef, dt, dns, dbias, dnoise); unneeded entries are empty tensors.

    ``dout`` comes in the forward's layout (``_epilogue_backward`` sees to it), like ``y0``,
    ``y1`` and ``mask`` (the forward's uint8 codes; None for a linear epilogue without clamp,
    whose gradient does not depend on the output). ``needs`` = [y1/t, dcoef, ns, bias, noise]
    gradients wanted. ``y0`` is read only for the ``dcoef`` gradient and may be None without it
    (the forward then need not keep it)."""
    op = "navcuda::modconv_epilogue_grad"
    _check_op(op, act, _T("dout", dout, 4), y1, t, dcoef, noise, ns, _T("y0", y0, 4),
              _T("mask", mask, 2, torch.uint8))  # fmt: skip
    if len(needs) != 5:
        raise ValueError(f"{op}: needs must have 5 entries (y1/t, dcoef, ns, bias, noise)")
    fmt = _layout(dout)
    batch, channels, h, w = dout.shape
    need_y1, need_dcoef, need_ns, need_bias, need_noise = needs
    has_y1, has_noise = y1 is not None, noise is not None
    if need_dcoef and dcoef is not None and y0 is None:
        raise ValueError("modconv_epilogue_grad: the dcoef gradient needs y0")

    def empty_():
        return dout.new_empty(0)

    dy0 = torch.empty_like(dout)
    dy1 = torch.empty_like(dout) if has_y1 else empty_()
    dz = torch.empty_like(dout) if need_noise and has_noise else empty_()
    planes = (batch, channels)
    ddcoef = dout.new_empty(planes) if need_dcoef and dcoef is not None else empty_()
    p_dz = dout.new_empty(planes) if need_bias else empty_()
    p_dzy1 = dout.new_empty(planes) if need_y1 and has_y1 else empty_()
    p_dzn = dout.new_empty(planes) if need_ns and has_noise else empty_()
    bstride = 0 if noise is None or noise.shape[0] == 1 else h * w
    if dout.numel() > 0:
        _native.run_kernel(
            "modconv_epilogue_grad", dout.device,
            _p(dout, fmt), _p(mask), _p(y0, fmt), _p(y1, fmt), _p(t), _p(dcoef), _p(noise),
            bstride, *(_p(v, fmt) if v.numel() else None for v in (dy0, dy1, dz)),
            *(_p(v) if v.numel() else None for v in (ddcoef, p_dz, p_dzy1, p_dzn)),
            batch, channels, h * w, int(fmt == torch.channels_last),
            _native.dtype_code(dout.dtype), _ACTS[act][0], alpha, gain, clamp,
        )  # fmt: skip
    else:
        for v in (dy0, dy1, dz, ddcoef, p_dz, p_dzy1, p_dzn):
            v.zero_()
    dt = empty_()
    if need_y1 and has_y1:
        dt = (p_dzy1 * dcoef).sum(dim=1) if dcoef is not None else p_dzy1.sum(dim=1)
    dns = p_dzn.sum().reshape(1) if need_ns and has_noise else empty_()
    dbias = p_dz.sum(dim=0) if need_bias else empty_()
    dnoise = empty_()
    if need_noise and has_noise:
        dnoise = ns * dz.sum(dim=1, keepdim=True)
        if noise.shape[0] == 1:
            dnoise = dnoise.sum(dim=0, keepdim=True)
    return dy0, dy1, ddcoef, dt, dns, dbias, dnoise


@_epilogue_grad_op.register_fake
def _(dout, mask, y0, y1, t, dcoef, noise, ns, act, alpha, gain, clamp, needs):
    b, c = dout.shape[:2]
    has_y1, has_noise = y1 is not None, noise is not None
    fmt = _layout(dout)
    return (
        torch.empty_like(dout, memory_format=fmt),
        torch.empty_like(dout, memory_format=fmt) if has_y1 else dout.new_empty(0),
        dout.new_empty((b, c) if needs[1] and dcoef is not None else 0),
        dout.new_empty(b if needs[0] and has_y1 else 0),
        dout.new_empty(1 if needs[2] and has_noise else 0),
        dout.new_empty(c if needs[3] else 0),
        noise.new_empty(noise.shape) if needs[4] and has_noise else dout.new_empty(0),
    )


def _epilogue_setup(ctx, inputs, output):
    y0, y1, t, dcoef, noise, ns, bias, act, alpha, gain, clamp, want_mask = inputs
    out, mask = output
    # y0 feeds only the dcoef gradient: not keeping it when dcoef needs none (every frozen layer
    # of a shifted synthesis) saves one activation per layer for the backward.
    keep_y0 = dcoef is not None and dcoef.requires_grad
    # The activation's and the clamp's derivatives read the packed mask, not the output (a 32nd,
    # or with a clamp a 16th, of its float32 memory); a linear epilogue without clamp (every
    # layer of a tangent pass) keeps nothing activation-sized at all.
    ctx.save_for_backward(mask if mask.numel() else None, y0 if keep_y0 else None, y1, t, dcoef,
                          noise, ns)  # fmt: skip
    ctx.args = (act, alpha, gain, clamp)
    ctx.layout = _layout(out)
    ctx.mark_non_differentiable(mask)


def _epilogue_backward(ctx, dout, _dmask):
    mask, y0, y1, t, dcoef, noise, ns = ctx.saved_tensors
    dout = dout.contiguous(memory_format=ctx.layout)  # the gradient in the forward's layout
    n = ctx.needs_input_grad
    needs = [n[1] or n[2], n[3], n[5], n[6], n[4]]
    dy0, dy1, ddcoef, dt, dns, dbias, dnoise = torch.ops.navcuda.modconv_epilogue_grad(
        dout, mask, y0, y1, t, dcoef, noise, ns, *ctx.args, needs
    )
    pick = lambda v, need: v if need and v.numel() else None  # noqa: E731
    return (
        dy0 if n[0] else None,
        pick(dy1, n[1]),
        pick(dt, n[2]),
        pick(ddcoef, n[3]),
        pick(dnoise, n[4]),
        pick(dns, n[5]),
        pick(dbias, n[6]),
        None,
        None,
        None,
        None,
        None,
    )


_epilogue_op.register_autograd(_epilogue_backward, setup_context=_epilogue_setup)
