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

import math
import warnings
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch

from navcuda.models.interface import (
    GeneratorError,
    Inputs,
    LayerInfo,
    LayerShift,
    ShiftableGenerator,
)
from navcuda.ops.kernel_layout import flatten_kernel, unflatten_kernel

__all__ = [
    "LARGE_SHIFT_FACTOR",
    "LATENT_LAYER",
    "LargeShiftWarning",
    "LayerSpace",
    "Direction",
    "Combination",
    "Term",
    "as_inputs",
    "combined_shift",
    "layer_space",
    "shift_deltas",
    "shift_reference",
    "synthesize_shifted",
    "generate",
    "flatten_kernel",
    "unflatten_kernel",
]

Basis = Literal["svd", "weight", "latent"]

#: Pseudo layer name of latent-space (W) directions, used by the latent baselines.
LATENT_LAYER = "w"


def as_inputs(generator: ShiftableGenerator, inputs: Inputs | torch.Tensor) -> Inputs:
    """``inputs`` as :class:`Inputs`: as they are, or a tensor of latents (``ws [B, w_dim]`` or
    ``[B, num_ws, w_dim]`` for StyleGAN generators) made into inputs."""
    if isinstance(inputs, Inputs):
        return inputs
    return generator.from_latents(inputs)


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


def layer_space(generator: ShiftableGenerator, layer: int | str) -> LayerSpace:
    """The (cached) :class:`LayerSpace` of a generator's layer.

    The cache lives as long as the generator and holds a copy of the kernel it decomposed: it is
    rebuilt when the layer's effective kernel changes in any way (modified in place, replaced,
    or a parametrisation's statistics updated), compared by value on each lookup.
    """
    info = generator.layer(layer)
    if not info.shiftable:
        raise GeneratorError(f"layer {info.name!r} ({info.role or info.kind}) has no shift space")
    w = generator.kernel(info.name).detach()
    per_model = _SPACE_CACHE.setdefault(generator, {})
    entry = per_model.get(info.name)
    if entry is None or not _same(entry[0], w):
        entry = (w.clone(), LayerSpace(w, info))
        per_model[info.name] = entry
    return entry[1]


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and a.device == b.device and torch.equal(a, b)


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

    def delta(
        self, generator: ShiftableGenerator, dtype: torch.dtype = torch.float32
    ) -> torch.Tensor:
        """The unit-norm shift ``[out, in, kh, kw]`` of this direction on ``generator``."""
        if self.basis == "latent":
            raise ValueError("a latent direction has no weight shift; use latent_shift()")
        info = generator.layer(self.layer)
        if self.basis == "svd":
            return layer_space(generator, info.name).delta(self.coefficients, dtype)
        c = self.coefficients
        if tuple(c.shape) != info.weight_shape:
            raise ValueError(
                f"direction {self.name or ''!r} has shape {list(c.shape)}, but layer {info.name} "
                f"has weight shape {list(info.weight_shape)}"
            )
        c64 = c.to(torch.float64)
        return (c64 / c64.norm()).to(device=generator.device, dtype=dtype)

    def latent_shift(self, generator: ShiftableGenerator, dtype: torch.dtype = torch.float32):
        """The unit-norm latent vector ``[dim]`` of a latent direction."""
        if self.basis != "latent":
            raise ValueError(f"direction {self.name!r} is not a latent direction")
        space = generator.latent
        if space is None:
            raise GeneratorError(
                f"direction {self.name!r} is a latent direction, but {generator.architecture} "
                "exposes no latent space"
            )
        v = self.coefficients.to(torch.float64)
        if v.numel() != space.dim:
            raise ValueError(
                f"latent direction has {v.numel()} entries, the model's latent ({space.key}) has "
                f"{space.dim}"
            )
        return (v / v.norm()).to(device=generator.device, dtype=dtype)


def _magnitudes(generator: ShiftableGenerator, t) -> torch.Tensor:
    t_ = torch.as_tensor(t, dtype=generator.dtype, device=generator.device)
    if not torch.isfinite(t_).all():
        raise ValueError("shift magnitudes t must be finite")
    if t_.ndim > 1:
        raise ValueError(f"t must be a scalar or [B], got shape {list(t_.shape)}")
    return t_


class LargeShiftWarning(UserWarning):
    """A shift ``|t|`` over :data:`LARGE_SHIFT_FACTOR` times :func:`shift_reference`: far beyond
    any edit, the images are noise (it is rendered all the same: it may be intended)."""


#: ``|t|`` beyond this many times :func:`shift_reference` warns (:class:`LargeShiftWarning`);
#: calibrated amplitudes lie below 10 times it (the calibration's search bracket).
LARGE_SHIFT_FACTOR = 100.0


def shift_reference(generator: ShiftableGenerator, direction: Direction) -> tuple[float, str]:
    """The norm a shift ``t`` of ``direction`` compares with, and what it is: the Frobenius norm
    of its layer's kernel (``|W + t Delta|`` is about ``|t|`` beyond it), or for a latent
    direction ``sqrt(dim)``, the norm of a standard normal latent."""
    if direction.basis == "latent":
        dim = direction.coefficients.numel()
        return math.sqrt(dim), f"sqrt({dim}), the typical norm of a latent"
    info = generator.layer(direction.layer)
    norm = float(generator.kernel(info.name).detach().double().norm())
    return norm, f"the norm of layer {info.name}'s kernel"


def _warn_if_large(generator: ShiftableGenerator, direction: Direction, t: torch.Tensor) -> None:
    biggest = float(t.detach().abs().max())
    ref, what = shift_reference(generator, direction)
    if biggest > LARGE_SHIFT_FACTOR * ref:
        warnings.warn(
            f"shift |t| = {biggest:.3g} is {biggest / ref:.3g} x {what} ({ref:.3g}): far beyond "
            f"any edit (calibrated amplitudes lie below {10 * ref:.3g}), the images will be "
            "noise; pass a smaller t if that is not what you want",
            LargeShiftWarning,
            stacklevel=3,
        )


def shift_deltas(
    generator: ShiftableGenerator,
    directions: Direction | Sequence[Direction],
    t: torch.Tensor | Sequence[float] | float,
) -> LayerShift:
    """Per-sample shifts ``t_b * Delta_b`` as a :class:`LayerShift` for the generator's
    :meth:`~navcuda.models.interface.ShiftableGenerator.render`.

    ``directions``: one direction (all samples) or ``B`` directions of the same layer; ``t``: a
    scalar or ``[B]``. One direction with a scalar ``t`` gives a shared ``delta``
    ``[out, in, kh, kw]``; otherwise the result is a split shift
    (:meth:`LayerShift.split`): each distinct direction's unit shift computed once
    (``[n_dir, out, in, kh, kw]``; the same :class:`Direction` object repeated counts once), with
    ``t [B]`` and the per-sample ``index [B]``, which generators render without materialising
    per-sample kernels where they can. ``t`` may require grad.
    """
    single = isinstance(directions, Direction)
    dirs = [directions] if single else list(directions)
    if not dirs:
        raise ValueError("no directions given")
    layers = {generator.layer(d.layer).name for d in dirs}
    if len(layers) != 1:
        raise ValueError(f"all directions of one call must share a layer, got {sorted(layers)}")
    layer = layers.pop()
    t_ = _magnitudes(generator, t)
    dtype = generator.dtype
    if single and t_.ndim == 0:
        return LayerShift(layer, t_ * dirs[0].delta(generator, dtype))
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
    deltas = torch.stack([d.delta(generator, dtype) for d in unique])  # [n, o, i, k, k]
    index_t = torch.tensor(index, dtype=torch.int64, device=generator.device)
    return LayerShift.split(layer, deltas, t_.contiguous(), index_t)


# ----------------------------------------------------------------------------- composition


@dataclass(frozen=True)
class Term:
    """One direction of a :class:`Combination` and its shift ``t``: absolute (multiply by
    ``direction.amplitude`` for the recommended strength), a float for every sample or a tensor
    ``[B]`` (one per sample; may require grad)."""

    direction: Direction
    t: float | torch.Tensor


class Combination:
    """Several directions applied at once, each with its own ``t``: the generator
    ``G_{theta + sum_k t_k Delta_k}`` at the latent ``w + sum_j t_j v_j``.

    Terms may lie in one layer or several, and in the latent space (``basis="latent"``) beside
    weight-space ones. Each ``t`` is a float (every sample) or ``[B]`` (one per sample). Pass a
    combination as ``directions`` to :func:`synthesize_shifted` or :func:`generate`;
    :func:`combined_shift` gives its shifts. The same direction may appear twice (its ``t`` add).

    Example: ``Combination([(ds.by_name("eye size"), 2.0), (ds.by_name("nose length"), -1.5)])``.
    ``name`` labels it where directions are listed (:func:`navcuda.render` strips); a list of
    per-sample "directions" may mix combinations and directions, each sample's ``t`` then
    scaling its combination (:func:`synthesize_shifted`).
    """

    __slots__ = ("terms", "name")

    #: A combination has no recommended amplitude: its ``t`` are absolute (renders that scale
    #: directions by their amplitude scale a combination by 1).
    amplitude = None

    def __init__(
        self,
        terms: Iterable[Term | tuple[Direction, float | torch.Tensor]],
        name: str | None = None,
    ) -> None:
        items: list[Term] = []
        for item in terms:
            term = item if isinstance(item, Term) else Term(*item)
            if not isinstance(term.direction, Direction):
                raise TypeError(
                    f"a combination's terms are (Direction, t) pairs, got "
                    f"{type(term.direction).__name__}"
                )
            items.append(term)
        if not items:
            raise ValueError("a combination needs at least one (direction, t) term")
        self.terms: tuple[Term, ...] = tuple(items)
        self.name = name

    def __len__(self) -> int:
        return len(self.terms)

    def __iter__(self):
        return iter(self.terms)

    def __repr__(self) -> str:
        def show(t: float | torch.Tensor) -> str:
            if isinstance(t, torch.Tensor) and t.ndim:
                return f"t[{t.numel()}]"
            return f"{float(t):.4g}"

        parts = [f"{x.direction.name or x.direction.layer}: {show(x.t)}" for x in self.terms]
        return f"Combination({', '.join(parts)})"

    def scaled(self, factor: float | torch.Tensor) -> Combination:
        """Every ``t`` multiplied by ``factor`` (a float, or ``[B]`` for one scale per sample:
        a sweep of the whole edit)."""
        return Combination((Term(x.direction, x.t * factor) for x in self.terms), self.name)


def combined_shift(
    generator: ShiftableGenerator, combination: Combination, batch: int
) -> tuple[list[LayerShift], torch.Tensor | None]:
    """The shifts of ``combination`` for a batch of ``batch`` samples: one :class:`LayerShift`
    per layer it touches (in order of first appearance) and the latent offset ``[B, dim]`` of its
    latent directions (None without any).

    The directions of one layer add up to one shift ``sum_k t_k Delta_k``: with every ``t`` a
    float, one shared ``delta`` (the generator's dense path); one direction with ``t [B]``, a split
    shift (:func:`shift_deltas`); several singular-basis directions with per-sample ``t``, one
    :class:`~navcuda.ops.shifted_modconv.SVDShift` whose coefficient row ``b`` is
    ``sum_k t_bk c_k / |c_k|`` (a sum of shifts in the singular basis stays in it: no per-sample
    kernel is materialised); other mixtures, the materialised ``[B, out, in, kh, kw]``. A shift
    beyond :data:`LARGE_SHIFT_FACTOR` warns as in :func:`synthesize_shifted`.
    """
    if not isinstance(combination, Combination):
        raise TypeError(f"expected a Combination, got {type(combination).__name__}")
    latent: list[tuple[Direction, torch.Tensor]] = []
    by_layer: dict[str, list[tuple[Direction, torch.Tensor]]] = {}
    for term in combination:
        t = _magnitudes(generator, term.t)
        if t.ndim == 1 and t.numel() == 1:
            t = t.reshape(())
        if t.ndim == 1 and t.numel() != batch:
            raise ValueError(
                f"direction {term.direction.name or term.direction.layer!r}: t has "
                f"{t.numel()} values for a batch of {batch} (give one, or one per sample)"
            )
        _warn_if_large(generator, term.direction, t)
        if term.direction.basis == "latent":
            latent.append((term.direction, t))
        else:
            name = generator.layer(term.direction.layer).name
            by_layer.setdefault(name, []).append((term.direction, t))
    shifts = [_layer_sum(generator, name, items, batch) for name, items in by_layer.items()]
    offset = None
    if latent:
        dt = generator.dtype
        offset = sum(
            (t.reshape(-1, 1) * d.latent_shift(generator, dt) for d, t in latent[1:]),
            latent[0][1].reshape(-1, 1) * latent[0][0].latent_shift(generator, dt),
        ).expand(batch, -1)
    return shifts, offset


def _layer_sum(
    generator: ShiftableGenerator,
    layer: str,
    items: list[tuple[Direction, torch.Tensor]],
    batch: int,
) -> LayerShift:
    """``sum_k t_k Delta_k`` of one layer's directions as one :class:`LayerShift`."""
    dtype = generator.dtype
    if all(t.ndim == 0 for _, t in items):  # one shift for the batch (one term: as shift_deltas)
        delta = items[0][1] * items[0][0].delta(generator, dtype)
        for d, t in items[1:]:
            delta = delta + t * d.delta(generator, dtype)
        return LayerShift(layer, delta)
    if len(items) == 1:
        d, t = items[0]
        return shift_deltas(generator, d, t)
    ts = torch.stack([t.expand(batch) for _, t in items], dim=1)  # [B, K]
    if all(d.basis == "svd" for d, _ in items):
        space = layer_space(generator, layer)
        dev = space.u.device
        unit = torch.stack([d.coefficients.to(dev, torch.float64) for d, _ in items])
        unit = unit / unit.norm(dim=1, keepdim=True)  # [K, r]
        rows = ts.to(dev, torch.float64) @ unit  # [B, r]: U diag(rows_b) Vh is sample b's shift
        norm = rows.norm(dim=1)
        zero = norm == 0  # no shift: any non-zero row with t = 0
        rows = torch.where(zero[:, None], unit[:1].expand_as(rows), rows)
        u, s, vh = (x.to(dtype) for x in (space.u, space.s, space.vh))
        return LayerShift.svd(layer, u, s, vh, norm.to(dtype), rows.to(dtype))
    deltas = torch.stack([d.delta(generator, dtype) for d, _ in items])  # [K, o, i, kh, kw]
    return LayerShift(layer, torch.einsum("bk,koixy->boixy", ts.to(dtype), deltas))


def _per_sample(items: list, t: torch.Tensor, n: int) -> Combination:
    """One combination for a batch whose sample ``b`` uses ``items[b]`` (a direction or a
    combination; one item: every sample) scaled by ``t[b]``."""
    if len(items) not in (1, n) or t.numel() not in (1, n):
        raise ValueError(
            f"a batch of {n} samples takes one direction or combination or {n}, got "
            f"{len(items)}, and one t or {n}, got {t.numel()}"
        )
    per = items * n if len(items) == 1 else items
    t_ = t.reshape(()).expand(n) if t.numel() == 1 else t
    terms: list[Term] = []
    for obj in {id(x): x for x in per}.values():
        mask = torch.tensor([x is obj for x in per], device=t_.device)
        scale = torch.where(mask, t_, torch.zeros_like(t_))
        if isinstance(obj, Combination):
            terms.extend(Term(x.direction, x.t * scale) for x in obj)
        elif isinstance(obj, Direction):
            terms.append(Term(obj, scale))
        else:
            raise TypeError(f"expected Directions or Combinations, got {type(obj).__name__}")
    return Combination(terms)


def synthesize_shifted(
    generator: ShiftableGenerator,
    inputs: Inputs | torch.Tensor,
    directions: Direction | Sequence[Direction] | Combination | None = None,
    t: torch.Tensor | Sequence[float] | float = 0.0,
    noise_mode: str | None = None,
) -> torch.Tensor:
    """Render ``inputs`` with the generator shifted by ``t * direction`` (functional).

    ``inputs``: :class:`~navcuda.models.interface.Inputs`, or for StyleGAN generators ``ws``
    (``[B, w_dim]`` or ``[B, num_ws, w_dim]``). ``directions``: one (every sample), one per
    sample, or None; weight-space directions must share a layer; latent directions shift the
    generator's latent (``w + t v``). A :class:`Combination` applies several directions at once
    (any layers and the latent, each with its own ``t``; ``t`` is then left unset).
    ``noise_mode`` (StyleGAN): overrides the inputs' option.
    Returns ``[B, C, H, W]``.
    """
    inputs = as_inputs(generator, inputs)
    n = len(inputs)
    if n == 0:
        raise ValueError(
            "the batch is empty: got 0 latents / samples; pass at least one (z [B, z_dim] or "
            "Inputs with B >= 1)"
        )
    if noise_mode is not None:
        inputs = inputs.with_options(noise_mode=noise_mode)
    if directions is None:
        return generator.render(inputs)
    if isinstance(directions, Combination):
        if not (isinstance(t, (int, float)) and t == 0):
            raise ValueError(
                "a Combination carries each direction's t: leave t unset (scale it with "
                "combination.scaled(factor))"
            )
        shifts, offset = combined_shift(generator, directions, n)
        if offset is not None:
            inputs = generator.latent.shift(inputs, offset)  # type: ignore[union-attr]
        return generator.render(inputs, shifts or None)
    dirs = [directions] if isinstance(directions, Direction) else list(directions)
    if not dirs:
        raise ValueError("no directions given (pass directions=None for the unshifted images)")
    t_ = _magnitudes(generator, t)
    if any(isinstance(d, Combination) for d in dirs):  # per sample: t scales its combination
        return synthesize_shifted(generator, inputs, _per_sample(dirs, t_, n), 0.0, noise_mode)
    if len(dirs) not in (1, n) or t_.numel() not in (1, n):
        raise ValueError(
            f"a batch of {n} samples takes one direction or {n} (one per sample), got "
            f"{len(dirs)}, and one shift magnitude t or {n}, got {t_.numel()}"
        )
    if t_.numel() == 1:
        t_ = t_.reshape(())  # one for all, as a scalar
    latent = [d.basis == "latent" for d in dirs]
    if any(latent) and not all(latent):
        raise ValueError("one call cannot mix latent and weight-space directions")
    _warn_if_large(generator, dirs[0], t_)
    if all(latent):
        v = torch.stack([d.latent_shift(generator, generator.dtype) for d in dirs])  # [n, dim]
        offset = (t_.reshape(-1, 1) * v).expand(n, -1)
        return generator.render(generator.latent.shift(inputs, offset))  # type: ignore[union-attr]
    one = dirs[0] if len(dirs) == 1 else dirs  # one direction for all: a shared shift
    return generator.render(inputs, shift_deltas(generator, one, t_))


def generate(
    generator: ShiftableGenerator,
    z: torch.Tensor | Inputs,
    directions: Direction | Sequence[Direction] | Combination | None = None,
    t: torch.Tensor | Sequence[float] | float = 0.0,
    truncation_psi: float = 1.0,
    noise_mode: str | None = None,
    c: torch.Tensor | int | None = None,
) -> torch.Tensor:
    """``G_{theta + t * xi}(z)``: ``z [B, z_dim] -> [B, C, H, W]``.

    Args:
        z: latents ``[B, z_dim]`` (StyleGAN generators), or any generator's
            :class:`~navcuda.models.interface.Inputs` (``generator.sample(n, seed)``).
        directions: one :class:`Direction` (every sample), one per sample, a
            :class:`Combination` (several directions at once, each with its own ``t``; leave
            ``t`` unset), or None (unshifted).
        t: the shift per sample (``[B]``) or one for all, in absolute units (multiply by
            ``direction.amplitude`` for the recommended strength).
        truncation_psi: 1.0 (none) by default; :func:`navcuda.render` defaults to 0.7, so the
            same seed looks different there unless both are set alike.
        noise_mode: StyleGAN: ``"const"`` (the generator's fixed noise; default), ``"random"``
            or ``"none"``.
        c: a conditional generator's labels with ``z``: class indices ``[B]`` (or one for all)
            or one-hot ``[B, c_dim]``.

    Images are about ``[-1, 1]`` and not clamped. Differentiable: outside ``torch.no_grad()``
    the call records a graph (the parameters require gradients), so wrap inference in it.
    """
    if isinstance(z, Inputs):
        inputs = z
    elif callable(getattr(generator, "from_z", None)):
        inputs = generator.from_z(z, truncation_psi, label=c)
    else:
        raise GeneratorError(
            f"{generator.architecture} takes navcuda Inputs (generator.sample(n, seed)), not z"
        )
    return synthesize_shifted(generator, inputs, directions, t, noise_mode)
