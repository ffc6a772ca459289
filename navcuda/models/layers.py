"""The registry of a generator's conv layers: names, official indices, resolutions, shapes.

Names are the module paths of the rosinality layout. The *official index* is the one used by the
paper's code (``convs[ix]``): even ``ix`` is the upsampling conv to ``2**(ix//2 + 3)``, odd ``ix``
the plain conv at that resolution. The 4x4 input conv (``conv1``) has no official index but can be
shifted; the toRGB layers are listed for completeness and cannot be shifted (1x1, no demodulation).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import torch

    from navcuda.models.stylegan2 import Generator, GeneratorConfig

__all__ = ["LayerInfo", "list_layers", "get_layer", "layer_weight", "DEFAULT_LAYER"]

LayerKind = Literal["input_conv", "upconv", "conv", "torgb"]

#: The paper's default layer: ``convs[3]`` (16x16, 512 -> 512 on the official models).
DEFAULT_LAYER = 3


@dataclass(frozen=True)
class LayerInfo:
    """One conv layer of a generator.

    Attributes:
        name: the module path, e.g. ``"conv1"``, ``"convs.3"``, ``"to_rgbs.1"``.
        index: the official index (``convs[index]``); None for ``conv1`` (the 4x4 input conv)
            and the toRGB layers.
        kind: ``"input_conv"``, ``"upconv"`` (transposed stride-2 conv + blur), ``"conv"`` or
            ``"torgb"`` (1x1, not shiftable).
        resolution: the output resolution.
        in_channels, out_channels, kernel_size: of the raw kernel ``[out, in, k, k]``.
        w_index: which of the ``num_ws`` W+ latents styles this layer.
    """

    name: str
    index: int | None
    kind: LayerKind
    resolution: int
    in_channels: int
    out_channels: int
    kernel_size: int
    w_index: int

    @property
    def shiftable(self) -> bool:
        return self.kind != "torgb"

    @property
    def weight_shape(self) -> tuple[int, int, int, int]:
        """Raw kernel shape ``(out, in, kh, kw)``."""
        k = self.kernel_size
        return (self.out_channels, self.in_channels, k, k)

    def describe(self) -> str:
        ix = "-" if self.index is None else str(self.index)
        note = "" if self.shiftable else "  (not shiftable)"
        return (
            f"{ix:>3}  {self.name:<11} {self.kind:<10} {self.resolution:>5}px  "
            f"weight {list(self.weight_shape)}{note}"
        )


def _config(obj: Generator | GeneratorConfig) -> GeneratorConfig:
    return obj.config if hasattr(obj, "config") else obj  # type: ignore[return-value]


def list_layers(generator: Generator | GeneratorConfig) -> list[LayerInfo]:
    """Every conv layer of the generator (or config), in synthesis order."""
    cfg = _config(generator)
    c4 = cfg.channels(4)
    out = [
        LayerInfo("conv1", None, "input_conv", 4, c4, c4, 3, 0),
        LayerInfo("to_rgb1", None, "torgb", 4, c4, cfg.img_channels, 1, 1),
    ]
    in_c = c4
    for j, res in enumerate(cfg.resolutions[1:]):
        out_c = cfg.channels(res)
        out.append(LayerInfo(f"convs.{2 * j}", 2 * j, "upconv", res, in_c, out_c, 3, 2 * j + 1))
        out.append(
            LayerInfo(f"convs.{2 * j + 1}", 2 * j + 1, "conv", res, out_c, out_c, 3, 2 * j + 2)
        )
        out.append(
            LayerInfo(f"to_rgbs.{j}", None, "torgb", res, out_c, cfg.img_channels, 1, 2 * j + 3)
        )
        in_c = out_c
    return out


def get_layer(generator: Generator | GeneratorConfig, key: int | str) -> LayerInfo:
    """Look a layer up by official index (``3``, ``"3"``) or name (``"convs.3"``, ``"conv1"``)."""
    layers = list_layers(generator)
    if isinstance(key, bool):
        raise TypeError("layer key must be an int index or a layer name, got a bool")
    if isinstance(key, str) and key.strip().lstrip("-").isdigit():
        key = int(key)
    for info in layers:
        if (isinstance(key, int) and info.index == key) or info.name == key:
            return info
    valid = ", ".join(i.name for i in layers)
    n_idx = sum(i.index is not None for i in layers)
    raise KeyError(
        f"no layer {key!r} in this generator; use an official index 0..{n_idx - 1} "
        f"or one of: {valid}"
    )


def layer_weight(generator: Generator, key: int | str) -> torch.Tensor:
    """The raw kernel ``[out, in, kh, kw]`` of a layer (a view of the parameter, not a copy)."""
    info = get_layer(generator, key)
    module = generator.get_submodule(info.name)
    return module.conv.weight[0]
