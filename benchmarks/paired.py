"""Paired A/B timing: the reference and the fast path alternated call by call.

pytest-benchmark times each case on its own, so a reference and its fast path are measured
seconds or minutes apart; on a shared machine the background load drifts in between, and their
median ratio moves by ±20–25 % from run to run with the same code. Alternating the two (ABBA
order, so neither always runs first) and taking the ratio within each round cancels the drift
that is slower than one round; the median of the per-round ratios, with its 10th and 90th
percentiles, is what :func:`paired_ratio` reports.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def paired_ratio(
    reference: Callable[[], object],
    fast: Callable[[], object],
    rounds: int = 15,
    warmup: int = 2,
) -> dict[str, float]:
    """Median and 10th/90th percentiles of ``time(reference) / time(fast)`` over ``rounds``
    alternated rounds (after ``warmup`` untimed rounds); each callable must finish its work
    (synchronise a GPU) before returning."""
    if rounds < 2:
        raise ValueError(f"rounds must be >= 2, got {rounds}")
    for _ in range(warmup):
        reference()
        fast()
    ratios = []
    for i in range(rounds):
        order = (reference, fast) if i % 2 == 0 else (fast, reference)
        took = {}
        for fn in order:
            start = time.perf_counter()
            fn()
            took[fn] = time.perf_counter() - start
        ratios.append(took[reference] / took[fast])
    q = statistics.quantiles(ratios, n=10, method="inclusive")
    return {
        "median": statistics.median(ratios),
        "p10": q[0],
        "p90": q[-1],
        "rounds": rounds,
    }
