"""The spectrum job on 1 and on N processes (issue 24): speed-up and communication share.

The same job -- the bundled model's ``convs.3`` (64 x 64 x 3 x 3: N = 36 864 weights),
toy-regressor metric, top ``K`` eigenvectors of ``LATENTS`` latents, LOBPCG to 1e-2 --
runs in one process and on ``NAVCUDA_BENCH_DIST_WORLD`` (default 2) processes launched as
``torchrun`` would (:mod:`dist_spectrum_worker`; gloo on the CPU with one thread each, or with
``--device cuda`` nothing changes: the job is the CPU's, see RESULTS.md for GPUs), for each
solver placement (``replicated``, ``rank0``). Timed inside the workers (the set-up of the
Hessian included, the process start-up not): the summary prints the speed-up over one process,
the share of the sharded run spent in collectives (``comm_s``: waiting for the slower rank
included), and the bare all-reduce of one block of products. Sizes: ``NAVCUDA_BENCH_DIST_K``
(default 8), ``NAVCUDA_BENCH_DIST_LATENTS`` (default 16). One round each (about a minute).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

K = int(os.environ.get("NAVCUDA_BENCH_DIST_K", "8"))
LATENTS = int(os.environ.get("NAVCUDA_BENCH_DIST_LATENTS", "16"))
WORLD = int(os.environ.get("NAVCUDA_BENCH_DIST_WORLD", "2"))
WORKER = Path(__file__).resolve().parent / "dist_spectrum_worker.py"
RUNS: dict[str, dict] = {}

pytestmark = pytest.mark.skipif(
    not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
    reason="torch built without torch.distributed / gloo",
)


def _launch(world: int, placement: str = "replicated") -> dict:
    """Run the worker on ``world`` processes (``world == 1``: a plain process); rank 0's JSON."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    procs = []
    for r in range(world):
        env = {**os.environ, "OMP_NUM_THREADS": "1", "NAVCUDA_DIST_SOLVER": placement}
        if world > 1:
            env.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=port, RANK=str(r),
                       WORLD_SIZE=str(world), LOCAL_RANK=str(r))  # fmt: skip
        procs.append(subprocess.Popen([sys.executable, str(WORKER), str(K), str(LATENTS)],
                                      env=env, stdout=subprocess.PIPE, text=True))  # fmt: skip
    outs = [p.communicate(timeout=1800)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    line = next(x for x in outs[0].splitlines() if x.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT "))


@pytest.mark.parametrize("case", ["1 process", f"{WORLD} replicated", f"{WORLD} rank0"])
def test_spectrum_scaling(benchmark, case):
    benchmark.group = f"distributed spectrum: convs.3, K={K}, {LATENTS} latents, gloo"
    world = 1 if case == "1 process" else WORLD
    placement = case.split()[-1] if world > 1 else "replicated"
    out: dict = {}
    benchmark.pedantic(lambda: out.update(_launch(world, placement)), rounds=1, iterations=1)
    RUNS[case] = out
    benchmark.extra_info.update({k: v for k, v in out.items() if k != "values"})
    if world == 1:
        return
    one = RUNS.get("1 process")
    d = out["dist"]
    lines = [
        f"{case}: {out['wall_s']:.1f} s, {out['iterations']} iterations, {out['hvps']} products",
        f"  communication {d['comm_s']:.2f} s = {d['comm_s'] / out['wall_s']:.1%} of the run "
        f"({d['allreduce_blocks']} blocks, {d['allreduce_bytes'] / 1e6:.1f} MB); compute "
        f"{d['compute_s']:.1f} s; bare all-reduce of one {out['allreduce_block_bytes'] / 1e6:.2f}"
        f" MB block: {out['allreduce_block_s'] * 1e3:.2f} ms",
    ]
    if one is not None:
        lines.insert(1, f"  speed-up over 1 process ({one['wall_s']:.1f} s): "
                        f"{one['wall_s'] / out['wall_s']:.2f}x")  # fmt: skip
        top = torch.tensor(out["values"]) / torch.tensor(one["values"]) - 1
        lines.append(f"  eigenvalues vs 1 process: max relative difference {top.abs().max():.1e}")
    benchmark.extra_info["summary"] = lines
