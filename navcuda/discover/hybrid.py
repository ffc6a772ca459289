"""The hybrid method: the optimisation method restricted to the span of the Hessian's top
eigenvectors (paper §3.4).

The spectrum method gives the weight shifts that change the images most; among them the
optimisation method (:mod:`navcuda.discover.optimize`) then learns ``k`` directions that a
reconstructor can tell apart. Each direction is a unit combination of the ``basis_size`` top
eigenvectors, so the search space is tiny (``k x basis_size`` coefficients) and confined to
perceptually strong shifts.

Defaults follow the paper's hybrid recipe for the full-size model (``T=80``, Hessian-basis
``t_min=15`` and ``w=0.25``, batch 16), expressed relative to the layer's kernel norm as the
optimisation method does (``T = 80 / 1536 * |W|``; see
:data:`navcuda.discover.optimize.FFHQ_KERNEL_NORM`).

The eigenvectors come from ``eigenvectors=`` (a spectrum :class:`DirectionSet`, a ``.nav`` file,
an official ``eigenvectors_layer*.pt`` file or a tensor ``[n, out, in, k, k]``) or are computed
with :func:`navcuda.discover.spectrum.discover_spectrum` (``spectrum_params`` passed through).
With ``checkpoint=``, the basis is saved beside the checkpoint (``<checkpoint>.basis.nav``) so a
resumed run optimises in exactly the same span without recomputing it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from navcuda import distributed as dist
from navcuda.discover import params as P
from navcuda.discover.optimize import (
    CONFIG_PARAMS,
    FFHQ_KERNEL_NORM,
    OPTIMIZE_SEED,
    DirectionOptimizer,
    OptimizeConfig,
)
from navcuda.io.directions import DirectionSet, load_official_eigenvectors
from navcuda.models.interface import ShiftableGenerator

__all__ = ["HYBRID_DEFAULTS", "HYBRID_PARAMS", "discover_hybrid"]

#: The paper's hybrid hyper-parameters, scaled to the layer (module docstring).
HYBRID_DEFAULTS: dict[str, float] = {
    "t_max_rel": 80.0 / FFHQ_KERNEL_NORM,
    "t_min_rel": 15.0 / FFHQ_KERNEL_NORM,
    "t_weight": 0.25 * 80.0,
    "batch_size": 16,
}


def _basis_from(
    eigenvectors: Any, generator: ShiftableGenerator, layer: str
) -> tuple[torch.Tensor, dict]:
    """``[n, out, in, k, k]`` weight-space vectors and a description of where they came from."""
    if isinstance(eigenvectors, str | os.PathLike):
        path = Path(eigenvectors)
        if path.suffix == ".pt":
            # The official file names its layer (eigenvectors_layer{ix}_*.pt); a renamed one is
            # taken to be of the layer being optimised (checked against its shape below).
            named = "eigenvectors_layer" in path.name
            index = generator.layer(layer).index
            eigenvectors = load_official_eigenvectors(path, layer=None if named else index)
        else:
            eigenvectors = DirectionSet.load(path)
    if isinstance(eigenvectors, DirectionSet):
        if eigenvectors.basis == "latent":
            raise ValueError(
                f"the eigenvectors must be weight-space directions of {layer!r} (a spectrum set), "
                f"got a latent-space {eigenvectors.method!r} set"
            )
        eigenvectors.check_compatible(generator)
        if generator.layer(eigenvectors.layer).name != layer:
            raise ValueError(f"the eigenvectors are of layer {eigenvectors.layer!r}, not {layer!r}")
        basis = torch.stack([d.delta(generator) for d in eigenvectors]).cpu()
        return basis, {"source": eigenvectors.method, "metric": eigenvectors.metric}
    if isinstance(eigenvectors, torch.Tensor):
        return eigenvectors.detach().cpu(), {"source": "tensor"}
    raise TypeError(
        "eigenvectors must be a DirectionSet, a .nav / eigenvectors_layer*.pt path or a tensor, "
        f"got {type(eigenvectors).__name__}"
    )


def discover_hybrid(
    generator: ShiftableGenerator,
    layer: int | str,
    k: int = 64,
    basis_size: int = 64,
    eigenvectors: Any = None,
    spectrum_params: dict[str, Any] | None = None,
    seed: int = 0,
    checkpoint: str | os.PathLike | None = None,
    calibrate: bool = True,
    progress: bool = True,
    **hparams: Any,
) -> DirectionSet:
    """``k`` directions learned by the optimisation method within the span of the top
    ``basis_size`` Hessian eigenvectors of ``layer``.

    ``hparams`` go to :class:`~navcuda.discover.optimize.OptimizeConfig` over
    :data:`HYBRID_DEFAULTS` (e.g. ``steps``, ``lr``, ``t_max_rel``, ``patience``). The result's
    ``extra["basis"]`` records the basis used (size, source, metric).
    """
    hparams = P.check_params("hybrid", hparams)  # named errors, not OptimizeConfig's
    info = generator.layer(layer)
    basis_file = None if checkpoint is None else Path(f"{checkpoint}.basis.nav")
    if eigenvectors is None and basis_file is not None and dist.from_rank0(basis_file.is_file):
        eigenvectors = dist.from_rank0(lambda: DirectionSet.load(basis_file))  # rank 0 wrote it
    if eigenvectors is None:
        from navcuda.discover.spectrum import discover_spectrum

        if progress and dist.is_rank0():  # the basis takes minutes before the optimisation's bar
            tqdm.write(
                f"hybrid: building the spectrum basis (the top {basis_size} Hessian eigenvectors "
                f"of {info.name}) before optimising"
                + ("" if basis_file is None else f"; it will be saved to {basis_file}"),
                file=sys.stderr,
            )
        params = {"progress": progress, "calibrate": False, **(spectrum_params or {})}
        params = P.check_params("spectrum", params, exclude=_OWN, owner="hybrid spectrum_params")
        eigenvectors = discover_spectrum(generator, info.name, k=basis_size, seed=seed, **params)
    if basis_file is not None and isinstance(eigenvectors, DirectionSet) and dist.is_rank0():
        eigenvectors.save(basis_file)
    basis, source = _basis_from(eigenvectors, generator, info.name)
    if basis.ndim != 5 or basis.shape[0] < 1:
        raise ValueError(
            f"the eigenvector basis must be [n, out, in, k, k], got {list(basis.shape)}"
        )
    basis = basis[:basis_size]
    cfg = OptimizeConfig(k=k, seed=seed, **{**HYBRID_DEFAULTS, **hparams})
    opt = DirectionOptimizer(generator, info.name, cfg, basis=basis, method="hybrid")
    if checkpoint is not None and dist.from_rank0(Path(checkpoint).is_file):
        opt.load_state(checkpoint)
    opt.run(checkpoint_path=checkpoint, progress=progress)
    ds = opt.direction_set(calibrate=calibrate)
    ds.metric = source.get("metric")
    ds.extra["basis"] = {"size": int(basis.shape[0]), **source}
    return ds


#: what the spectrum run of a hybrid run takes from it instead of its ``spectrum_params``
_OWN = {"k": "basis_size", "seed": "the hybrid seed"}


def _eigenvectors_ok(value: object) -> bool:
    return isinstance(value, str | os.PathLike | DirectionSet | torch.Tensor)


#: The parameters of :func:`discover_hybrid` and the :class:`OptimizeConfig` fields it passes on,
#: with :data:`HYBRID_DEFAULTS` (defaults from the signatures; ``--list-params``).
HYBRID_PARAMS = P.declare(
    discover_hybrid,
    config=OptimizeConfig,
    defaults=HYBRID_DEFAULTS,
    k=P.integer("number of directions (the CLI's -k)", 2),
    basis_size=P.integer("Hessian eigenvectors spanning the search", 1),
    eigenvectors=P.other(
        "the basis (None: computed by the spectrum method; the CLI's --eigenvectors)",
        "basis",
        "a .nav or eigenvectors_layer*.pt path, a DirectionSet or a tensor",
        _eigenvectors_ok,
        none_ok=True,
    ),
    spectrum_params=P.nested(
        "parameters of the spectrum run (the CLI's spectrum_NAME=VALUE)",
        "spectrum",
        exclude=_OWN,
        owner="hybrid spectrum_params",
    ),
    seed=OPTIMIZE_SEED,
    checkpoint=P.CHECKPOINT,
    calibrate=P.CALIBRATE,
    progress=P.PROGRESS,
    **CONFIG_PARAMS,
)
