"""benchmarks/run_on_gpu.sh, the prepared command for a GPU lease, stays runnable: it parses,
refuses an unknown phase before doing anything, and names the five files a lease returns."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "run_on_gpu.sh"

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def test_script_parses():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)
    subprocess.run(["bash", "-n", str(SCRIPT.with_name("build_for_lease.sh"))], check=True)


def test_build_for_lease_needs_the_lease_python():
    r = subprocess.run(
        ["bash", str(SCRIPT.with_name("build_for_lease.sh"))],
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
    )
    assert r.returncode != 0 and "set PYTHON to the Python of the lease" in r.stderr


def test_unknown_phase_is_refused_before_any_work(tmp_path):
    r = subprocess.run(
        ["bash", str(SCRIPT), "benchmark"],
        env={"OUT": str(tmp_path / "out"), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2
    assert "usage:" in r.stderr and "[all|tests|bench]" in r.stderr
    assert not (tmp_path / "out" / "summary.txt").exists()


def test_outputs_fit_what_a_lease_returns():
    text = SCRIPT.read_text()
    for name in (
        "summary.txt",
        "log.txt",
        "kernels.json",
        "bench-ops.json",
        "bench-discovery.json",
    ):
        assert name in text
    assert "step.log" in text and 'rm -f "$out/step.log"' in text  # the scratch file is removed
