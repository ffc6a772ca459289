"""The declared parameters of the discovery methods, and their validation.

Each method module declares a table next to its function (``SVD_PARAMS`` in
:mod:`navcuda.discover.svd`, ...; :func:`table` finds it by method name) with :func:`declare`:
one :class:`Param` per keyword argument (name, type, rule, one-line meaning), its default read
from the function's signature (and, for the optimisation methods, from
:class:`~navcuda.discover.optimize.OptimizeConfig`), so that the table cannot drift from the code.

:func:`check_params` validates what a caller gives against a table before any work: an unknown
name is refused naming the closest valid ones, a value of the wrong type or out of range naming
the rule and the default. JSON-parsed command-line values are coerced where that is safe (an int
where a float is expected, an integral float such as ``1e3`` where an int is, ``"true"`` for a
flag). :func:`describe` prints a table (``navcuda discover --method M --list-params``).
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import inspect
import math
import numbers
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from navcuda._checks import is_int

__all__ = [
    "Param",
    "ParamError",
    "check_params",
    "choice",
    "declare",
    "describe",
    "flag",
    "integer",
    "nested",
    "number",
    "other",
    "path",
    "table",
]

#: ``--list-params`` and the errors refer to this to list a method's parameters.
LIST_HINT = "navcuda discover --method {method} --list-params"


class ParamError(ValueError, TypeError):
    """A discovery parameter that is unknown, of the wrong type or out of range. A
    ``ValueError``, and a ``TypeError`` too, as the methods raised for some wrong types before
    their parameters were declared."""


class _Refused(Exception):
    """Raised by an ``accept`` function: the value is not of the parameter's type or rule."""


@dataclass(frozen=True)
class Param:
    """One parameter of a discovery method.

    ``type`` and ``rule`` are words (``"an integer"``, ``">= 1"``), shown in errors and by
    :func:`describe` (with ``short``, the type in a word); ``accept`` maps a given value to the
    value passed on (coerced where safe) or raises ``_Refused``; ``None`` passes when
    ``none_ok``. ``name`` and ``default`` are filled in by :func:`declare` from the method's
    signature.
    """

    type: str
    rule: str
    help: str
    accept: Callable[[Any], Any] = dataclasses.field(repr=False, compare=False)
    none_ok: bool = False
    name: str = ""
    default: Any = None
    #: the type in a word for :func:`describe` (default: from ``type``)
    short: str = ""

    def check(self, value: Any, where: str) -> Any:
        """``value`` as passed on to the method, or :class:`ParamError` naming what was expected
        (``where``: whose parameter, e.g. ``"svd"``)."""
        if value is None and self.none_ok:
            return None
        try:
            return self.accept(value)
        except _Refused:
            pass
        expected = " ".join(w for w in (self.type, self.rule) if w)
        if self.none_ok:
            expected += " or None (null)"
        kind = "" if isinstance(value, int | float | str) else f" ({type(value).__name__})"
        raise ParamError(
            f"{where} parameter {self.name} must be {expected}, got {value!r}{kind} (default "
            f"{_show(self.default)}). {self.name}: {self.help}"
        ) from None

    @property
    def short_type(self) -> str:
        """The type in a word, for :func:`describe`."""
        return self.short or _SHORT.get(self.type, self.type)


_SHORT = {
    "an integer": "int",
    "a finite number": "float",
    "true or false": "bool",
    "one of": "str",
    "a file path": "path",
}


# ----------------------------------------------------------------------------- kinds of value
def _bound(v: float) -> str:
    if is_int(v) and v >= 2**16 and (int(v) & (int(v) - 1)) == 0:
        return f"2**{int(v).bit_length() - 1}"
    return f"{v:g}"


def _range_rule(lo, hi, lo_open: bool, hi_open: bool) -> str:
    if lo is not None and hi is not None:
        return f"in {'(' if lo_open else '['}{_bound(lo)}, {_bound(hi)}{')' if hi_open else ']'}"
    if lo is not None:
        return f"{'>' if lo_open else '>='} {_bound(lo)}"
    if hi is not None:
        return f"{'<' if hi_open else '<='} {_bound(hi)}"
    return ""


def _in_range(v, lo, hi, lo_open: bool, hi_open: bool) -> bool:
    if lo is not None and (v <= lo if lo_open else v < lo):
        return False
    return not (hi is not None and (v >= hi if hi_open else v > hi))


def integer(
    help: str,
    lo: int | None = None,
    hi: int | None = None,
    *,
    hi_open: bool = True,
    none_ok: bool = False,
) -> Param:
    """An integer in ``[lo, hi)`` (``hi_open=False``: ``[lo, hi]``); an integral float such as
    ``1e3`` counts, ``True`` does not."""

    def accept(v):
        if isinstance(v, float) and math.isfinite(v) and v.is_integer():
            v = int(v)
        if not is_int(v) or not _in_range(v, lo, hi, False, hi_open):
            raise _Refused
        return int(v)

    return Param("an integer", _range_rule(lo, hi, False, hi_open), help, accept, none_ok)


def number(
    help: str,
    lo: float | None = None,
    hi: float | None = None,
    *,
    lo_open: bool = False,
    hi_open: bool = False,
    none_ok: bool = False,
) -> Param:
    """A finite number in the range; an int is taken as a float."""

    def accept(v):
        if isinstance(v, bool) or not isinstance(v, numbers.Real):
            raise _Refused
        v = float(v)
        if not math.isfinite(v) or not _in_range(v, lo, hi, lo_open, hi_open):
            raise _Refused
        return v

    rule = _range_rule(lo, hi, lo_open, hi_open)
    return Param("a finite number", rule, help, accept, none_ok)


def flag(help: str) -> Param:
    """``True`` or ``False`` (the strings ``"true"``/``"false"``, any case, too)."""

    def accept(v):
        if isinstance(v, bool):
            return v
        if isinstance(v, str) and v.strip().lower() in ("true", "false"):
            return v.strip().lower() == "true"
        raise _Refused

    return Param("true or false", "", help, accept)


def choice(help: str, options: Sequence[str], *, none_ok: bool = False) -> Param:
    """One of the strings ``options``."""

    def accept(v):
        if isinstance(v, str) and v in options:
            return v
        raise _Refused

    return Param("one of", ", ".join(repr(o) for o in options), help, accept, none_ok)


def path(help: str, *, none_ok: bool = True) -> Param:
    """A file path (``str`` or ``os.PathLike``, not empty)."""

    def accept(v):
        if isinstance(v, str | os.PathLike) and str(v):
            return v
        raise _Refused

    return Param("a file path", "", help, accept, none_ok)


def other(help: str, short: str, expected: str, accept: Callable[[Any], bool], *,
          none_ok: bool = False) -> Param:  # fmt: skip
    """A value that ``accept(value)`` says is fine (passed on unchanged), described as
    ``expected`` (``short`` in the table): objects the Python API takes too (metric objects,
    tensors, direction sets)."""

    def check(v):
        if not accept(v):
            raise _Refused
        return v

    return Param("", expected, help, check, none_ok, short=short)


def nested(help: str, method: str, *, exclude: Mapping[str, str], owner: str) -> Param:
    """A dict of ``method``'s parameters, what one method passes on to another: the names are
    checked here (:func:`check_params` with ``exclude`` and ``owner``), the values where the
    nested run starts (it may not: a hybrid run resumed from its saved basis computes none)."""

    def accept(v):
        if not isinstance(v, Mapping):
            raise _Refused
        return check_params(method, v, exclude=exclude, owner=owner, values=False)

    return Param("", f"a dict of {method} parameters", help, accept, none_ok=True, short="dict")


# --------------------------------------------------------------- shared by several methods
SEED = integer("seed of every random draw (latents, initialisation)", 0, 2**63)
K = integer("number of directions (the CLI's -k)", 1)
LABEL = integer("class of a conditional generator (None: drawn with each latent)", 0, none_ok=True)
CALIBRATE = flag("calibrate each direction's amplitude to target_rms")
TARGET_RMS = number(
    "RMS image change (images in [-1, 1]) at the calibrated amplitude", 0, lo_open=True
)
PROGRESS = flag("show progress bars")
TRUNCATION = number("truncation psi of the latents (1: none)")
CHECKPOINT = path("resumable state file: written during the run, resumed when it exists")


# ------------------------------------------------------------------------------ the tables
def declare(
    fn: Callable[..., Any],
    *,
    config: type | None = None,
    defaults: Mapping[str, Any] | None = None,
    **params: Param,
) -> dict[str, Param]:
    """The table of ``fn``: every keyword argument of ``fn`` after the generator (and layer)
    and, when ``fn`` passes ``**hparams`` on to a ``config`` dataclass, every field of it, each
    with the default of the signature (a field's overridden by ``defaults``).

    Raises ``TypeError`` (at import: a programming error) when ``params`` misses one of them or
    declares one that is not there.
    """
    found: dict[str, Any] = {}
    for p in inspect.signature(fn).parameters.values():
        if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is not p.empty:
            found[p.name] = p.default
    if config is not None:
        for f in dataclasses.fields(config):
            if f.name not in found:
                found[f.name] = f.default
    for name, value in (defaults or {}).items():
        if name not in found:
            raise TypeError(f"{fn.__name__}: default for {name!r}, which it does not take")
        found[name] = value
    missing = sorted(set(found) - set(params))
    extra = sorted(set(params) - set(found))
    if missing or extra:
        raise TypeError(
            f"the parameter table of {fn.__name__} must declare exactly its keywords: "
            f"undeclared {missing}, not in the signature {extra}"
        )
    return {n: dataclasses.replace(params[n], name=n, default=found[n]) for n in found}


def table(method: str) -> dict[str, Param]:
    """The declared parameters of a discovery method (``ValueError`` for an unknown method)."""
    from navcuda.discover import METHODS

    if method not in METHODS:
        close = difflib.get_close_matches(str(method), METHODS, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ParamError(f"unknown method {method!r}; {hint}choose one of {sorted(METHODS)}")
    module = importlib.import_module(METHODS[method][0])
    return getattr(module, f"{method.upper()}_PARAMS")


def check_params(
    method: str,
    given: Mapping[str, Any],
    *,
    exclude: Mapping[str, str] | None = None,
    owner: str | None = None,
    values: bool = True,
) -> dict[str, Any]:
    """``given`` validated against ``method``'s table: the values to pass on (coerced where
    safe, see the module docstring).

    ``exclude`` maps names that may not be given here to what to use instead (e.g.
    ``{"k": "-k"}``); ``owner`` names the caller in errors (e.g. ``"hybrid spectrum_params"``
    for the parameters hybrid passes on to its spectrum run). Raises :class:`ParamError` (a
    ``ValueError``) for an unknown or excluded name (naming the closest valid ones) and for a
    value of the wrong type or out of range (naming the rule and the default); with
    ``values=False`` only the names are checked and the values returned as given.
    """
    params = table(method)
    where = method if owner is None else f"{owner}: {method}"
    exclude = exclude or {}
    out: dict[str, Any] = {}
    for name, value in given.items():
        if name in exclude:
            raise ParamError(f"{where} parameter {name} is not set here: use {exclude[name]}")
        param = params.get(name)
        if param is None:
            valid = [n for n in params if n not in exclude]
            close = difflib.get_close_matches(str(name), valid, n=3, cutoff=0.6)
            hint = (
                f"did you mean {' or '.join(repr(c) for c in close)}?"
                if close
                else f"its parameters are {', '.join(valid)}"
            )
            raise ParamError(
                f"{where} has no parameter {name!r}; {hint} "
                f"(`{LIST_HINT.format(method=method)}` lists them with their rules)"
            )
        out[name] = param.check(value, where) if values else value
    return out


def describe(method: str) -> str:
    """The table of ``method`` as text: name, type, default, rule, meaning."""
    rows = [("name", "type", "default", "rule", "meaning")]
    for p in table(method).values():
        rule = f"one of {p.rule}" if p.type == "one of" else p.rule
        if p.none_ok:
            rule = f"{rule or 'any'} or null"
        rows.append((p.name, p.short_type, _show(p.default), rule, p.help))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = [
        f"{method}: navcuda discover --method {method} --param NAME=VALUE (values are JSON: 3, "
        '0.5, true, null, "text"; a bare word is a string)'
    ]
    for r in rows:
        lines.append(
            "  " + "  ".join(c.ljust(w) for c, w in zip(r[:4], widths, strict=True)) + "  " + r[4]
        )
    return "\n".join(lines)


def _show(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, tuple | list):
        return ",".join(str(v) for v in value)
    return (
        "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)
    )
