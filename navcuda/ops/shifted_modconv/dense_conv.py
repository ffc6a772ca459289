"""The dense convolution of the shared-kernel strategies: ``conv(x * s, w)`` with one kernel for
the whole batch (same padding, or for ``up=2`` a transposed stride-2 convolution then the blur),
its weight gradient, the blur's adjoint, and :class:`_ModulatedDenseConv`, the custom Function
that keeps no activation of its own for the backward and computes only the gradients the
backward pass will use.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from navcuda.ops.upfirdn2d import upfirdn2d


def _scale(weight: torch.Tensor) -> float:
    """The equalized-learning-rate scale ``1 / sqrt(in * kh * kw)`` of a raw kernel."""
    _, in_c, kh, kw = weight.shape
    return 1.0 / math.sqrt(in_c * kh * kw)


def _blur_pads(blur_filter: torch.Tensor, k: int) -> tuple[int, int]:
    """Pads that make the blur take the transposed conv's output (2H + k - 2) to exactly 2H."""
    p = (blur_filter.shape[0] - 2) - (k - 1)
    return (p + 1) // 2 + 1, p // 2 + 1


def _blur(y: torch.Tensor, blur_filter: torch.Tensor, k: int) -> torch.Tensor:
    """The blur after the transposed stride-2 conv of a ``k x k`` kernel (``up=2``)."""
    return upfirdn2d(y, blur_filter, pad=_blur_pads(blur_filter, k))


def _dense_conv(xs, w, up, blur_filter):
    """``conv(xs, w)`` (same padding) or, for up=2, transposed stride-2 conv then blur."""
    k = w.shape[-1]
    if up == 1:
        return F.conv2d(xs, w, padding=k // 2)
    return _blur(F.conv_transpose2d(xs, w.transpose(0, 1), stride=2), blur_filter, k)


def _blur_adjoint(g: torch.Tensor, blur_filter: torch.Tensor, k: int) -> torch.Tensor:
    """The adjoint of ``_blur`` applied to ``g [B, C, 2h, 2w]``: the gradient w.r.t. the
    transposed conv's output ``[B, C, 2h + k - 2, 2w + k - 2]``.

    ``_blur`` pads by ``(p0, p1)`` and correlates with the flipped filter; its adjoint is the
    same blur with the filter flipped and the complementary pads ``(kh - 1 - p0, kh - 1 - p1)``
    (the native ``fir2d`` where available: no padded copy)."""
    p0, p1 = _blur_pads(blur_filter, k)
    fh = blur_filter.shape[0]
    flipped = torch.flip(blur_filter, [0, 1])
    return upfirdn2d(g, flipped, pad=(fh - 1 - p0, fh - 1 - p1))


def _gradient_edges(*tensors: torch.Tensor) -> tuple:
    """The autograd edges of a custom Function's inputs, taken before ``apply`` (None where no
    gradient flows or the edge cannot be had)."""
    edges = []
    for t in tensors:
        try:
            edges.append(torch.autograd.graph.get_gradient_edge(t) if t.requires_grad else None)
        except (AssertionError, RuntimeError):
            edges.append(None)
    return tuple(edges)


def _wanted_grads(ctx) -> tuple[bool, ...]:
    """Which of the inputs recorded by :func:`_gradient_edges` this backward pass will use.

    ``ctx.needs_input_grad`` only says which inputs require a gradient; the engine prunes more
    (``torch.autograd.grad(loss, delta)`` never runs the branches to frozen-but-trainable
    weights or to the styles). Autograd's own nodes skip those gradients; this lets a custom
    Function do the same. Where the engine cannot answer (a leaf input under
    ``autograd.grad``), the gradient is computed."""
    wanted = []
    for need, edge in zip(ctx.needs_input_grad, ctx.edges, strict=False):
        if need and edge is not None:
            try:
                need = bool(torch._C._will_engine_execute_node(edge.node))
            except (RuntimeError, AttributeError):
                pass
        wanted.append(need)
    return tuple(wanted)


class _ModulatedDenseConv(torch.autograd.Function):
    """``_dense_conv(x * s, w)`` that keeps only ``x``, ``s`` and ``w`` for the backward.

    Plain autograd would keep the modulated input ``x * s`` (a new activation-sized tensor) for
    the convolution and, for ``up=2``, the blur's input as well; but the input gradient needs
    only ``w``, and ``x`` is the previous layer's output, which its own backward keeps anyway.
    So a frozen layer adds no activation to the backward's memory (with constant styles and
    weight, as in a tangent pass, it keeps not even ``x``); ``x * s`` is recomputed only when the
    weight gradient is wanted. A gradient is computed only when this backward pass will use it
    (:func:`_wanted_grads`), as autograd does for its own nodes. First order only (the
    native path's contract).

    When only the input needs a gradient and every sample has the same styles (the tangent
    pass of one latent's Hessian products), the styles are folded into the kernel instead: no
    modulated copy of ``x`` forward, no style scaling of the input gradient backward."""

    @staticmethod
    def forward(ctx, x, s, w, up, blur_filter, edges):
        ctx.up, ctx.edges, ctx.w_meta = up, edges, (w.shape, w.dtype, w.device)
        ctx.folded = not (ctx.needs_input_grad[1] or ctx.needs_input_grad[2]) and _one_row(s)
        if ctx.folded:
            w = w * s[0][None, :, None, None]
            ctx.save_for_backward(None, None, w if ctx.needs_input_grad[0] else None, blur_filter)
            return _dense_conv(x, w, up, blur_filter)
        # x serves only the style and weight gradients: a constant-coefficient (tangent) pass
        # keeps no activation at all. w serves only the input and style gradients: a kernel
        # that alone needs a gradient (a shift of a layer whose input is frozen) is not kept.
        keep_x = ctx.needs_input_grad[1] or ctx.needs_input_grad[2]
        keep_w = ctx.needs_input_grad[0] or ctx.needs_input_grad[1]
        ctx.save_for_backward(x if keep_x else None, s, w if keep_w else None, blur_filter)
        return _dense_conv(x * s[:, :, None, None], w, up, blur_filter)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        x, s, w, blur_filter = ctx.saved_tensors
        need_x, need_s, need_w = _wanted_grads(ctx)
        if w is None:  # only its shape is read (by the weight gradient): a zero-size stand-in
            shape, dtype, device = ctx.w_meta
            w = torch.zeros((), dtype=dtype, device=device).expand(shape)
        k = w.shape[-1]
        if ctx.up == 2:
            g = _blur_adjoint(g, blur_filter, k)
        gx = gs = gw = None
        if need_x or need_s:
            if ctx.up == 2:  # adjoint of the stride-2 transposed conv
                gxs = F.conv2d(g, w.transpose(0, 1), stride=2)
            else:
                gxs = F.conv_transpose2d(g, w, padding=k // 2)
            gs = (gxs * x).sum(dim=(2, 3)) if need_s else None
            if need_x:  # folded: w already holds the styles
                gx = gxs if ctx.folded else gxs.mul_(s[:, :, None, None])
        if need_w:
            gw = _dense_conv_weight_grad(g, x * s[:, :, None, None], w, ctx.up)
        return gx, gs, gw, None, None, None


def _one_row(s: torch.Tensor) -> bool:
    """Whether every row of ``s [B, C]`` equals the first (checked on the CPU only: on a GPU
    the answer would cost a device synchronisation, and the modulation pass it saves is cheap
    there)."""
    return s.device.type == "cpu" and (s.shape[0] == 1 or bool((s == s[:1]).all()))


def _dense_conv_weight_grad(g, xs, w, up):
    """The gradient w.r.t. ``w`` of the convolution in ``_dense_conv(xs, w)``, from the gradient
    ``g`` of its output *before the blur* (for up=2: the blur's adjoint already applied)."""
    k = w.shape[-1]
    if up == 2:
        _, gw, _ = torch.ops.aten.convolution_backward(
            g, xs, w.transpose(0, 1), None, [2, 2], [0, 0], [1, 1], True, [0, 0], 1,
            [False, True, False],
        )  # fmt: skip
        return gw.transpose(0, 1)
    _, gw, _ = torch.ops.aten.convolution_backward(
        g, xs, w, None, [1, 1], [k // 2, k // 2], [1, 1], False, [0, 0], 1, [False, True, False]
    )
    return gw
