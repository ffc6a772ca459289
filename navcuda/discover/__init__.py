"""Discovery of interpretable directions: one entry point over every method.

Parameter-space methods (one layer): ``svd`` (rank-one singular directions), ``spectrum`` (top
eigenvectors of the perceptual Hessian), ``optimize`` (direction matrix + reconstructor),
``hybrid`` (optimisation within the spectrum's span), ``ica`` (independent components of the
image changes of the singular directions; navcuda's own). Latent baselines: ``ganspace``, ``sefa``.
Every method returns a :class:`~navcuda.io.directions.DirectionSet`.
"""

from __future__ import annotations

import importlib
import math
import warnings
from typing import Any

from navcuda.discover.params import ParamError, check_params
from navcuda.io.directions import DirectionSet
from navcuda.models.interface import ShiftableGenerator

__all__ = ["discover", "max_directions", "FewerDirectionsWarning", "ParamError", "METHODS"]

#: method name -> (module, function, takes a layer argument)
METHODS: dict[str, tuple[str, str, bool]] = {
    "svd": ("navcuda.discover.svd", "discover_svd", True),
    "spectrum": ("navcuda.discover.spectrum", "discover_spectrum", True),
    "optimize": ("navcuda.discover.optimize", "discover_optimize", True),
    "hybrid": ("navcuda.discover.hybrid", "discover_hybrid", True),
    "ica": ("navcuda.discover.ica", "discover_ica", True),
    "ganspace": ("navcuda.discover.latent", "discover_ganspace", False),
    "sefa": ("navcuda.discover.latent", "discover_sefa", False),
}


class FewerDirectionsWarning(UserWarning):
    """``discover`` was asked for more directions than the method can find there (the rank of
    the layer's kernel, its number of weights, the latent's dimension): it returns that many."""


def max_directions(
    generator: ShiftableGenerator, layer: int | str, method: str
) -> tuple[int, str] | None:
    """How many directions ``method`` can find in ``layer`` at most, and what bounds it (None
    when nothing does: the optimisation methods learn any number of directions)."""
    if method in ("svd", "ica"):
        out, in_, kh, kw = generator.layer(layer).weight_shape
        return min(kh * kw * in_, out), "the rank of the layer's kernel"
    if method == "spectrum":
        return math.prod(generator.layer(layer).weight_shape), "the layer's number of weights"
    if method in ("ganspace", "sefa") and generator.latent is not None:
        return generator.latent.dim, "the dimension of the latent"
    return None


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
    ``seed`` makes every method reproducible. They are checked first against the method's
    declared table (:mod:`navcuda.discover.params`; ``navcuda discover --method M
    --list-params`` prints it): an unknown name, a wrong type or a value out of range raises
    :class:`~navcuda.discover.params.ParamError` (a ``ValueError``) saying what is expected.
    A ``k`` larger than the method can find in the layer (:func:`max_directions`) is lowered
    to that with a :class:`FewerDirectionsWarning`.
    For ``sefa`` the layer selects the style affine used (``layers=`` overrides it); ``ganspace``
    ignores it.
    """
    hparams = check_params(method, {"k": k, **hparams})  # unknown methods too
    k = hparams.pop("k")
    module_name, fn_name, takes_layer = METHODS[method]
    bound = max_directions(generator, layer, method)
    if bound is not None and k > bound[0]:
        cap, what = bound
        warnings.warn(
            f"{method}: asked for k={k} directions, but {what} is {cap}: returning {cap}",
            FewerDirectionsWarning,
            stacklevel=2,
        )
        k = cap
    fn = getattr(importlib.import_module(module_name), fn_name)
    if takes_layer:
        return fn(generator, layer, k=k, **hparams)
    if method == "sefa":
        hparams.setdefault("layers", (layer,))
    return fn(generator, k=k, **hparams)
