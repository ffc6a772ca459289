"""Weight spaces of conv layers and directions in them; rendering with shifted weights.

A conv kernel ``W [out, in, kh, kw]`` is flattened as in the paper's official code: permuted to
``(kh, kw, in, out)`` and reshaped to ``M [kh*kw*in, out]`` (rows: kernel taps x input channels,
columns: output channels). Its thin SVD ``M = U diag(s) Vh`` (float64) spans the *singular-value
basis*: a direction with coefficients ``d [rank]`` is ``Delta = unflatten(U diag(d) Vh) / ||d||``,
of unit Frobenius norm. The edited generator uses ``W + t * Delta``; ``t`` is the Frobenius norm of
the shift. A direction may also be given directly in weight space (imported files, Hessian
eigenvectors).

Nothing here modifies a model's parameters: shifts are passed to the synthesis network per call.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch

from navcuda.models.layers import LayerInfo, get_layer, layer_weight
from navcuda.models.stylegan2 import Generator, LayerShift, NoiseMode

__all__ = [
    "LATENT_LAYER",
    "LayerSpace",
    "Direction",
    "layer_space",
    "shift_deltas",
    "synthesize_shifted",
    "generate",
    "seeded_ws",
    "flatten_kernel",
    "unflatten_kernel",
]

Basis = Literal["svd", "weight", "latent"]

#: Pseudo layer name of latent-space (W) directions, used by the latent baselines.
LATENT_LAYER = "w"


@torch.no_grad()
def seeded_ws(
    generator: Generator,
    n: int,
    seed: int,
    truncation_psi: float = 1.0,
    batch_size: int = 256,
) -> torch.Tensor:
    """``n`` latents ``w = mapping(z)`` from ``z ~ N(0, I)`` drawn on the CPU with ``seed`` (the
    same on every device), mapped in chunks of ``batch_size``; ``[n, w_dim]`` in the generator's
    device and dtype."""
    z = torch.randn(n, generator.config.z_dim, generator=torch.Generator().manual_seed(seed))
    dev, dtype = generator.w_avg.device, generator.w_avg.dtype
    return torch.cat(
        [generator.mapping(c.to(dev, dtype), truncation_psi) for c in z.split(batch_size)]
    )


def flatten_kernel(w: torch.Tensor) -> torch.Tensor:
    """``[..., out, in, kh, kw] -> [..., kh*kw*in, out]`` (the official code's flattening)."""
    *lead, o, i, kh, kw = w.shape
    n = len(lead)
    perm = (*range(n), n + 2, n + 3, n + 1, n)
    return w.permute(perm).reshape(*lead, kh * kw * i, o)


def unflatten_kernel(m: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Inverse of :func:`flatten_kernel`: ``[..., kh*kw*in, out] -> [..., out, in, kh, kw]``."""
    o, i, kh, kw = shape
    *lead, rows, cols = m.shape
    if rows != kh * kw * i or cols != o:
        raise ValueError(f"cannot unflatten {list(m.shape)} into kernel shape {list(shape)}")
    n = len(lead)
    x = m.reshape(*lead, kh, kw, i, o)
    return x.permute(*range(n), n + 3, n + 2, n, n + 1)


class LayerSpace:
    """SVD of one layer's flattened raw kernel, computed once in float64.

    Attributes: ``u [kh*kw*in, r]``, ``s [r]``, ``vh [r, out]`` (float64, on the weight's device),
    ``weight_shape``, ``rank r = min(kh*kw*in, out)``, ``layer`` (a :class:`LayerInfo` or None).
    """

    def __init__(self, weight: torch.Tensor, layer: LayerInfo | None = None) -> None:
        if weight.ndim != 4:
            raise ValueError(f"expected a kernel [out, in, kh, kw], got shape {list(weight.shape)}")
        if not weight.is_floating_point():
            raise TypeError(f"expected a floating kernel, got {weight.dtype}")
        w64 = weight.detach().to(torch.float64)
        if not torch.isfinite(w64).all():
            raise ValueError("the kernel contains NaN or Inf values")
        self.layer = layer
        self.weight_shape = tuple(weight.shape)
        self.u, self.s, self.vh = torch.linalg.svd(flatten_kernel(w64), full_matrices=False)

    @property
    def rank(self) -> int:
        return int(self.s.numel())

    def reconstruct(self) -> torch.Tensor:
        """``U diag(s) Vh`` unflattened: the kernel again, float64 ``[out, in, kh, kw]``."""
        return unflatten_kernel((self.u * self.s) @ self.vh, self.weight_shape)

    def delta(self, coefficients: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Unit-norm shifts from singular-value coefficients.

        ``coefficients [..., r]`` -> ``[..., out, in, kh, kw]``, each of Frobenius norm 1
        (computed in float64, returned in ``dtype``). All-zero coefficient vectors are rejected.
        """
        d = torch.as_tensor(coefficients).to(device=self.s.device, dtype=torch.float64)
        if d.shape[-1] != self.rank:
            raise ValueError(f"expected {self.rank} coefficients, got shape {list(d.shape)}")
        norm = d.norm(dim=-1, keepdim=True)
        if (norm == 0).any() or not torch.isfinite(norm).all():
            raise ValueError("direction coefficients must be finite and not all zero")
        m = (self.u * (d / norm).unsqueeze(-2)) @ self.vh
        return unflatten_kernel(m, self.weight_shape).to(dtype)


_SPACE_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def layer_space(generator: Generator, layer: int | str) -> LayerSpace:
    """The (cached) :class:`LayerSpace` of a generator's layer.

    The cache lives as long as the generator and is invalidated when the layer's weight changes:
    modified in place (its version counter) or replaced by another tensor (checked by identity
    through a weak reference, not by address, which a new tensor can reuse).
    """
    info = get_layer(generator, layer)
    if not info.shiftable:
        raise ValueError(f"layer {info.name!r} ({info.kind}) has no shift space")
    w = layer_weight(generator, info.name)
    owner = w._base if w._base is not None else w  # the parameter (w is a fresh view of it)
    key = (w._version, w.device, w.dtype)
    per_model = _SPACE_CACHE.setdefault(generator, {})
    entry = per_model.get(info.name)
    if entry is None or entry[0] != key or entry[1]() is not owner:
        entry = (key, weakref.ref(owner), LayerSpace(w, info))
        per_model[info.name] = entry
    return entry[2]


@dataclass
class Direction:
    """A direction in one layer's weight space.

    ``basis="svd"``: ``coefficients [rank]`` over the layer's singular vectors. ``basis="weight"``:
    ``coefficients [out, in, kh, kw]`` is the shift itself. Either way :meth:`delta` returns the
    unit-Frobenius-norm shift; ``amplitude`` is the recommended ``|t|`` (None when unknown).
    ``basis="latent"`` (layer ``"w"``): ``coefficients [w_dim]`` is a direction in W, applied as
    ``w + t * v / |v|`` to every style input — the latent-space baselines, for comparison.
    """

    layer: str
    basis: Basis
    coefficients: torch.Tensor
    name: str | None = None
    amplitude: float | None = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.basis not in ("svd", "weight", "latent"):
            raise ValueError(f"basis must be 'svd', 'weight' or 'latent', got {self.basis!r}")
        c = torch.as_tensor(self.coefficients)
        if not c.is_floating_point():
            raise TypeError(f"direction coefficients must be floating, got {c.dtype}")
        if not torch.isfinite(c).all():
            raise ValueError(f"direction {self.name or self.layer!r} has NaN or Inf coefficients")
        if float(c.abs().max()) == 0.0:
            raise ValueError(f"direction {self.name or self.layer!r} is all zeros")
        expected_ndim = 4 if self.basis == "weight" else 1
        if c.ndim != expected_ndim:
            raise ValueError(
                f"basis {self.basis!r} needs coefficients of rank {expected_ndim}, "
                f"got shape {list(c.shape)}"
            )
        self.coefficients = c.detach()

    @classmethod
    def singular(cls, layer: str, index: int, rank: int, amplitude: float | None = None):
        """The rank-one shift ``u_i v_i^T`` of singular value ``index`` (the SVD baseline)."""
        if not 0 <= index < rank:
            raise ValueError(f"singular index must be in [0, {rank}), got {index}")
        c = torch.zeros(rank, dtype=torch.float64)
        c[index] = 1.0
        return cls(layer, "svd", c, name=f"sv{index}", amplitude=amplitude)

    def delta(self, generator: Generator, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The unit-norm shift ``[out, in, kh, kw]`` of this direction on ``generator``."""
        if self.basis == "latent":
            raise ValueError("a latent direction has no weight shift; use latent_shift()")
        info = get_layer(generator, self.layer)
        if self.basis == "svd":
            return layer_space(generator, info.name).delta(self.coefficients, dtype)
        c = self.coefficients
        if tuple(c.shape) != info.weight_shape:
            raise ValueError(
                f"direction {self.name or ''!r} has shape {list(c.shape)}, but layer {info.name} "
                f"has weight shape {list(info.weight_shape)}"
            )
        c64 = c.to(torch.float64)
        return (c64 / c64.norm()).to(device=layer_weight(generator, info.name).device, dtype=dtype)

    def latent_shift(self, generator: Generator, dtype: torch.dtype = torch.float32):
        """The unit-norm W-space vector ``[w_dim]`` of a latent direction."""
        if self.basis != "latent":
            raise ValueError(f"direction {self.name!r} is not a latent direction")
        v = self.coefficients.to(torch.float64)
        if v.numel() != generator.config.w_dim:
            raise ValueError(
                f"latent direction has {v.numel()} entries, the model's w_dim is "
                f"{generator.config.w_dim}"
            )
        return (v / v.norm()).to(device=generator.w_avg.device, dtype=dtype)


def shift_deltas(
    generator: Generator,
    directions: Direction | Sequence[Direction],
    t: torch.Tensor | Sequence[float] | float,
) -> LayerShift:
    """Per-sample shifts ``t_b * Delta_b`` as a :class:`LayerShift` for :meth:`Generator.synthesis`.

    ``directions``: one direction (all samples) or ``B`` directions of the same layer; ``t``: a
    scalar or ``[B]``. One direction with a scalar ``t`` gives a shared ``delta``
    ``[out, in, kh, kw]``; otherwise the result is a split shift
    (:meth:`LayerShift.split`): each distinct direction's unit shift computed once
    (``[n_dir, out, in, kh, kw]``; the same :class:`Direction` object repeated counts once), with
    ``t [B]`` and the per-sample ``index [B]``, which the generator renders without materialising
    per-sample kernels. ``t`` may require grad.
    """
    single = isinstance(directions, Direction)
    dirs = [directions] if single else list(directions)
    if not dirs:
        raise ValueError("no directions given")
    layers = {get_layer(generator, d.layer).name for d in dirs}
    if len(layers) != 1:
        raise ValueError(f"all directions of one call must share a layer, got {sorted(layers)}")
    layer = layers.pop()
    weight = layer_weight(generator, layer)
    t_ = torch.as_tensor(t, dtype=weight.dtype, device=weight.device)
    if not torch.isfinite(t_).all():
        raise ValueError("shift magnitudes t must be finite")
    if t_.ndim > 1:
        raise ValueError(f"t must be a scalar or [B], got shape {list(t_.shape)}")
    if single and t_.ndim == 0:
        return LayerShift(layer, t_ * dirs[0].delta(generator, weight.dtype))
    if t_.ndim == 0:
        t_ = t_.expand(len(dirs))
    if len(dirs) not in (1, t_.numel()):
        raise ValueError(f"got {len(dirs)} directions for {t_.numel()} shift magnitudes")
    # Distinct directions (by identity: strips and evaluations repeat the same object).
    slot: dict[int, int] = {}
    unique: list[Direction] = []
    for d in dirs:
        if id(d) not in slot:
            slot[id(d)] = len(unique)
            unique.append(d)
    index = [slot[id(d)] for d in dirs]
    if len(dirs) == 1:
        index = index * t_.numel()
    deltas = torch.stack([d.delta(generator, weight.dtype) for d in unique])  # [n, o, i, k, k]
    index_t = torch.tensor(index, dtype=torch.int64, device=weight.device)
    return LayerShift.split(layer, deltas, t_.contiguous(), index_t)


def synthesize_shifted(
    generator: Generator,
    ws: torch.Tensor,
    directions: Direction | Sequence[Direction] | None = None,
    t: torch.Tensor | Sequence[float] | float = 0.0,
    noise_mode: NoiseMode = "const",
) -> torch.Tensor:
    """Render ``ws`` with the generator's weights shifted by ``t * direction`` (functional).

    ``ws``: ``[B, w_dim]`` or ``[B, num_ws, w_dim]``. Returns ``[B, C, R, R]``.
    """
    if directions is None:
        return generator.synthesis(ws, noise_mode=noise_mode)
    dirs = [directions] if isinstance(directions, Direction) else list(directions)
    latent = [d.basis == "latent" for d in dirs]
    if any(latent):
        if not all(latent):
            raise ValueError("one call cannot mix latent and weight-space directions")
        ws = generator._broadcast_ws(ws)
        v = torch.stack([d.latent_shift(generator, ws.dtype) for d in dirs])  # [n, w_dim]
        t_ = torch.as_tensor(t, dtype=ws.dtype, device=ws.device).reshape(-1, 1)
        return generator.synthesis(ws + (t_ * v).unsqueeze(1), noise_mode=noise_mode)
    shift = shift_deltas(generator, directions, t)
    return generator.synthesis(ws, noise_mode=noise_mode, shift=shift)


def generate(
    generator: Generator,
    z: torch.Tensor,
    directions: Direction | Sequence[Direction] | None = None,
    t: torch.Tensor | Sequence[float] | float = 0.0,
    truncation_psi: float = 1.0,
    noise_mode: NoiseMode = "const",
) -> torch.Tensor:
    """``G_{theta + t * xi}(z)``: ``z [B, z_dim] -> [B, C, R, R]``.

    Args:
        z: latents ``[B, z_dim]`` on the generator's device.
        directions: one :class:`Direction` (every sample), one per sample, or None (unshifted).
        t: the shift per sample (``[B]``) or one for all, in absolute units (multiply by
            ``direction.amplitude`` for the recommended strength).
        truncation_psi: 1.0 (none) by default; :func:`navcuda.render` defaults to 0.7, so the
            same seed looks different there unless both are set alike.
        noise_mode: ``"const"`` (the generator's fixed noise; default), ``"random"`` or ``"none"``.

    Images are about ``[-1, 1]`` and not clamped. Differentiable: outside ``torch.no_grad()``
    the call records a graph (the parameters require gradients), so wrap inference in it.
    """
    ws = generator.mapping(z, truncation_psi)
    return synthesize_shifted(generator, ws, directions, t, noise_mode)
