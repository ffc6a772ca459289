"""The studio's model-side logic, independent of the web UI: sliders, edit states, rendering
through recipes, photo projection, recipe loading and exports (all checked, all named errors).

:class:`Studio` holds the generator and the direction sets; an :class:`EditState` is one immutable
snapshot of the controls (seed, truncation, class, one value per slider, or a projected photo).
Every image the studio shows is :func:`navcuda.recipe.render_recipe` of :meth:`Studio.recipe`, so
an exported recipe reproduces it bit for bit (``navcuda edit --recipe``).
"""

from __future__ import annotations

import itertools
import math
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from navcuda.models.interface import ShiftableGenerator
from navcuda.recipe import (
    DirectionSource,
    LatentInput,
    Recipe,
    RecipeError,
    SeedInput,
    render_recipe,
)
from navcuda.rendering import to_rgb
from navcuda.shift import shift_reference
from navcuda.studio.exports import KINDS, sweep_images, write_export

__all__ = [
    "HISTORY",
    "SLIDER_LIMIT",
    "EditState",
    "ExportError",
    "History",
    "PhotoError",
    "Slider",
    "SliderRangeError",
    "Studio",
    "StudioError",
]

#: Sliders of directions with an amplitude span ``[-SLIDER_LIMIT, SLIDER_LIMIT]`` x amplitude.
SLIDER_LIMIT = 5.0
#: Sliders of directions without one span this fraction of the shift's reference norm.
ABSOLUTE_FRACTION = 0.5
#: Undo steps kept (per browser session in the app).
HISTORY = 100


class StudioError(ValueError):
    """A request the studio refuses (the UI shows its message; nothing is written)."""


class SliderRangeError(StudioError):
    """A slider value outside its declared range, or not a finite number."""


class PhotoError(StudioError):
    """An uploaded file that is not a usable image, or a model that cannot project photos."""


class ExportError(StudioError):
    """An export that cannot be written (a read-only or missing folder, a full disk)."""


@dataclass(frozen=True)
class Slider:
    """One direction's slider: ``source``'s direction ``index`` called ``label``, its value in
    ``[-limit, limit]`` (a multiple of the amplitude when ``relative``, else absolute)."""

    label: str
    source: DirectionSource
    index: int
    relative: bool
    limit: float
    step: float


@dataclass(frozen=True, eq=False)
class EditState:
    """The studio's controls at one moment (immutable: the undo history keeps them)."""

    values: tuple[float, ...]
    seed: int = 0
    truncation: float = 0.7
    label: int | None = None
    latent: LatentInput | None = None


@dataclass(frozen=True, eq=False)
class History:
    """The undo history of one editing session: the states shown so far, the last one current
    (immutable: every change returns a new history, so a refused request changes nothing).

    :meth:`push` adds a state (the oldest are forgotten beyond ``limit``), :meth:`undo` goes back
    one (never before the first state), :meth:`reset` pushes the current input with every slider
    at 0 (so a reset can be undone)."""

    states: tuple[EditState, ...]
    limit: int = HISTORY

    def __post_init__(self) -> None:
        if not self.states:
            raise ValueError("a history holds at least one state")
        if self.limit < 1:
            raise ValueError(f"limit must be at least 1, got {self.limit}")

    @classmethod
    def start(cls, state: EditState, limit: int = HISTORY) -> History:
        """A history holding ``state`` only."""
        return cls((state,), limit)

    @property
    def current(self) -> EditState:
        """The state shown now (the last one)."""
        return self.states[-1]

    def __len__(self) -> int:
        return len(self.states)

    def push(self, state: EditState) -> History:
        """``state`` made current; beyond :attr:`limit` states, the oldest are dropped."""
        return replace(self, states=(*self.states, state)[-self.limit :])

    def undo(self) -> History:
        """Back to the previous state (the first state stays: undo there changes nothing)."""
        return replace(self, states=self.states[:-1]) if len(self.states) > 1 else self

    def reset(self) -> History:
        """The current input (seed, truncation, class or photo) with no edit, pushed."""
        cur = self.current
        return self.push(replace(cur, values=(0.0,) * len(cur.values)))


class Studio:
    """The generator, its direction sets and the export folder of one studio (see module doc).

    ``sources``: the direction sets (a slider per direction, labelled by name, prefixed by the
    set's file name when two sets share a name); ``model_source`` is recorded in recipes;
    ``projection_steps`` / ``metric`` are used for uploaded photos.
    """

    def __init__(
        self,
        generator: ShiftableGenerator,
        sources: Sequence[DirectionSource],
        export_dir: str | os.PathLike = "studio-exports",
        *,
        model_source: str | None = None,
        projection_steps: int = 200,
        metric: Callable | None = None,
    ) -> None:
        if not sources:
            raise StudioError("the studio needs at least one direction set")
        self.generator = generator
        self.sources = list(sources)
        self.export_dir = Path(export_dir)
        self.model_source = model_source
        self.projection_steps = projection_steps
        self.metric = metric
        self.sliders = self._make_sliders()
        self._lock = threading.Lock()  # renders share the generator (and its noise buffers)
        self._counter = itertools.count(1)

    def _make_sliders(self) -> list[Slider]:
        names = [[d.name or str(i) for i, d in enumerate(s.directions)] for s in self.sources]
        counts: dict[str, int] = {}
        for n in itertools.chain.from_iterable(names):
            counts[n.lower()] = counts.get(n.lower(), 0) + 1
        out = []
        for src, labels in zip(self.sources, names, strict=True):
            stem = "bundled" if src.ref == "bundled" else Path(src.ref).stem
            for i, d in enumerate(src.directions):
                label = labels[i] if counts[labels[i].lower()] == 1 else f"{stem}: {labels[i]}"
                if d.amplitude:
                    out.append(Slider(label, src, i, True, SLIDER_LIMIT, 0.05))
                else:
                    ref, _ = shift_reference(self.generator, d)
                    limit = float(f"{ABSOLUTE_FRACTION * ref:.3g}")
                    out.append(Slider(label, src, i, False, limit, float(f"{limit / 100:.2g}")))
        return out

    # ---- states
    def initial(self, seed: int = 0, truncation: float = 0.7) -> EditState:
        """Every slider at 0 on sample ``seed``."""
        return EditState((0.0,) * len(self.sliders), seed, truncation)

    def update(
        self,
        state: EditState,
        values: Sequence[float] | None = None,
        seed: int | None = None,
        truncation: float | None = None,
        label: int | None | str = "keep",
    ) -> EditState:
        """``state`` with some controls changed, checked (:class:`SliderRangeError`,
        :class:`StudioError`). A new seed leaves a projected photo for that sample."""
        new = state
        if values is not None:
            new = replace(new, values=self.check_values(values))
        if seed is not None:
            s = _as_int(seed, "seed")
            if not 0 <= s < 2**63:
                raise StudioError(f"seed must be in [0, 2**63), got {s}")
            if s != state.seed or state.latent is not None:
                new = replace(new, seed=s, latent=None)
        if truncation is not None:
            t = float(truncation)
            if not (math.isfinite(t) and 0.0 <= t <= 2.0):
                raise StudioError(f"truncation must be in [0, 2], got {truncation}")
            new = replace(new, truncation=t)
        if label != "keep":
            new = replace(new, label=self.check_label(label))  # type: ignore[arg-type]
        return new

    def check_values(self, values: Sequence[float]) -> tuple[float, ...]:
        """The slider values as floats, each within its slider's range."""
        values = list(values)
        if len(values) != len(self.sliders):
            raise SliderRangeError(f"expected {len(self.sliders)} slider values, got {len(values)}")
        out = []
        for s, v in zip(self.sliders, values, strict=True):
            try:
                x = float(v)
            except (TypeError, ValueError):
                raise SliderRangeError(f"slider {s.label!r}: {v!r} is not a number") from None
            if not math.isfinite(x) or abs(x) > s.limit + 1e-9:
                raise SliderRangeError(
                    f"slider {s.label!r} takes values in [{-s.limit:g}, {s.limit:g}], got {v!r}"
                )
            out.append(x)
        return tuple(out)

    def check_label(self, label: int | str | None) -> int | None:
        if label in (None, ""):
            return None
        n = self.generator.num_classes
        lab = _as_int(label, "class")
        if not 0 <= lab < max(n, 0) or n <= 0:
            raise StudioError(
                f"class {lab} is not one of this model's {n} classes"
                if n > 0
                else "this model is unconditional: it takes no class"
            )
        return lab

    # ---- rendering
    def recipe(self, state: EditState) -> Recipe:
        """The recipe of ``state`` (the only way the studio renders)."""
        inp = state.latent or SeedInput(state.seed, state.truncation, state.label)
        edits = [
            (s.source, s.index, v)
            for s, v in zip(self.sliders, state.values, strict=True)
            if v != 0
        ]
        # relative: sliders of directions without an amplitude are absolute (Recipe.make)
        return Recipe.make(self.generator, inp, edits, relative=True, source=self.model_source)

    def render_tensor(self, state: EditState, original: bool = False) -> torch.Tensor:
        """The image of ``state`` (or, ``original``, of its input unedited) as the recipe renders
        it: ``[1, C, H, W]`` in about [-1, 1] (what the exports and ``navcuda edit`` write)."""
        with self._lock:
            recipe = self.recipe(state)
            return render_recipe(self.generator, recipe, self.sources, original=original)

    def render(self, state: EditState, original: bool = False) -> np.ndarray:
        """:meth:`render_tensor` for the screen: uint8 ``[H, W, 3]`` (greyscale repeated)."""
        return to_rgb(self.render_tensor(state, original))

    # ---- photos and recipes
    def project_photo(
        self, path: str | os.PathLike, state: EditState, progress: bool = True
    ) -> EditState:
        """Project the photo at ``path`` (W+, :attr:`projection_steps`); the returned state
        edits it. :class:`PhotoError` for a file that is not an image."""
        from navcuda.project import load_image, project

        c, r, _ = self.generator.image_shape
        try:
            target = load_image(path, r, c)
        except (ValueError, FileNotFoundError) as exc:
            raise PhotoError(str(exc)) from None
        with self._lock:
            try:
                proj = project(self.generator, target, steps=self.projection_steps,
                               metric=self.metric, progress=progress)  # fmt: skip
            except ValueError as exc:  # e.g. a generator that cannot project (GeneratorError)
                raise PhotoError(str(exc)) from None
        return replace(state, latent=LatentInput.of(proj, Path(path).name))

    def load_recipe(self, path: str | os.PathLike) -> EditState:
        """The state of a recipe file (its model must be this one: :class:`RecipeModelError`;
        its directions must have sliders here)."""
        recipe = Recipe.load(path)
        recipe.check_model(self.generator)
        values = [0.0] * len(self.sliders)
        for term in recipe.terms:
            for k, s in enumerate(self.sliders):
                if s.source.checksum == term.checksum and s.index == term.index:
                    amp = s.source.directions[s.index].amplitude
                    values[k] += term.t / amp if s.relative and amp else term.t
                    break
            else:
                raise RecipeError(
                    f"the recipe's direction {term.name!r} ({term.set}) is not one of the "
                    "studio's sets; start the studio with that set"
                )
        inp = recipe.input
        if isinstance(inp, SeedInput):
            state = EditState(tuple(values), inp.seed, inp.truncation, inp.label)
        else:
            state = EditState(tuple(values), latent=inp)
        return replace(state, values=self.check_values(state.values))

    # ---- exports
    def export(self, state: EditState, kind: str) -> Path:
        """Write the edit as ``kind`` (``png``, ``gif``, ``mp4`` of a sweep from no edit to the
        whole edit, or ``recipe``) into :attr:`export_dir`, atomically; returns the file.
        :class:`ExportError` when it cannot be written (nothing half-written is left)."""
        if kind not in KINDS:
            raise StudioError(f"unknown export {kind!r}: one of {', '.join(KINDS)}")
        folder = self.export_dir
        try:
            if folder.exists() and not folder.is_dir():
                raise OSError(f"{folder} is a file, not a folder")
            recipe = self.recipe(state)
            image = self.render_tensor(state) if kind == "png" else None
            strip = self.sweep(state) if kind in ("gif", "mp4") else None
            return write_export(kind, folder, self._next_name(), recipe, image, strip)
        except OSError as exc:
            reason = exc.strerror or exc  # without "[Errno N]"
            raise ExportError(f"cannot export to {self.export_dir}: {reason}") from None

    def sweep(self, state: EditState) -> torch.Tensor:
        """``[1, T, C, H, W]``: ``state``'s input with its edit scaled from none to all of it
        (:func:`~navcuda.studio.exports.sweep_images`), what the GIF and MP4 exports show."""
        with self._lock:
            return sweep_images(self.generator, self.recipe(state), self.sources)

    def _next_name(self) -> str:
        while True:
            stem = f"edit-{next(self._counter):04d}"
            if not any(self.export_dir.glob(f"{stem}.*")):
                return stem


def _as_int(value: object, what: str) -> int:
    try:
        x = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise StudioError(f"{what} must be an integer, got {value!r}") from None
    if not math.isfinite(x) or x != int(x):
        raise StudioError(f"{what} must be an integer, got {value!r}")
    return int(x)
