"""The ``grouped`` strategy, the reference arrangement: every sample's shifted kernel ``W_b``
materialised, one grouped convolution with the per-sample modulated kernels, demodulation from
``sum_taps W_b^2``. Supports every shift."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from navcuda.ops.shifted_modconv.demodulation import _demod
from navcuda.ops.shifted_modconv.dense_conv import _blur, _scale
from navcuda.ops.shifted_modconv.shifts import PerSampleShift, SharedShift, SplitShift
from navcuda.ops.svd_shift import ref_svd_shift, svd_shift


def _materialise(weight, shift, batch, impl) -> torch.Tensor:
    """Per-sample raw kernels ``W_b [B, out, in, k, k]`` (possibly an expanded view)."""
    if shift is None:
        return weight.unsqueeze(0).expand(batch, *weight.shape)
    if isinstance(shift, SharedShift):
        return (weight + shift.delta).unsqueeze(0).expand(batch, *weight.shape)
    if isinstance(shift, PerSampleShift):
        return weight.unsqueeze(0) + shift.delta
    if isinstance(shift, SplitShift):
        return weight.unsqueeze(0) + shift.t.view(-1, 1, 1, 1, 1) * shift.delta[shift.index]
    if impl == "ref":
        return ref_svd_shift(weight, shift.u, shift.vh, shift.t, shift.coeffs, shift.index)
    # "auto", also under a native shifted_modconv: svd_shift's own choice of kernel, which on
    # CUDA is torch's (navcuda.ops._native.AUTO_REFERENCE).
    return svd_shift(weight, shift.u, shift.vh, shift.t, shift.coeffs, shift.index, impl="auto")


def _strategy_grouped(x, weight, styles, shift, demodulate, up, blur_filter, impl):
    batch, in_c, h, w_ = x.shape
    out_c, _, k, _ = weight.shape
    c = _scale(weight)
    wb = _materialise(weight, shift, batch, impl)
    wm = (c * wb) * styles[:, None, :, None, None]
    xg = x.reshape(1, batch * in_c, h, w_)
    if up == 1:
        y = F.conv2d(xg, wm.reshape(batch * out_c, in_c, k, k), padding=k // 2, groups=batch)
    else:
        wt = wm.transpose(1, 2).reshape(batch * in_c, out_c, k, k)
        y = F.conv_transpose2d(xg, wt, stride=2, groups=batch)
    y = y.reshape(batch, out_c, y.shape[2], y.shape[3])
    if up == 2:
        y = _blur(y, blur_filter, k)
    dcoef = None
    if demodulate:
        dcoef = _demod(styles, wb.square().sum(dim=(3, 4)), scale2=c * c, impl=impl)
    return y, None, None, dcoef
