"""The ``shared`` strategy (no shift, or one :class:`SharedShift` for the batch):
``conv(x * s, scale (W + delta)) * dcoef``, one dense convolution and one dense weight gradient;
demodulation from ``Q0 = sum_taps (W + delta)^2`` contracted with ``s^2``."""

from __future__ import annotations

from navcuda.ops.shifted_modconv import dense_conv
from navcuda.ops.shifted_modconv.demodulation import _demod
from navcuda.ops.shifted_modconv.dense_conv import _gradient_edges, _ModulatedDenseConv, _scale


def _strategy_shared(x, weight, styles, shift, demodulate, up, blur_filter, impl):
    c = _scale(weight)
    w = weight if shift is None else weight + shift.delta
    if impl == "native":
        wc = w * c
        edges = _gradient_edges(x, styles, wc)
        y = _ModulatedDenseConv.apply(x, styles, wc, up, blur_filter, edges)
    else:  # plain autograd: differentiable any number of times
        y = dense_conv._dense_conv(x * styles[:, :, None, None], w * c, up, blur_filter)
    dcoef = None
    if demodulate:
        dcoef = _demod(styles, w.square().sum(dim=(2, 3)).unsqueeze(0), scale2=c * c, impl=impl)
    return y, None, None, dcoef
