"""Edit recipes: a small JSON file that says how one edited image was made, to reproduce it.

A recipe records the model (its fingerprint), the input (a seed with its truncation and class, or
a projected latent with its noise) and the directions applied together (a
:class:`~navcuda.shift.Combination`), each by its direction set, index, name and absolute ``t``::

    {
      "format": "navcuda-edit-recipe", "version": 1,
      "model": {"fingerprint": "stylegan2:...", "architecture": "stylegan2", "source": "bundled"},
      "input": {"kind": "seed", "seed": 3, "truncation": 0.7, "label": null},
      "directions": [
        {"set": "bundled", "checksum": "sha256:...", "index": 0, "name": "eye size",
         "t": 2.46, "t_relative": 2.0}
      ],
      "noise_mode": "const"
    }

A projected photo's input is ``{"kind": "latent", "ws": TENSOR, "noise": {name: TENSOR},
"source": "photo.png"}`` with ``TENSOR = {"dtype": "float32", "shape": [...], "data": BASE64}``
(the raw little-endian bytes: exact). ``set`` is ``"bundled"`` (the bundled named set) or the
path of a ``.nav`` file (relative paths are looked up beside the recipe first); ``checksum``
identifies the set's tensors, so a recipe never silently applies a changed set. ``t`` is absolute
(``t_relative`` = ``t`` / amplitude, for people and sliders).

:func:`render_recipe` renders a recipe (one sample, always the same computation), so the image a
recipe was exported with and ``navcuda edit --recipe`` are equal bit for bit. A recipe of another
model is refused (:class:`RecipeModelError`); a damaged or foreign file is a
:class:`RecipeError`.
"""

from __future__ import annotations

import base64
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from navcuda.io.atomic import atomic_path
from navcuda.io.checksum import tensor_checksum
from navcuda.io.directions import DirectionSet
from navcuda.models.interface import ShiftableGenerator
from navcuda.project import noise_override
from navcuda.shift import Combination, synthesize_shifted

__all__ = [
    "BUNDLED",
    "FORMAT",
    "VERSION",
    "DirectionSource",
    "LatentInput",
    "Recipe",
    "RecipeError",
    "RecipeModelError",
    "RecipeTerm",
    "SeedInput",
    "render_recipe",
]

FORMAT = "navcuda-edit-recipe"
VERSION = 1
#: The ``set`` of a recipe term that names the bundled model's named directions.
BUNDLED = "bundled"
#: A recipe file larger than this is refused before parsing (a W+ latent with the noise of a
#: 1024 px model takes about 10 MiB).
MAX_BYTES = 64 << 20


class RecipeError(ValueError):
    """A recipe file is unreadable, damaged, foreign, or names directions that cannot be found."""


class RecipeModelError(RecipeError):
    """A recipe made on another model (its fingerprint differs from the generator's)."""


# ----------------------------------------------------------------------------- direction sets


@dataclass(frozen=True, eq=False)
class DirectionSource:
    """A direction set and how recipes refer to it: ``ref`` is :data:`BUNDLED` or the path of its
    file; ``checksum`` identifies its tensors (:func:`set_checksum`)."""

    ref: str
    directions: DirectionSet
    checksum: str

    @classmethod
    def bundled(cls) -> DirectionSource:
        """The bundled model's named set."""
        from navcuda.models.default import load_default_directions

        ds = load_default_directions()
        return cls(BUNDLED, ds, set_checksum(ds))

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> DirectionSource:
        """A ``.nav`` file (its absolute path is the reference)."""
        ds = DirectionSet.load(path)
        return cls(str(Path(path).resolve()), ds, set_checksum(ds))

    @classmethod
    def of(cls, directions: DirectionSet, ref: str) -> DirectionSource:
        """A set already loaded, referred to as ``ref``."""
        return cls(ref, directions, set_checksum(directions))


def set_checksum(directions: DirectionSet) -> str:
    """The checksum of a set's coefficients and amplitudes (what a recipe's term depends on)."""
    return tensor_checksum(
        {
            "coefficients": directions.coefficients.contiguous(),
            "amplitudes": directions.amplitudes.contiguous(),
        }
    )


# ----------------------------------------------------------------------------- the recipe


@dataclass(frozen=True)
class SeedInput:
    """A generated sample: ``generator.sample_seeds([seed], truncation_psi=..., label=...)``."""

    seed: int
    truncation: float = 0.7
    label: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": "seed",
            "seed": self.seed,
            "truncation": self.truncation,
            "label": self.label,
        }


@dataclass(frozen=True, eq=False)
class LatentInput:
    """A latent (a projected photo): ``ws [1, w_dim]`` or ``[1, num_ws, w_dim]`` and the noise
    buffers it was projected with (None: the generator's own)."""

    ws: torch.Tensor
    noise: Mapping[str, torch.Tensor] | None = None
    source: str | None = None

    @classmethod
    def of(cls, projection: Any, source: str | None = None) -> LatentInput:
        """The input of a :func:`navcuda.project.project` result (its ``ws`` and ``noise``, on
        the CPU), ``source`` the photo's name."""
        noise = {k: v.detach().cpu() for k, v in projection.noise.items()}
        return cls(projection.ws.detach().cpu(), noise, source)

    def to_json(self) -> dict[str, Any]:
        noise = None if self.noise is None else {k: _encode(v) for k, v in self.noise.items()}
        return {"kind": "latent", "ws": _encode(self.ws), "noise": noise, "source": self.source}


@dataclass(frozen=True)
class RecipeTerm:
    """One direction of a recipe: direction ``index`` (called ``name``) of the set ``set``
    (checksum ``checksum``), shifted by the absolute ``t``."""

    set: str
    checksum: str
    index: int
    name: str
    t: float
    t_relative: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "set": self.set,
            "checksum": self.checksum,
            "index": self.index,
            "name": self.name,
            "t": self.t,
            "t_relative": self.t_relative,
        }


@dataclass(frozen=True, eq=False)
class Recipe:
    """How one edited image is made (module docstring): the model's ``fingerprint``,
    ``architecture`` and ``source`` (``"bundled"``, a checkpoint path, or None), the input, the
    directions, the noise mode and ``extra`` (how it was made, e.g. the projection's settings)."""

    fingerprint: str
    architecture: str
    input: SeedInput | LatentInput
    terms: tuple[RecipeTerm, ...] = ()
    source: str | None = None
    noise_mode: str = "const"
    extra: dict[str, Any] = field(default_factory=dict)

    # ---- building
    @classmethod
    def make(
        cls,
        generator: ShiftableGenerator,
        input: SeedInput | LatentInput,
        edits: Sequence[tuple[DirectionSource, int, float]] = (),
        *,
        relative: bool = True,
        source: str | None = None,
    ) -> Recipe:
        """A recipe for ``generator``: ``edits`` are ``(source, direction index, t)``, ``t`` a
        multiple of the direction's amplitude (``relative``; directions without one: absolute)
        or absolute. Terms with ``t == 0`` are left out (they change nothing)."""
        terms = []
        for src, index, t in edits:
            t = float(t)
            if not math.isfinite(t):
                raise RecipeError(f"t must be finite, got {t}")
            d = src.directions[index]
            amp = d.amplitude if relative and d.amplitude else None
            if t == 0:
                continue
            terms.append(
                RecipeTerm(
                    src.ref,
                    src.checksum,
                    index % len(src.directions),
                    d.name or str(index),
                    t * amp if amp else t,
                    t if amp else None,
                )
            )
        return cls(generator.fingerprint(), generator.architecture, input, tuple(terms), source)

    def with_terms(self, terms: Sequence[RecipeTerm]) -> Recipe:
        """This recipe with other directions."""
        return Recipe(
            self.fingerprint, self.architecture, self.input, tuple(terms), self.source,
            self.noise_mode, dict(self.extra),
        )  # fmt: skip

    def with_extra(self, **extra: Any) -> Recipe:
        """This recipe with entries added to ``extra`` (JSON values: how it was made)."""
        return Recipe(
            self.fingerprint, self.architecture, self.input, self.terms, self.source,
            self.noise_mode, {**self.extra, **extra},
        )  # fmt: skip

    # ---- JSON
    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "model": {
                "fingerprint": self.fingerprint,
                "architecture": self.architecture,
                "source": self.source,
            },
            "input": self.input.to_json(),
            "directions": [t.to_json() for t in self.terms],
            "noise_mode": self.noise_mode,
            **({"extra": self.extra} if self.extra else {}),
        }

    def dumps(self) -> str:
        """The recipe as JSON text (floats written exactly: they read back to the same value)."""
        return json.dumps(self.to_json(), indent=1, allow_nan=False) + "\n"

    def save(self, path: str | os.PathLike) -> Path:
        """Write the recipe atomically (nothing is left half-written); returns the path."""
        p = Path(path)
        text = self.dumps()
        with atomic_path(p) as tmp:
            tmp.write_text(text, encoding="utf-8")
        return p

    @classmethod
    def loads(cls, text: str, where: str = "recipe") -> Recipe:
        """Parse recipe JSON text (:class:`RecipeError` naming ``where`` when it is not one)."""
        try:
            obj = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise RecipeError(f"{where} is not a navcuda edit recipe (not JSON: {exc})") from exc
        return _parse(obj, where)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Recipe:
        """Read a recipe file written by :meth:`save` (or exported by the studio)."""
        p = Path(path)
        if p.is_dir():
            raise IsADirectoryError(f"recipe {p} is a folder; give the .json file")
        if not p.is_file():
            raise FileNotFoundError(f"recipe not found: {p}")
        if p.stat().st_size > MAX_BYTES:
            raise RecipeError(f"{p} is too large for an edit recipe ({p.stat().st_size} bytes)")
        try:
            text = p.read_bytes().decode("utf-8")
        except UnicodeDecodeError as exc:
            raise RecipeError(f"{p} is not a navcuda edit recipe (not UTF-8 text)") from exc
        return cls.loads(text, str(p))

    # ---- use
    def check_model(self, generator: ShiftableGenerator) -> None:
        """:class:`RecipeModelError` unless ``generator`` is the recipe's model."""
        fp = generator.fingerprint()
        if fp != self.fingerprint:
            raise RecipeModelError(
                f"this recipe was made on model {self.fingerprint} ({self.architecture}), not on "
                f"this one ({fp}, {generator.architecture}); load that model (--checkpoint / "
                "--model) to reproduce it"
            )

    def resolve(
        self,
        sources: Sequence[DirectionSource] = (),
        base_dir: str | os.PathLike | None = None,
        generator: ShiftableGenerator | None = None,
    ) -> Combination | None:
        """The recipe's directions as a :class:`Combination` (None without any).

        Each term's set is taken from ``sources`` (by checksum), else loaded from its reference
        (``"bundled"``; a path, relative ones tried in ``base_dir`` first). A set whose checksum
        differs, or whose direction ``index`` is not called ``name``, is a :class:`RecipeError`.
        ``generator``: each set must also fit it (its layer and shape; the model may differ).
        """
        if not self.terms:
            return None
        known = {s.checksum: s for s in sources}
        pairs = []
        for term in self.terms:
            src = known.get(term.checksum) or _load_source(term, base_dir)
            known[src.checksum] = src
            ds = src.directions
            if generator is not None:
                ds.check_compatible(generator, allow_other_model=True)
            if not 0 <= term.index < len(ds):
                raise RecipeError(
                    f"the recipe's direction {term.index} ({term.name!r}) is not in {term.set} "
                    f"({len(ds)} directions)"
                )
            d = ds[term.index]
            if d.name != term.name:
                raise RecipeError(
                    f"direction {term.index} of {term.set} is {d.name!r}, the recipe says "
                    f"{term.name!r}"
                )
            pairs.append((d, term.t))
        return Combination(pairs)


def _load_source(term: RecipeTerm, base_dir: str | os.PathLike | None) -> DirectionSource:
    if term.set == BUNDLED:
        src = DirectionSource.bundled()
    else:
        p = Path(term.set)
        candidates = [p] if p.is_absolute() else []
        if not p.is_absolute():
            if base_dir is not None:
                candidates.append(Path(base_dir) / p)
            candidates.append(p)
        if p.is_absolute() and base_dir is not None:
            candidates.append(Path(base_dir) / p.name)  # moved together with the recipe
        found = next((c for c in candidates if c.is_file()), None)
        if found is None:
            raise RecipeError(
                f"the recipe's direction set {term.set} was not found; pass it with "
                "--directions FILE (navcuda edit) or as a source"
            )
        src = DirectionSource.from_file(found)
    if src.checksum != term.checksum:
        raise RecipeError(
            f"direction set {term.set} has changed since the recipe was made (checksum "
            f"{src.checksum[:19]}..., the recipe's {term.checksum[:19]}...); use the set it was "
            "made with"
        )
    return src


def noise_mode_for(generator: ShiftableGenerator, recipe: Recipe) -> str | None:
    """The noise mode to render ``recipe`` with on ``generator``: the recipe's for StyleGAN
    synthesis, None (the generator's own inputs) for others, whose forward takes no noise mode."""
    return recipe.noise_mode if generator.architecture.startswith("stylegan") else None


@torch.no_grad()
def render_recipe(
    generator: ShiftableGenerator,
    recipe: Recipe,
    sources: Sequence[DirectionSource] = (),
    *,
    base_dir: str | os.PathLike | None = None,
    original: bool = False,
    allow_other_model: bool = False,
) -> torch.Tensor:
    """The recipe's image ``[1, C, H, W]`` (about [-1, 1], not clamped), always computed the same
    way (one sample), so equal bit for bit wherever it is rendered on the same device and build.
    ``original``: the input without the edit. Refuses another model's recipe
    (:class:`RecipeModelError`) unless ``allow_other_model`` (e.g. a fine-tuned model of the same
    architecture: the recipe's input and directions applied to it, not the recipe's image)."""
    if not allow_other_model:
        recipe.check_model(generator)
    check = generator if allow_other_model else None  # the recipe's own model: its sets fit
    combo = None if original else recipe.resolve(sources, base_dir, check)
    inp = recipe.input
    noise_mode = noise_mode_for(generator, recipe)
    if isinstance(inp, SeedInput):
        x = generator.sample_seeds([inp.seed], truncation_psi=inp.truncation, label=inp.label)
        return synthesize_shifted(generator, x, combo, noise_mode=noise_mode)
    ws = inp.ws.to(generator.device, generator.dtype)
    noise = None if inp.noise is None else {k: v.to(generator.device) for k, v in inp.noise.items()}
    with noise_override(generator, noise):
        return synthesize_shifted(generator, ws, combo, noise_mode=noise_mode)


# ----------------------------------------------------------------------------- JSON details


def _encode(t: torch.Tensor) -> dict[str, Any]:
    a = t.detach().cpu().contiguous().float().numpy().astype("<f4", copy=False)
    return {
        "dtype": "float32",
        "shape": list(a.shape),
        "data": base64.b64encode(a.tobytes()).decode(),
    }


def _decode(obj: Any, what: str, where: str) -> torch.Tensor:
    if not isinstance(obj, dict) or obj.get("dtype") != "float32":
        raise RecipeError(f"{where}: {what} must be a float32 tensor record")
    shape = obj.get("shape")
    if not isinstance(shape, list) or not all(isinstance(n, int) and n >= 0 for n in shape):
        raise RecipeError(f"{where}: {what} has a bad shape {shape!r}")
    try:
        raw = base64.b64decode(obj.get("data", ""), validate=True)
    except (ValueError, TypeError) as exc:
        raise RecipeError(f"{where}: {what} is damaged ({exc})") from exc
    if len(raw) != 4 * math.prod(shape):
        raise RecipeError(f"{where}: {what} holds {len(raw)} bytes for shape {shape}")
    a = np.frombuffer(raw, dtype="<f4").reshape(shape).astype(np.float32)
    if not np.isfinite(a).all():
        raise RecipeError(f"{where}: {what} has NaN or Inf values")
    return torch.from_numpy(a.copy())


def _parse(obj: Any, where: str) -> Recipe:
    def bad(msg: str) -> RecipeError:
        return RecipeError(f"{where}: {msg}")

    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise RecipeError(f"{where} is not a navcuda edit recipe (no format {FORMAT!r})")
    if obj.get("version") != VERSION:
        raise bad(f"recipe version {obj.get('version')!r} is not supported (this navcuda reads "
                  f"version {VERSION}); upgrade navcuda")  # fmt: skip
    model = obj.get("model")
    if not isinstance(model, dict) or not isinstance(model.get("fingerprint"), str):
        raise bad("'model' must hold the model's 'fingerprint'")
    inp = obj.get("input")
    if not isinstance(inp, dict):
        raise bad("'input' must be an object")
    kind = inp.get("kind")
    if kind == "seed":
        seed, trunc, label = inp.get("seed"), inp.get("truncation", 0.7), inp.get("label")
        if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**63:
            raise bad(f"input seed must be an integer in [0, 2**63), got {seed!r}")
        if not _is_number(trunc):
            raise bad(f"input truncation must be a number, got {trunc!r}")
        if label is not None and (not isinstance(label, int) or isinstance(label, bool)):
            raise bad(f"input label must be an integer or null, got {label!r}")
        input_: SeedInput | LatentInput = SeedInput(seed, float(trunc), label)
    elif kind == "latent":
        ws = _decode(inp.get("ws"), "input ws", where)
        if ws.ndim not in (2, 3) or ws.shape[0] != 1:
            raise bad(f"input ws must be [1, w_dim] or [1, num_ws, w_dim], got {list(ws.shape)}")
        noise = inp.get("noise")
        if noise is not None and not isinstance(noise, dict):
            raise bad("input noise must be an object of tensors or null")
        noise_t = None if noise is None else {
            str(k): _decode(v, f"noise {k}", where) for k, v in noise.items()
        }  # fmt: skip
        src = inp.get("source")
        input_ = LatentInput(ws, noise_t, src if isinstance(src, str) else None)
    else:
        raise bad(f"input kind must be 'seed' or 'latent', got {kind!r}")
    raw_terms = obj.get("directions", [])
    if not isinstance(raw_terms, list):
        raise bad("'directions' must be a list")
    terms = []
    for i, r in enumerate(raw_terms):
        if not isinstance(r, dict):
            raise bad(f"direction {i} must be an object")
        ok = (
            isinstance(r.get("set"), str)
            and isinstance(r.get("checksum"), str)
            and isinstance(r.get("index"), int)
            and not isinstance(r.get("index"), bool)
            and isinstance(r.get("name"), str)
            and _is_number(r.get("t"))
            and (r.get("t_relative") is None or _is_number(r.get("t_relative")))
        )
        if not ok:
            raise bad(f"direction {i} needs set, checksum, index, name and a finite t: {r}")
        rel = r.get("t_relative")
        terms.append(
            RecipeTerm(
                r["set"],
                r["checksum"],
                r["index"],
                r["name"],
                float(r["t"]),
                None if rel is None else float(rel),
            )  # fmt: skip
        )
    noise_mode = obj.get("noise_mode", "const")
    if noise_mode not in ("const", "random", "none"):
        raise bad(f"noise_mode must be const, random or none, got {noise_mode!r}")
    extra = obj.get("extra", {})
    src = model.get("source")
    return Recipe(
        model["fingerprint"],
        str(model.get("architecture", "generator")),
        input_,
        tuple(terms),
        src if isinstance(src, str) else None,
        noise_mode,
        extra if isinstance(extra, dict) else {},
    )


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
