"""navcuda: interpretable directions in the parameter space of a StyleGAN2 generator.

Public API (see README.md):

- models: :class:`Generator`, :class:`GeneratorConfig`, :func:`load_generator`,
  :func:`save_generator`, :func:`list_layers`, :func:`get_layer`
- shifts: :class:`LayerSpace`, :class:`Direction`, :func:`layer_space`, :func:`generate`,
  :func:`synthesize_shifted`
- files: :func:`load_official_direction`
- build: :func:`build_info`
"""

from navcuda.build_info import build_info
from navcuda.io.official import load_official_direction
from navcuda.models import (
    DEFAULT_LAYER,
    Generator,
    GeneratorConfig,
    LayerInfo,
    LayerShift,
    get_layer,
    list_layers,
    load_generator,
    save_generator,
)
from navcuda.shift import (
    Direction,
    LayerSpace,
    generate,
    layer_space,
    synthesize_shifted,
)

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_LAYER",
    "Direction",
    "Generator",
    "GeneratorConfig",
    "LayerInfo",
    "LayerShift",
    "LayerSpace",
    "build_info",
    "generate",
    "get_layer",
    "layer_space",
    "list_layers",
    "load_generator",
    "load_official_direction",
    "save_generator",
    "synthesize_shifted",
]
