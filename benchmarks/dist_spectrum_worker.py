"""One rank of :mod:`test_bench_distributed`'s spectrum job (launched as ``torchrun`` would, or
alone for one process): the bundled model's ``convs.3``, toy-regressor metric, ``K`` eigenvectors
of ``N`` latents; prints one JSON line on rank 0 (times, communication, eigenvalues)."""

from __future__ import annotations

import json
import os
import sys
import time

import torch

from navcuda import distributed as dist
from navcuda.discover.spectrum import discover_spectrum
from navcuda.models.default import load_default


def main() -> None:
    k, n_latents = int(sys.argv[1]), int(sys.argv[2])
    torch.set_num_threads(1)
    env = dist.launch_env()
    if env is not None:
        dist.init(env)
    g = load_default()
    t0 = time.perf_counter()
    ds = discover_spectrum(g, "convs.3", k=k, n_latents=n_latents, tol=1e-2, seed=0,
                           metric="toy-regressor", calibrate=False, progress=False)  # fmt: skip
    wall = time.perf_counter() - t0
    out = {"wall_s": wall, "values": [float(v) for v in ds.values],
           "iterations": ds.extra["iterations"], "hvps": ds.extra["hvp_count"],
           "dist": ds.extra.get("distributed")}  # fmt: skip
    if dist.is_active():  # the bare all-reduce of one block of products, for the comm model
        p = k + max(4, k // 4)
        block = torch.zeros(p, ds.coefficients[0].numel())
        torch.distributed.all_reduce(block)
        t1 = time.perf_counter()
        for _ in range(5):
            torch.distributed.all_reduce(block)
        out["allreduce_block_s"] = (time.perf_counter() - t1) / 5
        out["allreduce_block_bytes"] = block.numel() * 4
    if dist.is_rank0():
        print("RESULT " + json.dumps(out), flush=True)
    dist.shutdown()


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
