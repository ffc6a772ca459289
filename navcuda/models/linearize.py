"""Jacobian-vector products of a synthesis with respect to one layer's kernel, primal shared.

For fixed latents, the rendered image is a function of a shift ``delta`` of one StyledConv's raw
kernel. Its Jacobian-vector product ``J v`` (the image tangent for ``delta = t v`` at ``t = 0``)
is what the exact Gauss-Newton Hessian-vector products of :mod:`navcuda.hessian` need, for MANY
vectors ``v`` at the SAME latents. Forward-mode AD (``torch.autograd.forward_ad``) would recompute
the unshifted ("primal") synthesis for every (vector, latent) pair, and ``torch.func.vmap`` over
``jvp`` shares it but is slow on the CPU (measured: 2.4x slower per product than central finite
differences through the fused kernels). This module shares it explicitly:

1. :func:`linearize_suffix` runs the synthesis from the shifted layer on (once per latent, no
   autograd) and keeps what the tangent pass needs: the output of every later StyledConv (its
   sign gives the leaky-ReLU slope; with ``conv_clamp`` the clamp mask) and of every clamped
   toRGB.
2. :meth:`SuffixLinearization.jvp` pushes the tangents of ``m`` vectors through the layers:

   - the shifted layer: its derivative in closed form (one convolution of the latents with the
     ``m`` stacked kernels plus the demodulation's dependence on the kernel; noise and bias drop
     out; see ``_shifted_layer_tangent``);
   - every later StyledConv: linear in its input given the styles, so its tangent is ONE
     ``shifted_modconv`` (``strategy="shared"``: modulate the activations, one dense convolution;
     no noise, no bias, linear activation) times, in place, the slope mask of the primal output
     with the layer's demodulation coefficients folded in (per latent, computed once, so no
     tangent pays a demodulation pass). Styles and kernels are detached constants, so the
     backward keeps none of the ``m * n`` tangents, and the tangents are channels-last
     (``_LAYOUT``), where torch's convolutions are fastest;
   - every toRGB: the same 1x1 modulated convolution without demodulation, bias or noise, plus the
     upsampled tangent of the skip sum.

   The tangents of the ``m`` vectors at the ``n`` latents form one batch ``s = p * n + i`` and
   are differentiable with respect to ``v``: since ``J v`` is linear in ``v``, one backward pass
   from ``J v`` with cotangent ``c`` returns ``J^T c`` for every vector, summed over the latents
   (what :meth:`navcuda.hessian.PerceptualHessian.hvp_gn` does).

A tangent costs about one forward pass of the layers after the shifted one (one convolution per
layer, no noise or bias, the primal shared by all vectors), and its backward about one backward
pass, against two forward and two backward passes for a central difference.

Leaky ReLU is not differentiable at 0 and the clamp not at +-clamp: the masks follow torch's
conventions (slope ``alpha`` at 0; clamp gradient 1 strictly inside), which differ from autograd
through ``bias_act`` only on that measure-zero set.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from navcuda.ops.bias_act import bias_act
from navcuda.ops.shifted_modconv import DEMOD_EPS, shifted_modconv

__all__ = ["SuffixLinearization", "linearize_suffix"]

#: Memory layout of the tangent pass and of the masks it multiplies by: torch's convolutions
#: (oneDNN, cuDNN) run channels-last activations fastest and without reorder buffers (measured on
#: the bundled model's 64x64 layers, 2-core CPU: 3x3 conv 2.7x, stride-2 transposed conv 7x, the
#: blur 7x faster than NCHW), and a tangent pass needs none of the NCHW-only native kernels (its
#: epilogue is a per-channel scale), so the dispatcher runs torch's layout-preserving reference.
_LAYOUT = torch.channels_last

#: The leaky ReLU of every StyledConv (``bias_act(act="lrelu")`` defaults).
_LRELU_ALPHA = 0.2
_LRELU_GAIN = math.sqrt(2.0)


@dataclass
class SuffixLinearization:
    """The unshifted synthesis from ``layer`` on, kept for tangent passes (see the module
    docstring); build it with :func:`linearize_suffix`.

    Attributes:
        generator: the generator.
        layer: the shifted layer's name.
        ws: the latents ``[n, num_ws, w_dim]``.
        styles: the shifted layer's styles ``[n, in]``.
        later_styles: the styles of every later StyledConv and toRGB ``[n, in]``.
        base: the shifted layer's modulated convolution before demodulation ``[n, out, r', r']``.
        dcoef: its demodulation coefficients ``[n, out]`` (None without demodulation).
        slopes: d output / d pre-activation of the shifted layer (leaky-ReLU slope times clamp
            mask) and, for every later StyledConv, d output / d its modulated convolution before
            demodulation (that times the demodulation coefficients, which are constant given the
            styles) ``[n, C, r', r']``.
        rgb_masks: clamp mask of every clamped toRGB ``[n, C, r', r']``.
        image: the unshifted images ``[n, C, R, R]``.
    """

    generator: torch.nn.Module  # navcuda's StyleGAN2 Generator (which imports this module)
    layer: str
    ws: torch.Tensor
    x: torch.Tensor
    styles: torch.Tensor
    later_styles: dict[str, torch.Tensor]
    base: torch.Tensor
    dcoef: torch.Tensor | None
    slopes: dict[str, torch.Tensor]
    rgb_masks: dict[str, torch.Tensor]
    image: torch.Tensor

    @property
    def n(self) -> int:
        """Number of latents."""
        return self.ws.shape[0]

    def jvp(self, v: torch.Tensor) -> torch.Tensor:
        """Image tangents ``J_i v_p`` for every vector ``v[p]`` and latent ``i``.

        Args:
            v: ``[m, out, in, k, k]`` (the shifted layer's kernel shape), on the generator's device
                with its dtype; may require grad (the result is then differentiable w.r.t. ``v``,
                linearly).

        Returns:
            ``[m * n, C, R, R]``, sample ``s = p * n + i``.
        """
        gen = self.generator
        plan = gen._plan()
        start = [info.name for info in plan].index(self.layer)
        conv = gen.get_submodule(self.layer).conv
        shape = tuple(conv.weight.shape[1:])
        if not isinstance(v, torch.Tensor) or v.ndim != 5 or tuple(v.shape[1:]) != shape:
            raise ValueError(
                f"v must be [m, {', '.join(map(str, shape))}] for layer {self.layer!r}, got "
                f"{list(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__}"
            )
        if v.dtype != self.x.dtype or v.device != self.x.device:
            raise ValueError(
                f"v must be {self.x.dtype} on {self.x.device} (the generator's), got {v.dtype} on "
                f"{v.device}"
            )
        m = v.shape[0]
        x_t = self._shifted_layer_tangent(conv, v)
        img_t = None
        # The tangent map is linear with constant coefficients (styles, kernels, masks), all
        # detached: its backward keeps none of the m * n tangent activations.
        for later in plan[start + 1 :]:
            module = gen.get_submodule(later.name)
            # Demodulation is a per-latent channel scale, folded into the layer's mask.
            y = _modconv(
                module.conv,
                x_t,
                self.later_styles[later.name].repeat(m, 1),
                module.conv.weight[0].detach(),
            )
            if later.role == "torgb":
                if later.name in self.rgb_masks:
                    y = _broadcast_mul(y, self.rgb_masks[later.name], m)
                img_t = y if img_t is None else y + module.upsample(img_t)
            else:
                x_t = _broadcast_mul(y, self.slopes[later.name], m)
        if img_t is None:
            raise RuntimeError(f"no toRGB layer after {self.layer!r}")
        return img_t

    def _shifted_layer_tangent(self, conv, v: torch.Tensor) -> torch.Tensor:
        """d/dt of the shifted layer's output for the kernel ``W + t v_p`` at ``t = 0``,
        ``[m * n, out, r', r']``. With ``a = scale W`` and ``u(K) = conv(x * s, scale K)`` (the
        modulated convolution without demodulation, linear in ``K``)::

            pre(t)   = dcoef(t) u(W + t v) + noise + bias
            pre'(0)  = dcoef u(v) + dcoef'(0) u(W)
            dcoef'(0)[b, o] = -dcoef[b, o]^3 scale^2 sum_{i,k} W[o,i,k] v[o,i,k] s[b,i]^2

        and the output's tangent is ``pre'(0)`` times the slope mask. ``u(v_p)`` for every vector
        is ONE convolution of the ``n`` latents with the ``m * out`` stacked kernels."""
        m, out_c = v.shape[0], v.shape[1]
        u1 = _modconv(conv, self.x, self.styles, v.reshape(m * out_c, *v.shape[2:]))
        u1 = u1.unflatten(1, (m, out_c)).transpose(0, 1)  # [m, n, out, r', r']
        if self.dcoef is not None:
            w = conv.weight[0].detach()
            scale2 = 1.0 / (w.shape[1] * w.shape[2] * w.shape[3])
            g = (w.unsqueeze(0) * v).sum(dim=(3, 4)) * scale2  # [m, out, in]
            d_t = -(self.dcoef**3) * torch.einsum("bi,poi->pbo", self.styles.square(), g)
            u1 = self.dcoef[:, :, None, None] * u1 + d_t[..., None, None] * self.base
        u1 = u1.flatten(0, 1).contiguous(memory_format=_LAYOUT)
        return _broadcast_mul(u1, self.slopes[self.layer], m)


def linearize_suffix(
    generator: torch.nn.Module, state: Any, ws: torch.Tensor, noise_mode: str = "const"
) -> SuffixLinearization:
    """Run the unshifted synthesis from ``state`` (a ``SynthesisState`` of the StyleGAN2
    ``generator``'s ``synthesis_prefix``) to the image, without autograd, keeping what
    :meth:`SuffixLinearization.jvp` needs.

    ``ws`` as given to ``synthesis_prefix``; ``noise_mode`` ``"const"`` or ``"none"`` (random
    noise would differ between the primal and the tangent passes).
    """
    if noise_mode not in ("const", "none"):
        raise ValueError(f"noise_mode must be 'const' or 'none', got {noise_mode!r}")
    ws = generator._broadcast_ws(ws)
    if ws.shape[0] != state.x.shape[0]:
        raise ValueError(f"ws has batch {ws.shape[0]} but the state has batch {state.x.shape[0]}")
    plan = generator._plan()
    start = [info.name for info in plan].index(state.layer)
    slopes: dict[str, torch.Tensor] = {}
    later_styles: dict[str, torch.Tensor] = {}
    rgb_masks: dict[str, torch.Tensor] = {}
    x, img = state.x, state.img
    with torch.no_grad():
        conv = generator.get_submodule(state.layer).conv
        w = ws[:, plan[start].w_index]
        styles = conv.modulation(w)
        base = _modconv(conv, state.x, styles, conv.weight[0])
        dcoef = _demod_coefficients(conv, styles)
        for info in plan[start:]:
            module = generator.get_submodule(info.name)
            w = ws[:, info.w_index]
            if info.name != state.layer:
                later_styles[info.name] = module.conv.modulation(w)
            if info.role == "torgb":
                if module.clamp is None:
                    img = module(x, w, img)
                    continue
                y = bias_act(module.conv(x, w), module.bias.flatten(), clamp=module.clamp)
                rgb_masks[info.name] = _clamp_mask(y, module.clamp).contiguous(
                    memory_format=_LAYOUT
                )
                img = y if img is None else y + module.upsample(img)
                continue
            noise = generator._noise(noise_mode, _noise_index(info), x, info.resolution)
            x = module(x, w, noise, None)
            slope = _lrelu_slope(x, module.activate.clamp)
            if info.name != state.layer:
                later_dcoef = _demod_coefficients(module.conv, later_styles[info.name])
                if later_dcoef is not None:
                    slope = slope * later_dcoef[:, :, None, None]
            slopes[info.name] = slope.contiguous(memory_format=_LAYOUT)
    return SuffixLinearization(
        generator,
        state.layer,
        ws,
        state.x,
        styles,
        later_styles,
        base,
        dcoef,
        slopes,
        rgb_masks,
        img,
    )


def _noise_index(info) -> int:
    return 0 if info.index is None else info.index + 1


def _modconv(conv, x: torch.Tensor, styles: torch.Tensor, weight: torch.Tensor):
    """``conv``'s modulated convolution (its up/blur) of ``x`` with the raw kernel ``weight``,
    without demodulation (the callers apply it: a per-latent scale, folded into masks)."""
    return shifted_modconv(
        x,
        weight,
        styles,
        None,
        demodulate=False,
        up=2 if conv.upsample else 1,
        blur_filter=conv.blur.kernel if conv.upsample else None,
        act="linear",
        strategy="shared",
    )


def _demod_coefficients(conv, styles: torch.Tensor) -> torch.Tensor | None:
    """``conv``'s demodulation coefficients ``[n, out]`` for ``styles [n, in]`` (None without
    demodulation): ``rsqrt(scale^2 sum_{i,k} (W[o,i,k] s[i])^2 + eps)``."""
    if not conv.demodulate:
        return None
    w = conv.weight[0].detach()
    a2 = w.square().sum(dim=(2, 3)) * (1.0 / w[0].numel())
    return torch.rsqrt(styles.square() @ a2.t() + DEMOD_EPS)


def _lrelu_slope(y: torch.Tensor, clamp: float | None) -> torch.Tensor:
    """d output / d pre-activation of a StyledConv from its primal output ``y``."""
    # Python-scalar branches of torch.where would be float32: round the slopes in y's dtype.
    pos = torch.tensor(_LRELU_GAIN, dtype=y.dtype, device=y.device)
    slope = torch.where(y > 0, pos, pos * _LRELU_ALPHA)
    return slope if clamp is None else slope * _clamp_mask(y, clamp)


def _clamp_mask(y: torch.Tensor, clamp: float | None) -> torch.Tensor:
    if clamp is None:
        return torch.ones_like(y)
    return (y.abs() < clamp).to(y.dtype)


def _broadcast_mul(y: torch.Tensor, mask: torch.Tensor, m: int) -> torch.Tensor:
    """``y [m * n, ...]`` times the per-latent ``mask [n, ...]``, in place (see
    :class:`_MaskMul`)."""
    return _MaskMul.apply(y, mask, m)


class _MaskMul(torch.autograd.Function):
    """``y *= mask`` broadcast over the ``m`` vectors, in place and keeping only the mask.

    ``y`` is always a fresh tangent that the op computing it does not keep (linear epilogue), so
    the tangent pass holds one activation per layer at a time, not two. (An in-place multiply on
    a reshaped view through plain autograd would copy the whole gradient in its backward.)"""

    @staticmethod
    def forward(ctx, y, mask, m):
        y.unflatten(0, (m, -1)).mul_(mask)
        ctx.mark_dirty(y)
        ctx.save_for_backward(mask)
        ctx.m = m
        return y

    @staticmethod
    def backward(ctx, g):
        (mask,) = ctx.saved_tensors
        return (g.unflatten(0, (ctx.m, -1)) * mask).flatten(0, 1), None, None
