"""StyleGAN2 modulated convolution with a per-sample weight shift, fused with its epilogue.

Sample ``b`` uses the raw kernel ``W_b = W + t_b Delta_b``::

    w_b   = scale * W_b * s_b[None, :, None, None]                  scale = 1 / sqrt(in * kh * kw)
    dcoef = (sum_{i,k} w_b[o, i, k]^2 + 1e-8)^(-1/2)                (1 without demodulation)
    y_b   = conv(x_b, w_b * dcoef)     (up=2: transposed stride-2 conv, then the blur filter)
    out   = clamp(act(y_b + noise_strength * noise + bias) * gain, -clamp, clamp)

i.e. ``navcuda.models.stylegan2.StyledConv`` (modconv -> noise -> bias + lrelu * sqrt(2) -> clamp)
in one call. The shift is one of (all mean ``W_b = W + t_b Delta_b``):

- ``None``: no shift;
- :class:`SharedShift` ``(delta [out, in, k, k])``: one shift for the whole batch (``t_b = 1``);
- :class:`PerSampleShift` ``(delta [B, out, in, k, k])``: materialised per-sample shifts;
- :class:`SVDShift` ``(u, s, vh, t, coeffs, index)``: ``Delta_b = unflatten(U diag(c_b/|c_b|) Vh)``
  with ``c_b = coeffs[index[b]]`` (or ``coeffs[b]``), ``U diag(s) Vh`` the thin SVD of the
  flattened kernel (:class:`navcuda.shift.LayerSpace` ``u, s, vh`` cast to ``x``'s dtype);
- :class:`SplitShift` ``(delta [n_dir, out, in, k, k], t, index)``: few directions, many ``t``.

Strategies (``strategy=``)
--------------------------
``"grouped"``
    The reference arrangement: materialise ``W_b`` (``svd_shift`` for SVD shifts), one grouped
    convolution with per-sample modulated kernels; demodulation from ``sum_taps W_b^2``. Always
    correct, supports every shift.
``"shared"`` (``None``, :class:`SharedShift`)
    ``conv(x * s, scale (W + delta)) * dcoef``: one dense convolution and one dense weight
    gradient; demodulation from ``Q0 = sum_taps (W + delta)^2 [out, in]`` contracted with ``s^2``.
``"factorised"`` (:class:`SVDShift`)
    ``conv(x * s, scale * U-kernel)`` (in -> r channels, U fixed), per-sample channel scaling by
    ``sigma + t_b dhat_b``, a 1x1 convolution with ``Vh`` (r -> out), the blur after it for
    ``up=2``. Requires ``W == unflatten(U diag(s) Vh)`` (checked once per weight version; a clear
    error otherwise). The gradient w.r.t. ``W`` (when it requires one) is the dense weight
    gradient of ``conv(x * s, .)`` plus the demodulation term. Demodulation norms are exact, by
    one of two routes:

    - *Gram* (the weight needs no gradient: the optimisation and hybrid methods):
      ``n_b = colsum(M_b * (G_b M_b))`` with ``M_b = diag(e_b) Vh`` and
      ``G_b = sum_i s_bi^2 P[i]``, ``P[i] = sum_taps U_(tap,i)^T U_(tap,i)`` (``[in, r, r]``),
      all in r-space. ``P`` is cached up to ``GRAM_MAX_ELEMENTS`` (64 MiB: up to 256 channels)
      and recomputed in 64 MiB chunks beyond (forward and backward; ``taps in r^2`` multiply-adds
      each way), so nothing of size ``B x kernel`` ever exists.
    - *directions* (the weight needs a gradient): from the *distinct* shifts ``Delta_k`` used in
      the batch, ``n = A + 2 t B_k + t^2 C_k`` with ``A = sum_taps W^2``,
      ``B_k = sum_taps W Delta_k``, ``C_k = sum_taps Delta_k^2`` contracted with ``s^2`` (the
      same native kernel as ``split``); ``B_k, C_k`` are computed one direction at a time and
      the direction recomputed in backward (``K r out`` multiply-adds per direction and pass).

    Measured on the official 512-channel layer, batch 8, 8 distinct directions, forward+backward
    on 2 CPU cores: grouped reference 633 ms / 360 MB peak; Gram (chunked ``P``) 308 ms / 73 MB;
    directions 524 ms / 36 MB; materialising every ``W_b`` (the previous route, still available as
    ``strategy="factorised-materialise"``) 446 ms / 288 MB.
``"split"`` (:class:`SplitShift`; :class:`SVDShift` with its directions materialised)
    ``y = conv(x * s, scale W) + t_b conv(x * s, scale Delta_{k_b})``: the base convolution over the
    batch, each used direction convolved once over the samples that use it (grouped by ``index``);
    demodulation ``n = A + 2 t B_k + t^2 C_k`` as above.

``strategy="auto"`` picks (measurements below): ``None``/:class:`SharedShift` -> shared;
:class:`PerSampleShift` -> grouped; :class:`SplitShift` -> split on the CPU, grouped elsewhere
(on an H200 split ran at 0.74x / 0.72x of grouped, forward + backward, at the official and the
bundled layer: cuDNN's grouped convolution beats the two convolutions and the regrouping there;
benchmarks/RESULTS.md); :class:`SVDShift` -> factorised when ``W == U diag(s) Vh`` holds,
otherwise grouped.

Native pieces (``impl=``, see :mod:`navcuda.ops._native`)
--------------------------------------------------------
The convolutions run through torch (oneDNN / cuDNN). The native kernels of ``navcuda._C``
(``csrc/modconv.{h,cpp,cu}``, CUDA bodies in ``csrc/modconv_kernels.cuh``) fuse what surrounds
them: (1) the demodulation coefficients of all samples (``navcuda::modconv_demod`` and its
gradient ``navcuda::modconv_demod_grad``), (2) the epilogue
``clamp(act(dcoef (y0 + t y1) + ns noise + bias) gain)`` in one pass over memory
(``navcuda::modconv_epilogue``) and (3) its gradient w.r.t. ``y0, y1, t, dcoef, ns, bias`` (and
``noise``) in one pass (``navcuda::modconv_epilogue_grad``). ``impl="ref"`` evaluates the same
pieces in plain torch (:func:`ref_demod`, :func:`ref_epilogue`); :func:`ref_shifted_modconv` is the
readable oracle (grouped reference conv + plain-torch epilogue). The native path supports first
order gradients only (use ``impl="ref"`` for double backward).

Measurements
------------
``benchmarks/test_bench_shifted_modconv.py`` times every strategy against the grouped reference
in the same run; the ratios are in ``benchmarks/RESULTS.md``.

Modules
-------
``shifts`` (the specifications and their checks), ``dispatch`` (:func:`shifted_modconv`,
:func:`ref_shifted_modconv`, :func:`choose_strategy`), one module per strategy (``grouped``,
``shared``, ``split``, ``factorised`` with its ``gram`` route), ``dense_conv`` (the shared-kernel
convolution and its gradients), ``demodulation`` and ``fused_epilogue`` (the fused pieces with
their native custom ops), ``tensor_cache``. This package re-exports what callers use.
"""

from __future__ import annotations

from navcuda.ops.shifted_modconv.demodulation import DEMOD_EPS as DEMOD_EPS
from navcuda.ops.shifted_modconv.demodulation import demod, ref_demod
from navcuda.ops.shifted_modconv.dispatch import (
    STRATEGIES,
    choose_strategy,
    ref_shifted_modconv,
    shifted_modconv,
)
from navcuda.ops.shifted_modconv.fused_epilogue import epilogue, ref_epilogue
from navcuda.ops.shifted_modconv.shifts import PerSampleShift, SharedShift, SplitShift, SVDShift
from navcuda.ops.shifted_modconv.split import shares_input

__all__ = [
    "PerSampleShift",
    "SVDShift",
    "SharedShift",
    "SplitShift",
    "STRATEGIES",
    "choose_strategy",
    "demod",
    "epilogue",
    "ref_demod",
    "ref_epilogue",
    "ref_shifted_modconv",
    "shares_input",
    "shifted_modconv",
]
