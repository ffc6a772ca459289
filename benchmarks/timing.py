"""Device-side completion for timed calls: a CUDA call returns once its kernels are queued, so
every timed function must wait for them before it returns (else the timer reads the launch)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import torch

T = TypeVar("T")


def sync(device: torch.device) -> None:
    """Wait for ``device``'s queued work (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def synced(fn: Callable[[], T], device: torch.device) -> Callable[[], T]:
    """``fn`` followed by :func:`sync`: the callable to hand a timer."""

    def run() -> T:
        out = fn()
        sync(device)
        return out

    return run
