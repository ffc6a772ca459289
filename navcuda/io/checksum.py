"""Checksums of the tensors in the files navcuda writes, so that damaged files are caught on load.

A flipped bit in a stored tensor is otherwise invisible: safetensors has no checksum of its own,
and a changed coefficient or weight loads as a valid number. Every file navcuda writes with
tensors records :func:`tensor_checksum` of them, and its loader checks it
(:func:`verify_checksum`):

- direction sets (``.nav``): the ``"checksum"`` field of the ``navcuda`` JSON metadata;
- generators (``.safetensors``): the ``"checksum"`` field of the ``navcuda`` header JSON;
- ``torch.save`` files (training and optimisation checkpoints, via
  :func:`navcuda.training.atomic_torch_save`): a ``"checksum"`` entry of the saved dict itself,
  over every tensor nested in the dict's other entries (:func:`state_checksum`); no sidecar file.

The checksum is ``"sha256:<hex>"`` over, for each tensor in the order of its sorted name, a JSON
line ``[name, dtype, shape, nbytes]`` followed by the tensor's bytes (C order, native byte
order). Files written before checksums were recorded load with a note, once per process
(:class:`NoChecksumWarning`): damage to their tensors cannot be detected until they are saved
again.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Mapping
from typing import Any

import torch

__all__ = [
    "CHECKSUM_KEY",
    "NoChecksumWarning",
    "nested_tensors",
    "state_checksum",
    "tensor_checksum",
    "verify_checksum",
    "verify_state_checksum",
]

#: The metadata field (or ``torch.save``d dict entry) holding the checksum.
CHECKSUM_KEY = "checksum"
_PREFIX = "sha256:"

#: The kinds of file already noted as having no checksum in this process.
_NOTED: set[str] = set()


class NoChecksumWarning(UserWarning):
    """A file was written without a checksum (by an older navcuda): damage cannot be detected."""


def tensor_checksum(tensors: Mapping[str, torch.Tensor]) -> str:
    """``"sha256:<hex>"`` of the tensors' names, dtypes, shapes and bytes (sorted by name)."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach()
        if t.device.type != "cpu":
            t = t.cpu()
        flat = t.contiguous().reshape(-1)
        data = flat.view(torch.uint8) if flat.numel() else torch.empty(0, dtype=torch.uint8)
        line = json.dumps([name, str(t.dtype).removeprefix("torch."), list(t.shape), data.numel()])
        h.update(line.encode() + b"\n")
        h.update(memoryview(data.numpy()))
    return _PREFIX + h.hexdigest()


def nested_tensors(obj: Any) -> dict[str, torch.Tensor]:
    """Every tensor inside nested dicts, lists and tuples, named by its path (a JSON list of the
    keys and indices leading to it: ``'["G", "style.1.weight"]'``, ``'["g_opt", "state", 0,
    "exp_avg"]'``)."""
    out: dict[str, torch.Tensor] = {}

    def walk(x: Any, path: list[Any]) -> None:
        if isinstance(x, torch.Tensor):
            out[json.dumps(path)] = x
        elif isinstance(x, Mapping):
            for k, v in x.items():
                walk(v, [*path, k if isinstance(k, (int, str)) else repr(k)])
        elif isinstance(x, (list, tuple)):
            for i, v in enumerate(x):
                walk(v, [*path, i])

    walk(obj, [])
    return out


def state_checksum(state: Mapping[str, Any]) -> str:
    """The checksum of every tensor nested in ``state``, its ``"checksum"`` entry left out."""
    return tensor_checksum(_state_tensors(state))


def _state_tensors(state: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    return nested_tensors({k: v for k, v in state.items() if k != CHECKSUM_KEY})


def verify_state_checksum(
    state: Mapping[str, Any],
    path: str | os.PathLike,
    error: type[Exception],
    kind: str,
    remedy: str,
) -> None:
    """:func:`verify_checksum` of a loaded ``torch.save``d dict against its ``"checksum"`` entry
    (written by :func:`navcuda.training.atomic_torch_save`)."""
    verify_checksum(state.get(CHECKSUM_KEY), _state_tensors(state), path, error, kind, remedy)


def verify_checksum(
    stored: Any,
    tensors: Mapping[str, torch.Tensor],
    path: str | os.PathLike,
    error: type[Exception],
    kind: str,
    remedy: str,
) -> None:
    """Check the checksum ``stored`` in the file ``path`` against its ``tensors``.

    Raises ``error`` saying the file is damaged (expected and found checksums, and ``remedy``:
    what to do) on a mismatch or a malformed checksum; ``stored is None`` (a file written before
    checksums) gives a :class:`NoChecksumWarning` once per ``kind`` of file and process.
    """
    if stored is None:
        if kind not in _NOTED:
            _NOTED.add(kind)
            warnings.warn(
                f"note: {str(path)!r} records no checksum (it was written by an older navcuda), "
                f"so damage to its tensors cannot be detected; save the {kind} again to add one "
                "(noted once for all such files)",
                NoChecksumWarning,
                stacklevel=3,
            )
        return
    if not (isinstance(stored, str) and stored.startswith(_PREFIX)):
        raise error(
            f"{str(path)!r} is damaged: its checksum field should be 'sha256:<64 hex digits>', "
            f"found {type(stored).__name__} {repr(stored)[:80]}; {remedy}"
        )
    found = tensor_checksum(tensors)
    if found != stored:
        raise error(
            f"{str(path)!r} is damaged: its tensor data does not match the checksum recorded "
            f"when it was written (expected {stored[:23]}..., found {found[:23]}...), so some "
            f"bytes changed on disk or in a copy; {remedy}"
        )
