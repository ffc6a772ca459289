"""Layer lookup on any generator of the interface (:mod:`navcuda.models.interface`).

Layer names are module paths (``"convs.3"``); StyleGAN2 layers also have the *official index*
of the paper's code (``convs[ix]``: even ``ix`` is the upsampling conv to ``2**(ix//2 + 3)``, odd
``ix`` the plain conv at that resolution), and the layers of other generators their position
among the shiftable layers.
"""

from __future__ import annotations

import torch

from navcuda.models.interface import LayerInfo, ShiftableGenerator

__all__ = ["LayerInfo", "list_layers", "get_layer", "layer_weight", "DEFAULT_LAYER"]

#: The paper's default layer: ``convs[3]`` (16x16, 512 -> 512 on the official models).
DEFAULT_LAYER = 3


def _interface(generator: object) -> ShiftableGenerator:
    if not isinstance(generator, ShiftableGenerator):
        raise TypeError(
            "expected a navcuda generator (navcuda.load_generator, navcuda.load_default or "
            f"navcuda.wrap(module, sample=...)), got {type(generator).__name__}"
        )
    return generator


def list_layers(generator: ShiftableGenerator) -> list[LayerInfo]:
    """Every convolution layer of the generator, in synthesis order."""
    return list(_interface(generator).layers())


def get_layer(generator: ShiftableGenerator, key: int | str) -> LayerInfo:
    """Look a layer up by index (``3``, ``"3"``) or name (``"convs.3"``, ``"conv1"``)."""
    return _interface(generator).layer(key)


def layer_weight(generator: ShiftableGenerator, key: int | str) -> torch.Tensor:
    """The effective kernel ``[out, in, kh, kw]`` of a layer (a view where possible)."""
    return _interface(generator).kernel(key)
