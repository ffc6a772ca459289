"""Recommended amplitudes: the shift magnitude at which a direction changes images by a set amount.

Directions from different methods and layers live on different scales; a user needs one number per
direction that says "this far gives a clear but sane edit". For each direction, the amplitude is
found by geometric bisection on ``t`` so that the mean RMS pixel change between ``G(z)`` and
``G_{theta + t xi}(z)`` (images in [-1, 1], averaged over ``n_z`` latents and over ``+t`` and
``-t``) equals ``target``. All directions are calibrated together, one batched render per
bisection step, reusing the activations before the shifted layer. Weight-space directions are
rendered as a split shift (:meth:`LayerShift.split <navcuda.models.interface.LayerShift.split>`):
consecutive samples share a direction, so each chunk forms the unit shifts of the few directions
it uses and runs one base convolution plus one convolution per direction.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from tqdm.auto import tqdm

from navcuda.distributed import sharded_directions
from navcuda.models.interface import LayerShift, ShiftableGenerator
from navcuda.shift import Direction

__all__ = ["calibrate_amplitudes", "DEFAULT_TARGET_RMS", "label_hparam"]

#: Default image change (RMS over pixels of [-1, 1] images) at the recommended amplitude.
DEFAULT_TARGET_RMS = 0.15


def label_hparam(label: int | None) -> dict:
    """``{"label": label}`` for the ``hparams`` of a set found with one class (empty for None)."""
    return {} if label is None else {"label": int(label)}


@sharded_directions  # several processes: each calibrates its share of the directions
@torch.no_grad()
def calibrate_amplitudes(
    generator: ShiftableGenerator,
    directions: Sequence[Direction],
    target: float = DEFAULT_TARGET_RMS,
    n_z: int = 8,
    seed: int = 0,
    iters: int = 14,
    batch_size: int = 64,
    truncation_psi: float = 0.7,
    label: int | None = None,
    progress: bool | None = None,
) -> torch.Tensor:
    """Amplitudes ``[K]`` (float64) giving an RMS image change of ``target`` per direction.

    The images are ``generator.sample(n_z, seed, truncation_psi=..., label=...)``, rendered
    unshifted and shifted with the same inputs (a conditional model's labels included).
    Directions that cannot reach the target within the search bracket get the bracket's upper end
    (weight space: ten times the layer's kernel norm; latent space: ten times ``sqrt(dim)``).

    ``progress``: a progress bar over the renders (``iters + 1`` bisection steps of
    ``ceil(2 K n_z / batch_size)`` batches); None (default) shows it when stderr is a terminal,
    so callers that do not pass it (the ``svd``, ``ganspace``, ``sefa`` and ``optimize``
    methods) are quiet in tests and logs and show it on the command line.

    Raises ``ValueError`` for a ``target`` that is not a positive finite number, and when the
    generator renders non-finite pixels (unshifted, or at some direction's trial shift), instead of
    returning amplitudes that would then be meaningless.
    """
    if not directions:
        raise ValueError("no directions to calibrate")
    try:
        target_value = float(target)
    except (TypeError, ValueError):
        target_value = math.nan
    if not (math.isfinite(target_value) and target_value > 0):
        raise ValueError(
            f"target (the RMS image change to calibrate to) must be a positive finite number, "
            f"got {target!r}; the default is {DEFAULT_TARGET_RMS}"
        )
    inputs = generator.sample(n_z, seed, truncation_psi=truncation_psi, label=label)
    base = generator.render(inputs)
    if not bool(torch.isfinite(base).all()):
        raise ValueError(
            "the generator produced non-finite (NaN/Inf) images without any shift, so amplitudes "
            "cannot be calibrated; check the model's weights (load_generator refuses NaN/Inf "
            "weights) and truncation_psi"
        )
    target = target_value
    latent = directions[0].basis == "latent"
    if any((d.basis == "latent") != latent for d in directions):
        raise ValueError("calibrate latent and weight-space directions separately")
    if latent:
        vecs = torch.stack([d.latent_shift(generator, generator.dtype) for d in directions])
        hi0 = 10.0 * math.sqrt(vecs.shape[1])
        state = None
    else:
        layers = {generator.layer(d.layer).name for d in directions}
        if len(layers) != 1:
            raise ValueError(f"calibrate one layer at a time, got {sorted(layers)}")
        layer = layers.pop()
        hi0 = 10.0 * float(generator.kernel(layer).detach().double().norm())
        state = generator.split(inputs, layer)
        vecs = None  # unit weight shifts: formed per chunk, for the few directions it uses
    k = len(directions)
    lo = torch.full((k,), hi0 * 1e-6, dtype=torch.float64)
    hi = torch.full((k,), hi0, dtype=torch.float64)
    batches = math.ceil(2 * k * len(inputs) / batch_size)
    disable = None if progress is None else not progress  # None: shown on a terminal only
    with tqdm(total=(iters + 1) * batches, desc=f"calibrate {k} amplitudes", unit="batch",
              disable=disable) as bar:  # fmt: skip
        args = (generator, directions, vecs, inputs, base, state, batch_size, bar)
        change_hi = _changes(hi, *args)
        _check_finite(change_hi, hi, directions)
        for _ in range(iters):
            mid = (lo * hi).sqrt()
            change = _changes(mid, *args)
            _check_finite(change, mid, directions)
            below = change < target
            lo = torch.where(below, mid, lo)
            hi = torch.where(below, hi, mid)
    amp = (lo * hi).sqrt()
    return torch.where(change_hi < target, torch.full_like(amp, hi0), amp)


def _check_finite(change: torch.Tensor, t: torch.Tensor, directions: Sequence[Direction]) -> None:
    """Raise for the first direction whose image change at shift ``t`` is NaN or Inf."""
    bad = (~torch.isfinite(change)).nonzero().flatten()
    if bad.numel():
        i = int(bad[0])
        d = directions[i]
        name = d.name if d.name is not None else f"{d.layer} #{i}"
        raise ValueError(
            f"the generator produced non-finite (NaN/Inf) images at shift t=+-{float(t[i]):.4g} "
            f"of direction {name!r} (index {i}, layer {d.layer}): its amplitude cannot be "
            f"calibrated ({bad.numel()} of {len(directions)} directions affected); check the "
            "model's weights and the direction"
        )


def _changes(t, generator, directions, vecs, inputs, base, state, batch_size, bar) -> torch.Tensor:
    """Mean RMS change per direction at +-t (one render per (direction, z, sign)).

    ``vecs``: the unit latent shifts ``[K, dim]`` (``state`` None), or None for weight-space
    directions of ``state.layer`` (a :class:`~navcuda.models.interface.SplitState`)."""
    k, n = len(directions), len(inputs)
    dev, dtype = generator.device, generator.dtype
    triples = [(i, j, s) for i in range(k) for j in range(n) for s in (1.0, -1.0)]
    rms = torch.empty(len(triples), dtype=torch.float64)
    for start in range(0, len(triples), batch_size):
        chunk = triples[start : start + batch_size]
        idx = torch.tensor([j for _, j, _ in chunk], device=dev)
        tt = torch.tensor([s * float(t[i]) for i, _, s in chunk], dtype=dtype, device=dev)
        if state is None:
            dir_idx = torch.tensor([i for i, _, _ in chunk], device=dev)
            shifted = generator.latent.shift(inputs.take(idx), tt[:, None] * vecs[dir_idx])
            img = generator.render(shifted)
        else:
            used = sorted({i for i, _, _ in chunk})
            slot = {i: s for s, i in enumerate(used)}
            deltas = torch.stack([directions[i].delta(generator, dtype) for i in used])
            dir_idx = torch.tensor([slot[i] for i, _, _ in chunk], device=dev)
            shift = LayerShift.split(state.layer, deltas, tt, dir_idx)
            img = generator.resume(state.take(idx), shift)
        diff = (img - base[idx.to(base.device)]).double()
        rms[start : start + len(chunk)] = diff.square().mean(dim=(1, 2, 3)).sqrt().cpu()
        bar.update(1)
    return rms.view(k, n * 2).mean(dim=1)
