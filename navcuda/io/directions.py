"""Direction sets: the result of every discovery method, and their one file format.

A :class:`DirectionSet` holds K directions of one layer (in the layer's singular-value basis or as
weight-space tensors), a recommended amplitude per direction, optional names, and metadata: method,
model fingerprint, layer weight shape, hyper-parameters, seed, the metric used, eigenvalues or
losses. It is saved as a safetensors file (conventional extension ``.nav``) whose tensors are
``coefficients``, ``amplitudes`` and (optionally) ``values``, and whose metadata entry
``navcuda`` holds versioned JSON. Writes are atomic; loads validate everything.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from navcuda.io.atomic import atomic_path
from navcuda.models.fingerprint import model_fingerprint
from navcuda.models.layers import get_layer
from navcuda.shift import Basis, Direction

__all__ = [
    "DirectionSet",
    "DirectionSetError",
    "FORMAT_VERSION",
    "load_official_eigenvectors",
]

FORMAT = "navcuda-directions"
FORMAT_VERSION = 1


class DirectionSetError(ValueError):
    """A direction-set file is unreadable, foreign, or does not fit the model it is applied to."""


@dataclass
class DirectionSet:
    """K directions of one layer plus metadata.

    Attributes:
        layer: layer name (``"convs.3"``).
        basis: ``"svd"`` (``coefficients [K, rank]``), ``"weight"``
            (``coefficients [K, out, in, kh, kw]``) or ``"latent"`` (``coefficients [K, w_dim]``,
            layer ``"w"``, weight_shape ``(w_dim,)``: the latent-space baselines).
        coefficients: float tensor as above.
        amplitudes: ``[K]`` recommended ``|t|`` per direction (NaN where unknown).
        names: K names (``None`` for unnamed).
        method: discovery method (``"svd"``, ``"spectrum"``, ...).
        weight_shape: the layer's raw kernel shape ``(out, in, kh, kw)`` (``(w_dim,)`` for latent).
        fingerprint: :func:`model_fingerprint` of the model the set was found on (or None).
        hparams, seed, metric: how it was found.
        values: ``[K]`` eigenvalues / losses / scores, or None.
        extra: any further JSON-serialisable information (e.g. residuals, toy-world scores).
    """

    layer: str
    basis: Basis
    coefficients: torch.Tensor
    amplitudes: torch.Tensor
    method: str
    weight_shape: tuple[int, ...]
    names: list[str | None] = field(default_factory=list)
    fingerprint: str | None = None
    hparams: dict[str, Any] = field(default_factory=dict)
    seed: int | None = None
    metric: str | None = None
    values: torch.Tensor | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        c = torch.as_tensor(self.coefficients)
        k = c.shape[0] if c.ndim else 0
        if self.basis not in ("svd", "weight", "latent"):
            raise DirectionSetError(
                f"basis must be 'svd', 'weight' or 'latent', got {self.basis!r}"
            )
        want = 5 if self.basis == "weight" else 2
        if c.ndim != want or k == 0:
            raise DirectionSetError(
                f"basis {self.basis!r} needs coefficients of rank {want} with K >= 1, "
                f"got shape {list(c.shape)}"
            )
        if not c.is_floating_point() or not torch.isfinite(c).all():
            raise DirectionSetError("coefficients must be finite floating-point values")
        self.weight_shape = tuple(int(v) for v in self.weight_shape)  # type: ignore[assignment]
        if self.basis == "weight" and tuple(c.shape[1:]) != self.weight_shape:
            raise DirectionSetError(
                f"weight-basis coefficients {list(c.shape[1:])} do not match the layer's weight "
                f"shape {list(self.weight_shape)}"
            )
        self.coefficients = c.detach().cpu()
        a = torch.as_tensor(self.amplitudes, dtype=torch.float64).flatten().cpu()
        if a.numel() != k:
            raise DirectionSetError(f"{k} directions but {a.numel()} amplitudes")
        self.amplitudes = a
        if not self.names:
            self.names = [None] * k
        if len(self.names) != k:
            raise DirectionSetError(f"{k} directions but {len(self.names)} names")
        if self.values is not None:
            v = torch.as_tensor(self.values, dtype=torch.float64).flatten().cpu()
            if v.numel() != k:
                raise DirectionSetError(f"{k} directions but {v.numel()} values")
            self.values = v

    # ------------------------------------------------------------------ access
    def __len__(self) -> int:
        return int(self.coefficients.shape[0])

    def __getitem__(self, i: int) -> Direction:
        k = len(self)
        if not -k <= i < k:
            raise IndexError(f"direction index {i} out of range for {k} directions")
        amp = float(self.amplitudes[i])
        return Direction(
            layer=self.layer,
            basis=self.basis,
            coefficients=self.coefficients[i],
            name=self.names[i] if self.names[i] is not None else f"{self.method}{i % k}",
            amplitude=None if amp != amp else amp,  # NaN -> unknown
            meta={"set_index": i % k, "method": self.method},
        )

    def __iter__(self) -> Iterator[Direction]:
        return (self[i] for i in range(len(self)))

    def by_name(self, name: str) -> Direction:
        """The direction called ``name`` (case-insensitive); the error lists the known names."""
        for i, n in enumerate(self.names):
            if n is not None and n.lower() == name.lower():
                return self[i]
        known = sorted(n for n in self.names if n)
        raise KeyError(
            f"no direction named {name!r}; "
            + (f"known names: {', '.join(known)}" if known else "this set has no named directions")
        )

    def subset(self, indices: Sequence[int]) -> DirectionSet:
        """A new set with the directions ``indices`` (metadata copied)."""
        idx = torch.as_tensor(list(indices), dtype=torch.long)
        return DirectionSet(
            layer=self.layer,
            basis=self.basis,
            coefficients=self.coefficients[idx],
            amplitudes=self.amplitudes[idx],
            method=self.method,
            weight_shape=self.weight_shape,
            names=[self.names[i] for i in idx.tolist()],
            fingerprint=self.fingerprint,
            hparams=dict(self.hparams),
            seed=self.seed,
            metric=self.metric,
            values=None if self.values is None else self.values[idx],
            extra=dict(self.extra),
        )

    # ------------------------------------------------------------ compatibility
    def check_compatible(self, generator: torch.nn.Module, allow_other_model: bool = False) -> None:
        """Raise :class:`DirectionSetError` unless the set fits ``generator``.

        The layer must exist with the same weight shape; the model fingerprint must match unless
        ``allow_other_model`` (e.g. a fine-tuned model of the same architecture).
        """
        if self.basis == "latent":
            w_dim = generator.config.w_dim  # type: ignore[union-attr]
            if self.weight_shape != (w_dim,):
                raise DirectionSetError(
                    f"latent directions of size {self.weight_shape[0]} do not fit w_dim {w_dim}"
                )
        else:
            self._check_layer(generator)
        if self.fingerprint is not None and not allow_other_model:
            fp = model_fingerprint(generator)
            if fp != self.fingerprint:
                raise DirectionSetError(
                    f"this direction set was found on model {self.fingerprint}, not on this model "
                    f"({fp}); pass allow_other_model=True (CLI: --allow-other-model) to apply it "
                    "anyway"
                )

    def _check_layer(self, generator: torch.nn.Module) -> None:
        try:
            info = get_layer(generator, self.layer)
        except KeyError as exc:
            raise DirectionSetError(f"the set's layer {self.layer!r} is not in this model") from exc
        if info.weight_shape != self.weight_shape:
            raise DirectionSetError(
                f"layer {self.layer} has weight shape {list(info.weight_shape)} in this model, "
                f"but the set was made for {list(self.weight_shape)}"
            )

    # ------------------------------------------------------------------ files
    def metadata(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "layer": self.layer,
            "basis": self.basis,
            "method": self.method,
            "weight_shape": list(self.weight_shape),
            "names": self.names,
            "fingerprint": self.fingerprint,
            "hparams": self.hparams,
            "seed": self.seed,
            "metric": self.metric,
            "extra": self.extra,
        }

    def save(self, path: str | os.PathLike) -> Path:
        """Write the set atomically (temporary file + rename); returns the path."""
        from safetensors.torch import save_file

        tensors = {
            "coefficients": self.coefficients.contiguous(),
            "amplitudes": self.amplitudes.contiguous(),
        }
        if self.values is not None:
            tensors["values"] = self.values.contiguous()
        try:
            meta = json.dumps(self.metadata(), allow_nan=True)
        except TypeError as exc:
            raise DirectionSetError(f"metadata is not JSON-serialisable: {exc}") from exc
        p = Path(path)
        with atomic_path(p) as tmp:
            save_file(tensors, str(tmp), metadata={"navcuda": meta})
        return p

    @classmethod
    def load(cls, path: str | os.PathLike) -> DirectionSet:
        """Read a set written by :meth:`save`; foreign or damaged files raise a clear error."""
        from safetensors import SafetensorError, safe_open

        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(
                f"direction set not found: {p} (create one with `navcuda discover ... -o {p.name}`)"
            )
        try:
            with safe_open(str(p), framework="pt") as f:
                raw = (f.metadata() or {}).get("navcuda")
                tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
        except (SafetensorError, OSError, ValueError) as exc:
            raise DirectionSetError(f"{p} is not a navcuda direction set: {exc}") from exc
        if raw is None:
            raise DirectionSetError(f"{p} is a safetensors file but not a navcuda direction set")
        try:
            meta = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise DirectionSetError(f"{p}: damaged metadata ({exc})") from exc
        if meta.get("format") != FORMAT:
            raise DirectionSetError(f"{p}: format {meta.get('format')!r}, expected {FORMAT!r}")
        if meta.get("version") != FORMAT_VERSION:
            raise DirectionSetError(
                f"{p}: format version {meta.get('version')} is not supported (this navcuda reads "
                f"version {FORMAT_VERSION}); upgrade navcuda"
            )
        missing = {"coefficients", "amplitudes"} - set(tensors)
        if missing:
            raise DirectionSetError(f"{p}: missing tensors {sorted(missing)}")
        return cls(
            layer=meta["layer"],
            basis=meta["basis"],
            coefficients=tensors["coefficients"],
            amplitudes=tensors["amplitudes"],
            method=meta["method"],
            weight_shape=tuple(meta["weight_shape"]),
            names=list(meta.get("names") or []),
            fingerprint=meta.get("fingerprint"),
            hparams=meta.get("hparams") or {},
            seed=meta.get("seed"),
            metric=meta.get("metric"),
            values=tensors.get("values"),
            extra=meta.get("extra") or {},
        )


_EIG_NAME = re.compile(r"eigenvectors_layer(\d+)_")


def load_official_eigenvectors(
    path: str | os.PathLike, layer: int | None = None, amplitude: float | None = None
) -> DirectionSet:
    """Import the official spectrum output ``eigenvectors_layer{ix}_{model}.pt``.

    The file holds a tensor ``[k, 1, out, in, kh, kw]`` (or ``[k, out, in, kh, kw]``) of unit-norm
    eigenvectors of ``convs[ix]``; ``ix`` is read from the file name unless ``layer`` is given.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"eigenvector file not found: {p}")
    if layer is None:
        m = _EIG_NAME.search(p.name)
        if m is None:
            raise DirectionSetError(
                f"cannot tell the layer from the file name {p.name!r} (expected "
                "'eigenvectors_layer{ix}_...pt'); pass layer=ix"
            )
        layer = int(m.group(1))
    try:
        t = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - re-raised with the file named
        raise DirectionSetError(f"{p} is not a readable torch file: {exc}") from exc
    if not isinstance(t, torch.Tensor) or not t.is_floating_point():
        raise DirectionSetError(f"{p}: expected a floating tensor of eigenvectors")
    if t.ndim == 6 and t.shape[1] == 1:
        t = t[:, 0]
    if t.ndim != 5:
        raise DirectionSetError(
            f"{p}: expected eigenvectors [k, 1, out, in, kh, kw], got {list(t.shape)}"
        )
    norms = t.flatten(1).double().norm(dim=1)
    if (norms == 0).any():
        raise DirectionSetError(f"{p}: an eigenvector is zero")
    coeffs = (t.double() / norms.view(-1, 1, 1, 1, 1)).float()
    k = t.shape[0]
    return DirectionSet(
        layer=f"convs.{layer}",
        basis="weight",
        coefficients=coeffs,
        amplitudes=torch.full((k,), float("nan") if amplitude is None else amplitude),
        method="spectrum",
        weight_shape=tuple(t.shape[1:]),
        names=[f"eig{i}" for i in range(k)],
        hparams={"source": "navigan", "file": p.name},
        metric="lpips-vgg (official)",
    )
