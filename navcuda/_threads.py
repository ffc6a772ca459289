"""How navcuda's threads wait, set before the OpenMP runtime starts.

torch's CPU kernels and navcuda's own (``csrc/``, built with ``-fopenmp``) share one OpenMP
runtime: torch ships ``libgomp.so.1`` and navcuda's extension resolves to the one already loaded.
By default its worker threads spin for about 300 000 iterations at the end of every parallel
region before they sleep. On an idle machine that saves a wake-up; on a shared one it burns the
cores that the threads still working need: with two busy processes beside it on 2 cores, a
spectrum run took 6-7x its time with spinning threads against passive waits, spending 6x the CPU
time. Passive waits (no spinning at all) cost ~30 % on an idle machine, though, where a short
spin catches the next parallel region: :data:`SPIN_COUNT` iterations keep most of that (~10 %
slower than the default idle) and all of the gain on a busy machine
(``benchmarks/test_bench_busy.py`` measures it; ``benchmarks/RESULTS.md`` has the figures).

:func:`prefer_passive_wait`, run when this module is imported (``navcuda/__init__.py`` imports it
first), therefore sets ``GOMP_SPINCOUNT`` to :data:`SPIN_COUNT` in the process's environment
when navcuda is imported before torch (so ``navcuda`` commands always get it), unless the user
set the runtime's wait policy already. The runtime reads it once, when it is loaded:
a program that imports torch before navcuda keeps its own setting (set ``OMP_WAIT_POLICY=PASSIVE``
in the environment there).
"""

from __future__ import annotations

import os
import sys

__all__ = ["SPIN_COUNT", "WAIT_VARIABLES", "prefer_passive_wait"]

#: spins before a waiting thread sleeps (libgomp's default: 300 000; passive: 0)
SPIN_COUNT = 3000

#: the variables by which a user chooses the OpenMP runtime's wait policy (libgomp, LLVM/Intel)
WAIT_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME", "KMP_LIBRARY")


def prefer_passive_wait() -> bool:
    """Set ``GOMP_SPINCOUNT`` to :data:`SPIN_COUNT` if no OpenMP runtime can have read its
    environment yet (torch not imported) and the user chose no wait policy. Returns whether it
    was set."""
    if "torch" in sys.modules or any(v in os.environ for v in WAIT_VARIABLES):
        return False
    os.environ["GOMP_SPINCOUNT"] = str(SPIN_COUNT)
    return True


prefer_passive_wait()
