"""The spectrum method's memory budget and the estimate it prints before a run.

A run holds the eigensolver's blocks on the host (:func:`solver_bytes`) and the Hessian's caches,
one chunk and the products' rows on the generator's device
(:class:`~navcuda.hessian_memory.HessianMemory`). :func:`hessian_budget` gives the Hessian what
the budget leaves once the solver is served (on the CPU they share the memory); :func:`report`
says up front how much memory and how long the run is expected to take.
"""

from __future__ import annotations

import torch

from navcuda.hessian_memory import HessianMemory
from navcuda.memory_budget import MemoryBudgetError, default_budget, format_bytes, parse_size

__all__ = ["PRODUCTS_PER_VECTOR", "hessian_budget", "report", "solver_bytes"]

#: Products per block vector a block solver spends, a range (measured; the estimate, not a bound:
#: ``max_iters`` is): LOBPCG top-16 of the bundled model (p = 20) to tol 1e-2: 102 (5.1); top-64
#: of a 512-channel 32 px layer (p = 80) over 16 latents to tol 5e-3: 379-390 (4.7-4.9), to 1e-3:
#: 440 (5.5). A flatter spectrum takes more: the same layer over the paper's 512 latents to 1e-3
#: fell x0.40-0.51 per iteration after the start, ~9 per block vector (four iterations measured,
#: the rest at their rate; ``benchmarks/RESULTS.md``).
PRODUCTS_PER_VECTOR = (5, 9)

#: Blocks of ``[p, N]`` the block solvers hold at their peak (the product's output block
#: included): LOBPCG 6 (``benchmarks/test_bench_spectrum.py::test_solver_memory``), subspace
#: iteration 7 (float64).
_SOLVER_BLOCKS = {"lobpcg": 6, "block": 7}


def solver_bytes(solver: str, k: int, p: int, n: int, block_dtype: torch.dtype) -> int:
    """Host bytes of the eigensolver at its peak: block solvers ``blocks x [p, N]`` in their
    storage dtype; the power method its ``k`` float64 vectors plus three."""
    if solver == "power":
        return (k + 3) * n * 8
    return _SOLVER_BLOCKS[solver] * p * n * torch.finfo(block_dtype).bits // 8


def hessian_budget(
    memory_budget: int | str | None,
    device: torch.device,
    solver_host: int,
    p: int,
    row: int,
) -> tuple[int | None, int | None]:
    """``(budget, Hessian's share)`` in bytes: ``"auto"`` is
    :func:`~navcuda.memory_budget.default_budget`, ``None`` no budget. On the CPU the solver's
    blocks (which hold the products' rows) come out of the budget; on a GPU the products'
    input and output rows (``row`` bytes each) do. Raises
    :class:`~navcuda.memory_budget.MemoryBudgetError` when nothing is left for the Hessian."""
    if memory_budget is None:
        return None, None
    if isinstance(memory_budget, str) and memory_budget == "auto":
        budget = default_budget(device)
    else:
        budget = parse_size(memory_budget, device)
    taken = solver_host if device.type == "cpu" else 2 * p * row
    what = (
        "the eigensolver's blocks on the host"
        if device.type == "cpu"
        else f"the products' rows of {p} vectors"
    )
    if taken >= budget:
        raise MemoryBudgetError(
            f"memory budget {format_bytes(budget)} is too small: {what} alone take "
            f"{format_bytes(taken)}, before the Hessian's caches and one chunk; raise the budget "
            "(--memory-budget) or ask for fewer directions (-k)"
        )
    return budget, budget - taken


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def report(
    memory: HessianMemory,
    *,
    solver: str,
    k: int,
    p: int,
    n: int,
    block_dtype: torch.dtype,
    device: torch.device,
    budget: int | None,
    max_iters: int,
    iterations: int,
    done: int = 0,
) -> str:
    """The memory model and the expected cost of a spectrum run, in a few lines; ``done``
    products already spent (a resumed LOBPCG run) are taken off the expected and the largest
    count."""
    host = solver_bytes(solver, k, p, n, block_dtype)
    vectors = 1 if solver == "power" else p
    dev = memory.peak(vectors)
    lines = ["spectrum: memory model"]
    lines += ["  " + line for line in memory.describe(vectors).splitlines()]
    if solver == "power":
        lines.append(
            f"  eigensolver (power): {k} float64 vectors on the host, {format_bytes(host)}"
        )
        bound, est = k * (iterations + 1), ""
        products = [bound]
    else:
        blocks = _SOLVER_BLOCKS[solver]
        lines.append(
            f"  eigensolver ({solver}): {blocks} blocks of [{p}, {n}] "
            f"{str(block_dtype).removeprefix('torch.')} on the host, {format_bytes(host)}"
        )
        bound = max(max_iters * p - done, 0)  # a resumed run: less the products spent
        # a small max_iters stops it sooner; a resumed run has a block to go at least
        products = [min(max(each * p - done, p), bound) for each in PRODUCTS_PER_VECTOR]
        lo, hi = PRODUCTS_PER_VECTOR
        est = f" (~{lo}-{hi} per block vector: more on flatter spectra)"
        if products[-1] == bound:
            est = f" (max_iters={max_iters})"
    if device.type == "cpu":
        total = dev + host - (2 * vectors * (memory.per_vector // 2))  # rows are solver blocks
        lines.append(f"  expected peak {format_bytes(total)} (CPU: the solver's blocks included)")
    else:
        lines.append(
            f"  expected peak {format_bytes(dev)} on {device}, {format_bytes(host)} on the host"
        )
    if budget is not None:
        lines[-1] += f"; budget {format_bytes(budget)}"
    per = memory.seconds_per_product(vectors)
    if per is not None:
        left = "" if not done else f" left ({done} done)"
        count = "-".join(str(c) for c in dict.fromkeys(products))  # one figure where they meet
        took = " to ".join(dict.fromkeys(_duration(c * per) for c in products))
        lines.append(
            f"spectrum: expected time ~{took}: ~{count} products{left}{est} x {per:.3g} s each "
            f"over {memory.n_latents} latents; at most {_duration(bound * per)} ({bound} products)"
        )
    return "\n".join(lines)
