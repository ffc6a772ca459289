"""Names and good/bad marks for the directions of a set: the gallery's ``names.json``.

The gallery's "Export names" button downloads::

    {"set": {"file": "dirs.nav", "directions": "<sha>", "fingerprint": "...", "method": "svd",
             "layer": "convs.3", "count": 8},
     "names": {"0": {"name": "smile", "mark": "good"}, "1": {"name": null, "mark": null}, ...}}

:func:`apply_names` merges such a file into a :class:`DirectionSet`: names into ``names``, marks
into ``extra["marks"]`` (``{"<index>": "good" | "bad"}``).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from navcuda.io.directions import MARKS, DirectionSet, find_label_clash

__all__ = ["MARKS", "NamesError", "apply_names", "load_names", "set_digest", "set_info"]

MAX_NAME_LENGTH = 200


class NamesError(ValueError):
    """A names file is malformed or does not fit the direction set."""


def set_digest(direction_set: DirectionSet) -> str:
    """SHA-256 (16 hex digits) of the set's coefficients and amplitudes: identifies the directions
    independently of their names and metadata."""
    h = hashlib.sha256()
    for t in (direction_set.coefficients, direction_set.amplitudes):
        t = t.detach().cpu().contiguous()
        h.update(f"{t.dtype}{list(t.shape)}".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()[:16]


def set_info(direction_set: DirectionSet, source: str | os.PathLike | None = None) -> dict:
    """The ``"set"`` entry of a names file (and of the gallery's data)."""
    return {
        "file": None if source is None else Path(source).name,
        "directions": set_digest(direction_set),
        "fingerprint": direction_set.fingerprint,
        "method": direction_set.method,
        "layer": direction_set.layer,
        "count": len(direction_set),
    }


def load_names(names_json: str | os.PathLike | Mapping[str, Any]) -> dict:
    """Read and parse a names file (a path, or an already parsed mapping)."""
    if isinstance(names_json, Mapping):
        return dict(names_json)
    p = Path(names_json)
    if p.is_dir():
        raise IsADirectoryError(f"names file {p} is a folder; give the names.json in it")
    if not p.is_file():
        raise FileNotFoundError(f"names file not found: {p}")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise NamesError(f"{p} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise NamesError(f"{p}: expected a JSON object with a 'names' entry")
    return data


def apply_names(
    direction_set: DirectionSet,
    names_json: str | os.PathLike | Mapping[str, Any],
    allow_other_set: bool = False,
) -> DirectionSet:
    """A copy of ``direction_set`` with the names and marks of ``names_json`` merged in.

    ``names_json`` is a path or a parsed mapping ``{"set": {...}, "names": {"<index>": {"name":
    str | null, "mark": "good" | "bad" | null}}}``. For each listed index: a string ``name``
    replaces the direction's name (stripped; an empty string or ``null`` clears it; a missing key
    keeps it) and ``mark`` sets (or with ``null`` clears) ``extra["marks"]["<index>"]``.

    Raises :class:`NamesError` for a malformed file, an unknown index, an invalid mark, two
    directions with the same name (names are looked up case-insensitively), a name that is the
    default label of a direction left unnamed (``"svd0"`` for direction 2 while direction 0 has no
    name: both would be labelled ``"svd0"``; see :func:`navcuda.io.directions.find_label_clash`),
    or a file exported from a different set (its ``set.directions`` digest differs;
    ``allow_other_set`` skips that check).
    """
    data = load_names(names_json)
    where = "names" if isinstance(names_json, Mapping) else str(names_json)
    entries = data.get("names")
    if not isinstance(entries, dict):
        raise NamesError(f"{where}: expected an object 'names' mapping indices to entries")
    info = data.get("set")
    if info is not None and not isinstance(info, dict):
        raise NamesError(f"{where}: 'set' must be an object")
    k = len(direction_set)
    if info and not allow_other_set:
        digest = info.get("directions")
        if digest is not None and digest != set_digest(direction_set):
            raise NamesError(
                f"{where} was exported for another direction set (directions {digest}, "
                f"file {info.get('file')!r}), not this one ({set_digest(direction_set)}); "
                "pass allow_other_set=True (CLI: --allow-other-set) to apply it anyway"
            )
    names = list(direction_set.names)
    marks = dict(direction_set.extra.get("marks") or {})
    for key, entry in entries.items():
        try:
            index = int(key)
            if str(index) != str(key).strip() or index < 0:
                raise ValueError
        except ValueError:
            raise NamesError(
                f"{where}: bad direction index {key!r} (expected '0'..'{k - 1}')"
            ) from None
        if index >= k:
            raise NamesError(
                f"{where}: unknown direction index {index}: the set has {k} directions (0..{k - 1})"
            )
        if isinstance(entry, str) or entry is None:  # shorthand {"3": "smile"}
            entry = {"name": entry}
        if not isinstance(entry, dict):
            raise NamesError(f"{where}: entry {key!r} must be an object with 'name' and 'mark'")
        unknown = set(entry) - {"name", "mark"}
        if unknown:
            raise NamesError(f"{where}: entry {key!r} has unknown fields {sorted(unknown)}")
        if "name" in entry:
            name = entry["name"]
            if name is not None and not isinstance(name, str):
                raise NamesError(f"{where}: the name of direction {index} must be a string")
            name = (name or "").strip()
            if len(name) > MAX_NAME_LENGTH:
                raise NamesError(
                    f"{where}: the name of direction {index} is longer than {MAX_NAME_LENGTH}"
                )
            names[index] = name or None
        if "mark" in entry:
            mark = entry["mark"]
            if mark not in (*MARKS, None):
                raise NamesError(
                    f"{where}: the mark of direction {index} must be 'good', 'bad' or null, "
                    f"got {mark!r}"
                )
            if mark is None:
                marks.pop(str(index), None)
            else:
                marks[str(index)] = mark
    seen: dict[str, int] = {}
    for i, n in enumerate(names):
        if n is None:
            continue
        if n.lower() in seen:
            raise NamesError(
                f"directions {seen[n.lower()]} and {i} would both be called {n!r} "
                "(names are case-insensitive); rename one"
            )
        seen[n.lower()] = i
    clash = find_label_clash(direction_set.method, names)
    if clash is not None:
        i, j = clash
        raise NamesError(
            f"{where}: direction {i} would be called {names[i]!r}, the label of direction {j}, "
            f"which has no name (an unnamed direction is labelled {direction_set.method!r} and "
            f"its index); name direction {j} too, or rename direction {i}"
        )
    out = direction_set.subset(range(k))
    out.names = names
    out.extra = dict(direction_set.extra)
    if marks:
        out.extra["marks"] = dict(sorted(marks.items(), key=lambda kv: int(kv[0])))
    else:
        out.extra.pop("marks", None)
    return out
