"""Build the static HTML gallery of a direction set.

Layout of the output folder::

    index.html        the page: HTML, CSS and JS inline; the data as an inline JSON block
    img/003.png       the strip of direction 3 (rows: seeds, columns: t)
    img/003.gif       its animated preview (the seeds side by side, t sweeping forth and back)

Images are files beside the page rather than data URIs: a 64-direction gallery holds 128 images
(the GIFs the largest), which as base64 would make ``index.html`` a third larger and slow to parse
and diff; as files the browser loads them lazily and in parallel, the page opens from ``file://``
or any static server, and the folder can be zipped as it is. Nothing is fetched from the network.

Everything that comes from data (names, method, layer, score keys and values) is HTML-escaped in
the markup and ``<``/``>``/``&``-escaped inside the JSON block, so no data can close a tag.
"""

from __future__ import annotations

import html
import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from navcuda._checks import positive_int
from navcuda.gallery.names import set_info
from navcuda.io.atomic import atomic_path
from navcuda.io.directions import DirectionSet
from navcuda.models.interface import ShiftableGenerator

__all__ = ["build_gallery", "estimate_gallery", "value_label"]

_VALUE_LABELS = {
    "svd": "singular value",
    "spectrum": "eigenvalue",
    "hybrid": "eigenvalue",
    "sefa": "eigenvalue",
    "ganspace": "variance",
    "optimize": "value",
}

Scores = Mapping[int, Mapping[str, Any] | None] | Sequence[Mapping[str, Any] | None]


def value_label(method: str) -> str:
    """What ``DirectionSet.values`` holds for ``method`` ("singular value", "eigenvalue", ...)."""
    return _VALUE_LABELS.get(method, "value")


def _asset(name: str) -> str:
    return (resources.files("navcuda.gallery") / "assets" / name).read_text(encoding="utf-8")


def _num(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def _fmt(x: Any) -> str:
    if isinstance(x, bool) or x is None:
        return "—" if x is None else str(x)
    if isinstance(x, int | float):
        return "—" if not math.isfinite(x) else f"{x:.4g}"
    return str(x)


def _json_for_script(obj: Any) -> str:
    """JSON that is safe inside ``<script type="application/json">`` (no ``</script>``)."""
    text = json.dumps(obj, ensure_ascii=False, allow_nan=False)
    return text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")


def _normalise_scores(scores: Scores | None, k: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [{} for _ in range(k)]
    if scores is None:
        return out
    items = scores.items() if isinstance(scores, Mapping) else enumerate(scores)
    for i, s in items:
        try:
            idx = int(i)
        except (TypeError, ValueError):
            raise ValueError(f"scores: bad direction index {i!r}") from None
        if not 0 <= idx < k:
            raise ValueError(f"scores: direction index {idx} out of range (0..{k - 1})")
        if s is None:
            continue
        if not isinstance(s, Mapping):
            raise ValueError(f"scores for direction {idx} must be a dict of name -> value")
        clean: dict[str, Any] = {}
        for key, v in s.items():
            if isinstance(v, torch.Tensor):
                v = v.item()
            if isinstance(v, bool) or not isinstance(v, int | float | str):
                raise ValueError(
                    f"score {key!r} of direction {idx} must be a number or a string, got "
                    f"{type(v).__name__}"
                )
            clean[str(key)] = _num(float(v)) if isinstance(v, int | float) else v
        out[idx] = clean
    return out


def _render_card(d: dict, value_name: str, ts_label: str, seeds_label: str) -> str:
    e = html.escape
    i = d["index"]
    name = d["name"] or ""
    meta_rows = [
        ("method", d["method"]),
        ("layer", d["layer"]),
        (value_name, _fmt(d["value"])),
        ("amplitude", _fmt(d["amplitude"])),
    ]
    meta = "".join(f"<dt>{e(k)}</dt><dd>{e(str(v))}</dd>" for k, v in meta_rows)
    scores = ""
    if d["scores"]:
        rows = "".join(
            f'<tr><th scope="row">{e(k)}</th><td>{e(_fmt(v))}</td></tr>'
            for k, v in d["scores"].items()
        )
        scores = f'<table class="scores"><caption>scores</caption><tbody>{rows}</tbody></table>'
    label = e(name) if name else f"direction {i}"
    return f"""
<article class="card" id="card-{i}" data-index="{i}" tabindex="0"
  aria-label="Direction {i}{(": " + e(name)) if name else ""}">
  <header>
    <span class="idx">#{i}</span>
    <input class="name" type="text" id="name-{i}" value="{e(name)}" maxlength="200"
      placeholder="name this direction" aria-label="Name of direction {i}" autocomplete="off"
      spellcheck="false">
    <span class="badge" aria-hidden="true"></span>
  </header>
  <div class="media">
    <img class="strip" src="{e(d["strip"])}" width="{d["strip_size"][0]}"
      height="{d["strip_size"][1]}" alt="Strip of {label}: rows are {e(seeds_label)}, columns are
      {e(ts_label)}">
    <img class="anim" src="{e(d["gif"])}" alt="Animated preview of {label}" aria-hidden="true">
  </div>
  <p class="tlabel">{e(ts_label)}</p>
  <dl class="meta">{meta}</dl>
  {scores}
  <div class="marks" role="group" aria-label="Mark direction {i}">
    <button type="button" class="mark" data-mark="good" aria-pressed="false"
      title="Mark good (g)">good <kbd>g</kbd></button>
    <button type="button" class="mark" data-mark="bad" aria-pressed="false"
      title="Mark bad (b)">bad <kbd>b</kbd></button>
    <button type="button" class="mark" data-mark="" aria-pressed="false"
      title="Clear the mark (n)">unmarked <kbd>n</kbd></button>
  </div>
</article>"""


def _atomic_write_text(path: Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


def estimate_gallery(
    generator: ShiftableGenerator, n_directions: int, n_seeds: int, n_ts: int, **kwargs: Any
):
    """What :func:`build_gallery` will take (a :class:`~navcuda.rendering.RenderEstimate`:
    memory, disk, seconds): one strip and one GIF per direction, each holding every seed;
    ``kwargs`` go to :func:`~navcuda.rendering.estimate_render` (``batch_size``, ``measure``,
    ``seconds_per_image``)."""
    from navcuda.rendering import estimate_render

    return estimate_render(generator, n_directions, n_seeds, n_ts, output_dir=True, gif=True,
                           keep_images=False, rows_per_file=n_seeds, **kwargs)  # fmt: skip


def build_gallery(
    generator: ShiftableGenerator,
    direction_set: DirectionSet,
    output_dir: str | os.PathLike,
    seeds: Sequence[int] | int = (0, 1, 2),
    ts: Sequence[float] = (-2.0, -1.0, 0.0, 1.0, 2.0),
    scores: Scores | None = None,
    relative: bool = True,
    truncation_psi: float = 0.7,
    source: str | os.PathLike | None = None,
    title: str | None = None,
    batch_size: int = 16,
    progress: bool = False,
    label: int | None = None,
) -> Path:
    """Write a static gallery of ``direction_set`` to ``output_dir``; returns ``index.html``.

    Args:
        seeds: latents of the strips (rows), a sequence of seeds (a ``range`` is not listed) or
            a count. Each card's strip holds every seed (refused beyond
            :data:`~navcuda.rendering.FILE_MAX_BYTES` of images per direction);
            :func:`estimate_gallery` says what a gallery will take before it is built.
        ts: shifts (columns): multiples of each direction's recommended amplitude, or absolute
            Frobenius norms with ``relative=False``.
        scores: optional per-direction scores, ``{index: {"name": value}}`` or a list with one
            dict (or None) per direction, e.g. toy-world factor changes and a disentanglement
            score. Shown on the cards and offered as sort keys.
        source: the set's file, named in the page and in the exported ``names.json``.
        label: a conditional generator's class for every strip (None: drawn with each seed).

    The page offers sorting, filtering, naming and good/bad marks (kept in the browser's
    localStorage) and exports ``names.json`` (see :mod:`navcuda.gallery.names`). The images are
    streamed: each direction's strip and GIF are written as soon as they are rendered, and only
    that direction's images are held in memory.
    """
    from navcuda.rendering import (
        FILE_MAX_BYTES,
        _render_units,
        _Rows,
        _shifts,
        _size,
        save_gif,
        save_grid,
    )

    k = len(direction_set)
    if k == 0:
        raise ValueError("no directions to render")
    score_list = _normalise_scores(scores, k)
    out = Path(output_dir)
    img_dir = out / "img"
    positive_int(batch_size, "batch_size")
    rows = _Rows(generator, seeds, truncation_psi, label)
    dirs = list(direction_set)
    _, _, abs_ts = _shifts(dirs, ts, relative)
    n, t_count = len(rows), abs_ts.shape[1]
    channels, height, width = generator.image_shape
    strip_bytes = 4 * n * t_count * channels * height * width
    if strip_bytes > FILE_MAX_BYTES:
        raise ValueError(
            f"a gallery card's strip holds every seed: {n} seeds x {t_count} shifts would take "
            f"{_size(strip_bytes)} per direction (at most {_size(FILE_MAX_BYTES)}); give fewer "
            "seeds (navcuda render writes long seed ranges as several files)"
        )
    pad = 2
    strip_size = (t_count * (width + pad) + pad, n * (height + pad) + pad)
    files: dict[int, tuple[Path, Path]] = {}
    with tqdm(total=k * n * t_count, desc="gallery", unit="img", disable=not progress) as bar:
        for i, _, _, strip in _render_units(
            generator, dirs, rows, abs_ts, None, batch_size, n, bar
        ):
            files[i] = (
                save_grid(strip, img_dir / f"{i:03d}.png", padding=pad),
                save_gif(strip, img_dir / f"{i:03d}.gif", padding=pad),
            )
    values = direction_set.values
    marks = direction_set.extra.get("marks") or {}
    cards = []
    for i in range(k):
        strip, gif = files[i]
        amp = float(direction_set.amplitudes[i])
        cards.append(
            {
                "index": i,
                "name": direction_set.names[i],
                "mark": marks.get(str(i)) if marks.get(str(i)) in ("good", "bad") else None,
                "method": direction_set.method,
                "layer": direction_set.layer,
                "value": None if values is None else _num(float(values[i])),
                "amplitude": _num(amp),
                "scores": score_list[i],
                "strip": strip.relative_to(out).as_posix(),
                "gif": gif.relative_to(out).as_posix(),
                "strip_size": strip_size,
            }
        )
    score_keys: list[str] = []
    for s in score_list:
        score_keys += [key for key in s if key not in score_keys]
    vname = value_label(direction_set.method)
    ts_text = ", ".join(f"{v:g}" for v in ts)
    ts_label = f"t = {ts_text}" + (" × amplitude" if relative else " (absolute)")
    seeds_label = rows.describe()
    info = set_info(direction_set, source)
    data = {
        "set": info,
        "valueLabel": vname,
        "scoreKeys": score_keys,
        "directions": [
            {key: c[key] for key in ("index", "name", "mark", "value", "amplitude", "scores")}
            for c in cards
        ],
    }
    e = html.escape
    sort_options = [("index", "index"), ("value", vname), ("amplitude", "amplitude")]
    sort_options += [("name", "name")] + [(f"score:{key}", f"score: {key}") for key in score_keys]
    options = "".join(f'<option value="{e(v)}">{e(label)}</option>' for v, label in sort_options)
    page_title = title or f"navcuda gallery: {info['file'] or direction_set.method} ({k})"
    summary = (
        f"{k} {e(direction_set.method)} directions of layer {e(direction_set.layer)}"
        + (f" from <code>{e(info['file'])}</code>" if info["file"] else "")
        + (f", model {e(direction_set.fingerprint)}" if direction_set.fingerprint else "")
        + f"; rows: {e(seeds_label)}; columns: {e(ts_label)}."
    )
    fills = {
        "TITLE": e(page_title),
        "CSS": _asset("gallery.css"),
        "JS": _asset("gallery.js"),
        "DATA": _json_for_script(data),
        "CARDS": "".join(_render_card(c, vname, ts_label, seeds_label) for c in cards),
        "SUMMARY": summary,
        "SORT_OPTIONS": options,
    }
    page = re.sub(r"@@([A-Z_]+)@@", lambda m: fills[m.group(1)], _asset("template.html"))
    return _atomic_write_text(out / "index.html", page)
