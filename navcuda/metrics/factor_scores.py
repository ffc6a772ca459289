"""Interpretability on the toy world: how an edit moves the ground-truth factors.

An edit (a weight-space :class:`~navcuda.shift.Direction`, a latent direction, or any function
that renders edited images) is applied with magnitudes ``t`` from a grid to the same ``n_samples``
latents. The factor regressor (:mod:`navcuda.metrics.factor_regressor`) reads the 14 factors off
every image; per latent and per factor, the least-squares slope of the (unclamped) predictions
over the ``t`` grid is the edit's local effect, and its mean over latents is the **effect**
vector ``[14]``, in *normalised factor units per unit of t* (a factor's full range is 1).

**Disentanglement** is the concentration of the effect on its top factor::

    disentanglement = max_k |effect_k| / sum_k |effect_k|   in [1/14, 1]

1 means the edit moves one factor only, 1/2 two factors equally, 1/14 all factors equally; it is
scale-free (independent of the units of t). The regressor's own cross-talk (a small response of
other factors' predictions) keeps it slightly below 1 even for a perfectly clean edit, and as a
ratio it is noisy when the whole effect is tiny -- look at ``effect_norm`` too.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from navcuda._checks import positive_int
from navcuda.toyworld import FACTOR_NAMES, NUM_FACTORS

__all__ = [
    "EditScore",
    "LatentEdit",
    "score_edit",
    "score_image_edit",
    "score_latent_edit",
]

#: ``(sample_indices [b] long, t) -> images [b, 3, H, W]`` in [-1, 1].
ImageEdit = Callable[[torch.Tensor, float], torch.Tensor]
#: ``(ws, t) -> edited ws`` (``ws``: ``[B, w_dim]`` or ``[B, num_ws, w_dim]``).
LatentEdit = Callable[[torch.Tensor, float], torch.Tensor]


@dataclass
class EditScore:
    """Effect of one edit on the toy world's factors (see the module docstring).

    Attributes:
        name: the edit's name.
        ts: the t grid ``[T]``.
        effect: mean per-latent slope ``[14]`` (factor units per unit t).
        effect_std: standard deviation of the per-latent slopes over the latents ``[14]``.
        predictions: mean predicted factors at each t ``[T, 14]`` (unclamped).
        disentanglement: ``max|effect| / sum|effect|`` in ``[1/14, 1]``.
        top_index, top_factor: the factor with the largest ``|effect|``.
        effect_norm: ``||effect||_2``.
        n_samples: number of latents averaged over.
    """

    name: str
    ts: torch.Tensor
    effect: torch.Tensor
    effect_std: torch.Tensor
    predictions: torch.Tensor
    disentanglement: float
    top_index: int
    top_factor: str
    effect_norm: float
    n_samples: int
    meta: dict = field(default_factory=dict)

    def ranking(self) -> list[tuple[str, float]]:
        """``(factor, effect)`` pairs, largest ``|effect|`` first."""
        order = torch.argsort(self.effect.abs(), descending=True)
        return [(FACTOR_NAMES[i], float(self.effect[i])) for i in order.tolist()]

    def to_dict(self) -> dict:
        """JSON-able summary."""
        return {
            "name": self.name,
            "ts": [float(t) for t in self.ts],
            "effect": {n: float(v) for n, v in zip(FACTOR_NAMES, self.effect, strict=True)},
            "effect_std": {n: float(v) for n, v in zip(FACTOR_NAMES, self.effect_std, strict=True)},
            "disentanglement": self.disentanglement,
            "top_factor": self.top_factor,
            "top_index": self.top_index,
            "effect_norm": self.effect_norm,
            "n_samples": self.n_samples,
            "meta": dict(self.meta),
        }


def _check_ts(ts: Sequence[float] | torch.Tensor) -> torch.Tensor:
    t = torch.as_tensor(ts, dtype=torch.float64).flatten()
    if t.numel() < 2 or not torch.isfinite(t).all():
        raise ValueError("ts must hold at least 2 finite values")
    if float(t.max() - t.min()) == 0.0:
        raise ValueError("ts must not all be equal (no slope can be fitted)")
    return t


def _regressor(regressor):
    if regressor is None:
        from navcuda.metrics.factor_regressor import load_factor_regressor

        regressor = load_factor_regressor()
    return regressor


@torch.no_grad()
def score_image_edit(
    edit: ImageEdit,
    ts: Sequence[float] | torch.Tensor,
    n_samples: int,
    regressor=None,
    batch_size: int = 64,
    name: str = "edit",
) -> EditScore:
    """Score an edit given as a renderer ``edit(sample_indices, t) -> images``.

    ``edit`` must render the same underlying samples for the same indices at every ``t`` (e.g. the
    toy world itself, ``render(f[idx] + t * e_k)``, or a generator with fixed latents). This is
    the core of :func:`score_edit` and :func:`score_latent_edit`.
    """
    t = _check_ts(ts)
    positive_int(n_samples, "n_samples")
    positive_int(batch_size, "batch_size")
    reg = _regressor(regressor)
    dev = next(reg.parameters()).device
    preds = torch.empty(t.numel(), n_samples, NUM_FACTORS, dtype=torch.float64)
    for start in range(0, n_samples, batch_size):
        idx = torch.arange(start, min(start + batch_size, n_samples))
        for i, ti in enumerate(t.tolist()):
            img = edit(idx, ti)
            if img.shape[0] != idx.numel():
                raise ValueError(f"edit returned {img.shape[0]} images for {idx.numel()} indices")
            preds[i, idx] = reg.predict_raw(img.to(dev)).to("cpu", torch.float64)
    if not torch.isfinite(preds).all():
        raise ValueError("the regressor's predictions contain NaN or Inf (non-finite images?)")
    tc = (t - t.mean()).view(-1, 1, 1)
    slopes = (tc * (preds - preds.mean(0, keepdim=True))).sum(0) / (tc**2).sum()  # [N, 14]
    effect = slopes.mean(0)
    std = slopes.std(0, unbiased=True) if n_samples > 1 else torch.zeros_like(effect)
    mag = effect.abs()
    total = float(mag.sum())
    top = int(mag.argmax())
    disent = float(mag[top] / total) if total > 0 else 1.0 / NUM_FACTORS
    return EditScore(
        name=name,
        ts=t,
        effect=effect,
        effect_std=std,
        predictions=preds.mean(1),
        disentanglement=disent,
        top_index=top,
        top_factor=FACTOR_NAMES[top],
        effect_norm=float(effect.norm()),
        n_samples=n_samples,
    )


def _inputs(generator, z, n_samples, seed, truncation_psi, batch_size):
    """The generator's inputs: ``n_samples`` drawn with ``seed``, or those of latents ``z``."""
    if z is None:
        return generator.sample(n_samples, seed, truncation_psi=truncation_psi)
    z_dim = generator.config.z_dim
    if z.ndim != 2 or z.shape[1] != z_dim:
        raise ValueError(f"z must be [N, {z_dim}], got {list(z.shape)}")
    return generator.from_z(z.to(generator.device), truncation_psi, batch_size)


@torch.no_grad()
def score_edit(
    generator,
    direction,
    ts: Sequence[float] | torch.Tensor,
    z: torch.Tensor | None = None,
    n_samples: int = 64,
    regressor=None,
    seed: int = 0,
    batch_size: int = 32,
    truncation_psi: float = 1.0,
    noise_mode: str = "const",
) -> EditScore:
    """Score a :class:`~navcuda.shift.Direction` (weight-space, or ``basis="latent"``) of
    ``generator``: images ``G_{theta + t xi}(z)`` for every ``t`` in ``ts``.

    ``z [N, z_dim]``, or ``n_samples`` latents drawn with ``seed``. Uses
    :func:`navcuda.shift.synthesize_shifted`, so any direction it accepts works.
    """
    from navcuda.shift import synthesize_shifted

    inputs = _inputs(generator, z, n_samples, seed, truncation_psi, batch_size)

    def edit(idx: torch.Tensor, t: float) -> torch.Tensor:
        n = len(idx)
        return synthesize_shifted(
            generator, inputs.take(idx), [direction] * n, torch.full((n,), t), noise_mode
        )

    score = score_image_edit(
        edit, ts, len(inputs), regressor, batch_size, name=direction.name or direction.layer
    )
    score.meta.update({"layer": direction.layer, "basis": direction.basis, "seed": seed})
    return score


@torch.no_grad()
def score_latent_edit(
    generator,
    edit_fn: LatentEdit,
    ts: Sequence[float] | torch.Tensor,
    z: torch.Tensor | None = None,
    n_samples: int = 64,
    regressor=None,
    seed: int = 0,
    batch_size: int = 32,
    truncation_psi: float = 1.0,
    noise_mode: str = "const",
    name: str = "latent edit",
) -> EditScore:
    """Score a latent-space edit ``edit_fn(ws, t) -> ws'`` (GANSpace, SeFa, ...) the same way:
    images ``generator.render`` of the inputs with the latent ``w(z)`` replaced by
    ``edit_fn(w(z), t)``."""
    inputs = _inputs(generator, z, n_samples, seed, truncation_psi, batch_size)
    key = generator.latent.key

    def edit(idx: torch.Tensor, t: float) -> torch.Tensor:
        rows = inputs.take(idx).with_options(noise_mode=noise_mode)
        return generator.render(rows.replace(**{key: edit_fn(rows[key], t)}))

    score = score_image_edit(edit, ts, len(inputs), regressor, batch_size, name=name)
    score.meta.update({"layer": "w", "basis": "latent-fn", "seed": seed})
    return score
