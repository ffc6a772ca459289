"""Generators named by an import spec, ``package.module:factory`` (like uvicorn's ``app`` spec).

The factory is called with no argument, or with ``checkpoint=PATH`` when the user gives a weights
file, and returns one of:

- a navcuda generator (:class:`~navcuda.models.interface.ShiftableGenerator`), used as it is;
- a pair ``(module, sampler)``, wrapped with :func:`navcuda.wrap`;
- a dict of :func:`navcuda.wrap` arguments (``module``, ``sample``, ``forward``, ``num_classes``,
  ``latent``...), wrapped likewise.

Wrapped generators are named after the spec, which direction files record (``model``), beside the
weights' fingerprint.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from navcuda.models.interface import GeneratorError, ShiftableGenerator
from navcuda.models.wrapped import WrappedGenerator, wrap

__all__ = ["load_from_spec"]

_SPEC = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


def load_from_spec(
    spec: str, checkpoint: str | Path | None = None, device: str | torch.device = "cpu"
) -> ShiftableGenerator:
    """Import ``package.module:factory``, call it (with ``checkpoint=`` when given) and return the
    generator it describes (module docstring), in eval mode on ``device``."""
    if not isinstance(spec, str) or not _SPEC.match(spec.strip()):
        raise GeneratorError(
            f"--model expects package.module:factory (e.g. mymodels.biggan:make), got {spec!r}"
        )
    module_name, attr = spec.strip().split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise GeneratorError(
            f"cannot import {module_name!r} for --model {spec}: {exc}; make it importable "
            "(install it, or run from the folder that holds it / set PYTHONPATH)"
        ) from exc
    factory = module
    for part in attr.split("."):
        factory = getattr(factory, part, None)
        if factory is None:
            raise GeneratorError(
                f"module {module_name!r} has no attribute {attr!r} (--model {spec})"
            )
    if not callable(factory):
        raise GeneratorError(f"--model {spec}: {attr} is not callable")
    kwargs = {} if checkpoint is None else {"checkpoint": str(checkpoint)}
    made = factory(**kwargs)
    return _as_generator(made, spec, device)


def _as_generator(made: object, spec: str, device) -> ShiftableGenerator:
    if isinstance(made, WrappedGenerator):
        return made.to(device)
    if isinstance(made, ShiftableGenerator):
        return made.to(device).eval() if isinstance(made, nn.Module) else made  # type: ignore[return-value]
    if isinstance(made, Mapping):
        kwargs = dict(made)
        kwargs.setdefault("name", spec)
        module = kwargs.pop("module", None)
        sample = kwargs.pop("sample", None)
        if module is None or sample is None:
            raise GeneratorError(f"--model {spec}: the factory's dict needs 'module' and 'sample'")
        return wrap(_moved(module, spec, device), sample, **kwargs)
    if isinstance(made, tuple) and len(made) == 2:
        module, sample = made
        return wrap(_moved(module, spec, device), sample, name=spec)
    raise GeneratorError(
        f"--model {spec}: the factory returned a {type(made).__name__}; expected a navcuda "
        "generator, (module, sampler) or a dict of navcuda.wrap arguments"
    )


def _moved(module: object, spec: str, device) -> nn.Module:
    if not isinstance(module, nn.Module):
        raise GeneratorError(
            f"--model {spec}: the factory's module is a {type(module).__name__}, not a "
            "torch.nn.Module"
        )
    return module.to(device)
