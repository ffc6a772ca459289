"""Argument types and options shared by the ``navcuda`` commands, and what each command needs
to start: its generator (``--checkpoint``, ``--model``, ``--class``), a metric, checked outputs,
strict-JSON reports."""

from __future__ import annotations

import argparse
import bisect
import itertools
import json
import math
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path

import torch


class Seeds(Sequence[int]):
    """Seeds as ``--seeds`` gives them: a concatenation of ranges, never listed (``0-10000000000``
    takes a few bytes); indexing and slicing as a list of ints does (a slice is listed)."""

    def __init__(self, ranges: Sequence[range]) -> None:
        self._ranges = [r for r in ranges if len(r)]
        self._starts = [0]
        for r in self._ranges:
            self._starts.append(self._starts[-1] + len(r))

    def __len__(self) -> int:
        return self._starts[-1]

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError("seed index out of range")
        k = bisect.bisect_right(self._starts, i) - 1
        return self._ranges[k][i - self._starts[k]]

    def __repr__(self) -> str:
        parts = [f"{r.start}-{r.stop - 1}" if len(r) > 1 else str(r.start) for r in self._ranges]
        return f"Seeds({','.join(parts)!r})"

    def __iter__(self):
        return itertools.chain.from_iterable(self._ranges)

    def __eq__(self, other) -> bool:
        if not isinstance(other, Sequence) or isinstance(other, (str, bytes)):
            return NotImplemented
        if isinstance(other, Seeds):  # as maximal runs: in time and memory of the ranges
            return self._runs() == other._runs()
        # element by element, never listed
        return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))

    def _runs(self) -> list[tuple[int, int]]:
        """The seeds as maximal runs ``(start, stop)`` of consecutive seeds."""
        runs: list[tuple[int, int]] = []
        for r in self._ranges:
            if runs and runs[-1][1] == r.start:
                runs[-1] = (runs[-1][0], r.stop)
            else:
                runs.append((r.start, r.stop))
        return runs


def parse_seeds(text: str) -> Seeds:
    """``"0-7"`` -> seeds 0..7; ``"1,5,9"`` -> those; mixed: ``"0-2,10"``. Lazy (:class:`Seeds`):
    a range of 10^10 seeds is parsed in no time and no memory."""
    ranges: list[range] = []
    try:
        for part in text.split(","):
            part = part.strip()
            if "-" in part[1:]:
                a, b = part.split("-", 1)
                lo, hi = int(a), int(b)
                if hi < lo:
                    raise ValueError
                ranges.append(range(lo, hi + 1))
            else:
                ranges.append(range(int(part), int(part) + 1))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"bad seed list {text!r}: use e.g. '0-7', '1,5,9' or '0-2,10'"
        ) from None
    if any(r.start < 0 or r.stop > 2**63 for r in ranges):
        raise argparse.ArgumentTypeError(f"seeds must lie in [0, 2**63), got {text!r}")
    return Seeds(ranges)


#: a render or gallery estimated to take longer than this (or more memory or disk than is free)
#: starts only with ``--yes``
CONFIRM_SECONDS = 3600.0


def check_render_cost(args: argparse.Namespace, estimate) -> None:
    """Refuse (unless ``--yes``) a render whose :class:`~navcuda.rendering.RenderEstimate`
    exceeds the free memory or disk or :data:`CONFIRM_SECONDS`, saying the estimate; say the
    estimate of any render longer than a minute before it starts."""
    problems = estimate.problems(args.output, max_seconds=CONFIRM_SECONDS)
    if problems and not args.yes:
        raise ValueError(
            f"not started: {estimate.describe()}, and {'; '.join(problems)}. Pass --yes to "
            "start it anyway, or ask for fewer --seeds, --t values or directions"
        )
    if problems or (estimate.seconds or 0) > 60:
        print(f"navcuda {args.command}: {estimate.describe()}", file=sys.stderr)


def parse_range(text: str) -> list[float]:
    """``"-3:3:7"`` -> 7 values from -3 to 3; ``"-1,0,2"`` -> those values."""
    try:
        if ":" in text:
            a, b, n = text.split(":")
            steps = int(n)
            if steps < 1:
                raise ValueError
            values = [float(a), float(b)]
        else:
            values = [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"bad range {text!r}: use START:STOP:COUNT (e.g. -3:3:7) or a comma list"
        ) from None
    if not all(math.isfinite(v) for v in values):
        raise argparse.ArgumentTypeError(f"bad range {text!r}: every value must be a finite number")
    return torch.linspace(values[0], values[1], steps).tolist() if ":" in text else values


def number(text: str, what: str, ok, kind=float):
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if (kind is float and not math.isfinite(value)) or not ok(value):
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    return value


def finite(text: str) -> float:
    return number(text, "a finite number", lambda v: True)


def positive(text: str) -> float:
    return number(text, "a finite number > 0", lambda v: v > 0)


def non_negative_float(text: str) -> float:
    return number(text, "a finite number >= 0", lambda v: v >= 0)


def fraction(text: str) -> float:
    return number(text, "a number in [0, 1]", lambda v: 0 <= v <= 1)


def count(text: str) -> int:
    return number(text, "an integer >= 1", lambda v: v >= 1, int)


def non_negative(text: str) -> int:
    return number(text, "an integer >= 0", lambda v: 0 <= v < 2**63, int)


def seed_value(text: str) -> int:
    """``--seed``: an integer in ``[0, 2**63)``, as ``--seeds`` takes."""
    return number(text, "a seed: an integer in [0, 2**63)", lambda v: 0 <= v < 2**63, int)


def port_number(text: str) -> int:
    return number(text, "a port number in [0, 65535]", lambda v: 0 <= v <= 65535, int)


def device_name(text: str) -> str:
    """``--device``: a torch device that exists here (checked before any work starts)."""
    try:
        dev = torch.device(text)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(f"unknown device {text!r}: use cpu or cuda[:N]") from None
    if dev.type not in ("cpu", "cuda"):
        raise argparse.ArgumentTypeError(f"unsupported device {text!r}: use cpu or cuda[:N]")
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise argparse.ArgumentTypeError(
                f"{text!r}: no CUDA device is available here (torch.cuda.is_available() is "
                "False); use --device cpu"
            )
        if dev.index is not None and dev.index >= count:
            raise argparse.ArgumentTypeError(f"{text!r}: only {count} CUDA device(s) here")
    return text


def check_writable(path: str | os.PathLike, kind: str) -> Path:
    """Refuse, before any work, an output that cannot be written: a ``kind="file"`` that is a
    folder, a ``kind="dir"`` that is a file, a parent that is a file, or no write permission
    in the nearest existing folder (missing folders are created later)."""
    p = Path(path)
    if kind == "file" and (str(path) in ("", ".") or p.is_dir()):
        raise ValueError(f"cannot write {str(path)!r}: it is a folder; give a file name")
    if kind == "dir" and p.exists() and not p.is_dir():
        raise ValueError(f"cannot write into {str(path)!r}: it is a file, not a folder")
    from navcuda.io.atomic import nearest_existing

    folder = nearest_existing(p.parent if kind == "file" else p)
    if not folder.is_dir():
        raise ValueError(f"cannot write {str(path)!r}: {str(folder)!r} is a file, not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(f"cannot write {str(path)!r}: no write permission in {str(folder)!r}")
    return p


#: what a discovery method's ``k`` and ``seed`` are set with instead of ``--param``
OWN_OPTIONS = {"k": "-k", "seed": "--seed"}


def method_params(method: str, items: Sequence[str] | None) -> dict[str, object]:
    """``--param NAME=VALUE`` items checked against ``method``'s declared parameters
    (:func:`navcuda.discover.params.check_params`): before any work, so that a misspelt name or
    a bad value is refused at once, naming the closest valid ones or the rule."""
    from navcuda.discover.params import check_params

    return check_params(method, dict(parse_hparams(items or [])), exclude=OWN_OPTIONS)


def warn_large_shifts(
    args: argparse.Namespace, g, directions, ts: Sequence[float], relative: bool, option="--t"
) -> None:
    """Say once, before rendering, that the largest shift asked for is beyond
    :data:`navcuda.shift.LARGE_SHIFT_FACTOR` times its reference norm (``main`` silences the
    API's per-call :class:`~navcuda.shift.LargeShiftWarning` instead); it is rendered all the
    same, since it may be intended."""
    from navcuda.shift import LARGE_SHIFT_FACTOR, shift_reference

    top = max((abs(t) for t in ts), default=0.0)
    refs: dict[str, tuple[float, str]] = {}
    worst = None
    for d in directions:
        amp = d.amplitude if relative and d.amplitude and math.isfinite(d.amplitude) else 1.0
        if d.layer not in refs:
            refs[d.layer] = shift_reference(g, d)
        ref, what = refs[d.layer]
        factor = top * amp / ref
        if worst is None or factor > worst[0]:
            worst = (factor, top * amp, what, d.name)
    if worst is not None and worst[0] > LARGE_SHIFT_FACTOR:
        factor, size, what, name = worst
        unit = " x the amplitude" if relative else ""
        print(
            f"navcuda {args.command}: warning: {option} up to {top:g}{unit} shifts direction "
            f"{name!r} by {size:.3g}, {factor:.3g} x {what}: far beyond any edit (calibrated "
            f"amplitudes, {option} 1, lie below 10 x), so the images will be noise; rendering "
            "them all the same",
            file=sys.stderr,
        )


def parse_hparams(items: Sequence[str]) -> list[tuple[str, object]]:
    out = []
    for item in items or []:
        if "=" not in item:
            raise ValueError(f"--param expects NAME=VALUE, got {item!r}")
        key, raw = item.split("=", 1)
        try:
            value: object = json.loads(raw)
        except json.JSONDecodeError:
            words = {"nan": math.nan, "inf": math.inf, "+inf": math.inf, "-inf": -math.inf}
            value = words.get(raw.strip().lower(), raw)
        out.append((key.strip().replace("-", "_"), value))
    return out


def join_negative_values(argv: Sequence[str] | None) -> list[str]:
    """Let ``--t -3:3:7`` through argparse (which would take ``-3:3:7`` for an option)."""
    args = list(sys.argv[1:] if argv is None else argv)
    out: list[str] = []
    i = 0
    while i < len(args):
        if args[i] == "--t" and i + 1 < len(args) and re.match(r"^-[\d.]", args[i + 1]):
            out.append(f"--t={args[i + 1]}")
            i += 2
        else:
            out.append(args[i])
            i += 1
    return out


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` shows each option's default, except for flags and options without one."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or isinstance(action.default, bool):
            return action.help
        return super()._get_help_string(action)


def generator_options(p: argparse.ArgumentParser, label: bool = True) -> None:
    """``--model`` (any generator through an importable factory) and ``--class``."""
    p.add_argument(
        "--model",
        metavar="PKG.MODULE:FACTORY",
        help="a generator made by an importable factory: it returns a navcuda generator, "
        "(module, sampler) or navcuda.wrap arguments; --checkpoint is passed to it",
    )
    if label:
        p.add_argument(
            "--class",
            dest="label",
            type=non_negative,
            help="class label of a conditional generator (default: drawn with each latent)",
        )


def load_generator_of(args: argparse.Namespace, device: str | None = None):
    """The generator of a command: ``--model package.module:factory`` (given ``--checkpoint``,
    if any), a checkpoint file, or the bundled model."""
    device = device or args.device
    spec = getattr(args, "model", None)
    if spec:
        from navcuda.models.from_spec import load_from_spec

        return load_from_spec(spec, args.checkpoint, device)
    if args.checkpoint is None:
        from navcuda.models.default import load_default

        return load_default(device=device)
    from navcuda.models.checkpoints import load_generator

    return load_generator(args.checkpoint, device=device).eval()


def label_of(args: argparse.Namespace) -> int | None:
    """``--class``: the class label of a conditional generator (None: drawn with each latent)."""
    return getattr(args, "label", None)


def metric_of(name: str, g, backbone: str | None, device: str):
    """A perceptual metric by CLI name ("none" -> None); "auto" as in spectrum discovery."""
    if name == "none":
        return None
    from navcuda.metrics.perceptual import make_metric, resolve_metric_name
    from navcuda.models.default import is_toy_model

    name = resolve_metric_name(name, is_toy_model(g), backbone)
    kw = {"backbone_path": backbone} if name.startswith("lpips") else {}
    return make_metric(name, **kw).to(device)


def fmt(values: Sequence[float]) -> str:
    return ", ".join(f"{v:g}" for v in values)


def write_json(path: Path, obj: object) -> Path:
    from navcuda.io.atomic import atomic_path

    with atomic_path(path) as tmp:  # NaN (no value) as null: strict JSON for every reader
        tmp.write_text(json.dumps(_nan_to_none(obj), indent=2, allow_nan=False))
    return path


def _nan_to_none(obj: object) -> object:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_nan_to_none(v) for v in obj]
    return obj
