"""A discovery job on a busy machine: its wall time beside two busy-loop processes, as a ratio to
its idle time measured in the same run (issue 22, item 7; target <= 2.5x on 2 cores, where a fair
share alone gives 2x... ~1.5x).

The job is the CLI's ``navcuda discover --method spectrum -k 4 --param n_latents=8 --param
calibrate=false`` on the bundled model, run in a fresh process so that the OpenMP runtime starts
with the process's settings. Two settings are timed:

- ``navcuda`` — navcuda's default: importing navcuda first sets ``GOMP_SPINCOUNT=3000``
  (navcuda/_threads.py), so waiting threads spin briefly, then sleep;
- ``passive`` — ``OMP_WAIT_POLICY=PASSIVE``: waiting threads sleep at once;
- ``spinning`` — the OpenMP runtime's own default (``GOMP_SPINCOUNT=300000``, set explicitly,
  which navcuda leaves alone): what navcuda did before, and what a program gets that imports
  torch before navcuda.

Each is timed idle and beside two ``while True: pass`` processes (one per core); the summary
prints busy / idle per setting, and idle navcuda or passive / idle spinning (the price of
sleeping on an idle machine). Wall-clock of whole processes: run it on an otherwise quiet machine.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from contextlib import contextmanager, nullcontext

import pytest

JOB = [sys.executable, "-m", "navcuda", "discover", "--method", "spectrum", "-k", "4",
       "--param", "n_latents=8", "--param", "calibrate=false"]  # fmt: skip
SETTINGS = {
    "navcuda": {},
    "passive": {"OMP_WAIT_POLICY": "PASSIVE"},
    "spinning": {"GOMP_SPINCOUNT": "300000"},
}
_times: dict[tuple[str, str], float] = {}


@contextmanager
def _busy_loops(n: int = 2):
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
    time.sleep(0.5)  # let them start spinning
    try:
        yield
    finally:
        for p in procs:
            p.kill()
            p.wait()


def _run_job(tmp_path, setting: str) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    env.update(SETTINGS[setting])
    out = tmp_path / f"{setting}.nav"
    subprocess.run([*JOB, "-o", str(out)], env=env, check=True, capture_output=True)


@pytest.mark.parametrize("load", ["idle", "busy"])
@pytest.mark.parametrize("setting", list(SETTINGS))
def test_discovery_beside_busy_loops(benchmark, tmp_path, setting, load):
    benchmark.group = "discovery beside two busy loops"
    benchmark.extra_info["role"] = f"{setting}, {load}"

    with _busy_loops() if load == "busy" else nullcontext():
        benchmark.pedantic(_run_job, args=(tmp_path, setting), rounds=2, iterations=1)
    _times[setting, load] = benchmark.stats.stats.median
    if len(_times) == 2 * len(SETTINGS):
        lines = [
            f"{s}: busy / idle = {_times[s, 'busy'] / _times[s, 'idle']:.2f}x "
            f"(idle {_times[s, 'idle']:.1f} s, busy {_times[s, 'busy']:.1f} s)"
            for s in SETTINGS
        ]
        lines += [
            f"idle {s} / idle spinning = {_times[s, 'idle'] / _times['spinning', 'idle']:.2f}x"
            for s in ("navcuda", "passive")
        ]
        benchmark.extra_info["summary"] = lines  # printed by conftest.py
