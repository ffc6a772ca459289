"""Linearisations of a perceptual metric's features at fixed images (Gauss-Newton products).

At zero shift the Hessian of :mod:`navcuda.hessian` sees the metric only through
``J_phi^T (grad q)(J_phi u)``: the Jacobian of its features ``phi`` at the unshifted images,
applied to the image tangents ``u`` of many shift vectors, and the gradient of its quadratic form
``q``. Two ways of computing that, behind one interface (:class:`MetricLinearization`):

- :class:`ForwardADLinearization` (any metric): forward-mode AD of ``metric.features`` at the
  image of every (vector, image) sample. The primal is recomputed for every sample, and the
  backward keeps, per sample, the activations of both the primal and the tangent.
- :class:`SharedPrimalLinearization` (metrics whose feature network is made of known layers,
  recorded by a :class:`Linearizer`): the primal runs ONCE per image and leaves per-image
  coefficients (an activation's slope, a max-pool's argmax, a normalisation's unit vectors and
  norms); the tangents of every vector then run through a linear network that broadcasts those
  coefficients over the vectors, and whose backward keeps nothing per sample (the convolutions
  and the pooling gather keep their constant operands only). On the toy regressor it is twice as
  fast per sample as forward-mode AD and its backward holds no activation.

Samples follow :mod:`navcuda.models.linearize`: ``u`` is ``[m * n, ...]`` for ``n`` images and
``m`` vectors, sample ``s = p * n + i`` showing image ``i``.

A metric offers the shared-primal form by implementing ``_linearize_features(x, lin)``
(:class:`~navcuda.metrics.perceptual.PerceptualMetric`): run its feature network on the
preprocessed images through ``lin`` and mark its features with :meth:`Linearizer.tap`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F
from torch import nn

__all__ = [
    "ForwardADLinearization",
    "Linearizer",
    "MetricLinearization",
    "SharedPrimalLinearization",
    "TapTransform",
    "norm_plus_eps_normalize",
    "per_image",
    "smooth_unit_normalize",
]


def per_image(t: torch.Tensor, coeff: torch.Tensor) -> torch.Tensor:
    """``t [m * n, ...]`` times the per-image coefficient ``coeff [n, ...]`` (broadcast over
    the ``m`` vectors)."""
    n = coeff.shape[0]
    return (t.unflatten(0, (-1, n)) * coeff).flatten(0, 1)


TangentMap = Callable[[torch.Tensor], torch.Tensor]
#: primal feature -> (transformed feature, tangent map of the transform at it)
TapTransform = Callable[[torch.Tensor], tuple[torch.Tensor, TangentMap]]


def _identity(t: torch.Tensor) -> torch.Tensor:
    return t


def _channel_dot(a: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Per-image ``a [n, C, ...]`` dotted with ``t [m * n, C, ...]`` over channels, keepdim."""
    return (t.unflatten(0, (-1, a.shape[0])) * a).sum(dim=2, keepdim=True).flatten(0, 1)


def smooth_unit_normalize(eps: float) -> TapTransform:
    """``f / sqrt(sum_c f^2 + eps^2)`` over channels (dim 1) and its tangent
    ``r (df - n <n, df>)`` with ``r = 1 / sqrt(|f|^2 + eps^2)``, ``n = f r``."""

    def transform(f):
        r = torch.rsqrt(f.square().sum(dim=1, keepdim=True) + eps * eps)
        nf = f * r

        def tangent(t):
            return per_image(t, r) - per_image(_channel_dot(nf, t), nf * r)

        return nf, tangent

    return transform


def norm_plus_eps_normalize(eps: float) -> TapTransform:
    """``f / (|f| + eps)`` over channels (``lpips.normalize_tensor``) and its tangent
    ``df / d - f <f, df> / (|f| d^2)``, ``d = |f| + eps``; where ``f = 0`` the second term is
    0 (its limit; forward-mode AD through ``sqrt`` gives NaN there)."""

    def transform(f):
        rho = f.square().sum(dim=1, keepdim=True).sqrt()
        d = rho + eps
        c2 = torch.where(rho > 0, 1.0 / (rho.clamp_min(torch.finfo(f.dtype).tiny) * d * d), 0.0)

        def tangent(t):
            return per_image(t, 1.0 / d) - per_image(_channel_dot(f, t), f * c2)

        return f / d, tangent

    return transform


class _ConvInput(torch.autograd.Function):
    """``conv2d(u, w)`` without bias whose backward keeps only ``w`` (plain autograd keeps
    ``u`` too, for a weight gradient a linearisation never wants). First order only."""

    @staticmethod
    def forward(ctx, u, conv: nn.Conv2d):
        ctx.conv, ctx.in_shape = conv, u.shape
        return F.conv2d(u, conv.weight, None, conv.stride, conv.padding, conv.dilation, conv.groups)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        c = ctx.conv
        return (
            torch.nn.grad.conv2d_input(
                ctx.in_shape, c.weight, g, c.stride, c.padding, c.dilation, c.groups
            ),
            None,
        )


class _GatherPerImage(torch.autograd.Function):
    """``t [m * n, C, L]`` gathered along ``L`` at the per-image indices ``idx [n, C, l]``,
    keeping only ``idx`` for the backward (``torch.gather`` keeps its input too)."""

    @staticmethod
    def forward(ctx, t, idx):
        n = idx.shape[0]
        tu = t.unflatten(0, (-1, n))
        ctx.save_for_backward(idx)
        ctx.in_len = t.shape[-1]
        return tu.gather(3, idx.expand(tu.shape[0], *idx.shape)).flatten(0, 1)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        (idx,) = ctx.saved_tensors
        gu = g.unflatten(0, (-1, idx.shape[0]))
        out = gu.new_zeros(*gu.shape[:-1], ctx.in_len)
        out.scatter_add_(3, idx.expand(gu.shape[0], *idx.shape), gu)
        return out.flatten(0, 1), None


class Linearizer:
    """Run a feature network on images ``x0 [n, ...]`` while recording its linearisation.

    Call the layer methods in the network's order (each applies the layer to the primal and
    returns the new primal), :meth:`tap` where a feature is output, then :meth:`jvp` maps
    tangents ``[m * n, ...]`` of the input to the tangents of the tapped features. Every
    recorded coefficient is per image and detached; the primal runs without autograd.
    """

    def __init__(self, x0: torch.Tensor) -> None:
        self.x = x0.detach()
        self.n = x0.shape[0]
        self.features: list[torch.Tensor] = []
        # A layer's tangent map, or a tap: a 1-tuple holding the feature's tangent map.
        self._steps: list[TangentMap | tuple[TangentMap]] = []

    # ------------------------------------------------------------------ recording
    def _record(self, x: torch.Tensor, step: Callable[[torch.Tensor], torch.Tensor]):
        self.x = x
        self._steps.append(step)
        return x

    def linear(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """A map that is linear and acts on each sample alone (a resize, a flatten, a constant
        scale): applied as it is to the primal and to the tangents."""
        return self.affine(fn, fn)

    def affine(
        self, fn: Callable[[torch.Tensor], torch.Tensor], linear_part: Callable
    ) -> torch.Tensor:
        """An affine map: ``fn`` on the primal, its linear part on the tangents."""
        with torch.no_grad():
            return self._record(fn(self.x), linear_part)

    def pointwise(self, fn: Callable[[torch.Tensor], torch.Tensor], slope: torch.Tensor):
        """An elementwise map ``fn`` with derivative ``slope`` (the primal's shape) at the
        current primal."""
        slope = slope.detach()
        with torch.no_grad():
            return self._record(fn(self.x), lambda t: per_image(t, slope))

    def conv2d(self, conv: nn.Conv2d) -> torch.Tensor:
        """``conv`` (zero padding); its tangent map keeps only the kernel for the backward."""
        if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
            raise NotImplementedError("Linearizer: conv2d with zero numeric padding only")
        return self.affine(conv, lambda t: _ConvInput.apply(t, conv))

    def linear_layer(self, layer: nn.Linear) -> torch.Tensor:
        """``layer`` (``nn.Linear``); the tangents see its weight only."""
        return self.affine(layer, lambda t: F.linear(t, layer.weight))

    def relu(self) -> torch.Tensor:
        """ReLU; slope: the primal's positive mask."""
        return self.pointwise(F.relu, self.x > 0)

    def silu(self) -> torch.Tensor:
        """SiLU ``x sigmoid(x)``; slope ``s (1 + x (1 - s))``."""
        s = torch.sigmoid(self.x)
        return self.pointwise(F.silu, s * (1 + self.x * (1 - s)))

    def max_pool2d(self, pool: nn.MaxPool2d) -> torch.Tensor:
        """``pool``; tangents are gathered at the primal's argmax (ties: torch's choice)."""
        if pool.return_indices:
            raise NotImplementedError("Linearizer: MaxPool2d(return_indices=True)")
        with torch.no_grad():
            y, idx = F.max_pool2d(
                self.x,
                pool.kernel_size,
                pool.stride,
                pool.padding,
                pool.dilation,
                ceil_mode=pool.ceil_mode,
                return_indices=True,
            )
        shape = y.shape[1:]
        flat = idx.flatten(2)

        def step(t):
            return _GatherPerImage.apply(t.flatten(2), flat).unflatten(2, shape[1:])

        return self._record(y, step)

    def module(self, m: nn.Module) -> torch.Tensor:
        """Apply one of the supported layers (``nn.Sequential`` of them included)."""
        if isinstance(m, nn.Sequential):
            for child in m:
                self.module(child)
            return self.x
        if isinstance(m, nn.Conv2d):
            return self.conv2d(m)
        if isinstance(m, nn.Linear):
            return self.linear_layer(m)
        if isinstance(m, nn.ReLU):
            return self.relu()
        if isinstance(m, nn.SiLU):
            return self.silu()
        if isinstance(m, nn.MaxPool2d):
            return self.max_pool2d(m)
        if isinstance(m, nn.Flatten):
            return self.linear(m)
        if isinstance(m, nn.Identity) or (isinstance(m, nn.Dropout) and not m.training):
            return self.x
        raise NotImplementedError(f"Linearizer: no linearisation of {type(m).__name__}")

    def tap(self, transform: TapTransform | None = None) -> torch.Tensor:
        """Mark the current value as an output feature, optionally through ``transform`` (e.g.
        :func:`smooth_unit_normalize`), which the next layers do not see."""
        if transform is None:
            feature, tangent_map = self.x, _identity
        else:
            with torch.no_grad():
                feature, tangent_map = transform(self.x)
        self.features.append(feature)
        self._steps.append((tangent_map,))
        return feature

    def transform_features(self, transform: TapTransform) -> None:
        """Pass every feature tapped so far through ``transform`` as well."""
        for k, i in enumerate(i for i, st in enumerate(self._steps) if isinstance(st, tuple)):
            with torch.no_grad():
                self.features[k], outer = transform(self.features[k])
            inner = self._steps[i][0]
            self._steps[i] = (lambda t, inner=inner, outer=outer: outer(inner(t)),)

    # ------------------------------------------------------------------ tangents
    def jvp(self, u: torch.Tensor) -> list[torch.Tensor]:
        """Tangents of the tapped features for input tangents ``u [m * n, ...]``."""
        out, t = [], u
        for step in self._steps:
            if isinstance(step, tuple):  # a tap
                out.append(step[0](t))
            else:
                t = step(t)
        return out


class MetricLinearization:
    """The features of ``metric`` at images ``x0 [n, C, H, W]`` and their Jacobian
    (the module docstring). Build it with ``metric.linearize(x0)``."""

    #: Whether every product shares one primal per image (groups are then whole vectors).
    shares_primal = False

    def __init__(self, metric, x0: torch.Tensor) -> None:
        self.metric = metric
        self.x0 = x0.detach()

    @property
    def n(self) -> int:
        """Number of images."""
        return self.x0.shape[0]

    def jvp(self, u: torch.Tensor, offset: int = 0) -> list[torch.Tensor]:
        """Feature tangents ``J_phi u`` of samples ``offset .. offset + len(u)``; differentiable
        w.r.t. ``u`` (first order)."""
        raise NotImplementedError

    def _group(self, group: int | None, total: int) -> int:
        return total if group is None else max(1, int(group))

    def gauss_newton(self, u: torch.Tensor, group: int | None = None) -> torch.Tensor:
        """``J_phi^T (grad q)(J_phi u)`` for every sample of ``u [m * n, C, H, W]`` (the
        image-space Gauss-Newton product of ``q(phi(x) - phi(x0))`` at ``x0``), computed in
        groups of ``group`` samples (``None``: all at once); what a group's backward keeps is
        freed before the next group."""
        if u.ndim != 4 or u.shape[0] % self.n or tuple(u.shape[1:]) != tuple(self.x0.shape[1:]):
            raise ValueError(
                f"u must be [m * {self.n}, {', '.join(map(str, self.x0.shape[1:]))}], got "
                f"{list(u.shape)}"
            )
        out = torch.empty_like(u)
        step = self._group(group, u.shape[0])
        with torch.enable_grad():
            for lo in range(0, u.shape[0], step):
                ug = u[lo : lo + step].detach().requires_grad_(True)
                jv = self.jvp(ug, lo)
                e = [j.detach().requires_grad_(True) for j in jv]
                c = torch.autograd.grad(self.metric.quadratic(e).sum(), e, allow_unused=True)
                c = [torch.zeros_like(j) if ci is None else ci for j, ci in zip(jv, c, strict=True)]
                (cu,) = torch.autograd.grad(jv, ug, c, allow_unused=True)
                out[lo : lo + len(ug)] = 0 if cu is None else cu
                del jv, e, c, cu, ug  # the group's graph, before the next one
        return out


class ForwardADLinearization(MetricLinearization):
    """Forward-mode AD of ``metric.features`` at each sample's image (any metric)."""

    def jvp(self, u: torch.Tensor, offset: int = 0) -> list[torch.Tensor]:
        samples = torch.arange(offset, offset + u.shape[0], device=u.device) % self.n
        with fwAD.dual_level():
            feats = self.metric.features(fwAD.make_dual(self.x0[samples], u))
            jv = [fwAD.unpack_dual(f).tangent for f in feats]
        if any(j is None for j in jv):
            raise RuntimeError("forward-mode AD lost the tangent through the metric's features")
        return jv


class SharedPrimalLinearization(MetricLinearization):
    """A recorded :class:`Linearizer` of the metric's features (module docstring): one primal
    per image, shared by every vector."""

    shares_primal = True

    def __init__(self, metric, x0: torch.Tensor, linearizer: Linearizer) -> None:
        super().__init__(metric, x0)
        self.linearizer = linearizer
        self.features = linearizer.features

    def _group(self, group: int | None, total: int) -> int:
        # Whole vectors: every image's coefficients broadcast over the vectors of a group.
        return total if group is None else self.n * max(1, int(group) // self.n)

    def jvp(self, u: torch.Tensor, offset: int = 0) -> list[torch.Tensor]:
        if offset % self.n or u.shape[0] % self.n:
            raise ValueError(
                f"a shared-primal linearisation takes whole vectors: samples {offset}.."
                f"{offset + u.shape[0]} of {self.n} images per vector"
            )
        return self.linearizer.jvp(self.metric.preprocess(u))
