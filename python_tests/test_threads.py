"""navcuda's OpenMP threads spin briefly, then sleep, when they wait (navcuda/_threads.py): asserted
on what the runtime itself reports (OMP_DISPLAY_ENV=VERBOSE), in fresh processes."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


def _runtime_settings(code: str, **env: str) -> dict[str, str]:
    """The wait settings libgomp prints at start-up in a fresh process running ``code``."""
    clean = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    clean.update(OMP_DISPLAY_ENV="VERBOSE", **env)
    run = subprocess.run([sys.executable, "-c", code], env=clean, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    out = {}
    for line in run.stderr.splitlines():
        key, _, value = line.strip().partition(" = ")
        if key in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT"):
            out[key] = value.strip("'")
    if not out:
        pytest.skip("this torch's OpenMP runtime does not report its settings (not libgomp)")
    return out


def test_importing_navcuda_first_makes_waiting_threads_sleep_soon():
    from navcuda._threads import SPIN_COUNT

    assert _runtime_settings("import navcuda, torch")["GOMP_SPINCOUNT"] == str(SPIN_COUNT)


def test_a_users_choice_and_an_earlier_torch_are_left_alone():
    spin = _runtime_settings("import navcuda", GOMP_SPINCOUNT="12345")
    assert spin["GOMP_SPINCOUNT"] == "12345"
    active = _runtime_settings("import navcuda", OMP_WAIT_POLICY="ACTIVE")
    assert active["OMP_WAIT_POLICY"] == "ACTIVE"
    # torch first: the runtime has read its (default, spinning) settings already
    assert _runtime_settings("import torch, navcuda")["GOMP_SPINCOUNT"] == "300000"
