"""Direction sets: the result of every discovery method, and their one file format.

A :class:`DirectionSet` holds K directions of one layer (in the layer's singular-value basis or as
weight-space tensors), a recommended amplitude per direction, optional names, and metadata: method,
model fingerprint, layer weight shape, hyper-parameters, seed, the metric used, eigenvalues or
losses. It is saved as a safetensors file (conventional extension ``.nav``) whose tensors are
``coefficients``, ``amplitudes`` and (optionally) ``values``, and whose metadata entry
``navcuda`` holds versioned JSON, with a checksum of the tensors (:mod:`navcuda.io.checksum`).
Writes are atomic; loads validate everything, the checksum included.
"""

from __future__ import annotations

import json
import operator
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from navcuda.io.atomic import atomic_save_safetensors
from navcuda.io.checksum import CHECKSUM_KEY, tensor_checksum, verify_checksum
from navcuda.models.interface import ShiftableGenerator
from navcuda.shift import Basis, Direction

__all__ = [
    "DirectionSet",
    "DirectionSetError",
    "FORMAT_VERSION",
    "MARKS",
    "find_label_clash",
    "load_official_eigenvectors",
]

FORMAT = "navcuda-directions"
FORMAT_VERSION = 1
#: The marks a direction may carry in ``extra["marks"]`` (``{"<index>": mark}``; the gallery's).
MARKS = ("good", "bad")


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
        names: K names (``None`` for unnamed). A direction's label (``set[i].name``) is its
            name, or for an unnamed one the method and index (``"spectrum3"``; see
            :func:`find_label_clash`).
        method: discovery method (``"svd"``, ``"spectrum"``, ...).
        weight_shape: the layer's raw kernel shape ``(out, in, kh, kw)`` (``(w_dim,)`` for latent).
        fingerprint: the fingerprint (``generator.fingerprint()``) of the model the set was found
            on (or None).
        model: what the model was (``generator.architecture``: ``"stylegan2"``,
            ``"wrapped:pkg.module:factory"``...; None in files written before it was recorded).
        hparams, seed, metric: how it was found.
        values: ``[K]`` eigenvalues / losses / scores, or None.
        extra: any further JSON-serialisable information (e.g. residuals, toy-world scores).
            ``extra["marks"]``, when present, maps direction indices (``"0"``, ``"3"``) to a mark
            of :data:`MARKS` (the gallery's good/bad marks; checked here and on load).
    """

    layer: str
    basis: Basis
    coefficients: torch.Tensor
    amplitudes: torch.Tensor
    method: str
    weight_shape: tuple[int, ...]
    names: list[str | None] = field(default_factory=list)
    fingerprint: str | None = None
    model: str | None = None
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
        for fname in ("layer", "method"):
            if not isinstance(getattr(self, fname), str):
                raise DirectionSetError(
                    f"{fname} must be a string, got {type(getattr(self, fname)).__name__} "
                    f"{getattr(self, fname)!r}"
                )
        for fname in ("hparams", "extra"):
            if not isinstance(getattr(self, fname), dict):
                raise DirectionSetError(
                    f"{fname} must be a dict, got {type(getattr(self, fname)).__name__} "
                    f"{getattr(self, fname)!r}"
                )
        self.weight_shape = _weight_shape(self.weight_shape)  # type: ignore[assignment]
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
        self.names = list(self.names)
        if len(self.names) != k:
            raise DirectionSetError(f"{k} directions but {len(self.names)} names")
        self._check_amplitudes_and_names()
        self._check_marks()
        if self.values is not None:
            v = torch.as_tensor(self.values, dtype=torch.float64).flatten().cpu()
            if v.numel() != k:
                raise DirectionSetError(f"{k} directions but {v.numel()} values")
            self.values = v

    def _check_amplitudes_and_names(self) -> None:
        """Each amplitude NaN (none) or positive and finite; each name a string or None."""
        a = torch.as_tensor(self.amplitudes, dtype=torch.float64).flatten()
        bad = ~(torch.isnan(a) | (torch.isfinite(a) & (a > 0)))
        if bad.any():
            i = int(bad.nonzero()[0])
            raise DirectionSetError(
                f"amplitude of direction {i} is {float(a[i])}: each amplitude must "
                "be a positive finite number (the recommended |t|), or NaN for none; recalibrate "
                "the set or set it to NaN"
            )
        for i, n in enumerate(self.names):
            if n is not None and not isinstance(n, str):
                raise DirectionSetError(
                    f"name of direction {i} is {type(n).__name__} {n!r}: each name must be a "
                    "string, or None for an unnamed direction"
                )

    def _check_marks(self) -> None:
        marks = self.extra.get("marks") if isinstance(self.extra, dict) else None
        problem = _marks_problem(marks, len(self))
        if problem:
            raise DirectionSetError(f"extra['marks'] {problem}")

    def _default_name(self, i: int) -> str:
        """The label of unnamed direction ``i`` (``0 <= i < K``): method and index (``"svd3"``).

        Naming a direction after another's default label is refused where names are given
        (:func:`navcuda.gallery.apply_names`, :func:`find_label_clash`); a set that still has
        such a name (a file written before that check, or names assigned in code) labels the
        unnamed direction ``"svd3 (unnamed)"`` instead, so that no two directions share a label
        (names compare case-insensitively, as :meth:`by_name` looks them up)."""
        base = label = f"{self.method}{i}"
        taken = {n.lower() for n in self.names if isinstance(n, str)}
        extra = 1
        while label.lower() in taken:
            label = f"{base} (unnamed)" if extra == 1 else f"{base} (unnamed {extra})"
            extra += 1
        return label

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
            name=self.names[i] if self.names[i] is not None else self._default_name(i % k),
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
        """A new set with the directions ``indices`` (metadata copied).

        Negative indices count from the end. Unnamed directions keep their label in this set
        (``"spectrum3"``): it is written into the subset's names, since positions change; the
        marks of ``extra["marks"]`` follow their directions to their new indices. Raises
        :class:`DirectionSetError` for an empty selection, an index out of range or listed twice.
        """
        k = len(self)
        chosen: list[int] = []
        seen: set[int] = set()
        for raw in indices:
            try:
                i = operator.index(raw)
            except TypeError:
                raise DirectionSetError(
                    f"direction indices must be integers, got {type(raw).__name__} {raw!r}"
                ) from None
            if not -k <= i < k:
                raise DirectionSetError(
                    f"direction index {i} is out of range: this set has {k} directions "
                    f"(valid indices 0..{k - 1}, or -{k}..-1 from the end)"
                )
            if i % k in seen:
                same = "" if i >= 0 else f" (direction {i % k})"
                raise DirectionSetError(f"direction index {i}{same} listed twice in the subset")
            seen.add(i % k)
            chosen.append(i % k)
        if not chosen:
            raise DirectionSetError(f"a subset needs at least one direction index (0..{k - 1})")
        idx = torch.tensor(chosen, dtype=torch.long)
        extra = dict(self.extra)
        marks = extra.get("marks")
        if isinstance(marks, dict):  # anything else: refused below, as by the constructor
            extra["marks"] = {
                str(new): marks[str(old)] for new, old in enumerate(chosen) if str(old) in marks
            }
        return DirectionSet(
            layer=self.layer,
            basis=self.basis,
            coefficients=self.coefficients[idx],
            amplitudes=self.amplitudes[idx],
            method=self.method,
            weight_shape=self.weight_shape,
            names=[
                self.names[i] if self.names[i] is not None else self._default_name(i)
                for i in chosen
            ],
            fingerprint=self.fingerprint,
            model=self.model,
            hparams=dict(self.hparams),
            seed=self.seed,
            metric=self.metric,
            values=None if self.values is None else self.values[idx],
            extra=extra,
        )

    # ------------------------------------------------------------ compatibility
    def check_compatible(
        self, generator: ShiftableGenerator, allow_other_model: bool = False
    ) -> None:
        """Raise :class:`DirectionSetError` unless the set fits ``generator``.

        The layer must exist with the same weight shape; the model fingerprint must match unless
        ``allow_other_model`` (e.g. a fine-tuned model of the same architecture).
        """
        if self.basis == "latent":
            space = generator.latent
            if space is None:
                raise DirectionSetError(
                    f"this set holds latent directions, and {generator.architecture} exposes no "
                    "latent space"
                )
            if self.weight_shape != (space.dim,):
                raise DirectionSetError(
                    f"latent directions of size {self.weight_shape[0]} do not fit w_dim {space.dim}"
                )
        else:
            self._check_layer(generator)
        if self.fingerprint is not None and not allow_other_model:
            fp = generator.fingerprint()
            if fp != self.fingerprint:
                raise DirectionSetError(
                    f"this direction set was found on model {self.fingerprint}, not on this model "
                    f"({fp}); pass allow_other_model=True (CLI: --allow-other-model) to apply it "
                    "anyway"
                )

    def _check_layer(self, generator: ShiftableGenerator) -> None:
        try:
            info = generator.layer(self.layer)
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
            "model": self.model,
            "hparams": self.hparams,
            "seed": self.seed,
            "metric": self.metric,
            "extra": self.extra,
        }

    def save(self, path: str | os.PathLike) -> Path:
        """Write the set atomically (temporary file + rename); returns the path.

        The metadata records the checksum of the tensors (:mod:`navcuda.io.checksum`), which
        :meth:`load` verifies. Raises :class:`DirectionSetError`, writing nothing, for an invalid
        amplitude or name (they may have been assigned after construction) or metadata that is not
        JSON-serialisable; ``OSError`` naming ``path`` when it cannot be written (a full disk, a
        read-only file: :func:`navcuda.io.atomic.atomic_path`).
        """
        p = Path(path)
        try:
            self._check_amplitudes_and_names()
            self._check_marks()
        except DirectionSetError as exc:
            raise DirectionSetError(f"cannot save {p}: {exc}") from exc
        tensors = {
            "coefficients": self.coefficients.contiguous(),
            "amplitudes": self.amplitudes.contiguous(),
        }
        if self.values is not None:
            tensors["values"] = self.values.contiguous()
        try:
            meta = json.dumps(
                {**self.metadata(), CHECKSUM_KEY: tensor_checksum(tensors)}, allow_nan=True
            )
        except TypeError as exc:
            raise DirectionSetError(f"metadata is not JSON-serialisable: {exc}") from exc
        atomic_save_safetensors(tensors, p, metadata={"navcuda": meta})
        return p

    @classmethod
    def load(cls, path: str | os.PathLike) -> DirectionSet:
        """Read a set written by :meth:`save`; foreign or damaged files raise a clear error.

        Tensors that do not match the file's checksum are refused as damaged; a file written
        before checksums were recorded loads with a note (:class:`~navcuda.io.checksum.
        NoChecksumWarning`, once per process).
        """
        from safetensors import SafetensorError, safe_open

        p = Path(path)
        if p.is_dir():
            raise IsADirectoryError(f"direction set {p} is a folder; give the .nav file in it")
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
        if not isinstance(meta, dict):
            raise DirectionSetError(
                f"{p}: damaged metadata: expected a JSON object, found a {type(meta).__name__}"
            )
        if meta.get("format") != FORMAT:
            raise DirectionSetError(f"{p}: format {meta.get('format')!r}, expected {FORMAT!r}")
        if meta.get("version") != FORMAT_VERSION:
            raise DirectionSetError(
                f"{p}: format version {meta.get('version')} is not supported (this navcuda reads "
                f"version {FORMAT_VERSION}); upgrade navcuda"
            )
        verify_checksum(
            meta.get(CHECKSUM_KEY),
            tensors,
            p,
            DirectionSetError,
            "direction set",
            "use an intact copy, or discover the directions again",
        )
        missing = {"coefficients", "amplitudes"} - set(tensors)
        if missing:
            raise DirectionSetError(f"{p}: missing tensors {sorted(missing)}")
        fields = _metadata_fields(p, meta)
        c = tensors["coefficients"]
        k = c.shape[0] if c.ndim else 0  # K < 1: the constructor says what is wrong
        problem = _marks_problem(fields["extra"].get("marks"), k) if k >= 1 else None
        if problem:
            raise DirectionSetError(
                f"{p}: metadata field 'extra.marks' {problem}; the file is damaged or was not "
                "written by navcuda"
            )
        try:
            return cls(
                coefficients=tensors["coefficients"],
                amplitudes=tensors["amplitudes"],
                values=tensors.get("values"),
                **fields,
            )
        except DirectionSetError as exc:
            raise DirectionSetError(f"{p}: {exc}") from exc


def find_label_clash(method: str, names: Sequence[str | None]) -> tuple[int, int] | None:
    """The first ``(i, j)`` where ``names[i]`` is the default label (``f"{method}{j}"``,
    case-insensitively) of a direction ``j`` left unnamed, or None.

    Such a set would have two directions labelled alike (in ``--only`` subsets, renders,
    figures); where names are given (:func:`navcuda.gallery.apply_names`, ``navcuda name``)
    it is refused. A name equal to its own direction's label (``names[3] == "svd3"``) is fine."""
    unnamed = {f"{method}{j}".lower(): j for j, n in enumerate(names) if n is None}
    for i, n in enumerate(names):
        if n is not None and n.lower() in unnamed:
            return i, unnamed[n.lower()]
    return None


def _marks_problem(marks: Any, k: int) -> str | None:
    """What is wrong with ``extra["marks"]`` of a set of ``k`` directions, or None when it is
    absent (None) or a mapping ``{"<index>": mark}`` with indices ``"0"``..``"k-1"`` (decimal,
    as :func:`navcuda.gallery.apply_names` writes them) and marks of :data:`MARKS`."""
    if marks is None:
        return None
    want = f"must map direction indices ('0'..'{k - 1}') to 'good' or 'bad'"
    if not isinstance(marks, dict):
        return f"{want}, found {type(marks).__name__} {marks!r}"
    for key, mark in marks.items():
        if not (
            isinstance(key, str)
            and key.isascii()
            and key.isdigit()
            and str(int(key)) == key
            and int(key) < k
        ):
            return f"{want}, found the key {key!r}"
        if mark not in MARKS:
            return f"{want}, found {mark!r} for direction {key}"
    return None


def _weight_shape(shape: Any) -> tuple[int, ...]:
    """``shape`` as a tuple of positive ints, or :class:`DirectionSetError`."""
    if isinstance(shape, (str, bytes)) or not isinstance(shape, Sequence):
        raise DirectionSetError(
            f"weight_shape must be a sequence of positive integers (e.g. [512, 512, 3, 3]), got "
            f"{type(shape).__name__} {shape!r}"
        )
    dims = []
    for v in shape:
        try:
            d = operator.index(v)
        except TypeError:
            d = 0
        if isinstance(v, bool) or d < 1:
            raise DirectionSetError(
                f"weight_shape must be a sequence of positive integers (e.g. [512, 512, 3, 3]), "
                f"got {list(shape)!r}"
            )
        dims.append(d)
    return tuple(dims)


def _metadata_fields(p: Path, meta: dict[str, Any]) -> dict[str, Any]:
    """The constructor arguments stored in a file's metadata, each checked for its JSON type."""

    def bad(name: str, expected: str) -> DirectionSetError:
        v = meta[name]
        return DirectionSetError(
            f"{p}: metadata field {name!r} must be {expected}, found {type(v).__name__} {v!r}; "
            "the file is damaged or was not written by navcuda"
        )

    for name in ("layer", "basis", "method", "weight_shape"):
        if name not in meta:
            raise DirectionSetError(
                f"{p}: metadata field {name!r} is missing; the file is damaged or was not written "
                "by navcuda"
            )
    for name in ("layer", "basis", "method"):
        if not isinstance(meta[name], str):
            raise bad(name, "a string")
    for name in ("fingerprint", "model", "metric"):
        if meta.get(name) is not None and not isinstance(meta[name], str):
            raise bad(name, "a string or null")
    seed = meta.get("seed")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        raise bad("seed", "an integer or null")
    for name in ("hparams", "extra"):
        if meta.get(name) is not None and not isinstance(meta[name], dict):
            raise bad(name, "a JSON object")
    names = meta.get("names")
    if names is not None and not (
        isinstance(names, list) and all(n is None or isinstance(n, str) for n in names)
    ):
        raise bad("names", "a list of strings (null for an unnamed direction)")
    shape = meta["weight_shape"]
    if not (
        isinstance(shape, list)
        and shape
        and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in shape)
    ):
        raise bad("weight_shape", "a list of positive integers (e.g. [512, 512, 3, 3])")
    return dict(
        layer=meta["layer"],
        basis=meta["basis"],
        method=meta["method"],
        weight_shape=tuple(shape),
        names=list(names or []),
        fingerprint=meta.get("fingerprint"),
        model=meta.get("model"),
        hparams=meta.get("hparams") or {},
        seed=seed,
        metric=meta.get("metric"),
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
                "'eigenvectors_layer{ix}_...pt'); pass layer=ix, or name the file that way"
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
