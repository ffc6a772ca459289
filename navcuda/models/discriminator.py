"""StyleGAN2 residual discriminator (rosinality layout), used to train generators.

``image [B, C, R, R] -> logits [B, 1]``: a 1x1 ``fromRGB`` conv, one residual block per resolution
halving (blur, then stride-2 conv; a 1x1 skip), minibatch standard deviation, a 3x3 conv at 4x4 and
two equalized-lr linear layers. Channels per resolution come from the generator's config.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from navcuda.models.stylegan2 import GeneratorConfig
from navcuda.models.stylegan2_layers import Blur, EqualLinear
from navcuda.ops.bias_act import bias_act

__all__ = ["Discriminator"]


class EqualConv2d(nn.Module):
    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        bias: bool = True,
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.scale = 1.0 / math.sqrt(in_channels * kernel_size**2)
        self.stride, self.padding = stride, padding
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.conv2d(
            x, self.weight * self.scale, self.bias, stride=self.stride, padding=self.padding
        )


class ConvLayer(nn.Module):
    """[blur] -> conv (stride 2 when downsampling) -> bias + leaky ReLU (optional)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        downsample: bool = False,
        activate: bool = True,
        bias: bool = True,
        blur_taps: tuple[int, ...] = (1, 3, 3, 1),
    ) -> None:
        super().__init__()
        self.blur = None
        if downsample:
            p = (len(blur_taps) - 2) + (kernel_size - 1)
            self.blur = Blur(blur_taps, pad=((p + 1) // 2, p // 2))
        self.conv = EqualConv2d(
            in_channels,
            out_channels,
            kernel_size,
            stride=2 if downsample else 1,
            padding=0 if downsample else kernel_size // 2,
            bias=bias and not activate,
        )
        self.act_bias = nn.Parameter(torch.zeros(out_channels)) if activate and bias else None
        self.activate = activate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.blur is not None:
            x = self.blur(x)
        x = self.conv(x)
        if self.activate:
            x = bias_act(x, self.act_bias, act="lrelu")
        return x


class ResBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = ConvLayer(in_channels, in_channels, 3)
        self.conv2 = ConvLayer(in_channels, out_channels, 3, downsample=True)
        self.skip = ConvLayer(
            in_channels, out_channels, 1, downsample=True, activate=False, bias=False
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.conv2(self.conv1(x)) + self.skip(x)) / math.sqrt(2)


class Discriminator(nn.Module):
    """Residual StyleGAN2 discriminator with the channel plan of a generator config."""

    def __init__(self, config: GeneratorConfig, stddev_group: int = 4) -> None:
        super().__init__()
        self.config = config
        ch = config.channels
        res = config.resolution
        blocks: list[nn.Module] = [ConvLayer(config.img_channels, ch(res), 1)]
        while res > 4:
            blocks.append(ResBlock(ch(res), ch(res // 2)))
            res //= 2
        self.convs = nn.Sequential(*blocks)
        self.stddev_group = stddev_group
        self.final_conv = ConvLayer(ch(4) + 1, ch(4), 3)
        self.final_linear = nn.Sequential(
            EqualLinear(ch(4) * 16, ch(4), activation=True), EqualLinear(ch(4), 1)
        )

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        r = self.config.resolution
        if img.ndim != 4 or img.shape[1:] != (self.config.img_channels, r, r):
            raise ValueError(
                f"expected images [B, {self.config.img_channels}, {r}, {r}], got {list(img.shape)}"
            )
        x = self.convs(img)
        b, c, h, w = x.shape
        group = min(b, self.stddev_group)
        if b % group:
            group = 1
        y = x.view(group, -1, 1, c, h, w)
        y = torch.sqrt(y.var(0, unbiased=False) + 1e-8).mean(dim=(2, 3, 4), keepdim=True).squeeze(2)
        y = y.repeat(group, 1, h, w)
        x = self.final_conv(torch.cat([x, y], 1))
        return self.final_linear(x.flatten(1))
