"""Short, one-line ``repr`` of result objects that hold tensors.

A dataclass's generated ``repr`` prints every tensor in full: ``repr(RenderResult)`` of a small
render is ~80k characters of pixel values. :func:`short_repr` gives one line instead, tensors as
``[shape] dtype``, long lists and strings cut::

    RenderResult(images=[8, 4, 5, 3, 64, 64] float32, ts=[8, 5] float32,
                 names=['sv0', 'sv1', 'sv2', ... 8 items], files=[16 paths])
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import torch

__all__ = ["short_repr", "summarize"]

#: Items of a list or tuple shown before the count; characters of a string before the cut.
MAX_ITEMS = 3
MAX_CHARS = 40


def summarize(value: Any, depth: int = 0) -> str:
    """A short text for ``value``: tensors and arrays as ``[shape] dtype`` (scalars as their
    value), lists/tuples/dicts as their first few items and their length, long strings cut."""
    if isinstance(value, torch.Tensor):
        if value.ndim == 0:
            return f"tensor({value.item():.4g})" if value.is_floating_point() else repr(value)
        dtype = str(value.dtype).removeprefix("torch.")
        dev = "" if value.device.type == "cpu" else f" {value.device}"
        return f"{list(value.shape)} {dtype}{dev}"
    if type(value).__module__ == "numpy" and hasattr(value, "shape") and hasattr(value, "dtype"):
        return f"{list(value.shape)} {value.dtype}"
    if isinstance(value, os.PathLike):
        return repr(os.fspath(value))
    if isinstance(value, str):
        return repr(value if len(value) <= MAX_CHARS else value[: MAX_CHARS - 3] + "...")
    if isinstance(value, list | tuple):
        if value and all(isinstance(v, os.PathLike) for v in value):
            return f"[{len(value)} paths]"
        if len(value) <= 8 and all(isinstance(v, int | float) for v in value):
            return repr(value)
        if depth > 1:
            return f"[{len(value)} items]"
        items = [summarize(v, depth + 1) for v in value[:MAX_ITEMS]]
        if len(value) > MAX_ITEMS:
            items.append(f"... {len(value)} items")
        open_, close = ("[", "]") if isinstance(value, list) else ("(", ")")
        return open_ + ", ".join(items) + close
    if isinstance(value, dict):
        if depth > 1 or len(value) > MAX_ITEMS:
            keys = ", ".join(repr(k) for k in list(value)[:MAX_ITEMS])
            more = f", ... {len(value)} keys" if len(value) > MAX_ITEMS else ""
            return "{" + keys + more + "}"
        return "{" + ", ".join(f"{k!r}: {summarize(v, depth + 1)}" for k, v in value.items()) + "}"
    if isinstance(value, float):
        return f"{value:.4g}"
    text = repr(value)
    return text if len(text) <= 2 * MAX_CHARS else text[: 2 * MAX_CHARS - 3] + "..."


def short_repr(obj: Any) -> str:
    """``Name(field=summary, ...)`` of a dataclass on one line (:func:`summarize` per field);
    use as ``__repr__ = short_repr`` in the class body (with ``@dataclass(repr=False)``)."""
    fields = (f.name for f in dataclasses.fields(obj) if f.repr)
    parts = ", ".join(f"{name}={summarize(getattr(obj, name))}" for name in fields)
    return f"{type(obj).__name__}({parts})"
