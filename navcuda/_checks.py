"""Argument checks shared by the modules: one test and one wording per kind of argument.

(``navcuda.ops`` keeps its own checks: it must not import from the package above it.)
"""

from __future__ import annotations

import numbers

__all__ = ["is_int", "positive_int"]


def is_int(value: object) -> bool:
    """Whether ``value`` is an integer (``int``, a NumPy integer, any ``numbers.Integral``) and
    not a ``bool``."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def positive_int(value: object, name: str, *, none_ok: bool = False, note: str = "") -> int | None:
    """``value`` as an ``int >= 1`` (``None`` as ``None`` with ``none_ok``).

    Otherwise raises ``ValueError("{name} must be an integer >= 1[ {note}][ or None], got ...")``
    giving the value, and its type when it is not an integer (bools are refused: ``True`` is no
    count). ``note`` says what the number counts, e.g. ``"(steps between writes)"``.
    """
    if value is None and none_ok:
        return None
    if is_int(value) and value >= 1:  # type: ignore[operator]
        return int(value)  # type: ignore[arg-type]
    got = repr(value) if is_int(value) else f"{type(value).__name__} {value!r}"
    what = "an integer >= 1" + (f" {note}" if note else "") + (" or None" if none_ok else "")
    raise ValueError(f"{name} must be {what}, got {got}")
