"""pytest-benchmark suites: every fast path is timed beside its reference in the same run.

Run: ``pytest benchmarks --benchmark-only [--device cuda]``. Each benchmark sets
``benchmark.group`` to the case and ``benchmark.extra_info["role"]`` to ``"reference"`` or
``"fast"``; the terminal summary prints, per group, the median-time ratio reference / fast
(higher is better) and peak memory where measured, so speed claims are always ratios taken on
the same machine in the same run; the headline cases are also timed as a paired A/B
(:mod:`paired`: reference and fast alternated, per-round ratios), which cancels the background
load's drift between two separately timed cases. A ``"floor"`` role times the part of a case
that no fast path changes; ``reference / floor`` is printed as the bound on any speed-up of that
case (``extra_info["floor_label"]`` names the floor where a case has several).
"""

from __future__ import annotations

import pytest
import torch

import navcuda


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--device", default="cpu", help="device to benchmark on (cpu or cuda)")


@pytest.fixture(scope="session")
def device(request: pytest.FixtureRequest) -> torch.device:
    dev = torch.device(request.config.getoption("--device"))
    if dev.type == "cuda" and not torch.cuda.is_available():
        pytest.skip("--device cuda given but no CUDA device is available")
    if dev.type == "cuda":
        # The dispatcher would self-test the CUDA kernels at their first use, inside a timed
        # call: do it here, and say which ops (if any) fall back to their reference.
        for r in navcuda.selftest(dev):
            print(f"self-test {r.op} on {r.device}: {r.status} {r.detail}".rstrip())
    torch.manual_seed(0)
    return dev


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_sessionfinish(session: pytest.Session):
    """Keep the results of an interrupted run.

    ``benchmarks/run_on_gpu.sh`` stops a step that outruns its time limit with SIGINT. The
    benchmark being timed at that moment has no rounds, and pytest-benchmark would then fail
    to write the JSON for all the finished ones. This wrapper runs before pytest-benchmark's
    save and drops such empty benchmarks.
    """
    bs = getattr(session.config, "_benchmarksession", None)
    if bs is not None:
        bs.benchmarks[:] = [b for b in bs.benchmarks if b]  # falsy: no timed rounds
    yield


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:  # noqa: ARG001
    session = getattr(config, "_benchmarksession", None)
    if session is None or not session.benchmarks:
        return
    groups: dict[str, dict[str, list]] = {}
    for bench in session.benchmarks:
        role = bench.extra_info.get("role")
        if role in ("reference", "fast", "floor"):
            groups.setdefault(bench.group or bench.name, {}).setdefault(role, []).append(bench)
    tr = terminalreporter
    bw = [b for b in session.benchmarks if "GB/s" in b.extra_info]
    if bw:
        tr.section("achieved memory bandwidth (median)")
        for b in bw:
            frac = b.extra_info.get("fraction_of_triad")
            extra = f"   {frac:.0%} of the stream triad" if frac is not None else ""
            frac = b.extra_info.get("fraction_of_allocating_triad")
            extra += f", {frac:.0%} of the allocating one" if frac is not None else ""
            tr.write_line(f"{b.group:<52} {b.name:<36} {b.extra_info['GB/s']:7.1f} GB/s{extra}")
    paired = [b for b in session.benchmarks if "paired_ratio" in b.extra_info]
    if paired:
        tr.section("paired A/B: reference / fast per alternated round (median [p10, p90])")
        for b in paired:
            r = b.extra_info["paired_ratio"]
            tr.write_line(
                f"{b.group:<60} {r['median']:6.2f}x  [{r['p10']:.2f}, {r['p90']:.2f}]  "
                f"{r['rounds']} rounds"
            )
    for b in session.benchmarks:
        if "summary" in b.extra_info:
            tr.section(b.group)
            for line in b.extra_info["summary"]:
                tr.write_line(line)
    if not groups:
        return
    tr.section("speed-up over the reference (median time ratio, same run)")
    for group, roles in sorted(groups.items()):
        refs = roles.get("reference", [])
        for fast in roles.get("fast", []):
            if not refs:
                continue
            ref = refs[0]
            ratio = ref.stats.median / fast.stats.median
            line = f"{group:<48} {fast.name:<40} {ratio:6.2f}x"
            rm, fm = ref.extra_info.get("peak_mem_mb"), fast.extra_info.get("peak_mem_mb")
            if rm is not None and fm is not None and rm > 0:
                line += f"   peak memory {fm:.1f} / {rm:.1f} MB ({fm / rm:.2f})"
            tr.write_line(line)
        for floor in roles.get("floor", []):
            if refs:
                bound = refs[0].stats.median / floor.stats.median
                label = f"bound: reference / {floor.extra_info.get('floor_label', 'floor')}"
                line = f"{group:<48} {label:<40} {bound:6.2f}x"
                mem = floor.extra_info.get("peak_mem_mb")
                if mem is not None:
                    line += f"   floor peak memory {mem:.1f} MB"
                tr.write_line(line)
