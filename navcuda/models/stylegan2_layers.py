"""The modules of navcuda's StyleGAN2, in the shape of rosinality's ``model.py``:
``EqualLinear``, ``ModulatedConv2d``, ``StyledConv``, ``ToRGB`` (composed in
:class:`navcuda.models.stylegan2.Generator`). Parameter and buffer names follow rosinality's
layout. In eval mode a ``StyledConv`` runs one fused shifted modulated convolution with the
strategy of :mod:`navcuda.models.stylegan2_routes` (see :mod:`navcuda.models.stylegan2`)."""

from __future__ import annotations

import math

import torch
from torch import nn

from navcuda.models.stylegan2_routes import (
    _as_delta,
    _as_spec,
    _OpShift,
    _per_sample_as_split,
    _route,
    eval_strategy,
)
from navcuda.ops.bias_act import bias_act
from navcuda.ops.modulated_conv2d import modulated_conv2d
from navcuda.ops.shifted_modconv import PerSampleShift, shares_input, shifted_modconv
from navcuda.ops.upfirdn2d import make_filter, upfirdn2d

__all__ = [
    "Blur",
    "ConstantInput",
    "EqualLinear",
    "FusedLeakyReLU",
    "ModulatedConv2d",
    "NoiseInjection",
    "PixelNorm",
    "StyledConv",
    "ToRGB",
    "Upsample",
]


class PixelNorm(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.square().mean(dim=1, keepdim=True) + 1e-8)


class EqualLinear(nn.Module):
    """Linear layer with equalized learning rate (weights stored as N(0, 1/lr_mul^2))."""

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        bias_init: float = 0.0,
        lr_mul: float = 1.0,
        activation: bool = False,
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim).div_(lr_mul))
        self.bias = nn.Parameter(torch.full((out_dim,), float(bias_init)))
        self.scale = lr_mul / math.sqrt(in_dim)
        self.lr_mul = lr_mul
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = nn.functional.linear(x, self.weight * self.scale)
        return bias_act(
            y,
            self.bias * self.lr_mul,
            act="lrelu" if self.activation else "linear",
            impl=_route().impl,
        )


class Blur(nn.Module):
    def __init__(self, taps: tuple[int, ...], pad: tuple[int, int], gain: float = 1.0) -> None:
        super().__init__()
        self.register_buffer("kernel", make_filter(taps, gain))
        self.pad = pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upfirdn2d(x, self.kernel, pad=self.pad)


class Upsample(nn.Module):
    def __init__(self, taps: tuple[int, ...], factor: int = 2) -> None:
        super().__init__()
        self.register_buffer("kernel", make_filter(taps, factor**2))
        p = len(taps) - factor
        self.pad = ((p + 1) // 2 + factor - 1, p // 2)
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upfirdn2d(x, self.kernel, up=self.factor, pad=self.pad)


class ModulatedConv2d(nn.Module):
    """Modulated conv; raw kernel ``weight [1, out, in, k, k]`` (rosinality layout)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        style_dim: int,
        demodulate: bool = True,
        upsample: bool = False,
        blur_taps: tuple[int, ...] = (1, 3, 3, 1),
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.demodulate = demodulate
        self.upsample = upsample
        self.weight = nn.Parameter(
            torch.randn(1, out_channels, in_channels, kernel_size, kernel_size)
        )
        self.modulation = EqualLinear(style_dim, in_channels, bias_init=1.0)
        if upsample:
            # Kept as a module so that the buffer name matches rosinality (`conv.blur.kernel`).
            p = (len(blur_taps) - 2) - (kernel_size - 1)
            self.blur = Blur(blur_taps, pad=((p + 1) // 2 + 1, p // 2 + 1), gain=4.0)

    def forward(
        self, x: torch.Tensor, w: torch.Tensor, delta: torch.Tensor | None = None
    ) -> torch.Tensor:
        styles = self.modulation(w)
        return modulated_conv2d(
            x,
            self.weight[0],
            styles,
            delta=delta,
            demodulate=self.demodulate,
            up=2 if self.upsample else 1,
            blur_filter=self.blur.kernel if self.upsample else None,
            # Training uses the dense form (fast forward and backward); evaluation materialises the
            # per-sample kernels (toRGB layers, and StyledConv under conv_route("legacy"): eval-mode
            # StyledConv layers otherwise run shifted_modconv, see StyledConv.forward).
            grouped=not self.training or (delta is not None and delta.ndim == 5),
        )


class NoiseInjection(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor, noise: torch.Tensor | None) -> torch.Tensor:
        if noise is None:
            return x
        return x + self.weight * noise


class FusedLeakyReLU(nn.Module):
    """Holds the bias of a StyledConv (rosinality name: ``activate.bias``)."""

    def __init__(self, channels: int, clamp: float | None = None) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))
        self.clamp = clamp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return bias_act(x, self.bias, act="lrelu", clamp=self.clamp, impl=_route().impl)


class StyledConv(nn.Module):
    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        style_dim: int,
        upsample: bool = False,
        blur_taps: tuple[int, ...] = (1, 3, 3, 1),
        conv_clamp: float | None = None,
    ) -> None:
        super().__init__()
        self.conv = ModulatedConv2d(
            in_channels, out_channels, 3, style_dim, upsample=upsample, blur_taps=blur_taps
        )
        self.noise = NoiseInjection()
        self.activate = FusedLeakyReLU(out_channels, clamp=conv_clamp)

    def forward(
        self,
        x: torch.Tensor,
        w: torch.Tensor,
        noise: torch.Tensor | None,
        shift: torch.Tensor | _OpShift | None = None,
    ) -> torch.Tensor:
        """``x [B, in, H, W]``, ``w [B, w_dim]``, ``noise [B or 1, 1, H', W']`` or None.

        ``shift``: None, a materialised delta (``[out, in, k, k]`` or ``[B, out, in, k, k]``) or a
        :mod:`~navcuda.ops.shifted_modconv` specification (validated by the caller,
        :meth:`Generator._check_shift`). See the module docstring for the route taken.
        """
        route = _route()
        if self.training or route.strategy == "legacy":
            delta = _as_delta(shift, self.conv.weight.shape[1:])
            return self.activate(self.noise(self.conv(x, w, delta), noise))
        conv = self.conv
        weight = conv.weight[0]
        styles = conv.modulation(w)
        spec = _as_spec(shift, x.shape[0])
        if route.strategy == "auto":
            shared = spec is not None and shares_input(x, styles)
            spec, strategy = eval_strategy(weight, spec, shared)
        elif spec is None and route.strategy not in ("grouped", "shared"):
            strategy = "shared"  # a forced shift strategy concerns the shifted layer only
        else:
            strategy = route.strategy
            if strategy == "split" and isinstance(spec, PerSampleShift):
                spec = _per_sample_as_split(spec)
        return shifted_modconv(
            x,
            weight,
            styles,
            spec,
            demodulate=conv.demodulate,
            up=2 if conv.upsample else 1,
            blur_filter=conv.blur.kernel if conv.upsample else None,
            noise=noise,
            noise_strength=None if noise is None else self.noise.weight,
            bias=self.activate.bias,
            act="lrelu",
            clamp=self.activate.clamp,
            strategy=strategy,
            impl=route.impl,
        )


class ToRGB(nn.Module):
    def __init__(
        self,
        in_channels: int,
        style_dim: int,
        img_channels: int = 3,
        upsample: bool = True,
        blur_taps: tuple[int, ...] = (1, 3, 3, 1),
        conv_clamp: float | None = None,
    ) -> None:
        super().__init__()
        if upsample:
            self.upsample = Upsample(blur_taps)
        self.conv = ModulatedConv2d(in_channels, img_channels, 1, style_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, img_channels, 1, 1))
        self.clamp = conv_clamp

    def forward(
        self, x: torch.Tensor, w: torch.Tensor, skip: torch.Tensor | None = None
    ) -> torch.Tensor:
        route = _route()
        if self.training or route.strategy == "legacy":
            y = bias_act(
                self.conv(x, w),
                self.bias.flatten(),
                act="linear",
                clamp=self.clamp,
                impl=route.impl,
            )
        else:
            # Eval: one dense 1x1 convolution of the modulated activations plus the fused
            # epilogue (bias, clamp), instead of a grouped convolution with per-sample kernels.
            y = shifted_modconv(
                x,
                self.conv.weight[0],
                self.conv.modulation(w),
                None,
                demodulate=False,
                bias=self.bias.flatten(),
                act="linear",
                clamp=self.clamp,
                strategy="grouped" if route.strategy == "grouped" else "shared",
                impl=route.impl,
            )
        if skip is not None:
            y = y + self.upsample(skip)
        return y


class ConstantInput(nn.Module):
    def __init__(self, channels: int, size: int = 4) -> None:
        super().__init__()
        self.input = nn.Parameter(torch.randn(1, channels, size, size))

    def forward(self, batch: int) -> torch.Tensor:
        return self.input.expand(batch, -1, -1, -1)
