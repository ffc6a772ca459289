"""The one interface between navcuda's methods and the generators they edit.

Everything above :mod:`navcuda.models` (discovery, Hessian products, rendering, evaluation, the
gallery, the CLI) talks to a generator only through :class:`ShiftableGenerator`:

- :meth:`~ShiftableGenerator.layers` lists the convolution layers as :class:`LayerInfo` (name,
  kind, effective kernel shape, output resolution where known);
- :meth:`~ShiftableGenerator.kernel` gives a layer's *effective* kernel ``[out, in, kh, kw]``, the
  one it convolves with (after spectral / weight-norm parametrisations), in navcuda's layout for
  every kind (see :data:`KINDS`);
- :meth:`~ShiftableGenerator.sample` draws reproducible :class:`Inputs` (latents plus
  conditioning) from a seed, the same on every device;
- :meth:`~ShiftableGenerator.render` renders a batch, optionally with the effective kernels of
  one or several layers shifted per sample (:class:`LayerShift`); functional: the generator's
  parameters are never modified;
- :meth:`~ShiftableGenerator.split` / :meth:`~ShiftableGenerator.resume` optionally cache
  everything before a layer, so that Hessian products and calibrations re-run only the tail
  (the default caches nothing and re-renders from the inputs);
- :meth:`~ShiftableGenerator.fingerprint` identifies the weights (direction files record it).

Implementations: navcuda's StyleGAN2 (:mod:`navcuda.models.stylegan2`, with the fused shifted
modulated convolutions and the prefix split), StyleGAN3 (:mod:`navcuda.models.stylegan3`), and any
torch module through :func:`navcuda.models.wrapped.wrap`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from navcuda.ops import _native
from navcuda.ops.kernel_layout import unflatten_kernel
from navcuda.ops.shifted_modconv import SplitShift, SVDShift

__all__ = [
    "KINDS",
    "GeneratorError",
    "Inputs",
    "LatentSpace",
    "LayerInfo",
    "LayerShift",
    "ShiftArg",
    "ShiftableGenerator",
    "SplitState",
    "frozen",
    "shift_map",
]

#: Layer kinds and the layout of their effective kernel. Every kind's :meth:`kernel` is
#: ``[out, in, kh, kw]`` and flattens the same way (navigan's convention: rows ``kh*kw*in``,
#: columns ``out``), so direction files compare across generators:
#:
#: - ``"modulated"``: a StyleGAN modulated convolution; the raw kernel, before the equalised-lr
#:   scale, the modulation and the demodulation (the official code's convention);
#: - ``"conv2d"``: ``torch.nn.Conv2d``; its weight as it is (``[out, in / groups, kh, kw]``);
#: - ``"conv_transpose2d"``: ``torch.nn.ConvTranspose2d``, whose weight is
#:   ``[in, out / groups, kh, kw]``: transposed to ``[out, in, kh, kw]`` (``groups == 1``).
KINDS = ("modulated", "conv2d", "conv_transpose2d")

LayerKind = Literal["modulated", "conv2d", "conv_transpose2d"]


class GeneratorError(ValueError):
    """A generator, its inputs or a shift do not fit together (wrong shapes, unknown layers,
    labels out of range, a sampler that returns something else than it should)."""


@dataclass(frozen=True)
class LayerInfo:
    """One convolution layer of a generator.

    Attributes:
        name: the module path (``"convs.3"``, ``"generator.layers.2.conv_1"``).
        kind: one of :data:`KINDS`: how the layer convolves, and so the layout of its kernel.
        weight_shape: shape of the effective kernel in navcuda's layout ``(out, in, kh, kw)``.
        resolution: the output resolution (height) where known, else None.
        index: the official index where the architecture has one (StyleGAN2: ``convs[index]``);
            for other generators the position among the shiftable layers. None: no index.
        role: what the layer does in its architecture (StyleGAN2: ``"input_conv"``,
            ``"upconv"``, ``"conv"``, ``"torgb"``), or None.
        shiftable: whether navcuda can shift it (StyleGAN2's toRGB layers are listed only).
        w_index: which W+ latent styles it (StyleGAN generators), else None.
    """

    name: str
    kind: LayerKind
    weight_shape: tuple[int, int, int, int]
    resolution: int | None = None
    index: int | None = None
    role: str | None = None
    shiftable: bool = True
    w_index: int | None = None

    @property
    def out_channels(self) -> int:
        return self.weight_shape[0]

    @property
    def in_channels(self) -> int:
        return self.weight_shape[1]

    @property
    def kernel_size(self) -> int:
        return self.weight_shape[2]

    def describe(self) -> str:
        """One line: index, name, role or kind, resolution, kernel shape."""
        ix = "-" if self.index is None else str(self.index)
        res = "?" if self.resolution is None else str(self.resolution)
        note = "" if self.shiftable else "  (not shiftable)"
        return (
            f"{ix:>3}  {self.name:<11} {self.role or self.kind:<10} {res:>5}px  "
            f"weight {list(self.weight_shape)}{note}"
        )


# ----------------------------------------------------------------------------- inputs


def _batch_index(idx: torch.Tensor | Sequence[int] | slice | int) -> torch.Tensor | slice:
    if isinstance(idx, slice):
        return idx
    if isinstance(idx, int):
        return torch.tensor([idx])
    return torch.as_tensor(idx, dtype=torch.int64)


class Inputs:
    """A batch of generator inputs: named tensors sharing their first dimension ``B``, plus
    options shared by the whole batch (StyleGAN's ``noise_mode``, BigGAN's ``truncation``).

    StyleGAN generators hold ``{"ws": [B, w_dim] or [B, num_ws, w_dim]}`` (conditional ones also
    ``"label" [B]``); a wrapped module holds whatever its sampler returns (``{"z", "label"}``,
    ``{"mask"}``...). A value may be None (nothing for that name). Inputs are immutable: every
    method returns a new object.
    """

    __slots__ = ("_tensors", "_options")

    def __init__(
        self,
        tensors: Mapping[str, torch.Tensor | None],
        options: Mapping[str, Any] | None = None,
    ) -> None:
        if not isinstance(tensors, Mapping):
            raise GeneratorError(
                f"Inputs need a mapping of names to batched tensors, got {type(tensors).__name__}"
            )
        sizes = {}
        for name, t in tensors.items():
            if not isinstance(name, str):
                raise GeneratorError(f"input names must be strings, got {name!r}")
            if t is None:
                continue
            if not isinstance(t, torch.Tensor):
                raise GeneratorError(
                    f"input {name!r} must be a tensor [B, ...], got {type(t).__name__}"
                )
            if t.ndim == 0:
                raise GeneratorError(f"input {name!r} is a scalar; inputs are batched [B, ...]")
            sizes[name] = t.shape[0]
        if not sizes:
            raise GeneratorError("Inputs hold no tensor")
        if len(set(sizes.values())) != 1:
            raise GeneratorError(f"inputs disagree on the batch size: {sizes}")
        self._tensors = dict(tensors)
        self._options = dict(options or {})

    # ---- access
    @property
    def tensors(self) -> dict[str, torch.Tensor | None]:
        """The named tensors (a copy of the mapping; the tensors themselves are shared)."""
        return dict(self._tensors)

    @property
    def options(self) -> dict[str, Any]:
        return dict(self._options)

    def __getitem__(self, name: str) -> torch.Tensor:
        t = self._tensors.get(name)
        if t is None:
            raise KeyError(f"no input {name!r}; these inputs hold {sorted(self._tensors)}")
        return t

    def get(self, name: str, default: Any = None) -> Any:
        t = self._tensors.get(name)
        return default if t is None else t

    def __contains__(self, name: object) -> bool:
        return self._tensors.get(name) is not None  # type: ignore[call-overload]

    def __len__(self) -> int:
        return next(t.shape[0] for t in self._tensors.values() if t is not None)

    def __repr__(self) -> str:
        parts = [f"{k}={'None' if t is None else list(t.shape)}" for k, t in self._tensors.items()]
        opts = f", options={self._options}" if self._options else ""
        return f"Inputs({', '.join(parts)}{opts})"

    # ---- new batches
    def replace(self, **tensors: torch.Tensor | None) -> Inputs:
        """These inputs with some tensors replaced (or added)."""
        return Inputs({**self._tensors, **tensors}, self._options)

    def with_options(self, **options: Any) -> Inputs:
        """These inputs with some options set (a value of None removes the option)."""
        merged = {**self._options, **options}
        return Inputs(self._tensors, {k: v for k, v in merged.items() if v is not None})

    def take(
        self, idx: torch.Tensor | Sequence[int] | slice | int, broadcast: bool = False
    ) -> Inputs:
        """Rows ``idx`` of every tensor. With ``broadcast`` (every index the same, checked by the
        caller) each tensor is a broadcast view of that one row (batch stride 0), which tells the
        generator that the samples share their input."""
        ix = _batch_index(idx)
        out = {}
        for name, t in self._tensors.items():
            if t is None:
                out[name] = None
            elif broadcast and not isinstance(ix, slice):
                out[name] = t[ix[:1].to(t.device)].expand(len(ix), *t.shape[1:])
            else:
                out[name] = t[ix] if isinstance(ix, slice) else t[ix.to(t.device)]
        return Inputs(out, self._options)

    def chunks(self, size: int) -> Iterator[Inputs]:
        """Consecutive batches of at most ``size`` samples."""
        for lo in range(0, len(self), size):
            yield self.take(slice(lo, lo + size))

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None):
        """Tensors moved to ``device``; floating tensors cast to ``dtype`` (integer tensors,
        e.g. labels, keep theirs)."""
        out = {}
        for name, t in self._tensors.items():
            if t is None:
                out[name] = None
            else:
                out[name] = t.to(device=device, dtype=dtype if t.is_floating_point() else None)
        return Inputs(out, self._options)

    def detach(self) -> Inputs:
        return Inputs(
            {k: None if t is None else t.detach() for k, t in self._tensors.items()},
            self._options,
        )

    @staticmethod
    def cat(items: Sequence[Inputs]) -> Inputs:
        """Concatenate batches along the batch dimension (same names and options)."""
        items = list(items)
        if not items:
            raise GeneratorError("nothing to concatenate")
        first = items[0]
        for it in items[1:]:
            if set(it._tensors) != set(first._tensors) or it._options != first._options:
                raise GeneratorError(
                    f"cannot concatenate inputs with different names or options: {first!r} and "
                    f"{it!r}"
                )
        out = {}
        for name in first._tensors:
            parts = [it._tensors[name] for it in items]
            if any(p is None for p in parts):
                if not all(p is None for p in parts):
                    raise GeneratorError(f"input {name!r} is None in some batches only")
                out[name] = None
            else:
                out[name] = torch.cat(parts)  # type: ignore[arg-type]
        return Inputs(out, first._options)


@dataclass(frozen=True)
class SplitState:
    """A batch stopped before ``layer`` (:meth:`ShiftableGenerator.split`): the inputs and what the
    generator cached before that layer (``cache``; None when it caches nothing and
    :meth:`~ShiftableGenerator.resume` renders from the inputs)."""

    layer: str
    inputs: Inputs
    cache: Inputs | None = None

    def __len__(self) -> int:
        return len(self.inputs)

    def take(self, idx, broadcast: bool = False) -> SplitState:
        """Rows ``idx`` of the inputs and the cache (see :meth:`Inputs.take`)."""
        cache = None if self.cache is None else self.cache.take(idx, broadcast)
        return SplitState(self.layer, self.inputs.take(idx, broadcast), cache)


@dataclass(frozen=True)
class LatentSpace:
    """The latent input that latent-space directions shift (``w + t v``).

    ``key``: the :class:`Inputs` tensor (``[B, dim]`` or ``[B, n, dim]``; a shift is added to
    every one of the ``n`` vectors); ``dim``: its size; ``name``: the pseudo layer name of
    directions in it (``"w"``); ``standalone``: the latent alone makes the inputs (a tensor of
    latents can be turned into :class:`Inputs`).
    """

    key: str
    dim: int
    name: str = "w"
    standalone: bool = False

    def shift(self, inputs: Inputs, offset: torch.Tensor) -> Inputs:
        """``inputs`` with ``offset [B, dim]`` added to the latent (broadcast over W+)."""
        x = inputs[self.key]
        if offset.shape != (len(inputs), self.dim):
            raise GeneratorError(
                f"latent offset must be [{len(inputs)}, {self.dim}], got {list(offset.shape)}"
            )
        off = offset.to(x.dtype)
        if x.ndim == 3:
            off = off.unsqueeze(1)
        return inputs.replace(**{self.key: x + off})


# ----------------------------------------------------------------------------- shifts


@dataclass
class LayerShift:
    """A shift of the effective kernel of one layer, for one render call.

    Exactly one of:

    - ``delta``: the materialised shift, ``[out, in, kh, kw]`` (every sample) or
      ``[B, out, in, kh, kw]`` (one per sample), already multiplied by the magnitude ``t``;
    - ``spec``: a structured shift, which lets a generator run a fast strategy without
      materialising per-sample kernels:

      - :class:`~navcuda.ops.shifted_modconv.SplitShift` ``(delta [n_dir, out, in, kh, kw],
        t [B], index [B])``: sample ``b`` uses ``W + t[b] * delta[index[b]]`` (few distinct
        directions, many magnitudes: strips, calibration, batched Hessian-vector products);
        build it with :meth:`split`;
      - :class:`~navcuda.ops.shifted_modconv.SVDShift` ``(u, s, vh, t, coeffs, index)``: sample
        ``b`` uses ``W + t[b] * unflatten(U diag(c_b / |c_b|) Vh)`` with ``c_b = coeffs[index[b]]``
        (``coeffs[b]`` without index) and ``U diag(s) Vh`` the thin SVD of the flattened kernel
        (:class:`navcuda.shift.LayerSpace`, cast to the generator's dtype); build it with
        :meth:`svd`.

    Kernels are in navcuda's layout (:data:`KINDS`). Every tensor must be on the generator's
    device with its dtype (indices: int64 or int32); shapes are checked against the layer and the
    batch when the shift is used (:meth:`check`).
    """

    layer: str
    delta: torch.Tensor | None = None
    spec: SplitShift | SVDShift | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.layer, str):
            raise TypeError(
                f"LayerShift.layer must be a layer name, got {type(self.layer).__name__}"
            )
        if (self.delta is None) == (self.spec is None):
            raise ValueError(
                "LayerShift needs exactly one of delta (a materialised shift [out, in, kh, kw] or "
                "[B, out, in, kh, kw]) and spec (a SplitShift or an SVDShift)"
            )
        if self.delta is not None and not isinstance(self.delta, torch.Tensor):
            raise TypeError(f"LayerShift.delta must be a tensor, got {type(self.delta).__name__}")
        if self.spec is not None and not isinstance(self.spec, (SplitShift, SVDShift)):
            raise TypeError(
                f"LayerShift.spec must be a SplitShift or an SVDShift, got "
                f"{type(self.spec).__name__} (pass a materialised shift as delta=)"
            )

    @classmethod
    def split(
        cls,
        layer: str,
        deltas: torch.Tensor,
        t: torch.Tensor,
        index: torch.Tensor | None = None,
    ) -> LayerShift:
        """Sample ``b`` uses ``W + t[b] * deltas[index[b]]``.

        ``deltas [n_dir, out, in, kh, kw]``, ``t [B]``; ``index [B]`` may be omitted when
        ``n_dir == 1`` (every sample uses the one direction) or ``n_dir == B`` (sample ``b`` uses
        direction ``b``).
        """
        if index is None:
            if not isinstance(deltas, torch.Tensor) or not isinstance(t, torch.Tensor):
                raise TypeError("LayerShift.split: deltas and t must be tensors")
            n_dir, batch = deltas.shape[0] if deltas.ndim else 0, t.numel()
            if n_dir == 1:
                index = torch.zeros(batch, dtype=torch.int64, device=t.device)
            elif n_dir == batch:
                index = torch.arange(batch, device=t.device)
            else:
                raise ValueError(
                    f"LayerShift.split: {n_dir} directions for {batch} samples: pass index [B] "
                    "(which direction each sample uses)"
                )
        return cls(layer, spec=SplitShift(deltas, t, index))

    @classmethod
    def svd(
        cls,
        layer: str,
        u: torch.Tensor,
        s: torch.Tensor,
        vh: torch.Tensor,
        t: torch.Tensor,
        coeffs: torch.Tensor,
        index: torch.Tensor | None = None,
    ) -> LayerShift:
        """Sample ``b`` uses ``W + t[b] * unflatten(U diag(c_b / |c_b|) Vh)``.

        ``u [kh*kw*in, r]``, ``s [r]``, ``vh [r, out]``: the layer's thin SVD (constants);
        ``t [B]``; ``coeffs [n_dir, r]`` with ``index [B]``, or ``[B, r]`` without (every row used
        must be non-zero). Differentiable w.r.t. ``t`` and ``coeffs``.
        """
        return cls(layer, spec=SVDShift(u, s, vh, t, coeffs, index))

    def materialise(self, kernel_shape: Sequence[int]) -> torch.Tensor:
        """The materialised shift: ``delta`` as given, or ``[B, out, in, kh, kw]`` for a spec
        (``kernel_shape = (out, in, kh, kw)`` of the layer; differentiable)."""
        if self.delta is not None:
            return self.delta
        return materialise_spec(self.spec, tuple(kernel_shape))  # type: ignore[arg-type]

    def check(self, info: LayerInfo, weight: torch.Tensor, batch: int) -> None:
        """Validate against the layer (``info``, effective kernel ``weight``) and the batch."""
        if not info.shiftable:
            raise GeneratorError(
                f"layer {info.name!r} ({info.role or info.kind}) cannot be shifted"
            )
        if self.spec is not None:
            _check_spec(self.spec, info.name, weight, batch)
            return
        d, shape = self.delta, tuple(info.weight_shape)
        if d.ndim == 4 and tuple(d.shape) == shape:  # type: ignore[union-attr]
            return
        if d.ndim == 5 and tuple(d.shape[1:]) == shape and d.shape[0] in (1, batch):  # type: ignore[union-attr]
            return
        raise GeneratorError(
            f"shift for layer {info.name!r} must be {list(shape)} or [B={batch}, *{list(shape)}], "
            f"got {list(d.shape)}"  # type: ignore[union-attr]
        )


#: What :meth:`ShiftableGenerator.render` takes as ``shift``: none, one layer's or several.
ShiftArg = LayerShift | Sequence[LayerShift] | None


def shift_map(shift: ShiftArg) -> dict[str, LayerShift]:
    """``{layer name: LayerShift}`` of a render call's ``shift`` (one shift per layer)."""
    if shift is None:
        return {}
    items = list(shift) if isinstance(shift, (list, tuple)) else [shift]
    out: dict[str, LayerShift] = {}
    for s in items:
        if not isinstance(s, LayerShift):
            raise TypeError(
                f"shift must be a list of LayerShifts, one LayerShift or None, got "
                f"{type(s).__name__}"
            )
        if s.layer in out:
            raise GeneratorError(f"two shifts of layer {s.layer!r} in one call: combine them")
        out[s.layer] = s
    return out


def materialise_spec(spec: SplitShift | SVDShift, kshape: tuple[int, ...]) -> torch.Tensor:
    """``[B, out, in, kh, kw]``: ``t_b delta[index_b]`` or ``t_b unflatten(U diag(dhat_b) Vh)``."""
    if isinstance(spec, SplitShift):
        return spec.t.view(-1, 1, 1, 1, 1) * spec.delta[spec.index]
    rows = spec.coeffs if spec.index is None else spec.coeffs[spec.index]
    dhat = rows / rows.norm(dim=1, keepdim=True)
    m = torch.einsum("kj,bj,jo->bko", spec.u.detach(), spec.t[:, None] * dhat, spec.vh.detach())
    return unflatten_kernel(m, kshape)


def _check_spec(spec: SplitShift | SVDShift, layer: str, weight: torch.Tensor, batch: int) -> None:
    """Validate a structured shift of ``layer`` (effective kernel ``weight``) for ``batch``."""
    kind = type(spec).__name__
    kshape = list(weight.shape)
    where = f"{kind} shift of layer {layer!r}"

    def tensor(name: str, v: object, shape: list[int | None] | None = None) -> torch.Tensor:
        if not isinstance(v, torch.Tensor):
            raise TypeError(f"{where}: {name} must be a tensor, got {type(v).__name__}")
        if shape is not None and (
            v.ndim != len(shape)
            or any(n is not None and n != m for n, m in zip(shape, v.shape, strict=True))
        ):
            want = ", ".join("n" if n is None else str(n) for n in shape)
            raise ValueError(f"{where}: {name} must have shape [{want}], got {list(v.shape)}")
        if v.device != weight.device:
            raise ValueError(f"{where}: {name} is on {v.device}, the layer on {weight.device}")
        return v

    def floating(name: str, v: object, shape: list[int | None]) -> torch.Tensor:
        v = tensor(name, v, shape)
        if v.dtype != weight.dtype:
            raise TypeError(
                f"{where}: {name} must have the generator's dtype {weight.dtype}, got {v.dtype}"
            )
        return v

    def index(v: object, n_rows: int) -> None:
        v = tensor("index", v, [batch])
        if v.dtype not in (torch.int64, torch.int32):
            raise TypeError(f"{where}: index must be int64 or int32, got {v.dtype}")
        lo, hi = _native.index_range(v) if batch else (0, -1)  # empty: nothing to check
        if lo < 0 or hi >= n_rows:
            raise ValueError(
                f"{where}: index values must lie in [0, {n_rows}) (one of the {n_rows} "
                f"directions), got [{lo}, {hi}]"
            )

    floating("t", spec.t, [batch])
    if isinstance(spec, SplitShift):
        d = floating("delta", spec.delta, [None, *kshape])
        if d.shape[0] < 1:
            raise ValueError(f"{where}: delta holds no direction")
        index(spec.index, d.shape[0])
        return
    out_c, in_c, kh, kw = kshape
    u = floating("u", spec.u, [kh * kw * in_c, None])
    rank = u.shape[1]
    floating("s", spec.s, [rank])
    floating("vh", spec.vh, [rank, out_c])
    c = floating("coeffs", spec.coeffs, [None, rank])
    if spec.index is None:
        if c.shape[0] != batch:
            raise ValueError(
                f"{where}: coeffs has {c.shape[0]} rows for a batch of {batch}: pass coeffs "
                "[B, r], or coeffs [n_dir, r] with index [B]"
            )
    else:
        index(spec.index, c.shape[0])


@contextlib.contextmanager
def frozen(generator: Any) -> Iterator[None]:
    """Stop gradients to ``generator.parameters()`` inside the block (flags restored afterwards).

    For a pass that differentiates w.r.t. a shift, not the parameters: layers then keep for the
    backward only what the shift's gradient needs (a parameter that requires a gradient makes
    a layer keep its input, even when this backward never asks for that gradient)."""
    params = list(generator.parameters())
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, f in zip(params, flags, strict=True):
            p.requires_grad_(f)


# ----------------------------------------------------------------------------- the interface


@dataclass
class _LayerLookup:
    """Lookup of layers by name or index, built once per generator (layer lists are fixed)."""

    layers: list[LayerInfo]
    by_name: dict[str, LayerInfo] = field(init=False)
    by_index: dict[int, LayerInfo] = field(init=False)

    def __post_init__(self) -> None:
        self.by_name = {i.name: i for i in self.layers}
        self.by_index = {i.index: i for i in self.layers if i.index is not None}


class ShiftableGenerator:
    """What navcuda needs of a generator (module docstring). Subclasses implement
    :meth:`layers`, :meth:`kernel`, :meth:`sample`, :meth:`render`, :meth:`fingerprint` and the
    properties :attr:`device` and :attr:`dtype`; :meth:`split`/:meth:`resume`,
    :attr:`latent`, :meth:`latent_readers`, :meth:`linearize`, :meth:`reference_ops` and
    :meth:`official_route` are optional (defaults below)."""

    #: Number of class labels a conditional generator takes (0: unconditional).
    num_classes: int = 0
    #: The latent input that latent-space directions shift, or None.
    latent: LatentSpace | None = None
    #: A short name of the architecture (``"stylegan2"``, ``"wrapped:BigGAN"``).
    architecture: str = "generator"

    # ---- required
    def layers(self) -> list[LayerInfo]:
        """Every convolution layer, in synthesis order."""
        raise NotImplementedError

    def kernel(self, layer: int | str) -> torch.Tensor:
        """The effective kernel ``[out, in, kh, kw]`` of ``layer`` (a name or index): the weight
        the layer convolves with, in navcuda's layout (:data:`KINDS`). Not a copy where the
        parameter can be viewed; do not modify it."""
        raise NotImplementedError

    def sample(
        self,
        n: int,
        seed: int | torch.Generator = 0,
        *,
        truncation_psi: float = 1.0,
        label: int | Sequence[int] | torch.Tensor | None = None,
    ) -> Inputs:
        """``n`` inputs drawn from ``seed`` (the same on every device; ``sample(1, s)`` is
        sample ``s`` of the per-seed convention of :meth:`sample_seeds`). ``seed`` may also be a
        CPU ``torch.Generator``, which the draw advances (a training loop's stream).

        ``label``: for conditional generators, one class for all or one per sample (None:
        drawn from the seed); refused with :class:`GeneratorError` by unconditional ones and when
        out of ``[0, num_classes)``."""
        raise NotImplementedError

    def render(self, inputs: Inputs, shift: ShiftArg = None) -> torch.Tensor:
        """Images ``[B, C, H, W]`` in about ``[-1, 1]`` (not clamped), with the layers of
        ``shift`` shifted for this call only. Differentiable (wrap inference in
        ``torch.no_grad()``)."""
        raise NotImplementedError

    def fingerprint(self) -> str:
        """Identifies the weights (direction files record it)."""
        raise NotImplementedError

    @property
    def device(self) -> torch.device:
        raise NotImplementedError

    @property
    def dtype(self) -> torch.dtype:
        raise NotImplementedError

    # ---- optional
    def split(self, inputs: Inputs, layer: int | str) -> SplitState:
        """Run everything before ``layer`` once; :meth:`resume` finishes the render with any shift
        of that layer or later ones. The default caches nothing."""
        return SplitState(self.layer(layer).name, inputs, None)

    def resume(self, state: SplitState, shift: ShiftArg = None) -> torch.Tensor:
        """Finish a render started by :meth:`split`."""
        order = [i.name for i in self.layers()]
        start = order.index(state.layer)
        for name in shift_map(shift):
            if name in order and order.index(name) < start:
                raise GeneratorError(f"cannot shift {name!r}: it runs before {state.layer!r}")
        return self.render(state.inputs, shift)

    @property
    def caches_prefix(self) -> bool:
        """Whether :meth:`split` caches the work before the layer (False: the default)."""
        return type(self).split is not ShiftableGenerator.split

    def latent_readers(self, layers: Sequence[int | str] | str) -> list[torch.Tensor]:
        """The matrices ``[out, dim]`` that read the latent for ``layers`` (StyleGAN: the style
        affines), for SeFa; ``"all"`` for every one."""
        raise GeneratorError(
            f"{self.architecture} exposes no weights that read its latent, which SeFa needs"
        )

    def linearize(self, state: SplitState) -> Any:
        """A shared-primal linearisation of the render after ``state.layer`` w.r.t. that layer's
        kernel (``.image``, ``.jvp(v)``), or NotImplementedError (the Hessian products then use
        forward-mode AD)."""
        raise NotImplementedError(f"{self.architecture} has no shared-primal linearisation")

    def reference_ops(self) -> contextlib.AbstractContextManager:
        """A context in which the generator runs only ops that support double backward and
        forward-mode AD (navcuda's StyleGAN2: its pure-torch references)."""
        return contextlib.nullcontext()

    def official_route(self) -> contextlib.AbstractContextManager:
        """A context in which the generator runs the official code's arrangement (the reference
        of the benchmarks); the default changes nothing."""
        return contextlib.nullcontext()

    def from_latents(self, latents: torch.Tensor) -> Inputs:
        """Inputs made of latents alone (``latent.standalone`` generators), e.g. ``ws``."""
        lat = self.latent
        if lat is None or not lat.standalone:
            raise GeneratorError(
                f"{self.architecture} takes more than latents: pass navcuda Inputs "
                "(generator.sample(n, seed) or generator.sample_seeds(seeds))"
            )
        if not isinstance(latents, torch.Tensor) or latents.shape[-1] != lat.dim:
            raise GeneratorError(
                f"expected latents [B, {lat.dim}] or [B, n, {lat.dim}], got "
                f"{list(latents.shape) if isinstance(latents, torch.Tensor) else latents!r}"
            )
        return Inputs({lat.key: latents.to(self.device, self.dtype)})

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of the rendered images (the default renders sample 0 once)."""
        cached = self.__dict__.get("_navcuda_image_shape")
        if cached is None:
            with torch.no_grad():
                cached = tuple(self.render(self.sample(1, 0)).shape[1:])
            self.__dict__["_navcuda_image_shape"] = cached
        return cached  # type: ignore[return-value]

    # ---- provided
    def layer(self, key: int | str) -> LayerInfo:
        """Look a layer up by index (``3``, ``"3"``) or name (``"convs.3"``)."""
        if isinstance(key, bool):
            raise TypeError("layer key must be an int index or a layer name, got a bool")
        if isinstance(key, str) and key.strip().lstrip("-").isdigit():
            key = int(key)
        lookup = self._layer_lookup()
        found = lookup.by_index.get(key) if isinstance(key, int) else lookup.by_name.get(key)
        if found is not None:
            return found
        names = ", ".join(i.name for i in lookup.layers)
        idx = sorted(lookup.by_index)
        span = f"an index {idx[0]}..{idx[-1]} or " if idx else ""
        raise KeyError(f"no layer {key!r} in this generator; use {span}one of: {names}")

    def _layer_lookup(self) -> _LayerLookup:
        cached = self.__dict__.get("_navcuda_layer_lookup")
        if cached is None:
            cached = _LayerLookup(list(self.layers()))
            self.__dict__["_navcuda_layer_lookup"] = cached
        return cached

    def sample_seeds(
        self,
        seeds: Sequence[int],
        *,
        truncation_psi: float = 1.0,
        label: int | Sequence[int] | torch.Tensor | None = None,
    ) -> Inputs:
        """One input per seed: sample ``s`` is ``sample(1, s)`` (strips, galleries and edits
        name images by seed). ``label``: one for all seeds or one per seed."""
        seeds = [int(s) for s in seeds]
        if not seeds:
            raise GeneratorError("no seeds given")
        labels = _per_sample_labels(label, len(seeds))
        return Inputs.cat(
            [
                self.sample(1, s, truncation_psi=truncation_psi, label=lab)
                for s, lab in zip(seeds, labels, strict=True)
            ]
        )

    def check_label(self, label: Any, n: int) -> torch.Tensor | None:
        """``label`` as ``[n]`` int64 class indices (None stays None), refusing labels for an
        unconditional generator and classes outside ``[0, num_classes)``."""
        if label is None:
            return None
        if self.num_classes <= 0:
            raise GeneratorError(f"{self.architecture} is unconditional: it takes no class label")
        lab = torch.as_tensor(label)
        if lab.is_floating_point() or lab.is_complex() or lab.dtype == torch.bool:
            raise GeneratorError(f"class labels must be integers, got {lab.dtype}")
        lab = lab.to(torch.int64).flatten()
        if lab.numel() == 1:
            lab = lab.expand(n)
        if lab.numel() != n:
            raise GeneratorError(f"got {lab.numel()} class labels for {n} samples")
        if n and (int(lab.min()) < 0 or int(lab.max()) >= self.num_classes):
            raise GeneratorError(
                f"class label out of range: got {lab.tolist()[:8]}, this generator has "
                f"{self.num_classes} classes (0..{self.num_classes - 1})"
            )
        return lab.contiguous()


def _per_sample_labels(label: Any, n: int) -> list[Any]:
    if label is None:
        return [None] * n
    lab = torch.as_tensor(label).flatten()
    if lab.numel() == 1:
        return [int(lab)] * n
    if lab.numel() != n:
        raise GeneratorError(f"got {lab.numel()} class labels for {n} seeds")
    return [int(v) for v in lab]
