"""benchmarks/paired.py: the paired A/B harness alternates the two paths and reports per-round
ratios (checked with a fake clock: no timing in unit tests)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "paired.py"
_spec = importlib.util.spec_from_file_location("navcuda_bench_paired", _PATH)
paired = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(paired)


def test_alternates_and_reports_per_round_ratios(monkeypatch):
    clock = [0.0]
    calls = []
    monkeypatch.setattr(paired.time, "perf_counter", lambda: clock[0])
    drift = iter([1.0] * 4 + [1.0, 1.0, 2.0, 2.0, 4.0, 4.0, 8.0, 8.0])  # load drifts between rounds

    def work(name, cost):
        def fn():
            calls.append(name)
            clock[0] += cost * next(drift)

        return fn

    r = paired.paired_ratio(work("ref", 3.0), work("fast", 1.0), rounds=4, warmup=2)
    # every round's ratio is 3 although the machine slowed down 8x across the rounds
    assert r == {"median": 3.0, "p10": 3.0, "p90": 3.0, "rounds": 4}
    assert calls[4:] == ["ref", "fast", "fast", "ref", "ref", "fast", "fast", "ref"]
    with pytest.raises(ValueError, match="rounds must be >= 2"):
        paired.paired_ratio(work("ref", 1), work("fast", 1), rounds=1)
