"""The embedded default generator used when no checkpoint is given.

The toy-world configuration: 64x64 RGB, mapping depth 4, w_dim 128, 64 channels up to 16x16 and
32 above (0.39 M parameters), trained on the toy world (``navcuda/data/toyfaces64.safetensors``).
Should that file be missing (a broken install), the default is this architecture with seeded
random weights, and every use says so with a warning.
"""

from __future__ import annotations

import warnings
from importlib import resources

import torch

from navcuda.models.stylegan2 import Generator, GeneratorConfig

__all__ = [
    "TOY_CONFIG",
    "BUNDLED_GENERATOR",
    "BUNDLED_DIRECTIONS",
    "load_default",
    "load_default_directions",
    "is_toy_model",
    "RandomWeightsWarning",
]

TOY_CONFIG = GeneratorConfig(
    resolution=64,
    z_dim=128,
    w_dim=128,
    n_mlp=4,
    channel_map={4: 64, 8: 64, 16: 64, 32: 32, 64: 32},
)

#: File name of the bundled trained generator inside the package's ``data`` folder.
BUNDLED_GENERATOR = "toyfaces64.safetensors"


#: The bundled model's named directions (layer convs.2), each fitted to move one toy-world factor
#: and no other (:func:`navcuda.evaluate.named_edits.build_clean_named_set`): head width, skin
#: hue, eye spacing, eye size, gaze x, brow height, nose length, mouth width, mouth curvature,
#: hair hue, hair length, fringe length; every one clean at ``t = +-2``.
BUNDLED_DIRECTIONS = "toyfaces64_named.nav"


class RandomWeightsWarning(UserWarning):
    """The default generator has random weights: its images are not meaningful."""


def load_default(device: str | torch.device = "cpu", seed: int = 0) -> Generator:
    """The bundled toy-world generator (``navcuda/data/toyfaces64.safetensors``), ``eval()``, on
    ``device``.

    Should the file be missing from the install, the toy architecture with random weights drawn
    from ``seed`` (the only use of ``seed``), with a :class:`RandomWeightsWarning`.
    """
    data = resources.files("navcuda") / "data" / BUNDLED_GENERATOR
    if data.is_file():
        from navcuda.models.checkpoints import load_generator

        with resources.as_file(data) as path:
            return load_generator(path, device=device).eval()
    warnings.warn(
        f"no bundled generator ({BUNDLED_GENERATOR}) in this install: using the toy architecture "
        f"with random weights (seed {seed}); images show noise-like patterns, not faces. Pass a "
        "checkpoint to use a trained model.",
        RandomWeightsWarning,
        stacklevel=2,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        g = Generator(TOY_CONFIG)
        g.update_w_avg(1024, seed=seed)
    return g.to(device).eval()


def is_toy_model(generator: object) -> bool:
    """Whether ``generator`` has the bundled toy-world architecture (so that the toy world's
    factor regressor, toy-FD and factor scores apply to its images)."""
    return isinstance(generator, Generator) and generator.config == TOY_CONFIG


def load_default_directions():
    """The bundled model's named direction set (a :class:`~navcuda.io.directions.DirectionSet`).

    Per toy-world factor, the combination of ``convs.2``'s 64 singular directions that moves that
    factor alone, kept when it is clean at ``t = +-2`` (it moves its factor by >= 0.1 of the
    range, every other factor by <= 1/3 of that, toy-FD by <= 0.5;
    :mod:`navcuda.evaluate.named_edits`); rebuild it with::

        navcuda discover --method svd --layer convs.2 -k 64 -o svd64.nav
        navcuda name svd64.nav --fit -o toyfaces64_named.nav
    """
    from navcuda.io.directions import DirectionSet

    data = resources.files("navcuda") / "data" / BUNDLED_DIRECTIONS
    if not data.is_file():
        raise FileNotFoundError(
            f"the bundled direction set {BUNDLED_DIRECTIONS} is missing from this install; "
            "reinstall navcuda or pass --directions FILE"
        )
    with resources.as_file(data) as path:
        return DirectionSet.load(path)
