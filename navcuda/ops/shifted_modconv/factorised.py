"""The ``factorised`` strategy (an :class:`SVDShift` of the weight's own SVD): ``conv(x * s,
scale * U-kernel)`` into r channels, per-sample scaling by ``sigma + t_b dhat_b`` and the 1x1
convolution with ``Vh`` as one batched GEMM, the blur after it for ``up=2``; the weight gradient
as a dense one (:class:`_ConvWeightGrad`). Its precondition ``W == unflatten(U diag(s) Vh)``
(:func:`_svd_matches_weight`, cached) and its demodulation routes: Gram (:mod:`.gram`), the
distinct directions one at a time (:class:`_SVDDirectionNorms`), or materialised kernels."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from navcuda.ops.kernel_layout import flatten_kernel, unflatten_kernel
from navcuda.ops.shifted_modconv import dense_conv
from navcuda.ops.shifted_modconv.demodulation import _demod
from navcuda.ops.shifted_modconv.dense_conv import _blur, _blur_adjoint, _scale
from navcuda.ops.shifted_modconv.gram import _gram_demod
from navcuda.ops.shifted_modconv.grouped import _materialise
from navcuda.ops.shifted_modconv.shifts import _OP, SVDShift, _dhat
from navcuda.ops.shifted_modconv.split import _as_split, _split_demod, _used_rows
from navcuda.ops.shifted_modconv.tensor_cache import _TensorCache

_SVD_CHECKED = _TensorCache(64)


def _svd_matches_weight(weight: torch.Tensor, shift: SVDShift) -> bool:
    """Whether ``W == unflatten(U diag(s) Vh)`` (cached per tensor and version)."""
    tensors = (weight, shift.u, shift.s, shift.vh)
    hit = _SVD_CHECKED.get(tensors)
    if hit is None:
        with torch.no_grad():
            rec = unflatten_kernel((shift.u * shift.s) @ shift.vh, weight.shape)
            err = float((rec - weight).norm() / weight.norm().clamp_min(1e-30))
        tol = 1e-10 if weight.dtype == torch.float64 else 1e-4
        hit = err <= tol
        _SVD_CHECKED.put(tensors, hit)
    return hit


class _ConvWeightGrad(torch.autograd.Function):
    """Identity on ``y0``; in backward adds the gradient of ``y0 = conv(xs, scale W)`` w.r.t. ``W``
    (one dense weight gradient over the batch). Used by the factorised strategy, whose forward
    computes the same ``y0`` from the SVD factors instead of ``W``."""

    @staticmethod
    def forward(ctx, y0, weight, xs, scale, up, blur_filter):
        ctx.save_for_backward(weight, xs, blur_filter)
        ctx.scale, ctx.up = scale, up
        return y0.view_as(y0)

    @staticmethod
    def backward(ctx, g):
        weight, xs, blur_filter = ctx.saved_tensors
        gw = None
        if ctx.needs_input_grad[1]:
            if ctx.up == 2:  # adjoint of the blur first
                k = weight.shape[-1]
                g_conv = _blur_adjoint(g, blur_filter, k)
            else:
                g_conv = g
            gw = dense_conv._dense_conv_weight_grad(g_conv, xs, weight, ctx.up) * ctx.scale
        return g, gw, None, None, None, None


def _svd_directions_demod(weight, styles, shift: SVDShift, batch: int, c: float, impl: str):
    """Exact demodulation of an SVD shift from its distinct directions: ``n = A + 2 t B_k + t^2
    C_k`` (:func:`_split_demod`), with ``B_k, C_k`` from :class:`_SVDDirectionNorms` (one
    direction's kernel in memory at a time) except for ``impl="ref"`` (plain autograd through
    all the materialised directions: the oracle, differentiable twice)."""
    if impl == "ref":
        deltas, t, idx = _as_split(weight, shift, batch)
        return _split_demod(weight, styles, deltas, t, idx, c, impl)
    rows, idx = _used_rows(shift, batch)
    q1, q2 = _SVDDirectionNorms.apply(weight, _dhat(rows), shift.u.detach(), shift.vh.detach())
    q0 = weight.square().sum(dim=(2, 3)).unsqueeze(0)
    return _demod(styles, q0, q1, q2, shift.t, idx, scale2=c * c, impl=impl)


def _taps_in_out(weight: torch.Tensor) -> torch.Tensor:
    """``[out, in, kh, kw] -> [kh*kw, in, out]``: :func:`flatten_kernel` (contiguous) with its rows
    split into taps and input channels."""
    out_c, in_c = weight.shape[:2]
    return flatten_kernel(weight).view(-1, in_c, out_c)


class _SVDDirectionNorms(torch.autograd.Function):
    """``q1[j] = sum_taps W * D_j`` and ``q2[j] = sum_taps D_j^2`` (``[J, out, in]``) for the unit
    shifts ``D_j = unflatten(U diag(dhat_j) Vh)``, one direction at a time.

    Materialising every used direction at once and letting autograd keep them (the previous
    route) held ~4 kernels' worth of memory per direction: 288 MB for 8 directions of a 512-channel
    layer, 80 % of the grouped reference's peak. Here each ``D_j`` lives only inside its loop
    iteration and the backward recomputes it (one more ``[K in, r] x [r, out]`` GEMM per direction):
    ``dW = sum_j g1_j D_j``; ``dD_j = g1_j W + 2 g2_j D_j``; ``d dhat_j = rowsum((U^T dD_j) * Vh)``.
    First-order only (``impl="ref"`` takes the plain-autograd route)."""

    @staticmethod
    def forward(ctx, weight, dh, u, vh):
        ctx.save_for_backward(weight, dh, u, vh)
        # Work in the flattened layout [taps, in, out] of U diag(.) Vh: contiguous, no permutes.
        wf = _taps_in_out(weight)
        q1 = weight.new_empty(dh.shape[0], wf.shape[2], wf.shape[1])  # [J, out, in]
        q2 = torch.empty_like(q1)
        for j in range(dh.shape[0]):
            m = (u @ (dh[j, :, None] * vh)).view_as(wf)
            q1[j] = (wf * m).sum(dim=0).t()
            q2[j] = m.square().sum(dim=0).t()
        return q1, q2

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g1, g2):
        weight, dh, u, vh = ctx.saved_tensors
        need_w, need_dh = ctx.needs_input_grad[:2]
        wf = _taps_in_out(weight)
        gwf = torch.zeros_like(wf) if need_w and g1 is not None else None
        gdh = torch.zeros_like(dh) if need_dh else None
        for j in range(dh.shape[0]):
            m = (u @ (dh[j, :, None] * vh)).view_as(wf)
            a = None if g1 is None else g1[j].t().unsqueeze(0)  # [1, in, out]
            if gwf is not None:
                gwf += a * m
            if gdh is not None and (a is not None or g2 is not None):
                gm = a * wf if a is not None else torch.zeros_like(wf)
                if g2 is not None:
                    gm += (2 * g2[j].t()).unsqueeze(0) * m
                gdh[j] = ((u.t() @ gm.reshape(-1, gm.shape[2])) * vh).sum(dim=1)
        gw = None if gwf is None else unflatten_kernel(gwf.reshape(-1, wf.shape[2]), weight.shape)
        return gw, gdh, None, None


def _strategy_factorised(
    x, weight, styles, shift, demodulate, up, blur_filter, impl, demod_route=None
):
    if not _svd_matches_weight(weight, shift):
        raise ValueError(
            f"{_OP}: strategy='factorised' needs weight == unflatten(U diag(s) Vh) (the SVD of "
            f"this weight, e.g. navcuda.shift.LayerSpace(weight) cast to its dtype); it does not "
            f"hold here: use strategy='grouped' or 'split'"
        )
    batch = x.shape[0]
    out_c, in_c, k, _ = weight.shape
    c = _scale(weight)
    u, vh = shift.u.detach(), shift.vh.detach()
    rank = u.shape[1]
    uk = unflatten_kernel(u, (rank, in_c, k, k)) * c  # [r, in, k, k]
    xs = x * styles[:, :, None, None]
    if up == 1:
        hmid = F.conv2d(xs, uk, padding=k // 2)
    else:
        hmid = F.conv_transpose2d(xs, uk.transpose(0, 1), stride=2)
    rows = shift.coeffs if shift.index is None else shift.coeffs[shift.index]
    e = shift.s.detach() + shift.t[:, None] * _dhat(rows)  # [B, r]
    # The 1x1 conv with Vh and the channel scaling by e_b as one batched GEMM with the tiny
    # per-sample matrices Vh^T diag(e_b) [out, r]: no extra pass over the r-channel activations.
    hb, hh, hw_ = hmid.shape[0], hmid.shape[2], hmid.shape[3]
    wmix = vh.t().unsqueeze(0) * e[:, None, :]
    y0 = torch.bmm(wmix, hmid.reshape(hb, rank, hh * hw_)).reshape(hb, out_c, hh, hw_)
    if up == 2:
        y0 = _blur(y0, blur_filter, k)
    w_grad = weight.requires_grad and torch.is_grad_enabled()
    if w_grad:
        bf = blur_filter if blur_filter is not None else weight.new_zeros(0)
        y0 = _ConvWeightGrad.apply(y0, weight, xs.detach(), c, up, bf)
    dcoef = None
    if demodulate:
        route = demod_route or _factorised_demod_route(weight, shift, batch, w_grad)
        if route == "gram":
            if w_grad:
                raise ValueError(
                    f"{_OP}: the 'gram' demodulation route gives no gradient to weight; use "
                    f"strategy='factorised' (auto route) or detach the weight"
                )
            dcoef = _gram_demod(shift, styles, e, c)
        elif route == "directions":
            dcoef = _svd_directions_demod(weight, styles, shift, batch, c, impl)
        else:  # "materialise": W_b for every sample with the native svd_shift GEMM
            wb = _materialise(weight, shift, batch, impl)
            dcoef = _demod(styles, wb.square().sum(dim=(3, 4)), scale2=c * c, impl=impl)
    return y0, None, None, dcoef


def _factorised_demod_route(weight, shift: SVDShift, batch: int, w_grad: bool) -> str:
    """How the factorised strategy computes exact demodulation norms (see the package docstring):
    the Gram route unless the weight needs a gradient (it gives none), else the distinct
    directions (low memory)."""
    return "directions" if w_grad else "gram"
