"""Entry points that differentiate internally (Hessian products, direction optimisation,
projection, training) must not depend on the caller's autograd mode.

:func:`differentiates` runs such a function under ``torch.enable_grad()``, so that a caller's
``torch.no_grad()`` block (natural around "inference" code such as a discovery run) does not
break it with autograd's "element 0 of tensors does not require grad", and refuses
``torch.inference_mode()`` up front with a message that says what to do: tensors created there
can never join an autograd graph, so enabling grad inside cannot help.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TypeVar

import torch

__all__ = ["differentiates", "refuse_inference_mode"]

F = TypeVar("F", bound=Callable)


def refuse_inference_mode(what: str) -> None:
    """Raise ``RuntimeError`` naming ``what`` if ``torch.inference_mode()`` is on."""
    if torch.is_inference_mode_enabled():
        raise RuntimeError(
            f"{what} differentiates internally and cannot run under torch.inference_mode(); call "
            "it outside that block (torch.no_grad() is fine)"
        )


def differentiates(fn: F) -> F:
    """Decorator: run ``fn`` under ``torch.enable_grad()``, refusing inference mode."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        refuse_inference_mode(fn.__qualname__)
        with torch.enable_grad():
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
