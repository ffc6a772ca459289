"""The benchmark suites stay importable: CI does not time them, so collecting them here is what
catches a broken import, fixture or parametrisation before someone runs them (on a GPU lease,
where a failed collection costs device minutes)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def test_benchmarks_collect():
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", str(BENCH)],
        cwd=BENCH,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    ids = proc.stdout.splitlines()
    # One case of every suite, and both bounds of the optimisation step.
    for suite in sorted(p.name for p in BENCH.glob("test_bench_*.py")):
        assert any(line.startswith(f"{suite}::") for line in ids), suite
    assert any("floor + exact generator work" in line for line in ids)
    assert any("paired" in line and "floor + exact generator work" in line for line in ids)
