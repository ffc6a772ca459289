"""Generators, their layer registry and checkpoint loaders."""

from navcuda.models.checkpoints import (
    CheckpointError,
    detect_format,
    load_generator,
    read_metadata,
    save_generator,
)
from navcuda.models.layers import DEFAULT_LAYER, LayerInfo, get_layer, layer_weight, list_layers
from navcuda.models.stylegan2 import PRESETS, Generator, GeneratorConfig, LayerShift

__all__ = [
    "DEFAULT_LAYER",
    "PRESETS",
    "CheckpointError",
    "Generator",
    "GeneratorConfig",
    "LayerInfo",
    "LayerShift",
    "detect_format",
    "get_layer",
    "layer_weight",
    "list_layers",
    "load_generator",
    "read_metadata",
    "save_generator",
]
