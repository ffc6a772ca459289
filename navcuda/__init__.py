"""navcuda: interpretable directions in the parameter space of a StyleGAN2 generator.

Public API (see README.md):

- models: :class:`ShiftableGenerator` (the interface every method uses), :class:`Inputs`,
  :func:`wrap` (any torch conv generator), :class:`Generator` (StyleGAN2),
  :class:`GeneratorConfig`, :func:`load_generator`, :func:`save_generator`, :func:`list_layers`,
  :func:`get_layer`
- shifts: :class:`LayerSpace`, :class:`Direction`, :class:`Combination` (several at once),
  :func:`layer_space`, :func:`generate`, :func:`synthesize_shifted`
- discovery: :func:`discover` -> :class:`DirectionSet`
- rendering: :func:`render`; browsing: :func:`build_gallery`, :func:`apply_names`
- real images: :func:`load_image`, :func:`project` -> :class:`Projection`
- files: :class:`DirectionSet` (``.save``/``.load``), :func:`load_official_direction`,
  :func:`load_official_eigenvectors`
- default model: :func:`load_default`
- build: :func:`build_info`, :func:`selftest` (native ops vs references on this device)
"""

# First, before anything imports torch (and with it the OpenMP runtime): threads that wait spin
# briefly, then sleep, so that a shared machine's cores go to threads with work
# (navcuda/_threads.py).
import navcuda._threads  # noqa: F401  (sets GOMP_SPINCOUNT when it can)
from navcuda.build_info import build_info
from navcuda.discover import discover
from navcuda.gallery import apply_names, build_gallery
from navcuda.io.directions import DirectionSet, load_official_eigenvectors
from navcuda.io.official import load_official_direction
from navcuda.models import (
    DEFAULT_LAYER,
    Generator,
    GeneratorConfig,
    GeneratorError,
    Inputs,
    LayerInfo,
    LayerShift,
    ShiftableGenerator,
    get_layer,
    list_layers,
    load_generator,
    save_generator,
)
from navcuda.models.default import load_default
from navcuda.models.wrapped import wrap
from navcuda.ops.selftest import selftest
from navcuda.project import Projection, load_image, project
from navcuda.rendering import render
from navcuda.shift import (
    Combination,
    Direction,
    LayerSpace,
    generate,
    layer_space,
    synthesize_shifted,
)

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_LAYER",
    "Combination",
    "Direction",
    "Projection",
    "DirectionSet",
    "Generator",
    "GeneratorConfig",
    "GeneratorError",
    "Inputs",
    "LayerInfo",
    "LayerShift",
    "LayerSpace",
    "ShiftableGenerator",
    "apply_names",
    "build_gallery",
    "build_info",
    "discover",
    "generate",
    "get_layer",
    "layer_space",
    "list_layers",
    "load_default",
    "load_generator",
    "load_image",
    "load_official_direction",
    "load_official_eigenvectors",
    "project",
    "render",
    "save_generator",
    "selftest",
    "synthesize_shifted",
    "wrap",
]
