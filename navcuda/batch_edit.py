"""Batch editing: one combination of directions applied to many inputs (seeds or photos), each
result streamed to disk as soon as it is rendered, resumable after an interruption.

For every input ``STEM`` (``seed0003``, or a photo's file name without its extension) the output
folder receives ``STEM.png`` (the edited image: what ``navcuda edit --recipe STEM.recipe.json``
renders, bit for bit) and then ``STEM.recipe.json`` (:mod:`navcuda.recipe`); both are written
atomically, the recipe last, so an input whose recipe exists is complete. A rerun skips the
inputs whose recipe asks for the same edit, and reuses a photo's projection when only the
directions changed. ``contact_sheet.png`` shows, for the first :data:`SHEET_MAX` inputs, the input
(the photo as the model sees it, or the unedited sample) beside the edited image.
"""

from __future__ import annotations

import glob
import math
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from navcuda.models.interface import ShiftableGenerator
from navcuda.project import Metric, load_image, project
from navcuda.recipe import (
    DirectionSource,
    LatentInput,
    Recipe,
    RecipeError,
    SeedInput,
    render_recipe,
)
from navcuda.rendering import atomic_save_image, to_image, to_rgb

__all__ = [
    "IMAGE_SUFFIXES",
    "SHEET_MAX",
    "BatchResult",
    "EditInput",
    "ProjectionSettings",
    "edit_batch",
    "photo_inputs",
    "seed_inputs",
    "to_image",
]

#: File name suffixes taken from a folder of photos.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif")
#: Inputs shown on the contact sheet at most (the first ones).
SHEET_MAX = 256
SHEET_NAME = "contact_sheet.png"


@dataclass(frozen=True)
class EditInput:
    """One input of a batch: a seed or a photo, written as ``stem``."""

    stem: str
    seed: int | None = None
    photo: Path | None = None


def seed_inputs(seeds: Iterable[int]) -> Iterator[EditInput]:
    """One input per seed (lazy: a range is never listed), named ``seed0003``."""
    for s in seeds:
        yield EditInput(f"seed{int(s):04d}", seed=int(s))


def photo_inputs(specs: Sequence[str | os.PathLike]) -> list[EditInput]:
    """The photos named by ``specs``: files, folders (their images, by :data:`IMAGE_SUFFIXES`,
    sorted) and glob patterns (``"shots/*.jpg"``), in order, each once; stems made unique
    (``a``, ``a_2``). ``FileNotFoundError`` for a missing file or a pattern matching nothing."""
    paths: list[Path] = []
    for spec in specs:
        text = str(spec)
        p = Path(text)
        if p.is_dir():
            found = sorted(q for q in p.iterdir() if q.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in folder {p}")
            paths.extend(found)
        elif any(c in text for c in "*?[") and not p.exists():
            found = sorted(Path(q) for q in glob.glob(text) if Path(q).is_file())
            if not found:
                raise FileNotFoundError(f"no file matches {text!r}")
            paths.extend(found)
        elif p.exists():
            paths.append(p)
        else:
            raise FileNotFoundError(f"image not found: {p}")
    seen: set[Path] = set()
    stems: set[str] = set()
    out = []
    for p in paths:
        key = p.resolve()
        if key in seen:
            continue
        seen.add(key)
        stem, n = p.stem, 1
        while stem.lower() in stems:
            n += 1
            stem = f"{p.stem}_{n}"
        stems.add(stem.lower())
        out.append(EditInput(stem, photo=p))
    return out


@dataclass(frozen=True)
class ProjectionSettings:
    """How photos are projected (:func:`navcuda.project.project`): recorded in their recipes,
    so that a rerun reuses a projection only when it would be the same."""

    steps: int = 500
    mode: str = "w+"
    seed: int = 0
    metric: str = "auto"

    def to_json(self) -> dict[str, Any]:
        return {"steps": self.steps, "mode": self.mode, "seed": self.seed, "metric": self.metric}


@dataclass
class BatchResult:
    """What :func:`edit_batch` did: the images written, the inputs skipped (already done), the
    contact sheet (None when not asked for)."""

    written: list[Path] = field(default_factory=list)
    skipped: int = 0
    sheet: Path | None = None
    count: int = 0


def edit_batch(
    generator: ShiftableGenerator,
    inputs: Iterable[EditInput],
    edits: Sequence[tuple[DirectionSource, int, float]],
    output_dir: str | os.PathLike,
    *,
    relative: bool = True,
    truncation: float = 0.7,
    label: int | None = None,
    projection: ProjectionSettings | None = None,
    metric: Metric | None = None,
    source: str | None = None,
    sheet: bool = True,
    progress: bool = True,
    total: int | None = None,
) -> BatchResult:
    """Apply ``edits`` (``(source, direction index, t)``, ``t`` relative to the amplitude unless
    ``relative=False``) to every input, writing ``STEM.png`` and ``STEM.recipe.json`` into
    ``output_dir`` as each is done (module docstring). Photos are projected with ``projection``
    (and the perceptual ``metric``); seeds sampled at ``truncation`` (class ``label``).
    ``source`` is the model's source recorded in the recipes. Returns a :class:`BatchResult`."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    settings = projection or ProjectionSettings()
    sources = list(dict.fromkeys(src for src, _, _ in edits))
    contact = _ContactSheet(generator.image_shape) if sheet else None
    result = BatchResult()
    bar = tqdm(inputs, total=total, desc="edit", unit="input", disable=not progress)
    for item in bar:
        result.count += 1
        png, rec_path = out / f"{item.stem}.png", out / f"{item.stem}.recipe.json"
        previous = _previous(rec_path) if png.is_file() else None
        if item.seed is not None:
            wanted = Recipe.make(
                generator, SeedInput(item.seed, truncation, label), edits,
                relative=relative, source=source,
            )  # fmt: skip
        else:
            assert item.photo is not None
            target = None
            reuse = _reusable_projection(previous, generator, item.photo, settings)
            if reuse is None:
                c, r, _ = generator.image_shape
                target = load_image(item.photo, r, c)
                proj = project(
                    generator, target, steps=settings.steps, mode=settings.mode,  # type: ignore[arg-type]
                    seed=settings.seed, metric=metric, progress=False,
                )  # fmt: skip
                reuse = LatentInput.of(proj, str(item.photo))
            wanted = Recipe.make(generator, reuse, edits, relative=relative, source=source)
            wanted = wanted.with_extra(projection=settings.to_json())
        if previous is not None and previous.dumps() == wanted.dumps():
            result.skipped += 1
            bar.set_postfix_str(f"{item.stem} done before", refresh=False)
            edited = None
        else:
            edited = render_recipe(generator, wanted, sources)
            atomic_save_image(to_image(edited), png)
            wanted.save(rec_path)  # last: the input is complete
            result.written.append(png)
        if contact is not None and result.count <= SHEET_MAX:
            if item.seed is not None:
                before = render_recipe(generator, wanted, original=True)
            else:
                c, r, _ = generator.image_shape
                before = load_image(item.photo, r, c)  # type: ignore[arg-type]
            after = edited if edited is not None else _read_png(png)
            contact.add(before, after)
    if contact is not None and contact.cells:
        result.sheet = contact.save(out / SHEET_NAME)
    return result


def _previous(path: Path) -> Recipe | None:
    if not path.is_file():
        return None
    try:
        return Recipe.load(path)
    except (RecipeError, OSError):
        return None  # damaged: redone


def _reusable_projection(
    previous: Recipe | None,
    generator: ShiftableGenerator,
    photo: Path,
    settings: ProjectionSettings,
) -> LatentInput | None:
    """A previous run's projection of ``photo``, when it was made the same way on this model."""
    if previous is None or not isinstance(previous.input, LatentInput):
        return None
    same = (
        previous.fingerprint == generator.fingerprint()
        and previous.input.source == str(photo)
        and previous.extra.get("projection") == settings.to_json()
    )
    return previous.input if same else None


def _read_png(path: Path) -> torch.Tensor:
    arr = np.asarray(Image.open(path), dtype=np.float32)
    if arr.ndim == 2:
        arr = arr[..., None]
    return torch.from_numpy(arr.copy()).permute(2, 0, 1)[None] / 127.5 - 1.0


class _ContactSheet:
    """Pairs (input, edited) tiled in rows; the canvas grows as pairs arrive."""

    def __init__(self, image_shape: Sequence[int], padding: int = 2) -> None:
        self.c, self.h, self.w = image_shape
        self.pad = padding
        self.cells: list[np.ndarray] = []

    def add(self, before: torch.Tensor, after: torch.Tensor) -> None:
        pair = np.full((self.h, 2 * self.w + self.pad, 3), 255, np.uint8)
        for i, img in enumerate((before, after)):
            x = i * (self.w + self.pad)
            pair[:, x : x + self.w] = to_rgb(img)
        self.cells.append(pair)

    def save(self, path: Path) -> Path:
        n = len(self.cells)
        cols = max(1, min(8, math.ceil(math.sqrt(n))))
        rows = math.ceil(n / cols)
        ch, cw = self.h + 2 * self.pad, 2 * self.w + 3 * self.pad + 4
        canvas = np.full((rows * ch + self.pad, cols * cw + self.pad, 3), 255, np.uint8)
        canvas[:, :] = 255
        for i, cell in enumerate(self.cells):
            r, c = divmod(i, cols)
            y, x = self.pad + r * ch, self.pad + c * cw
            canvas[y : y + self.h, x : x + cell.shape[1]] = cell
        return atomic_save_image(Image.fromarray(canvas), path)
