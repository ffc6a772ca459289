"""Memory budgets: sizes as people write them, the memory free on a device, and the peak of
tensor memory one call adds.

Used by :class:`navcuda.hessian.PerceptualHessian` (how many latents' caches it keeps, and
refusal when one chunk cannot fit) and by the spectrum method (its printed memory model).

- :func:`parse_size` -- ``"24GB"``, ``"512MiB"``, ``"30%"`` (of the free memory), or bytes;
- :func:`free_memory` -- bytes free on a device (CUDA: the driver's figure; CPU:
  ``MemAvailable``);
- :func:`default_budget` -- :data:`DEFAULT_FRACTION` of that;
- :func:`measure_peak` -- the peak of tensor memory a call allocates on a device, counted per
  tensor storage (a ``TorchDispatchMode``), so that it works on the CPU, which has no allocator
  statistics, and leaves CUDA's peak statistics alone (a caller may be measuring them);
- :func:`format_bytes` -- ``"1.25 GB"``.
"""

from __future__ import annotations

import math
import os
import re
import time
import weakref
from collections.abc import Callable
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

__all__ = [
    "DEFAULT_FRACTION",
    "MemoryBudgetError",
    "default_budget",
    "format_bytes",
    "free_memory",
    "measure_peak",
    "parse_size",
]

#: The default budget: this fraction of the memory free on the device when a run starts.
DEFAULT_FRACTION = 0.6

_UNITS = {
    "": 1,
    "b": 1,
    "k": 10**3,
    "kb": 10**3,
    "m": 10**6,
    "mb": 10**6,
    "g": 10**9,
    "gb": 10**9,
    "t": 10**12,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}


class MemoryBudgetError(ValueError):
    """A memory budget that even the smallest unit of work (one chunk) does not fit in, or a
    budget that cannot be read. The message gives the figures."""


def format_bytes(n: float) -> str:
    """``n`` bytes in decimal units (``"512 B"``, ``"3.4 MB"``, ``"1.25 GB"``)."""
    n = float(n)
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n:.0f} B"


def free_memory(device: torch.device | str) -> int:
    """Bytes free on ``device``: CUDA's ``mem_get_info`` free figure; on the CPU the kernel's
    ``MemAvailable`` (``/proc/meminfo``), else free physical pages (``os.sysconf``)."""
    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 8 * 10**9  # no way to know: assume a small machine


def default_budget(device: torch.device | str) -> int:
    """:data:`DEFAULT_FRACTION` of :func:`free_memory` on ``device``."""
    return int(DEFAULT_FRACTION * free_memory(device))


def parse_size(value: Any, device: torch.device | str = "cpu") -> int:
    """A memory size in bytes from ``value``: a number of bytes (int or float), a string with a
    decimal or binary unit (``"24GB"``, ``"24 G"``, ``"512MiB"``; case-insensitive), or a
    percentage of the memory free on ``device`` (``"30%"``). Raises :class:`MemoryBudgetError`
    for anything else or a size that is not positive."""
    if isinstance(value, bool):
        raise MemoryBudgetError(
            f"a memory size must be bytes or a string like '24GB', got {value!r}"
        )
    if isinstance(value, (int, float)):
        size = float(value)
    elif isinstance(value, str):
        text = value.strip().lower().replace(" ", "")
        m = re.fullmatch(r"([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)(%|[a-z]*)", text)
        if m is None or m.group(2) not in (*_UNITS, "%"):
            raise MemoryBudgetError(
                f"cannot read the memory size {value!r}: write bytes or a number with a unit "
                "(B, kB, MB, GB, TB, KiB, MiB, GiB, TiB), e.g. '24GB', or a percentage of the "
                "free memory, e.g. '50%'"
            )
        number = float(m.group(1))
        if m.group(2) == "%":
            if not 0 < number <= 100:
                raise MemoryBudgetError(f"a memory percentage must be in (0, 100], got {value!r}")
            size = number / 100 * free_memory(device)
        else:
            size = number * _UNITS[m.group(2)]
    else:
        raise MemoryBudgetError(
            f"a memory size must be bytes or a string like '24GB', got {type(value).__name__}"
        )
    if not (math.isfinite(size) and size >= 1):
        raise MemoryBudgetError(f"a memory size must be positive, got {value!r}")
    return int(size)


class _LivePeak(TorchDispatchMode):
    """Counts the bytes of the storages that ops return on one device while they live."""

    def __init__(self, device: torch.device) -> None:
        super().__init__()
        self.device = device
        self.live: dict[int, int] = {}
        self.current = 0
        self.peak = 0

    def _free(self, key: int) -> None:
        self.current -= self.live.pop(key, 0)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if not isinstance(t, torch.Tensor) or t.device.type != self.device.type:
                continue
            s = t.untyped_storage()
            key, size = id(s), s.nbytes()
            if size and key not in self.live:
                self.live[key] = size
                self.current += size
                self.peak = max(self.peak, self.current)
                weakref.finalize(s, self._free, key)
        return out


def measure_peak(fn: Callable[[], Any], device: torch.device | str) -> tuple[Any, int, float]:
    """Run ``fn()`` and return ``(result, peak bytes, seconds)``: the peak of the tensor memory
    allocated on ``device`` during the call (storages that existed before it are not counted;
    native scratch buffers that are never tensors are not seen). Within ~10 % of the torch
    profiler's timeline on the Hessian products (``benchmarks/memory.py``), at the cost of one
    Python call per op: for probes, not for whole runs."""
    device = torch.device(device)
    mode = _LivePeak(device)
    t0 = time.perf_counter()
    with mode:
        out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return out, mode.peak, time.perf_counter() - t0
