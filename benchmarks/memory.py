"""Peak memory of one call: CUDA allocator statistics on a GPU, the resident-set high-water mark
on the CPU (Linux: ``/proc/self/clear_refs`` resets ``VmHWM``, so the peak is measured per call)."""

from __future__ import annotations

import gc
from collections.abc import Callable
from pathlib import Path

import torch


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def peak_memory_mb(fn: Callable[[], object], device: torch.device) -> float | None:
    """Peak extra memory (MB) while running ``fn`` once; None where it cannot be measured."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - base) / 2**20
    try:
        Path("/proc/self/clear_refs").write_text("5")
        base = _status_kb("VmRSS")
        fn()
        return (_status_kb("VmHWM") - base) / 1024
    except (OSError, RuntimeError):
        return None
