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
"""

from __future__ import annotations

import functools
import math
import weakref
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from navcuda.ops import _native
from navcuda.ops.svd_shift import ref_svd_shift, svd_shift
from navcuda.ops.upfirdn2d import upfirdn2d

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

_OP = "shifted_modconv"
_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_ACTS = {"linear": (0, 1.0), "lrelu": (1, math.sqrt(2.0))}
STRATEGIES = ("grouped", "shared", "factorised", "split")
DEMOD_EPS = 1e-8


# ------------------------------------------------------------------------- shift specifications


@dataclass(frozen=True)
class SharedShift:
    """Every sample uses ``W + delta``; ``delta [out, in, k, k]``."""

    delta: torch.Tensor


@dataclass(frozen=True)
class PerSampleShift:
    """Sample ``b`` uses ``W + delta[b]``; ``delta [B, out, in, k, k]`` (already times ``t``)."""

    delta: torch.Tensor


@dataclass(frozen=True)
class SVDShift:
    """``W_b = W + t_b unflatten(U diag(c_b / |c_b|) Vh)``, ``c_b = coeffs[index[b]]``.

    ``u [k*k*in, r]``, ``s [r]``, ``vh [r, out]``: the thin SVD of the flattened kernel
    (constants, no gradient); ``t [B]``; ``coeffs [n_dir, r]`` (``[B, r]`` when ``index`` is
    None); ``index [B]`` integer or None.
    """

    u: torch.Tensor
    s: torch.Tensor
    vh: torch.Tensor
    t: torch.Tensor
    coeffs: torch.Tensor
    index: torch.Tensor | None = None


@dataclass(frozen=True)
class SplitShift:
    """``W_b = W + t_b delta[index[b]]``; ``delta [n_dir, out, in, k, k]``, ``t [B]``,
    ``index [B]`` integer."""

    delta: torch.Tensor
    t: torch.Tensor
    index: torch.Tensor


_SUPPORTED = {
    type(None): ("grouped", "shared"),
    SharedShift: ("grouped", "shared", "split"),
    PerSampleShift: ("grouped",),
    SVDShift: (
        "grouped",
        "factorised",
        "split",
        "factorised-gram",
        "factorised-directions",
        "factorised-materialise",
    ),
    SplitShift: ("grouped", "split"),
}


# ------------------------------------------------------------------------- validation


def _check_index(
    name: str,
    index: object,
    batch: int,
    n_rows: int,
    device: torch.device,
    op: str = _OP,
    like_name: str = "x",
):
    if not isinstance(index, torch.Tensor):
        raise TypeError(f"{op}: {name} must be a torch.Tensor, got {type(index).__name__}")
    if index.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"{op}: {name} must have dtype int64 or int32, got {index.dtype}")
    if tuple(index.shape) != (batch,):
        raise ValueError(
            f"{op}: {name} must have shape [{batch}] (one row per sample), got {list(index.shape)}"
        )
    if index.device != device:
        raise ValueError(f"{op}: {name} is on {index.device} but {like_name} is on {device}")
    if batch > 0:
        lo, hi = _native.index_range(index)
        if lo < 0 or hi >= n_rows:
            raise ValueError(
                f"{op}: {name} values must lie in [0, {n_rows}), got range [{lo}, {hi}]"
            )


def _check_shift(shift: object, x: torch.Tensor, weight: torch.Tensor) -> None:
    batch = x.shape[0]
    out_c, in_c, kh, kw = weight.shape
    kshape = [out_c, in_c, kh, kw]
    ck = _native.check_tensor
    if shift is None:
        return
    if isinstance(shift, SharedShift):
        ck(_OP, "shift.delta", shift.delta, shape=kshape, like=x)
    elif isinstance(shift, PerSampleShift):
        ck(_OP, "shift.delta", shift.delta, shape=[batch, *kshape], like=x)
    elif isinstance(shift, SplitShift):
        ck(_OP, "shift.delta", shift.delta, shape=[None, *kshape], like=x)
        ck(_OP, "shift.t", shift.t, shape=[batch], like=x)
        _check_index("shift.index", shift.index, batch, shift.delta.shape[0], x.device)
    elif isinstance(shift, SVDShift):
        k_rows = kh * kw * in_c
        ck(_OP, "shift.u", shift.u, ndim=2, like=x)
        if shift.u.shape[0] != k_rows:
            raise ValueError(
                f"{_OP}: shift.u must have shape [kh*kw*in, r] = [{k_rows}, r] for a kernel "
                f"{kshape}, got {list(shift.u.shape)}"
            )
        rank = shift.u.shape[1]
        ck(_OP, "shift.s", shift.s, shape=[rank], like=x)
        ck(_OP, "shift.vh", shift.vh, shape=[rank, out_c], like=x)
        ck(_OP, "shift.t", shift.t, shape=[batch], like=x)
        ck(_OP, "shift.coeffs", shift.coeffs, shape=[None, rank], like=x)
        if shift.index is None:
            if shift.coeffs.shape[0] != batch:
                raise ValueError(
                    f"{_OP}: shift.coeffs has {shift.coeffs.shape[0]} rows but the batch has "
                    f"{batch} samples; pass coeffs [B, r] or coeffs [n_dir, r] with index [B]"
                )
        else:
            _check_index("shift.index", shift.index, batch, shift.coeffs.shape[0], x.device)
        if batch > 0:
            rows = shift.coeffs if shift.index is None else shift.coeffs[shift.index]
            norms = rows.detach().norm(dim=1)
            if not bool(((norms > 0) & torch.isfinite(norms)).all()):
                raise ValueError(
                    f"{_OP}: every coefficient vector used must be finite and not all zero "
                    f"(it is normalised to unit length)"
                )
    else:
        raise TypeError(
            f"{_OP}: shift must be None, SharedShift, PerSampleShift, SVDShift or SplitShift, "
            f"got {type(shift).__name__}"
        )


def _check_args(x, weight, styles, shift, demodulate, up, blur_filter, noise, noise_strength,
                bias, act, clamp, strategy):  # fmt: skip
    """Validate everything; return (noise [Bn,1,H',W'] or None, ns [1] or None, clamp value)."""
    ck = _native.check_tensor
    ck(_OP, "x", x, dtypes=_FLOAT_DTYPES, ndim=4)
    ck(_OP, "weight", weight, ndim=4, like=x)
    batch, in_c, h, w_ = x.shape
    out_c, w_in, kh, kw = weight.shape
    if w_in != in_c:
        raise ValueError(
            f"{_OP}: weight has {w_in} input channels but x has {in_c} (x {list(x.shape)}, "
            f"weight {list(weight.shape)})"
        )
    if kh != kw or kh % 2 != 1:
        raise ValueError(f"{_OP}: the kernel must be square with an odd size, got {kh}x{kw}")
    ck(_OP, "styles", styles, shape=[batch, in_c], like=x)
    if up not in (1, 2):
        raise ValueError(f"{_OP}: up must be 1 or 2, got {up!r}")
    if up == 2:
        if blur_filter is None:
            raise ValueError(f"{_OP}: up=2 needs blur_filter (e.g. make_filter((1,3,3,1), 4))")
        ck(_OP, "blur_filter", blur_filter, ndim=2, like=x)
    if not isinstance(demodulate, bool):
        raise TypeError(f"{_OP}: demodulate must be a bool, got {type(demodulate).__name__}")
    if act not in _ACTS:
        raise ValueError(f"{_OP}: act must be one of {sorted(_ACTS)}, got {act!r}")
    if clamp is None:
        clamp_value = -1.0
    else:
        clamp_value = float(clamp)
        if not clamp_value >= 0:
            raise ValueError(f"{_OP}: clamp must be None or >= 0, got {clamp!r}")
    if strategy != "auto" and strategy not in _STRATEGY_FNS:
        raise ValueError(f"{_OP}: strategy must be 'auto' or one of {STRATEGIES}, got {strategy!r}")
    _check_shift(shift, x, weight)
    if strategy != "auto" and strategy not in _SUPPORTED[type(shift)]:
        raise ValueError(
            f"{_OP}: strategy {strategy!r} does not support {type(shift).__name__}; "
            f"supported: {_SUPPORTED[type(shift)]}"
        )
    ho, wo = h * up, w_ * up
    if bias is not None:
        ck(_OP, "bias", bias, shape=[out_c], like=x)
    ns = None
    if noise is None:
        if noise_strength is not None:
            raise ValueError(f"{_OP}: noise_strength was given without noise")
    else:
        ck(_OP, "noise", noise, ndim=4, like=x)
        if (
            noise.shape[0] not in (1, batch)
            or noise.shape[1] != 1
            or tuple(noise.shape[2:])
            != (
                ho,
                wo,
            )
        ):
            raise ValueError(
                f"{_OP}: noise must have shape [B or 1, 1, {ho}, {wo}] (B={batch}), got "
                f"{list(noise.shape)}"
            )
        if noise_strength is None:
            ns = torch.ones(1, dtype=x.dtype, device=x.device)
        elif isinstance(noise_strength, torch.Tensor):
            ck(_OP, "noise_strength", noise_strength, like=x)
            if noise_strength.numel() != 1:
                raise ValueError(
                    f"{_OP}: noise_strength must have one element, got shape "
                    f"{list(noise_strength.shape)}"
                )
            ns = noise_strength.reshape(1)
        else:
            ns = torch.full((1,), float(noise_strength), dtype=x.dtype, device=x.device)
    return ns, clamp_value


# ------------------------------------------------------------------------- small helpers


def _scale(weight: torch.Tensor) -> float:
    _, in_c, kh, kw = weight.shape
    return 1.0 / math.sqrt(in_c * kh * kw)


def _blur_pads(blur_filter: torch.Tensor, k: int) -> tuple[int, int]:
    """Pads that make the blur take the transposed conv's output (2H + k - 2) to exactly 2H."""
    p = (blur_filter.shape[0] - 2) - (k - 1)
    return (p + 1) // 2 + 1, p // 2 + 1


def _blur(y: torch.Tensor, blur_filter: torch.Tensor, k: int) -> torch.Tensor:
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


def _dhat(coeffs: torch.Tensor) -> torch.Tensor:
    return coeffs / coeffs.norm(dim=1, keepdim=True)


def _unflatten(m: torch.Tensor, kshape) -> torch.Tensor:
    """``[..., kh*kw*in, out] -> [..., out, in, kh, kw]`` (navcuda.shift.unflatten_kernel)."""
    out_c, in_c, kh, kw = kshape
    lead = m.shape[:-2]
    n = len(lead)
    return m.reshape(*lead, kh, kw, in_c, out_c).permute(*range(n), n + 3, n + 2, n, n + 1)


def _svd_deltas(shift: SVDShift, kshape, rows: torch.Tensor) -> torch.Tensor:
    """Unit shifts ``unflatten(U diag(dhat) Vh)`` for coefficient ``rows [n, r]``."""
    dh = _dhat(rows)
    m = torch.einsum("kj,nj,jo->nko", shift.u.detach(), dh, shift.vh.detach())
    return _unflatten(m, kshape)


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
    if shift.index is None:
        rows, idx = shift.coeffs, torch.arange(batch, device=weight.device)
    else:
        used, idx = torch.unique(shift.index.to(torch.int64), return_inverse=True)
        rows = shift.coeffs[used]
    return _svd_deltas(shift, kshape, rows), shift.t, idx


def _owner(t: torch.Tensor) -> torch.Tensor:
    """The tensor that owns ``t``'s memory: its base for a view (``conv.weight[0]`` is a new view
    object at every call), else ``t``."""
    return t._base if t._base is not None else t


class _TensorCache:
    """Values computed from tensors, valid while the tensors owning that memory are alive and
    unmodified (same in-place version), for the same views of them.

    Keyed by the owners' identity, checked through weak references, not by ``data_ptr()`` alone:
    the CUDA caching allocator hands a freed block straight to the next allocation of that size,
    so a new tensor (another layer's SVD factor) at a dead one's address must not get its entry.
    A view is identified by its owner plus its address, shape and strides."""

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._entries: dict[tuple, tuple[tuple[weakref.ref, ...], object]] = {}

    @staticmethod
    def _key(tensors: tuple[torch.Tensor, ...], extra: tuple) -> tuple:
        return (
            tuple(
                (id(_owner(t)), t._version, t.data_ptr(), tuple(t.shape), t.stride())
                for t in tensors
            )
            + extra
        )

    def get(self, tensors: tuple[torch.Tensor, ...], extra: tuple = ()) -> object | None:
        entry = self._entries.get(self._key(tensors, extra))
        alive = entry is not None and all(
            r() is _owner(t) for r, t in zip(entry[0], tensors, strict=True)
        )
        return entry[1] if alive else None

    def put(self, tensors: tuple[torch.Tensor, ...], value: object, extra: tuple = ()) -> None:
        if len(self._entries) >= self.max_entries:
            self._entries.clear()
        refs = tuple(weakref.ref(_owner(t)) for t in tensors)
        self._entries[self._key(tensors, extra)] = (refs, value)


_SVD_CHECKED = _TensorCache(64)


def _svd_matches_weight(weight: torch.Tensor, shift: SVDShift) -> bool:
    """Whether ``W == unflatten(U diag(s) Vh)`` (cached per tensor and version)."""
    tensors = (weight, shift.u, shift.s, shift.vh)
    hit = _SVD_CHECKED.get(tensors)
    if hit is None:
        with torch.no_grad():
            rec = _unflatten((shift.u * shift.s) @ shift.vh, weight.shape)
            err = float((rec - weight).norm() / weight.norm().clamp_min(1e-30))
        tol = 1e-10 if weight.dtype == torch.float64 else 1e-4
        hit = err <= tol
        _SVD_CHECKED.put(tensors, hit)
    return hit


# Device types where strategy="auto" runs a SplitShift split (elsewhere grouped; module docstring).
_SPLIT_AUTO_DEVICES = frozenset({"cpu"})


def choose_strategy(weight: torch.Tensor, shift: object) -> str:
    """The strategy ``strategy="auto"`` runs for this shift (see the module docstring)."""
    if shift is None or isinstance(shift, SharedShift):
        return "shared"
    if isinstance(shift, PerSampleShift):
        return "grouped"
    if isinstance(shift, SplitShift):
        return "split" if weight.device.type in _SPLIT_AUTO_DEVICES else "grouped"
    if isinstance(shift, SVDShift):
        return "factorised" if _svd_matches_weight(weight, shift) else "grouped"
    raise TypeError(f"{_OP}: unsupported shift type {type(shift).__name__}")


# ------------------------------------------------------------------------- strategies
# Each returns (y0, y1 or None, t or None, dcoef or None) for the epilogue
# out = act(dcoef (y0 + t y1) + ns noise + bias).


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


def _strategy_shared(x, weight, styles, shift, demodulate, up, blur_filter, impl):
    c = _scale(weight)
    w = weight if shift is None else weight + shift.delta
    if impl == "native":
        wc = w * c
        edges = _gradient_edges(x, styles, wc)
        y = _ModulatedDenseConv.apply(x, styles, wc, up, blur_filter, edges)
    else:  # plain autograd: differentiable any number of times
        y = _dense_conv(x * styles[:, :, None, None], w * c, up, blur_filter)
    dcoef = None
    if demodulate:
        dcoef = _demod(styles, w.square().sum(dim=(2, 3)).unsqueeze(0), scale2=c * c, impl=impl)
    return y, None, None, dcoef


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
    y0 = _dense_conv(xs, weight * c, up, blur_filter)
    used, inv = torch.unique(idx, return_inverse=True)
    stacked = (deltas[used] * c).reshape(-1, *weight.shape[1:])  # [n_used * out, in, k, k]
    y1 = _dense_conv(xs, stacked, up, blur_filter)  # [1, n_used * out, H', W']
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
    y0 = _dense_conv(xs, weight * c, up, blur_filter)
    # Each distinct direction convolved once, over the samples that use it (contiguous after a
    # stable sort by direction), then put back in batch order.
    order = torch.argsort(idx, stable=True)
    counts = torch.bincount(idx, minlength=deltas.shape[0]).tolist()
    xs_sorted = xs[order]
    parts, start = [], 0
    for k, n in enumerate(counts):
        if n:
            parts.append(_dense_conv(xs_sorted[start : start + n], deltas[k] * c, up, blur_filter))
            start += n
    y1_sorted = torch.cat(parts) if len(parts) > 1 else parts[0]
    inv = torch.empty_like(order)
    inv[order] = torch.arange(batch, device=order.device)
    y1 = y1_sorted[inv]
    dcoef = _split_demod(weight, styles, deltas, t, idx, c, impl) if demodulate else None
    return y0, y1, t, dcoef


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
            gw = _dense_conv_weight_grad(g_conv, xs, weight, ctx.up) * ctx.scale
        return g, gw, None, None, None, None


def _svd_directions_demod(weight, styles, shift: SVDShift, batch: int, c: float, impl: str):
    """Exact demodulation of an SVD shift from its distinct directions: ``n = A + 2 t B_k + t^2
    C_k`` (:func:`_split_demod`), with ``B_k, C_k`` from :class:`_SVDDirectionNorms` (one
    direction's kernel in memory at a time) except for ``impl="ref"`` (plain autograd through
    all the materialised directions: the oracle, differentiable twice)."""
    if impl == "ref":
        deltas, t, idx = _as_split(weight, shift, batch)
        return _split_demod(weight, styles, deltas, t, idx, c, impl)
    if shift.index is None:
        rows, idx = shift.coeffs, torch.arange(batch, device=weight.device)
    else:
        used, idx = torch.unique(shift.index.to(torch.int64), return_inverse=True)
        rows = shift.coeffs[used]
    q1, q2 = _SVDDirectionNorms.apply(weight, _dhat(rows), shift.u.detach(), shift.vh.detach())
    q0 = weight.square().sum(dim=(2, 3)).unsqueeze(0)
    return _demod(styles, q0, q1, q2, shift.t, idx, scale2=c * c, impl=impl)


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
        wf = _flatten_kernel(weight)
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
        wf = _flatten_kernel(weight)
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
        gw = None if gwf is None else _unflatten(gwf.reshape(-1, wf.shape[2]), weight.shape)
        return gw, gdh, None, None


def _flatten_kernel(weight: torch.Tensor) -> torch.Tensor:
    """``[out, in, kh, kw] -> [kh*kw, in, out]`` (contiguous; rows of ``navcuda.shift`` order)."""
    out_c, in_c = weight.shape[:2]
    return weight.permute(2, 3, 1, 0).reshape(-1, in_c, out_c)


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
    uk = _unflatten(u, (rank, in_c, k, k)) * c  # [r, in, k, k]
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


#: Largest ``in * r * r`` for which the factorised strategy caches the tap-contracted Gram tensor
#: ``P[i] = sum_taps U_(tap,i)^T U_(tap,i)`` (64 MiB in float32): 64- to 256-channel layers.
GRAM_MAX_ELEMENTS = 1 << 24

_GRAM_CACHE = _TensorCache(8)


def _gram_tensor(u: torch.Tensor, in_c: int) -> torch.Tensor:
    """``P [in, r*r]``, ``P[i] = sum_taps U[(tap, i), :]^T U[(tap, i), :]`` (cached per ``u``)."""
    p = _GRAM_CACHE.get((u,), (in_c,))
    if p is None:
        rank = u.shape[1]
        u3 = u.detach().reshape(-1, in_c, rank)  # rows are (kh, kw, in)
        p = torch.einsum("kij,kil->ijl", u3, u3).reshape(in_c, rank * rank).contiguous()
        _GRAM_CACHE.put((u,), p, (in_c,))
    return p


def _gram_demod(shift: SVDShift, styles: torch.Tensor, e: torch.Tensor, c: float):
    """Exact per-sample demodulation from r-space only (W = U diag(s) Vh):
    ``n_b = colsum(M_b * (G_b M_b))`` with ``M_b = diag(e_b) Vh``, ``G_b = sum_i s_bi^2 P[i]``."""
    batch, in_c = styles.shape
    rank = e.shape[1]
    if in_c * rank * rank <= GRAM_MAX_ELEMENTS:
        g = (styles.square() @ _gram_tensor(shift.u, in_c)).reshape(batch, rank, rank)
    else:
        g = _ChunkedGram.apply(styles.square(), shift.u.detach(), in_c)
    m = e[:, :, None] * shift.vh.detach().unsqueeze(0)  # [B, r, out]
    n = (m * torch.bmm(g, m)).sum(dim=1)
    return torch.rsqrt((c * c) * n + DEMOD_EPS)


def _gram_chunks(u: torch.Tensor, in_c: int):
    """Yield ``(lo, hi, P[lo:hi])`` of the Gram tensor (:func:`_gram_tensor`) in chunks of at
    most ``GRAM_MAX_ELEMENTS`` elements, computed on the fly (for layers too wide to cache it).
    The chunks share one buffer (a fresh 64 MiB tensor per chunk costs more in page faults than
    the product itself on the CPU): use each before asking for the next."""
    rank = u.shape[1]
    u3 = u.reshape(-1, in_c, rank)
    step = max(1, min(in_c, GRAM_MAX_ELEMENTS // (rank * rank)))
    buf = u.new_empty(step, rank, rank)
    for lo in range(0, in_c, step):
        hi = min(lo + step, in_c)
        blk = u3[:, lo:hi].transpose(0, 1).contiguous()  # [c, taps, r]
        p = buf[: hi - lo]
        torch.bmm(blk.transpose(1, 2), blk, out=p)
        yield lo, hi, p.view(hi - lo, rank * rank)


class _ChunkedGram(torch.autograd.Function):
    """``G [B, r, r] = sum_i s2[b, i] P[i]`` with ``P`` recomputed chunk by chunk in forward and in
    backward (``d s2[b, i] = <P[i], dG_b>``) instead of cached: for 512-channel layers ``P`` would
    take 512 MiB. Costs ``taps * in * r^2`` multiply-adds for ``P`` plus ``B * in * r^2`` for the
    contraction, each way -- against ``taps * in * r * out`` per distinct direction to materialise
    the shifts (8x more at 512 channels, batch 8)."""

    @staticmethod
    def forward(ctx, s2, u, in_c):
        ctx.save_for_backward(u)
        ctx.in_c = in_c
        rank = u.shape[1]
        g = s2.new_zeros(s2.shape[0], rank * rank)
        for lo, hi, p in _gram_chunks(u, in_c):
            g.addmm_(s2[:, lo:hi], p)
        return g.view(s2.shape[0], rank, rank)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dg):
        (u,) = ctx.saved_tensors
        dg = dg.reshape(dg.shape[0], -1)
        ds2 = dg.new_empty(dg.shape[0], ctx.in_c)
        for lo, hi, p in _gram_chunks(u, ctx.in_c):
            ds2[:, lo:hi] = dg @ p.t()
        return ds2, None, None


def _factorised_demod_route(weight, shift: SVDShift, batch: int, w_grad: bool) -> str:
    """How the factorised strategy computes exact demodulation norms (see the module docstring):
    the Gram route unless the weight needs a gradient (it gives none), else the distinct
    directions (low memory)."""
    return "directions" if w_grad else "gram"


_STRATEGY_FNS = {
    "grouped": _strategy_grouped,
    "shared": _strategy_shared,
    "factorised": _strategy_factorised,
    "split": _strategy_split,
    # The factorised strategy with its demodulation route forced (tests, benchmarks).
    **{
        f"factorised-{r}": functools.partial(_strategy_factorised, demod_route=r)
        for r in ("gram", "directions", "materialise")
    },
}


# ------------------------------------------------------------------------- public API


def shifted_modconv(
    x: torch.Tensor,
    weight: torch.Tensor,
    styles: torch.Tensor,
    shift: SharedShift | PerSampleShift | SVDShift | SplitShift | None = None,
    *,
    demodulate: bool = True,
    up: int = 1,
    blur_filter: torch.Tensor | None = None,
    noise: torch.Tensor | None = None,
    noise_strength: torch.Tensor | float | None = None,
    bias: torch.Tensor | None = None,
    act: str = "lrelu",
    alpha: float = 0.2,
    gain: float | None = None,
    clamp: float | None = None,
    strategy: str = "auto",
    impl: str = "auto",
) -> torch.Tensor:
    """Shifted modulated conv + noise + bias + activation + clamp (a whole ``StyledConv``).

    Args:
        x: activations ``[B, in, H, W]`` (float; any strides).
        weight: raw kernel ``[out, in, k, k]`` (odd k), before the equalized-lr scale.
        styles: ``[B, in]``.
        shift: ``None`` or a :class:`SharedShift`, :class:`PerSampleShift`, :class:`SVDShift`,
            :class:`SplitShift`; sample ``b`` uses ``W + t_b Delta_b``.
        demodulate: normalise each output channel of each sample's kernel.
        up: 1, or 2 (transposed stride-2 conv then ``blur_filter``, as ``ref_modulated_conv2d``).
        blur_filter: ``[4, 4]`` filter for ``up=2`` (already times ``up**2``).
        noise: ``[B or 1, 1, H*up, W*up]`` or None; added as ``noise_strength * noise``.
        noise_strength: one-element tensor (differentiable) or float; default 1.
        bias: ``[out]`` or None.
        act: ``"lrelu"`` (slope ``alpha``, default gain sqrt(2)) or ``"linear"`` (gain 1).
        gain: output scale (default per ``act``).
        clamp: clamp the output to ``[-clamp, clamp]`` (None: no clamp).
        strategy: ``"auto"`` or one of :data:`STRATEGIES` (see the module docstring).
        impl: ``"auto"``, ``"ref"``, ``"native"`` for the fused pieces (:mod:`navcuda.ops._native`).

    All tensors share ``x``'s device and dtype (indices: int32/int64 on the same device).
    Returns ``[B, out, H*up, W*up]``, differentiable w.r.t. ``x, weight, styles, noise_strength,
    bias``, the shift's ``delta`` / ``t`` / ``coeffs`` (``u, s, vh`` are constants).
    """
    ns, clamp_value = _check_args(x, weight, styles, shift, demodulate, up, blur_filter, noise,
                                  noise_strength, bias, act, clamp, strategy)  # fmt: skip
    if strategy == "auto":
        strategy = choose_strategy(weight, shift)
    # The strategies run in any memory layout; the epilogue picks its kernel by layout itself.
    which = _native.resolve_impl(_OP, impl, x, by_layout=False)
    y0, y1, t, dcoef = _STRATEGY_FNS[strategy](
        x, weight, styles, shift, demodulate, up, blur_filter, which
    )
    gain = _ACTS[act][1] if gain is None else float(gain)
    return _epilogue(y0, y1, t, dcoef, noise, ns, bias, act=act, alpha=alpha, gain=gain,
                     clamp=None if clamp_value < 0 else clamp_value,
                    impl="ref" if which == "ref" else impl)  # fmt: skip


def ref_shifted_modconv(
    x: torch.Tensor,
    weight: torch.Tensor,
    styles: torch.Tensor,
    shift: SharedShift | PerSampleShift | SVDShift | SplitShift | None = None,
    *,
    demodulate: bool = True,
    up: int = 1,
    blur_filter: torch.Tensor | None = None,
    noise: torch.Tensor | None = None,
    noise_strength: torch.Tensor | float | None = None,
    bias: torch.Tensor | None = None,
    act: str = "lrelu",
    alpha: float = 0.2,
    gain: float | None = None,
    clamp: float | None = None,
) -> torch.Tensor:
    """The oracle: per-sample kernels, grouped conv (``ref_modulated_conv2d``), plain-torch
    epilogue. Same arguments as :func:`shifted_modconv` (no strategy / impl)."""
    from navcuda.ops.modulated_conv2d import ref_modulated_conv2d

    ns, clamp_value = _check_args(x, weight, styles, shift, demodulate, up, blur_filter, noise,
                                  noise_strength, bias, act, clamp, "auto")  # fmt: skip
    batch = x.shape[0]
    if shift is None:
        delta = None
    elif isinstance(shift, SharedShift):
        delta = shift.delta
    elif isinstance(shift, PerSampleShift):
        delta = shift.delta
    elif isinstance(shift, SplitShift):
        delta = shift.t.view(-1, 1, 1, 1, 1) * shift.delta[shift.index]
    else:  # t_b * unflatten(U diag(dhat_b) Vh)
        delta = ref_svd_shift(torch.zeros_like(weight), shift.u, shift.vh, shift.t, shift.coeffs,
                              shift.index)  # fmt: skip
    if delta is not None and delta.ndim == 4:
        delta = delta.unsqueeze(0).expand(batch, *delta.shape)
    y = ref_modulated_conv2d(x, weight, styles, delta, demodulate, up, blur_filter, grouped=True)
    if ns is not None:
        y = y + ns.view(1, 1, 1, 1) * noise
    if bias is not None:
        y = y + bias.view(1, -1, 1, 1)
    if act == "lrelu":
        y = F.leaky_relu(y, alpha)
    gain = _ACTS[act][1] if gain is None else float(gain)
    y = y * gain
    if clamp_value >= 0:
        y = y.clamp(-clamp_value, clamp_value)
    return y


# ------------------------------------------------------------------------- fused pieces


def ref_demod(s, q0, q1=None, q2=None, t=None, index=None, scale2=1.0):
    """Plain-torch demodulation coefficients ``[B, out]`` (see ``csrc/modconv.h``)."""
    s2 = s.square()
    if q0.shape[0] == 1:
        n = s2 @ q0[0].t()
    else:
        n = torch.einsum("bi,boi->bo", s2, q0)
    if q1 is not None:
        idx = index if index is not None else torch.arange(s.shape[0], device=s.device)
        n = n + torch.einsum("bi,boi->bo", s2, 2 * t[:, None, None] * q1[idx]
                             + t.square()[:, None, None] * q2[idx])  # fmt: skip
    return torch.rsqrt(scale2 * n + DEMOD_EPS)


def demod(s, q0, q1=None, q2=None, t=None, index=None, *, scale2: float, impl: str = "auto"):
    """Demodulation coefficients ``[B, out]`` of shifted modulated kernels::

        dcoef[b,o] = rsqrt(scale2 sum_i s[b,i]^2 (Q0 + 2 t_b Q1[k_b] + t_b^2 Q2[k_b])[o,i] + 1e-8)

    ``s [B, in]``, ``q0 [1 or B, out, in]``, ``q1, q2 [n_dir, out, in]`` with ``t [B]`` and
    ``index [B]`` (None: ``k_b = b``). Differentiable w.r.t. ``s, q0, q1, q2, t``. Every
    argument is checked (shapes, one device and dtype, index range) before any kernel runs.
    """
    _check_demod_args(s, q0, q1, q2, t, index)
    return _demod(s, q0, q1, q2, t, index, scale2=scale2, impl=impl)


def _check_demod_args(s, q0, q1, q2, t, index) -> None:
    op = "demod"
    s = _native.check_tensor(op, "s", s, dtypes=_FLOAT_DTYPES, ndim=2)
    batch, n_in = s.shape
    q0 = _native.check_tensor(op, "q0", q0, ndim=3, like=s, like_name="s")
    if q0.shape[0] not in (1, batch) or q0.shape[2] != n_in:
        raise ValueError(f"{op}: q0 must be [1 or {batch}, out, {n_in}], got {list(q0.shape)}")
    n_out = q0.shape[1]
    if not (q1 is None) == (q2 is None) == (t is None):
        raise ValueError(f"{op}: q1, q2 and t go together (all or none)")
    if q1 is None:
        if index is not None:
            raise ValueError(f"{op}: index selects rows of q1/q2; pass q1, q2 and t as well")
        return
    q1 = _native.check_tensor(op, "q1", q1, shape=[None, n_out, n_in], like=s, like_name="s")
    n_dir = q1.shape[0]
    _native.check_tensor(op, "q2", q2, shape=[n_dir, n_out, n_in], like=s, like_name="s")
    _native.check_tensor(op, "t", t, shape=[batch], like=s, like_name="s")
    if index is not None:
        _check_index("index", index, batch, n_dir, s.device, op=op, like_name="s")
    elif n_dir != batch:
        raise ValueError(
            f"{op}: without index, q1/q2 need one row per sample ({batch}), got {n_dir}"
        )


def _demod(s, q0, q1=None, q2=None, t=None, index=None, *, scale2: float, impl: str = "auto"):
    """:func:`demod` without the argument checks (callers that validated them already)."""
    if _native.resolve_impl(_OP, impl, s) == "ref":
        return ref_demod(s, q0, q1, q2, t, index, scale2)
    if q1 is not None and index is None:
        index = torch.arange(s.shape[0], device=s.device)
    if index is not None:
        index = index.to(torch.int64).contiguous()
    cont = [None if v is None else v.contiguous() for v in (s, q0, q1, q2, t)]
    return torch.ops.navcuda.modconv_demod(*cont, index, float(scale2))


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
# Internal: arguments are validated by the callers above.


def _p(t, layout=torch.contiguous_format):
    return _native.data_ptr(t, layout)


@torch.library.custom_op("navcuda::modconv_demod", mutates_args=())
def _demod_op(
    s: torch.Tensor,
    q0: torch.Tensor,
    q1: torch.Tensor | None,
    q2: torch.Tensor | None,
    t: torch.Tensor | None,
    index: torch.Tensor | None,
    scale2: float,
) -> torch.Tensor:
    batch, n_in = s.shape
    n0, n_out, _ = q0.shape
    n_dir = 0 if q1 is None else q1.shape[0]
    dcoef = s.new_empty((batch, n_out))
    if dcoef.numel() > 0:
        _native.run_kernel(
            "modconv_demod", s.device,
            _p(s), _p(q0), _p(q1), _p(q2), _p(t), _p(index), _p(dcoef),
            batch, n_out, n_in, n0, n_dir, _native.dtype_code(s.dtype), scale2,
        )  # fmt: skip
    return dcoef


@_demod_op.register_fake
def _(s, q0, q1, q2, t, index, scale2):
    return s.new_empty((s.shape[0], q0.shape[1]))


@torch.library.custom_op("navcuda::modconv_demod_grad", mutates_args=())
def _demod_grad_op(
    g: torch.Tensor,
    dcoef: torch.Tensor,
    s: torch.Tensor,
    q0: torch.Tensor,
    q1: torch.Tensor | None,
    q2: torch.Tensor | None,
    t: torch.Tensor | None,
    index: torch.Tensor | None,
    scale2: float,
    needs: list[bool],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(ds, dt, dq0, dq1, dq2); entries not in ``needs`` are empty tensors."""
    g = g.contiguous()
    batch, n_in = s.shape
    n0, n_out, _ = q0.shape
    n_dir = 0 if q1 is None else q1.shape[0]
    has_t = q1 is not None
    need_s, need_t, need_q0, need_q1, need_q2 = needs

    def empty_():
        return s.new_empty(0)

    dn = s.new_empty((batch, n_out))
    ds = s.new_empty((batch, n_in)) if need_s else empty_()
    parts = _native.native_module().modconv_demod_dt_parts(n_in)
    dt_part = s.new_zeros((batch, parts)) if need_t and has_t else empty_()
    dq0 = torch.empty_like(q0) if need_q0 else empty_()
    dq1 = torch.empty_like(q1) if need_q1 and has_t else empty_()
    dq2 = torch.empty_like(q2) if need_q2 and has_t else empty_()
    if batch * n_out > 0:
        _native.run_kernel(
            "modconv_demod_grad", s.device,
            _p(g), _p(dcoef), _p(s), _p(q0), _p(q1), _p(q2), _p(t), _p(index), _p(dn),
            *(_p(v) if v.numel() else 0 for v in (ds, dt_part, dq0, dq1, dq2)),
            batch, n_out, n_in, n0, n_dir, _native.dtype_code(s.dtype), scale2,
        )  # fmt: skip
    else:
        for v in (ds, dt_part, dq0, dq1, dq2):
            v.zero_()
    dt = dt_part.sum(dim=1) if dt_part.numel() else (s.new_zeros(batch) if need_t and has_t
                                                      else empty_())  # fmt: skip
    return ds, dt, dq0, dq1, dq2


@_demod_grad_op.register_fake
def _(g, dcoef, s, q0, q1, q2, t, index, scale2, needs):
    has_t = q1 is not None
    return (
        s.new_empty(s.shape if needs[0] else 0),
        s.new_empty(s.shape[0] if needs[1] and has_t else 0),
        q0.new_empty(q0.shape if needs[2] else 0),
        q1.new_empty(q1.shape) if needs[3] and has_t else s.new_empty(0),
        q2.new_empty(q2.shape) if needs[4] and has_t else s.new_empty(0),
    )


def _demod_setup(ctx, inputs, output):
    s, q0, q1, q2, t, index, scale2 = inputs
    ctx.save_for_backward(s, q0, q1, q2, t, index, output)
    ctx.scale2 = scale2


def _demod_backward(ctx, g):
    s, q0, q1, q2, t, index, dcoef = ctx.saved_tensors
    n = ctx.needs_input_grad
    needs = [n[0], n[4], n[1], n[2], n[3]]
    if not any(needs):
        return None, None, None, None, None, None, None
    ds, dt, dq0, dq1, dq2 = torch.ops.navcuda.modconv_demod_grad(
        g, dcoef, s, q0, q1, q2, t, index, ctx.scale2, needs
    )
    pick = lambda v, need: v if need and v.numel() else None  # noqa: E731
    return (
        pick(ds, n[0]),
        pick(dq0, n[1]),
        pick(dq1, n[2]),
        pick(dq2, n[3]),
        pick(dt, n[4]),
        None,
        None,
    )


_demod_op.register_autograd(_demod_backward, setup_context=_demod_setup)


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
    batch, channels, h, w = y0.shape
    fmt = _layout(y0)  # y1 in the same layout (epilogue() sees to it)
    out = torch.empty_like(y0, memory_format=fmt)
    mask = _empty_mask(y0, want_mask, clamp >= 0)
    bstride = 0 if noise is None or noise.shape[0] == 1 else h * w
    if out.numel() > 0:
        _native.run_kernel(
            "modconv_epilogue", y0.device,
            _p(y0, fmt), _p(y1, fmt), _p(t), _p(dcoef), _p(noise), bstride, _p(ns), _p(bias),
            _p(out, fmt), _p(mask) if want_mask else 0,
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
            bstride, *(_p(v, fmt) if v.numel() else 0 for v in (dy0, dy1, dz)),
            *(_p(v) if v.numel() else 0 for v in (ddcoef, p_dz, p_dzy1, p_dzn)),
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
