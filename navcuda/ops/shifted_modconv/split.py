"""The ``split`` strategy (few directions, many ``t``): ``y = conv(x * s, scale W) + t_b conv(x * s,
scale Delta_(k_b))``, the base convolution over the batch and each used direction once over the
samples that use it (or, for one input shared by the batch, every direction in one convolution);
demodulation ``n = A + 2 t B_k + t^2 C_k``. Also the distinct directions of any shift in this
form (:func:`_as_split`), which the factorised strategy's reference route uses too."""

from __future__ import annotations

import torch

from navcuda.ops.kernel_layout import unflatten_kernel
from navcuda.ops.shifted_modconv import dense_conv
from navcuda.ops.shifted_modconv.demodulation import _demod
from navcuda.ops.shifted_modconv.dense_conv import _scale
from navcuda.ops.shifted_modconv.fused_epilogue import _layout
from navcuda.ops.shifted_modconv.shifts import SharedShift, SplitShift, SVDShift, _dhat


def _svd_deltas(shift: SVDShift, kshape, rows: torch.Tensor) -> torch.Tensor:
    """Unit shifts ``unflatten(U diag(dhat) Vh)`` for coefficient ``rows [n, r]``."""
    dh = _dhat(rows)
    m = torch.einsum("kj,nj,jo->nko", shift.u.detach(), dh, shift.vh.detach())
    return unflatten_kernel(m, kshape)


def _as_split(weight, shift, batch):
    """(deltas [n, out, in, k, k], t [B], index [B] int64) of a shift for the split strategy."""
    kshape = weight.shape
    if isinstance(shift, SharedShift):
        idx = torch.zeros(batch, dtype=torch.int64, device=weight.device)
        return (
            shift.delta.unsqueeze(0),
            torch.ones(batch, dtype=weight.dtype, device=weight.device),
            idx,
        )
    if isinstance(shift, SplitShift):
        return shift.delta, shift.t, shift.index.to(torch.int64)
    # SVDShift: materialise only the distinct directions the batch uses.
    rows, idx = _used_rows(shift, batch)
    return _svd_deltas(shift, kshape, rows), shift.t, idx


def _used_rows(shift: SVDShift, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(the coefficient rows ``[n, r]`` the batch uses, each once; ``index [B]`` into them)."""
    if shift.index is None:
        return shift.coeffs, torch.arange(batch, device=shift.coeffs.device)
    used, idx = torch.unique(shift.index.to(torch.int64), return_inverse=True)
    return shift.coeffs[used], idx


def _split_demod(weight, styles, deltas, t, idx, c, impl):
    q0 = weight.square().sum(dim=(2, 3)).unsqueeze(0)
    q1 = (weight.unsqueeze(0) * deltas).sum(dim=(3, 4))
    q2 = deltas.square().sum(dim=(3, 4))
    return _demod(styles, q0, q1, q2, t, idx, scale2=c * c, impl=impl)


def shares_input(x: torch.Tensor, styles: torch.Tensor) -> bool:
    """Whether every sample has the same input and styles, with ``x`` a broadcast view (batch
    stride 0): one latent under many shifts, as in a block of finite-difference Hessian
    products. The split strategy then convolves that one input once, the distinct directions
    stacked as output channels, instead of once per sample."""
    return (
        x.shape[0] > 1
        and x.stride(0) == 0
        and styles.shape[0] == x.shape[0]
        and bool((styles == styles[:1]).all())
    )


def _split_shared_input(x, weight, styles, deltas, idx, c, up, blur_filter):
    """``(y0, y1)`` of the split strategy for a shared input (:func:`shares_input`): ``y0`` of
    the one input, broadcast over the batch; every distinct direction in one convolution."""
    batch, out_c = x.shape[0], weight.shape[0]
    xs = x[:1] * styles[:1, :, None, None]
    y0 = dense_conv._dense_conv(xs, weight * c, up, blur_filter)
    used, inv = torch.unique(idx, return_inverse=True)
    stacked = (deltas[used] * c).reshape(-1, *weight.shape[1:])  # [n_used * out, in, k, k]
    y1 = dense_conv._dense_conv(xs, stacked, up, blur_filter)  # [1, n_used * out, H', W']
    y1 = y1.view(used.shape[0], out_c, *y1.shape[2:])  # splitting a dim: always a view
    if used.shape[0] != batch or not torch.equal(inv, torch.arange(batch, device=inv.device)):
        y1 = y1[inv]
    # Materialised in the input's layout (the epilogue picks its kernel by y0's layout).
    y0 = y0.expand(batch, *y0.shape[1:]).contiguous(memory_format=_layout(y0))
    return y0, y1


def _strategy_split(x, weight, styles, shift, demodulate, up, blur_filter, impl):
    batch = x.shape[0]
    c = _scale(weight)
    deltas, t, idx = _as_split(weight, shift, batch)
    if shares_input(x, styles):
        y0, y1 = _split_shared_input(x, weight, styles, deltas, idx, c, up, blur_filter)
        dcoef = _split_demod(weight, styles, deltas, t, idx, c, impl) if demodulate else None
        return y0, y1, t, dcoef
    xs = x * styles[:, :, None, None]
    y0 = dense_conv._dense_conv(xs, weight * c, up, blur_filter)
    # Each distinct direction convolved once, over the samples that use it (contiguous after a
    # stable sort by direction), then put back in batch order.
    order = torch.argsort(idx, stable=True)
    counts = torch.bincount(idx, minlength=deltas.shape[0]).tolist()
    xs_sorted = xs[order]
    parts, start = [], 0
    for k, n in enumerate(counts):
        if n:
            parts.append(
                dense_conv._dense_conv(xs_sorted[start : start + n], deltas[k] * c, up, blur_filter)
            )
            start += n
    y1_sorted = torch.cat(parts) if len(parts) > 1 else parts[0]
    inv = torch.empty_like(order)
    inv[order] = torch.arange(batch, device=order.device)
    y1 = y1_sorted[inv]
    dcoef = _split_demod(weight, styles, deltas, t, idx, c, impl) if demodulate else None
    return y0, y1, t, dcoef
