"""Generators behind one interface (:mod:`navcuda.models.interface`), their layer registry and
checkpoint loaders."""

from navcuda.models.checkpoints import (
    CheckpointError,
    detect_format,
    load_generator,
    read_metadata,
    save_generator,
)
from navcuda.models.interface import (
    GeneratorError,
    Inputs,
    LatentSpace,
    LayerInfo,
    LayerShift,
    ShiftableGenerator,
    SplitState,
)
from navcuda.models.layers import DEFAULT_LAYER, get_layer, layer_weight, list_layers
from navcuda.models.stylegan2 import PRESETS, Generator, GeneratorConfig
from navcuda.models.stylegan3 import StyleGAN3Config, StyleGAN3Generator

__all__ = [
    "DEFAULT_LAYER",
    "PRESETS",
    "CheckpointError",
    "Generator",
    "GeneratorConfig",
    "GeneratorError",
    "Inputs",
    "LatentSpace",
    "LayerInfo",
    "LayerShift",
    "ShiftableGenerator",
    "SplitState",
    "StyleGAN3Config",
    "StyleGAN3Generator",
    "detect_format",
    "get_layer",
    "layer_weight",
    "list_layers",
    "load_generator",
    "read_metadata",
    "save_generator",
]
