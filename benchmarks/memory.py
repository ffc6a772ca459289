"""Peak memory of one call.

On a GPU: the CUDA caching allocator's statistics. On the CPU there is no allocator statistic, and
the resident-set high-water mark is unreliable inside a long benchmark process (memory freed by an
earlier case is reused without raising RSS, so a later case can read 0 MB). The CPU peak therefore
comes from torch's profiler: every tensor allocation and free during the call is recorded
(``profile_memory=True``) and the memory profiler's timeline gives the live bytes over time; its
maximum is the peak of tensor memory the call added. That excludes native scratch buffers that are
not tensors (oneDNN workspaces, the C++ kernels' thread-local buffers), which are small next to the
activations these benchmarks compare. Where the profiler's timeline is unavailable (it is a
private torch API), the RSS high-water mark is the fallback; either way a reference and a fast
path are compared only as figures measured the same way in the same run.

Only tensors allocated during the call count, as on CUDA (peak minus what was allocated before):
until 2026-11-27 (``0458a9e``) the CPU figure also counted every pre-existing tensor the call
touched (inputs, weights, a Hessian's cached prefix activations). With ``warmup=True`` the call
runs once unmeasured first, so that one-time lazy initialisation (caches built on first use) is
not counted as the call's memory.
"""

from __future__ import annotations

import gc
import warnings
from collections.abc import Callable
from pathlib import Path

import torch


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _cpu_peak_profiler(fn: Callable[[], object]) -> float:
    from torch.profiler import ProfilerActivity, profile
    from torch.profiler._memory_profiler import Action

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with profile(
            activities=[ProfilerActivity.CPU],
            profile_memory=True,
            record_shapes=True,
            with_stack=True,
        ) as prof:
            fn()
        timeline = prof._memory_profile().timeline
    # Only tensors allocated during the call: tensors that existed before it (inputs, weights,
    # caches; the profiler's PREEXISTING entries) are not memory the call added, as on CUDA.
    # Same arithmetic as torch's MemoryProfileTimeline._coalesce_timeline, minus those.
    preexisting = set()
    current = peak = 0
    last_t = None
    for t, action, (key, _version), size in timeline:
        if key.device.type != "cpu":
            continue
        if t != last_t:  # events of one timestamp are one step of the timeline
            peak, last_t = max(peak, current), t
        if action == Action.PREEXISTING:
            preexisting.add(key)
        elif action == Action.CREATE:
            current += size
        elif action == Action.DESTROY and key not in preexisting:
            current -= size
    peak = max(peak, current)
    return peak / 2**20


def _cpu_peak_rss(fn: Callable[[], object]) -> float:
    Path("/proc/self/clear_refs").write_text("5")
    base = _status_kb("VmRSS")
    fn()
    return (_status_kb("VmHWM") - base) / 1024


def peak_memory_mb(
    fn: Callable[[], object], device: torch.device, warmup: bool = False
) -> float | None:
    """Peak extra memory (MB) while running ``fn`` once (after one unmeasured run with
    ``warmup``); None where it cannot be measured."""
    if warmup:
        fn()
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - base) / 2**20
    try:
        return _cpu_peak_profiler(fn)
    except (ImportError, AttributeError, RuntimeError, TypeError):
        pass
    try:
        return _cpu_peak_rss(fn)
    except (OSError, RuntimeError):
        return None


def benchmark_with_memory(
    benchmark,
    run: Callable[[], object],
    device: torch.device,
    group: str,
    role: str,
    **extra: object,
) -> None:
    """Time ``run`` with pytest-benchmark as case ``group`` / ``role`` after one unmeasured call,
    with its peak memory (:func:`peak_memory_mb`) and ``extra`` in ``extra_info``."""
    run()
    benchmark.group = group
    benchmark.extra_info["role"] = role
    benchmark.extra_info.update(extra)
    benchmark.extra_info["peak_mem_mb"] = peak_memory_mb(run, device)
    benchmark(run)
