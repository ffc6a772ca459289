"""Latent-space baselines, for putting parameter-space edits beside latent edits.

- GANSpace (Härkönen et al. 2020): principal components of the latent over many samples (StyleGAN:
  W = mapping(z)).
- SeFa (Shen & Zhou 2021): closed form, the top eigenvectors of ``A^T A`` where ``A`` stacks the
  weights that read the latent in the chosen layers (StyleGAN: the style affines, W -> per-channel
  styles).

Both give directions in the generator's latent space (:attr:`ShiftableGenerator.latent
<navcuda.models.interface.ShiftableGenerator.latent>`), applied to every latent vector as
``w + t v`` (``basis="latent"``); generators without one refuse them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from navcuda.discover import params as P
from navcuda.discover.calibrate import DEFAULT_TARGET_RMS, calibrate_amplitudes, label_hparam
from navcuda.io.directions import DirectionSet
from navcuda.models.interface import GeneratorError, LatentSpace, ShiftableGenerator

__all__ = ["GANSPACE_PARAMS", "SEFA_PARAMS", "discover_ganspace", "discover_sefa"]


def _latent_space(generator: ShiftableGenerator, method: str) -> LatentSpace:
    space = generator.latent
    if space is None:
        raise GeneratorError(
            f"{method} finds directions in a latent space, and {generator.architecture} exposes "
            "none (navcuda.wrap(..., latent='z') names the input that is one)"
        )
    return space


def _latent_set(generator, vectors, values, method, hparams, seed, calibrate, target_rms, label):
    k = vectors.shape[0]
    hparams = {**hparams, **label_hparam(label)}
    ds = DirectionSet(
        layer=generator.latent.name,
        basis="latent",
        coefficients=vectors.float().cpu(),
        amplitudes=torch.full((k,), float("nan")),
        method=method,
        weight_shape=(generator.latent.dim,),
        names=[f"{method}{i}" for i in range(k)],
        fingerprint=generator.fingerprint(),
        model=generator.architecture,
        hparams=hparams,
        seed=seed,
        values=values.float().cpu(),
    )
    if calibrate:
        ds.amplitudes = calibrate_amplitudes(
            generator, list(ds), target=target_rms, seed=seed, label=label
        )
    return ds


@torch.no_grad()
def discover_ganspace(
    generator: ShiftableGenerator,
    k: int = 64,
    n_samples: int = 10_000,
    seed: int = 0,
    calibrate: bool = True,
    target_rms: float = DEFAULT_TARGET_RMS,
    label: int | None = None,
) -> DirectionSet:
    """Top-``k`` principal directions of the latent over ``n_samples`` seeded samples (values:
    variances); ``label``: a conditional generator's class (None: drawn with the latents)."""
    space = _latent_space(generator, "ganspace")
    k = min(k, space.dim)
    if k < 1 or n_samples < 2:
        raise ValueError(f"need k >= 1 and n_samples >= 2, got {k}, {n_samples}")
    w = generator.sample(n_samples, seed, label=label)[space.key].double()
    w = w.reshape(n_samples, -1, space.dim)[:, 0]  # W+ inputs repeat one w per layer
    w = w - w.mean(0)
    _, s, vh = torch.linalg.svd(w, full_matrices=False)
    variances = s.square() / (n_samples - 1)
    hp = {"k": k, "n_samples": n_samples, "target_rms": target_rms}
    return _latent_set(
        generator, vh[:k], variances[:k], "ganspace", hp, seed, calibrate, target_rms, label
    )


@torch.no_grad()
def discover_sefa(
    generator: ShiftableGenerator,
    layers: Sequence[int | str] | int | str = (3,),
    k: int = 64,
    seed: int = 0,
    calibrate: bool = True,
    target_rms: float = DEFAULT_TARGET_RMS,
    label: int | None = None,
) -> DirectionSet:
    """Top-``k`` eigenvectors of ``A^T A`` for the style affines of ``layers``.

    ``values`` holds the eigenvalues.

    ``layers`` may be ``"all"`` for every modulated conv and toRGB.
    """
    space = _latent_space(generator, "sefa")
    if layers == "all":
        names = [i.name for i in generator.layers()]
        readers = generator.latent_readers("all")
    else:
        keys = [layers] if isinstance(layers, int | str) else list(layers)
        names = [generator.layer(key).name for key in keys]
        readers = generator.latent_readers(names)
    mats = []
    for reader in readers:
        a = reader.detach().double()  # [out, dim]
        mats.append(a / a.norm(dim=1, keepdim=True).clamp_min(1e-12))
    a = torch.cat(mats)
    evals, evecs = torch.linalg.eigh(a.t() @ a)
    order = torch.argsort(evals, descending=True)[: min(k, space.dim)]
    hp = {"k": len(order), "layers": names, "target_rms": target_rms}
    return _latent_set(
        generator,
        evecs[:, order].t(),
        evals[order],
        "sefa",
        hp,
        seed,
        calibrate,
        target_rms,
        label,
    )


def _layers_ok(value: object) -> bool:
    def one(v: object) -> bool:
        return isinstance(v, str) or (isinstance(v, int) and not isinstance(v, bool))

    return one(value) or (
        isinstance(value, list | tuple) and len(value) > 0 and all(one(v) for v in value)
    )


#: The parameters of :func:`discover_ganspace` (defaults from its signature; ``--list-params``).
GANSPACE_PARAMS = P.declare(
    discover_ganspace,
    k=P.K,
    n_samples=P.integer("latents sampled for the principal components", 2),
    seed=P.SEED,
    calibrate=P.CALIBRATE,
    target_rms=P.TARGET_RMS,
    label=P.LABEL,
)

#: The parameters of :func:`discover_sefa` (defaults from its signature; ``--list-params``).
SEFA_PARAMS = P.declare(
    discover_sefa,
    layers=P.other(
        "layers whose style affines are factorised (the CLI's --layer)",
        "layers",
        "a layer index or name, a list of them, or 'all'",
        _layers_ok,
    ),
    k=P.K,
    seed=P.SEED,
    calibrate=P.CALIBRATE,
    target_rms=P.TARGET_RMS,
    label=P.LABEL,
)
