"""Rendering directions: strips over t, image grids and their PNG files.

A *strip* of a direction is ``G_{theta + t xi}(z)`` for a row of ``t`` values; a direction grid
stacks one strip per (direction, z). Files are written atomically: to a temporary file beside the
target, then renamed, so an interrupted run never leaves a half-written PNG.

Large renders stream: :func:`render` with an ``output_dir`` writes each strip (and GIF) as soon as
its images are done and keeps in memory only one file's images at a time (plus, by default, the
whole result when it is small: ``keep_images``). The latents may be any sequence of seeds, a
``range`` included, which is never materialised: the rows of one file are sampled when that file
is rendered. :func:`estimate_render` gives the memory, disk and time a render will take, for a
caller (the command line) to refuse what does not fit before starting.
"""

from __future__ import annotations

import itertools
import math
import os
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from tqdm.auto import tqdm

from navcuda._checks import positive_int
from navcuda._summary import short_repr
from navcuda.io.atomic import atomic_path, nearest_existing
from navcuda.io.directions import DirectionSet
from navcuda.models.interface import GeneratorError, Inputs, ShiftableGenerator
from navcuda.shift import Combination, Direction, as_inputs, synthesize_shifted

__all__ = [
    "KEEP_IMAGES_MAX_BYTES",
    "RenderEstimate",
    "RenderResult",
    "atomic_save_figure",
    "atomic_save_image",
    "estimate_render",
    "inputs_for",
    "render",
    "render_strips",
    "default_rows_per_file",
    "save_gif",
    "save_grid",
    "strip_frames",
    "to_image",
    "to_rgb",
    "to_uint8",
]

#: :func:`render` with an output folder keeps its images in the result (``keep_images=None``) up
#: to this many bytes (float32), and none beyond (they are in the files).
KEEP_IMAGES_MAX_BYTES = 1 << 30
#: Float32 bytes of the images of one strip file (rows x t) held while rendering to disk; larger
#: strips are split into several files of consecutive rows (:func:`default_rows_per_file`).
FILE_MAX_BYTES = 1 << 30
#: Rows (latents) of one strip file at most, whatever the image size.
FILE_MAX_ROWS = 256

_DEFAULT_TS = (-2.0, -1.0, 0.0, 1.0, 2.0)


class _Rows:
    """The latents of a render, made a slice at a time: seeds (any sequence, ``range`` included,
    never listed whole), a count, :class:`Inputs` or a StyleGAN ``z`` tensor."""

    def __init__(self, generator, z_or_seeds, truncation_psi: float, label) -> None:
        self.generator, self.psi = generator, truncation_psi
        self.seeds: Sequence[int] | None = None
        self.inputs: Inputs | None = None
        self.z: torch.Tensor | None = None
        self.label, self.per_seed_label = None, False
        if isinstance(z_or_seeds, Inputs):
            self.inputs, n = z_or_seeds, len(z_or_seeds)
        elif isinstance(z_or_seeds, torch.Tensor):
            if getattr(generator, "from_z", None) is None:
                raise ValueError(
                    f"{generator.architecture} takes seeds or navcuda Inputs, not a z tensor"
                )
            self.z, n = z_or_seeds, int(z_or_seeds.shape[0])
        else:
            if isinstance(z_or_seeds, bool):
                raise TypeError("z_or_seeds must be a count, seeds, navcuda Inputs or a z tensor")
            if isinstance(z_or_seeds, int):
                z_or_seeds = range(z_or_seeds)
            elif not isinstance(z_or_seeds, Sequence):  # an iterator: its seeds, listed
                z_or_seeds = list(z_or_seeds)
            self.seeds, n = z_or_seeds, len(z_or_seeds)
            self.label = label
            if label is not None:
                count = torch.as_tensor(label).numel()
                if count not in (1, n):
                    raise GeneratorError(f"got {count} class labels for {n} seeds")
                self.per_seed_label = count > 1
        if n == 0:
            raise ValueError("no latents: give a count, seeds, navcuda Inputs or a z tensor")
        self.n = n

    def __len__(self) -> int:
        return self.n

    def take(self, lo: int, hi: int) -> Inputs:
        """The inputs of rows ``lo..hi-1``."""
        if self.inputs is not None:
            return self.inputs.take(slice(lo, hi))
        if self.z is not None:
            with torch.no_grad():
                return self.generator.from_z(self.z[lo:hi].to(self.generator.device), self.psi)
        assert self.seeds is not None
        lab = self.label[lo:hi] if self.per_seed_label else self.label  # type: ignore[index]
        return self.generator.sample_seeds(self.seeds[lo:hi], truncation_psi=self.psi, label=lab)

    def describe(self) -> str:
        """``seeds 0, 1, 2, ..., 99`` (cut after a few), or what the rows are."""
        if self.seeds is None:
            return f"{self.n} latents"
        if self.n <= 8:
            return "seeds " + ", ".join(str(int(s)) for s in self.seeds)
        head = ", ".join(str(int(s)) for s in self.seeds[:3])
        return f"seeds {head}, ..., {int(self.seeds[-1])} ({self.n} seeds)"


def _render_units(
    generator: ShiftableGenerator,
    directions: Sequence[Direction],
    rows: _Rows,
    ts: torch.Tensor,
    noise_mode: str | None,
    batch_size: int,
    rows_per_unit: int,
    bar: tqdm | None = None,
) -> Iterator[tuple[int, int, int, torch.Tensor]]:
    """Yield ``(direction index, row lo, row hi, images [hi - lo, T, C, H, W])`` unit by unit:
    rows in pages of ``rows_per_unit``, every direction of a page before the next page (each page
    sampled once). The (direction, latent, t) samples run in batches of ``batch_size`` that span
    units, so batches stay full; a unit is yielded as soon as its last image is rendered."""
    k, n, t = len(directions), len(rows), ts.shape[1]
    dev = generator.device

    def samples() -> Iterator[tuple[int, int, int, int, int]]:
        for lo in range(0, n, rows_per_unit):
            hi = min(n, lo + rows_per_unit)
            for i in range(k):
                for j in range(lo, hi):
                    for m in range(t):
                        yield lo, hi, i, j, m

    stream = samples()
    pages: dict[int, Inputs] = {}
    parts: list[torch.Tensor] = []
    filled = 0
    while chunk := list(itertools.islice(stream, batch_size)):
        for lo in [lo for lo in pages if lo < chunk[0][0]]:
            del pages[lo]  # every direction of that page is done
        segments: list[Inputs] = []
        for lo, hi in dict.fromkeys((s[0], s[1]) for s in chunk):
            if lo not in pages:
                pages[lo] = rows.take(lo, hi)
            segments.append(pages[lo].take([s[3] - lo for s in chunk if s[0] == lo]))
        x = segments[0] if len(segments) == 1 else Inputs.cat(segments)
        tt = torch.stack([ts[s[2], s[4]] for s in chunk]).to(dev)
        dirs = [directions[s[2]] for s in chunk]
        with torch.no_grad():
            img = synthesize_shifted(generator, x, dirs, tt, noise_mode).float().cpu()
        if bar is not None:
            bar.update(len(chunk))
        pos = 0
        while pos < len(chunk):
            lo, hi, i = chunk[pos][:3]
            size = (hi - lo) * t
            take = min(size - filled, len(chunk) - pos)
            parts.append(img[pos : pos + take])
            filled += take
            pos += take
            if filled == size:
                images = parts[0] if len(parts) == 1 else torch.cat(parts)
                parts, filled = [], 0
                yield i, lo, hi, images.reshape(hi - lo, t, *images.shape[1:])


@torch.no_grad()
def render_strips(
    generator: ShiftableGenerator,
    directions: Sequence[Direction],
    inputs: Inputs | torch.Tensor,
    ts: Sequence[float] | torch.Tensor,
    noise_mode: str | None = None,
    batch_size: int = 16,
    progress: bool = False,
) -> torch.Tensor:
    """Images ``[K, N, T, C, H, W]``: K directions, N inputs (:class:`Inputs`, or StyleGAN
    ``ws [N, ...]``), T shifts.

    ``ts`` is ``[T]`` (the same shifts for every direction) or ``[K, T]`` (one row per direction).
    All (direction, latent, t) triples are rendered in batches of ``batch_size``, one shift per
    sample.
    """
    inputs = as_inputs(generator, inputs)
    k, n = len(directions), len(inputs)
    ts_ = _ts_per_direction(ts, k)
    t = ts_.shape[1]
    if k == 0 or n == 0 or t == 0:
        raise ValueError(f"need at least one direction, latent and t (got {k}, {n}, {t})")
    positive_int(batch_size, "batch_size")
    rows = _Rows(generator, inputs, 1.0, None)
    out: torch.Tensor | None = None
    with tqdm(total=k * n * t, desc="render", unit="img", disable=not progress) as bar:
        for i, _, _, images in _render_units(
            generator, directions, rows, ts_, noise_mode, batch_size, n, bar
        ):
            if out is None:
                out = images.new_empty(k, *images.shape)
            out[i] = images
    assert out is not None
    return out


def _ts_per_direction(ts: Sequence[float] | torch.Tensor, k: int) -> torch.Tensor:
    ts_ = torch.as_tensor(ts, dtype=torch.float32)
    if ts_.ndim == 1:
        ts_ = ts_.expand(k, -1)
    if ts_.ndim != 2 or ts_.shape[0] != k:
        raise ValueError(f"ts must be [T] or [K={k}, T], got {list(ts_.shape)}")
    return ts_


@dataclass(repr=False)
class RenderResult:
    """Output of :func:`render`: ``images [K, N, T, C, H, W]`` (None when they were only written
    to files: ``keep_images``), the absolute ``ts [K, T]`` used, the directions' names, the files
    written (empty when no output folder was given) and the images' ``shape``
    ``(K, N, T, C, H, W)``. Its ``repr`` is one line (tensors as shapes)."""

    images: torch.Tensor | None
    ts: torch.Tensor
    names: list[str]
    files: list[Path] = field(default_factory=list)
    shape: tuple[int, ...] = ()

    __repr__ = short_repr


def default_rows_per_file(image_shape: Sequence[int], n_ts: int) -> int:
    """Rows (latents) of one strip file: as many as keep its float32 images within
    :data:`FILE_MAX_BYTES`, at most :data:`FILE_MAX_ROWS`, at least one."""
    per_row = 4 * n_ts * math.prod(image_shape)
    return int(max(1, min(FILE_MAX_ROWS, FILE_MAX_BYTES // max(per_row, 1))))


def render(
    generator: ShiftableGenerator,
    directions: DirectionSet | Sequence[Direction] | Direction,
    z_or_seeds: Inputs | torch.Tensor | Sequence[int] | int = 4,
    ts: Sequence[float] | None = None,
    relative: bool = True,
    output_dir: str | os.PathLike | None = None,
    gif: bool = False,
    truncation_psi: float = 0.7,
    noise_mode: str | None = None,
    batch_size: int = 16,
    progress: bool = True,
    label: int | Sequence[int] | None = None,
    *,
    labels: bool = False,
    video: bool = False,
    keep_images: bool | None = None,
    rows_per_file: int | None = None,
) -> RenderResult:
    """Render every direction over a row of shifts for several latents.

    Args:
        directions: a direction set, a list of directions or one direction; combinations
            (:class:`~navcuda.shift.Combination`, several directions at once) render as one
            strip each, ``ts`` scaling the whole combination (they have no amplitude).
        z_or_seeds: a sequence of seeds (a ``range`` is never listed: rows are sampled a file at
            a time), a count N (seeds 0..N-1), the generator's
            :class:`~navcuda.models.interface.Inputs`, or (StyleGAN) latents ``[N, z_dim]``.
        ts: shifts (default ``-2, -1, 0, 1, 2``). With ``relative=True`` they are multiples of each
            direction's recommended amplitude (directions without one use 1.0); otherwise
            absolute Frobenius norms.
        output_dir: when given, writes ``{i:02d}_{name}.png`` (rows: latents, columns: t) per
            direction, and with ``gif=True`` an animated ``{i:02d}_{name}.gif`` sweeping t, each
            as soon as it is rendered. More latents than fit one file (``rows_per_file``) give
            one file per page of rows, ``{i:02d}_{name}_rows{lo}-{hi}.png`` (row indices, first
            and last, zero-padded).
        truncation_psi: 0.7 by default (:func:`navcuda.generate` defaults to 1.0).
        noise_mode: StyleGAN's noise: ``"const"`` (default), ``"random"`` or ``"none"``.
        label: a conditional generator's class, one for all latents or one per latent (None:
            drawn with each seed's latent).
        batch_size: images per synthesis call (bounds memory).
        progress: show a progress bar (over images).
        labels: draw the direction's name and each column's t on the strips, and t on the GIF
            and video frames.
        video: also write an MP4 ``{i:02d}_{name}.mp4`` sweeping t forth and back
            (:func:`navcuda.video.save_video`; needs ``navcuda[video]``).
        keep_images: keep the images in ``RenderResult.images``. None (default): always without
            ``output_dir``; with it, only when they take at most :data:`KEEP_IMAGES_MAX_BYTES`
            (else ``images`` is None: they are in the files, and memory holds one file's images
            at a time). True: always; False: never (needs ``output_dir``).
        rows_per_file: latents per strip file (default :func:`default_rows_per_file`: 256 at
            most, and at most :data:`FILE_MAX_BYTES` of float32 images).

    Returns:
        :class:`RenderResult`.
    """
    dirs = _as_directions(directions)
    rows = _Rows(generator, z_or_seeds, truncation_psi, label)
    rel, amps, abs_ts = _shifts(dirs, ts, relative)
    positive_int(batch_size, "batch_size")
    positive_int(rows_per_file, "rows_per_file", none_ok=True)
    if video:
        from navcuda.video import check_video_support

        check_video_support()  # before any rendering
    if keep_images is False and output_dir is None:
        raise ValueError("keep_images=False needs an output_dir (the images would be lost)")
    names = [d.name or f"direction{i}" for i, d in enumerate(dirs)]
    k, n, t = len(dirs), len(rows), rel.numel()
    image_shape = tuple(generator.image_shape)
    shape = (k, n, t, *image_shape)
    result = RenderResult(None, abs_ts, names, shape=shape)
    if output_dir is None:
        per_file, keep = n, True
    else:
        per_file = min(n, rows_per_file or default_rows_per_file(image_shape, t))
        keep = keep_images if keep_images is not None else _nbytes(shape) <= KEEP_IMAGES_MAX_BYTES
    images = torch.empty(shape) if keep else None
    out = None if output_dir is None else Path(output_dir)
    width = len(str(n - 1))
    with tqdm(total=k * n * t, desc="render", unit="img", disable=not progress) as bar:
        for i, lo, hi, strip in _render_units(
            generator, dirs, rows, abs_ts, noise_mode, batch_size, per_file, bar
        ):
            if images is not None:
                images[i, lo:hi] = strip
            if out is None:
                continue
            stem = f"{i:02d}_{_safe(names[i])}"
            if per_file < n:
                stem += f"_rows{lo:0{width}d}-{hi - 1:0{width}d}"
            title = cols = None
            if labels:
                title, cols = _strip_labels(names[i], i, rel, amps[i], relative, (lo, hi, n))
            result.files.append(save_grid(strip, out / f"{stem}.png", title=title,
                                          column_labels=cols))  # fmt: skip
            if gif:
                result.files.append(save_gif(strip, out / f"{stem}.gif", title=title,
                                             frame_labels=cols))  # fmt: skip
            if video:
                from navcuda.video import save_video

                frames = strip_frames(strip, title=title, frame_labels=cols, bounce=True)
                result.files.append(save_video(frames, out / f"{stem}.mp4"))
            bar.set_postfix_str(f"wrote {stem}", refresh=False)
    result.images = images
    return result


def _shifts(
    dirs: Sequence[Direction], ts: Sequence[float] | None, relative: bool
) -> tuple[torch.Tensor, list[float], torch.Tensor]:
    """The shifts asked for ``[T]`` (default ``-2..2``), each direction's scale (its amplitude
    when ``relative`` and it has one, else 1) and the absolute shifts ``[K, T]``."""
    rel = torch.as_tensor(list(_DEFAULT_TS) if ts is None else list(ts))
    if rel.ndim != 1 or rel.numel() == 0 or not torch.isfinite(rel).all():
        raise ValueError("ts must be a non-empty list of finite numbers")
    amps = [(d.amplitude if (relative and d.amplitude) else 1.0) for d in dirs]
    return rel, amps, torch.tensor(amps, dtype=torch.float32)[:, None] * rel[None, :].float()


def _nbytes(shape: Sequence[int]) -> int:
    return 4 * math.prod(shape)


def _strip_labels(
    name: str, index: int, rel: torch.Tensor, amp: float, relative: bool, rows: tuple[int, int, int]
) -> tuple[str, list[str]]:
    """The title and the column labels of a labelled strip."""
    lo, hi, n = rows
    scale = f"t x amplitude {amp:.4g}" if relative else "t absolute"
    where = f", rows {lo}-{hi - 1} of {n}" if hi - lo < n else ""
    return f"#{index} {name} ({scale}{where})", [f"t={float(v):g}" for v in rel]


class RenderEstimate(NamedTuple):
    """What a render will take (:func:`estimate_render`); a tuple ``(bytes_in_memory,
    bytes_on_disk, seconds)`` first. ``bytes_in_memory``: the peak of the images held (float32)
    plus one file's 8-bit canvases; ``bytes_on_disk``: the files, uncompressed (PNG and GIF
    compress: an upper bound); ``seconds``: the rendering time measured on one batch (None when
    not measured)."""

    bytes_in_memory: int
    bytes_on_disk: int
    seconds: float | None
    images: int
    files: int

    def describe(self) -> str:
        """One line: images, files, memory, disk and time."""
        when = "" if self.seconds is None else f", about {_duration(self.seconds)}"
        disk = f", up to {_size(self.bytes_on_disk)} on disk" if self.files else ""
        return (
            f"{self.images:,} images in {self.files:,} files: about "
            f"{_size(self.bytes_in_memory)} in memory{disk}{when}"
        )

    def problems(
        self, output_dir: str | os.PathLike | None = None, max_seconds: float | None = None
    ) -> list[str]:
        """Why this render should not start without confirmation: more memory than is
        available now, more disk than is free where ``output_dir`` would be, more time than
        ``max_seconds``. Empty when it fits (or what is free cannot be read)."""
        out = []
        free_mem = available_memory()
        if free_mem is not None and self.bytes_in_memory > free_mem:
            out.append(
                f"it needs about {_size(self.bytes_in_memory)} of memory, {_size(free_mem)} "
                "is available"
            )
        if output_dir is not None and self.files:
            free_disk = shutil.disk_usage(nearest_existing(output_dir)).free
            if self.bytes_on_disk > free_disk:
                out.append(
                    f"its files take up to {_size(self.bytes_on_disk)}, {_size(free_disk)} is "
                    f"free in {nearest_existing(output_dir)}"
                )
        if max_seconds is not None and self.seconds is not None and self.seconds > max_seconds:
            out.append(f"it takes about {_duration(self.seconds)}")
        return out


def available_memory() -> int | None:
    """Bytes of memory available now (Linux ``MemAvailable``; None where unknown)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _size(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError


def _duration(s: float) -> str:
    if s < 90:
        return f"{s:.0f} s"
    if s < 5400:
        return f"{s / 60:.0f} min"
    return f"{s / 3600:.1f} h"


def estimate_render(
    generator: ShiftableGenerator,
    n_directions: int,
    n_seeds: int,
    n_ts: int,
    *,
    output_dir: bool | str | os.PathLike | None = True,
    gif: bool = False,
    keep_images: bool | None = None,
    rows_per_file: int | None = None,
    batch_size: int = 16,
    measure: bool = True,
    seconds_per_image: float | None = None,
    video: bool = False,
) -> RenderEstimate:
    """Memory, disk and time of :func:`render` with these sizes and options (``output_dir``:
    whether files are written; a path counts as True), without rendering all of it.

    The time is ``seconds_per_image`` times the images, or with ``measure`` one batch of
    ``min(batch_size, images)`` unshifted images rendered and timed (after one warm-up image);
    shifted renders cost about the same. :meth:`RenderEstimate.problems` compares the estimate
    with the free memory and disk; :meth:`RenderEstimate.describe` says it in one line. A
    gallery (:func:`navcuda.gallery.build_gallery`) is a render with ``rows_per_file=n_seeds``,
    ``gif=True`` and ``keep_images=False``. ``video``: the MP4 beside each strip counts too (its
    frames in memory while encoded; on disk its frames, forth and back, as raw ``yuv420p``, 1.5
    bytes a pixel, plus 4 KiB of headers: more than navcuda's H.264 files take even for frames
    of random noise, measured from 20 x 20 to 1040 x 260 pixels).
    """
    for name, v in (("n_directions", n_directions), ("n_seeds", n_seeds), ("n_ts", n_ts)):
        positive_int(v, name)
    positive_int(batch_size, "batch_size")
    image_shape = tuple(generator.image_shape)
    c, h, w = image_shape
    shape = (n_directions, n_seeds, n_ts, *image_shape)
    images = n_directions * n_seeds * n_ts
    writes = output_dir is not None and output_dir is not False
    if not writes:
        per_file, keep, n_files = n_seeds, True, 0
    else:
        per_file = min(n_seeds, rows_per_file or default_rows_per_file(image_shape, n_ts))
        keep = keep_images if keep_images is not None else _nbytes(shape) <= KEEP_IMAGES_MAX_BYTES
        n_files = n_directions * math.ceil(n_seeds / per_file) * (1 + int(gif) + int(video))
    unit = per_file * n_ts * c * h * w
    kept = _nbytes(shape) if keep else 0
    # one unit in float32 (while rendered) and its 8-bit canvases (strip; GIF frames twice;
    # the video's frames once: the way back repeats the same images)
    canvas = unit * (3 if c == 1 else 1) * (1 + (2 if gif else 0) + (1 if video else 0))
    memory = max(kept, 4 * unit) + (canvas if writes else 0) + 4 * batch_size * c * h * w
    pixels = n_seeds * n_ts * (h + 2) * (w + 2) * n_directions
    disk = 3 * pixels + (pixels * 2 if gif else 0) if writes else 0  # RGB PNG; GIF: 2T-2 frames
    if writes and video:  # max(T, 2T-2) frames of pixels / T each, 1.5 bytes a pixel
        videos = n_directions * math.ceil(n_seeds / per_file)
        disk += 3 * pixels * max(n_ts, 2 * n_ts - 2) // (2 * n_ts) + 4096 * videos
    seconds = None if seconds_per_image is None else seconds_per_image * images
    if seconds is None and measure:
        b = min(batch_size, images)
        with torch.no_grad():
            generator.render(generator.sample(1, 0))
            start = time.perf_counter()
            generator.render(generator.sample(b, 0))
            seconds = (time.perf_counter() - start) / b * images
    return RenderEstimate(int(memory), int(disk), seconds, images, n_files)


def _as_directions(directions) -> list[Direction]:
    if isinstance(directions, (Direction, Combination)):  # a combination renders as one strip
        return [directions]
    dirs = list(directions)
    if not dirs:
        raise ValueError("no directions to render")
    return dirs


def inputs_for(
    generator: ShiftableGenerator,
    z_or_seeds: Inputs | torch.Tensor | Sequence[int] | int,
    truncation_psi: float = 1.0,
    label: int | Sequence[int] | None = None,
) -> Inputs:
    """The inputs of a render: ``Inputs`` as they are; a count ``N`` (seeds ``0..N-1``) or a
    list of seeds (one input per seed, :meth:`~ShiftableGenerator.sample_seeds`); or, for StyleGAN
    generators, latents ``z [N, z_dim]``."""
    if isinstance(z_or_seeds, Inputs):
        return z_or_seeds
    rows = _Rows(generator, z_or_seeds, truncation_psi, label)
    return rows.take(0, len(rows))


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:60] or "direction"


def save_gif(
    strip: torch.Tensor,
    path: str | os.PathLike,
    frame_ms: int = 120,
    padding: int = 2,
    *,
    title: str | None = None,
    frame_labels: Sequence[str] | None = None,
) -> Path:
    """Animated GIF of ``strip [N, T, C, H, W]``: frame m shows the N latents side by side at the
    m-th shift; the animation goes forth and back. Written atomically. ``title`` and
    ``frame_labels`` (one per shift, e.g. ``"t=-2"``) are drawn above the images."""
    seq = strip_frames(strip, padding, title=title, frame_labels=frame_labels, bounce=True)
    return atomic_save_image(
        seq[0], path, format="GIF", save_all=True, append_images=seq[1:], duration=frame_ms, loop=0
    )


def strip_frames(
    strip: torch.Tensor,
    padding: int = 2,
    *,
    title: str | None = None,
    frame_labels: Sequence[str] | None = None,
    bounce: bool = False,
) -> list[Image.Image]:
    """The frames of an animation of ``strip [N, T, C, H, W]`` (GIF, MP4): frame m shows the N
    latents side by side at the m-th shift, under ``title`` and ``frame_labels[m]`` when given;
    ``bounce`` appends the way back (forth and back when looped)."""
    if strip.ndim != 5:
        raise ValueError(f"expected [N, T, C, H, W], got {list(strip.shape)}")
    if frame_labels is not None and len(frame_labels) != strip.shape[1]:
        raise ValueError(f"{len(frame_labels)} frame labels for {strip.shape[1]} frames")
    frames = []
    for m in range(strip.shape[1]):
        canvas = _tile(strip[:, m], nrow=strip.shape[0], padding=padding)
        if title is not None or frame_labels is not None:
            lines = [x for x in (title, None if frame_labels is None else frame_labels[m]) if x]
            frames.append(_with_header(canvas, lines, [], 0, padding))
        else:
            frames.append(Image.fromarray(canvas))
    return frames + frames[-2:0:-1] if bounce else frames


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # a Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _with_header(
    canvas: np.ndarray, lines: Sequence[str], columns: Sequence[str], cell: int, padding: int
) -> Image.Image:
    """``canvas`` under a white band holding ``lines`` (left-aligned, one per line) and
    ``columns`` (one label centred over each column of width ``cell``), in black, with PIL's
    default font sized to the columns."""
    width = canvas.shape[1]
    size = 11
    if columns:
        longest = max(len(c) for c in columns)
        size = max(6, min(size, int(cell / max(longest, 1) / 0.6)))
    font = _font(size)
    line_h = size + 3
    rows = len(lines) + (1 if columns else 0)
    band = padding + rows * line_h
    img = Image.new("RGB", (width, band + canvas.shape[0]), (255, 255, 255))
    img.paste(Image.fromarray(canvas), (0, band))
    draw = ImageDraw.Draw(img)
    y = padding
    for line in lines:
        draw.text((padding, y), line, fill=(0, 0, 0), font=font)
        y += line_h
    for c, label in enumerate(columns):
        text_w = draw.textlength(label, font=font)
        x = padding + c * (cell + padding) + max(0.0, (cell - text_w) / 2)
        draw.text((x, y), label, fill=(0, 0, 0), font=font)
    return img


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """``[..., C, H, W]`` floats in [-1, 1] -> ``[..., H, W, C]`` uint8 (values clipped)."""
    x = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.movedim(-3, -1).numpy()


def to_image(image: torch.Tensor) -> Image.Image:
    """The first image of ``[..., C, H, W]`` in [-1, 1] as an 8-bit PIL image: ``L`` for a
    greyscale model, else ``RGB`` (what ``navcuda edit`` and the studio's exports write)."""
    arr = to_uint8(image.reshape(-1, *image.shape[-3:])[0])
    return Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr)


def to_rgb(image: torch.Tensor) -> np.ndarray:
    """The first image of ``[..., C, H, W]`` in [-1, 1] as uint8 ``[H, W, 3]`` (greyscale
    repeated in the three channels: for displays and side-by-side sheets)."""
    a = to_uint8(image.reshape(-1, *image.shape[-3:])[0])
    return np.repeat(a, 3, axis=-1) if a.shape[-1] == 1 else a


def atomic_save_image(image: Image.Image, path: str | os.PathLike, **save_kwargs) -> Path:
    """Save a PIL image to ``path`` atomically (temporary file + rename); returns the path."""
    p = Path(path)
    fmt = save_kwargs.pop("format", None) or _format_of(p)
    with atomic_path(p) as tmp:
        image.save(tmp, format=fmt, **save_kwargs)
    return p


def atomic_save_figure(fig, path: str | os.PathLike, dpi: int | None = None) -> Path:
    """Save a matplotlib figure as PNG atomically and close it; returns the path."""
    import matplotlib.pyplot as plt

    p = Path(path)
    try:
        with atomic_path(p) as tmp:
            fig.savefig(tmp, format="png", dpi=dpi)
    finally:
        plt.close(fig)
    return p


def _format_of(p: Path) -> str:
    ext = p.suffix.lower().lstrip(".")
    formats = {"png": "PNG", "jpg": "JPEG", "jpeg": "JPEG", "gif": "GIF", "webp": "WEBP"}
    if ext not in formats:
        raise ValueError(f"unsupported image extension {p.suffix!r}; use one of {sorted(formats)}")
    return formats[ext]


def _tile(images: torch.Tensor, nrow: int, padding: int) -> np.ndarray:
    n, c, h, w = images.shape
    rows = (n + nrow - 1) // nrow
    canvas = np.full(
        (rows * (h + padding) + padding, nrow * (w + padding) + padding, 3), 255, np.uint8
    )
    arr = to_uint8(images)
    if c == 1:
        arr = np.repeat(arr, 3, axis=-1)
    for idx in range(n):
        r, col = divmod(idx, nrow)
        y, x = padding + r * (h + padding), padding + col * (w + padding)
        canvas[y : y + h, x : x + w] = arr[idx]
    return canvas


def save_grid(
    images: torch.Tensor,
    path: str | os.PathLike,
    nrow: int | None = None,
    padding: int = 2,
    *,
    title: str | None = None,
    column_labels: Sequence[str] | None = None,
) -> Path:
    """Tile images into one PNG, atomically.

    ``images``: ``[N, C, H, W]`` (tiled ``nrow`` per row, default ceil(sqrt(N))) or
    ``[R, T, C, H, W]`` (one row per leading index). Values in [-1, 1]; C is 1 or 3. ``title``
    and ``column_labels`` (one per column, e.g. ``"t=-2"``) are drawn above the grid.
    """
    if images.ndim == 5:
        nrow = images.shape[1]
        images = images.flatten(0, 1)
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(
            f"expected [N, C, H, W] or [R, T, C, H, W] with C in (1, 3), got {list(images.shape)}"
        )
    nrow = nrow or int(np.ceil(np.sqrt(images.shape[0])))
    if column_labels is not None and len(column_labels) != nrow:
        raise ValueError(f"{len(column_labels)} column labels for {nrow} columns")
    canvas = _tile(images, nrow, padding)
    if title is None and column_labels is None:
        return atomic_save_image(Image.fromarray(canvas), path)
    header = _with_header(canvas, [title] if title else [], column_labels or [],
                          images.shape[-1], padding)  # fmt: skip
    return atomic_save_image(header, path)
