"""The SVD baseline: direction i is the rank-one shift ``u_i v_i^T`` of singular value i."""

from __future__ import annotations

import torch

from navcuda.discover import params as P
from navcuda.discover.calibrate import DEFAULT_TARGET_RMS, calibrate_amplitudes, label_hparam
from navcuda.io.directions import DirectionSet
from navcuda.models.interface import ShiftableGenerator
from navcuda.shift import LayerSpace, layer_space

__all__ = ["SVD_PARAMS", "discover_svd", "singular_basis_set"]


def discover_svd(
    generator: ShiftableGenerator,
    layer: int | str,
    k: int = 64,
    calibrate: bool = True,
    target_rms: float = DEFAULT_TARGET_RMS,
    seed: int = 0,
    label: int | None = None,
) -> DirectionSet:
    """The top-``k`` singular directions of ``layer`` (largest singular value first).

    ``values`` holds the singular values; amplitudes are calibrated to an RMS image change of
    ``target_rms`` (NaN when ``calibrate=False``) on images of class ``label`` for a conditional
    generator (None: labels drawn with the latents).
    """
    space = layer_space(generator, layer)
    k = min(k, space.rank)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    coeffs = torch.eye(space.rank, dtype=torch.float32)[:k]
    hparams = {"k": k, "target_rms": target_rms, **label_hparam(label)}
    ds = singular_basis_set(generator, space, coeffs, "svd", hparams, seed, space.s[:k], "sv")
    if calibrate:
        ds.amplitudes = calibrate_amplitudes(
            generator, list(ds), target=target_rms, seed=seed, label=label
        )
    return ds


def singular_basis_set(
    generator: ShiftableGenerator,
    space: LayerSpace,
    coefficients: torch.Tensor,
    method: str,
    hparams: dict,
    seed: int,
    values: torch.Tensor,
    prefix: str | None = None,
) -> DirectionSet:
    """The directions ``coefficients [K, rank]`` of ``space``'s singular basis as a set of
    ``method`` (amplitudes NaN until calibrated; direction ``i`` named ``{prefix}{i}``, the
    prefix defaulting to the method)."""
    k = coefficients.shape[0]
    return DirectionSet(
        layer=space.layer.name,
        basis="svd",
        coefficients=coefficients.float(),
        amplitudes=torch.full((k,), float("nan")),
        method=method,
        weight_shape=space.weight_shape,
        names=[f"{prefix or method}{i}" for i in range(k)],
        fingerprint=generator.fingerprint(),
        model=generator.architecture,
        hparams=hparams,
        seed=seed,
        values=values.float(),
    )


#: The parameters of :func:`discover_svd` (defaults from its signature; ``--list-params``).
SVD_PARAMS = P.declare(
    discover_svd,
    k=P.K,
    calibrate=P.CALIBRATE,
    target_rms=P.TARGET_RMS,
    seed=P.SEED,
    label=P.LABEL,
)
