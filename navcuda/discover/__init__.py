"""Discovery of interpretable directions: one entry point over every method.

Parameter-space methods (one layer): ``svd`` (rank-one singular directions), ``spectrum`` (top
eigenvectors of the perceptual Hessian), ``optimize`` (direction matrix + reconstructor),
``hybrid`` (optimisation within the spectrum's span). Latent baselines: ``ganspace``, ``sefa``.
Every method returns a :class:`~navcuda.io.directions.DirectionSet`.
"""

from __future__ import annotations

import importlib
from typing import Any

from navcuda.io.directions import DirectionSet
from navcuda.models.interface import ShiftableGenerator

__all__ = ["discover", "METHODS"]

#: method name -> (module, function, takes a layer argument)
METHODS: dict[str, tuple[str, str, bool]] = {
    "svd": ("navcuda.discover.svd", "discover_svd", True),
    "spectrum": ("navcuda.discover.spectrum", "discover_spectrum", True),
    "optimize": ("navcuda.discover.optimize", "discover_optimize", True),
    "hybrid": ("navcuda.discover.hybrid", "discover_hybrid", True),
    "ganspace": ("navcuda.discover.latent", "discover_ganspace", False),
    "sefa": ("navcuda.discover.latent", "discover_sefa", False),
}


def discover(
    generator: ShiftableGenerator,
    layer: int | str = 3,
    method: str = "svd",
    k: int = 64,
    **hparams: Any,
) -> DirectionSet:
    """Find ``k`` directions of ``layer`` with ``method`` (see :data:`METHODS`).

    Hyper-parameters are passed to the method's function (e.g.
    ``navcuda.discover.svd.discover_svd``) whose docstring lists them with their defaults;
    ``seed`` makes every method reproducible.
    For ``sefa`` the layer selects the style affine used (``layers=`` overrides it); ``ganspace``
    ignores it.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {sorted(METHODS)}")
    module_name, fn_name, takes_layer = METHODS[method]
    fn = getattr(importlib.import_module(module_name), fn_name)
    if takes_layer:
        return fn(generator, layer, k=k, **hparams)
    if method == "sefa":
        hparams.setdefault("layers", (layer,))
    return fn(generator, k=k, **hparams)
