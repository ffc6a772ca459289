"""A cache of values computed from tensors (the factorised strategy's SVD check and Gram tensors),
keyed by the tensors' identity and in-place version, never by a reusable address alone."""

from __future__ import annotations

import weakref

import torch


def _owner(t: torch.Tensor) -> torch.Tensor:
    """The tensor that owns ``t``'s memory: its base for a view (``conv.weight[0]`` is a new view
    object at every call), else ``t``."""
    return t._base if t._base is not None else t


class _TensorCache:
    """Values computed from tensors, valid while the tensors owning that memory are alive and
    unmodified (same in-place version), for the same views of them.

    Keyed by the owners' identity, checked through weak references, not by ``data_ptr()`` alone:
    the CUDA caching allocator hands a freed block straight to the next allocation of that size,
    so a new tensor (another layer's SVD factor) at a dead one's address must not get its entry.
    A view is identified by its owner plus its address, shape and strides."""

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._entries: dict[tuple, tuple[tuple[weakref.ref, ...], object]] = {}

    @staticmethod
    def _key(tensors: tuple[torch.Tensor, ...], extra: tuple) -> tuple:
        return (
            tuple(
                (id(_owner(t)), t._version, t.data_ptr(), tuple(t.shape), t.stride())
                for t in tensors
            )
            + extra
        )

    def get(self, tensors: tuple[torch.Tensor, ...], extra: tuple = ()) -> object | None:
        entry = self._entries.get(self._key(tensors, extra))
        alive = entry is not None and all(
            r() is _owner(t) for r, t in zip(entry[0], tensors, strict=True)
        )
        return entry[1] if alive else None

    def put(self, tensors: tuple[torch.Tensor, ...], value: object, extra: tuple = ()) -> None:
        if len(self._entries) >= self.max_entries:
            self._entries.clear()
        refs = tuple(weakref.ref(_owner(t)) for t in tensors)
        self._entries[self._key(tensors, extra)] = (refs, value)
