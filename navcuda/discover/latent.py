"""Latent-space baselines, for putting parameter-space edits beside latent edits.

- GANSpace (Härkönen et al. 2020): principal components of W = mapping(z) over many z.
- SeFa (Shen & Zhou 2021): closed form, the top eigenvectors of ``A^T A`` where ``A`` stacks the
  style affine weights (W -> per-channel styles) of the chosen layers.

Both give directions in W, applied to every style input as ``w + t v`` (``basis="latent"``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from navcuda.discover.calibrate import DEFAULT_TARGET_RMS, calibrate_amplitudes
from navcuda.io.directions import DirectionSet
from navcuda.models.fingerprint import model_fingerprint
from navcuda.models.layers import get_layer
from navcuda.models.stylegan2 import Generator
from navcuda.shift import LATENT_LAYER

__all__ = ["discover_ganspace", "discover_sefa"]


def _latent_set(generator, vectors, values, method, hparams, seed, calibrate, target_rms):
    k = vectors.shape[0]
    ds = DirectionSet(
        layer=LATENT_LAYER,
        basis="latent",
        coefficients=vectors.float().cpu(),
        amplitudes=torch.full((k,), float("nan")),
        method=method,
        weight_shape=(generator.config.w_dim,),
        names=[f"{method}{i}" for i in range(k)],
        fingerprint=model_fingerprint(generator),
        hparams=hparams,
        seed=seed,
        values=values.float().cpu(),
    )
    if calibrate:
        ds.amplitudes = calibrate_amplitudes(generator, list(ds), target=target_rms, seed=seed)
    return ds


@torch.no_grad()
def discover_ganspace(
    generator: Generator,
    k: int = 64,
    n_samples: int = 10_000,
    seed: int = 0,
    calibrate: bool = True,
    target_rms: float = DEFAULT_TARGET_RMS,
) -> DirectionSet:
    """Top-``k`` principal directions of W over ``n_samples`` seeded latents (values: variances)."""
    k = min(k, generator.config.w_dim)
    if k < 1 or n_samples < 2:
        raise ValueError(f"need k >= 1 and n_samples >= 2, got {k}, {n_samples}")
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n_samples, generator.config.z_dim, generator=g).to(generator.w_avg.device)
    w = torch.cat([generator.mapping(c) for c in z.split(1024)]).double()
    w = w - w.mean(0)
    _, s, vh = torch.linalg.svd(w, full_matrices=False)
    variances = s.square() / (n_samples - 1)
    hp = {"k": k, "n_samples": n_samples, "target_rms": target_rms}
    return _latent_set(
        generator, vh[:k], variances[:k], "ganspace", hp, seed, calibrate, target_rms
    )


@torch.no_grad()
def discover_sefa(
    generator: Generator,
    layers: Sequence[int | str] | int | str = (3,),
    k: int = 64,
    seed: int = 0,
    calibrate: bool = True,
    target_rms: float = DEFAULT_TARGET_RMS,
) -> DirectionSet:
    """Top-``k`` eigenvectors of ``A^T A`` for the style affines of ``layers``.

    ``values`` holds the eigenvalues.

    ``layers`` may be ``"all"`` for every modulated conv and toRGB.
    """
    from navcuda.models.layers import list_layers

    if layers == "all":
        infos = list_layers(generator)
    else:
        keys = [layers] if isinstance(layers, int | str) else list(layers)
        infos = [get_layer(generator, key) for key in keys]
    mats = []
    for info in infos:
        mod = generator.get_submodule(info.name).conv.modulation
        a = (mod.weight * mod.scale).double()  # [in, w_dim]
        mats.append(a / a.norm(dim=1, keepdim=True).clamp_min(1e-12))
    a = torch.cat(mats)
    evals, evecs = torch.linalg.eigh(a.t() @ a)
    order = torch.argsort(evals, descending=True)[: min(k, generator.config.w_dim)]
    hp = {"k": len(order), "layers": [i.name for i in infos], "target_rms": target_rms}
    return _latent_set(
        generator, evecs[:, order].t(), evals[order], "sefa", hp, seed, calibrate, target_rms
    )
