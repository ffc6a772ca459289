"""Device time of the fused kernels against their references, kernel by kernel.

The pytest-benchmark suites time whole calls from the host. On a GPU at this project's sizes a
call costs far more on the host (Python, autograd, launches) than on the device (session 12's
H200 run: bias_act forward + backward 0.46 ms through torch for ~3 µs of memory traffic), so
those ratios say little about the kernels. This script reads the device's own clock instead:
each case runs ``--iters`` times under ``torch.profiler`` with CUDA activity, and the kernels'
summed self time per call is set against the case's minimal memory traffic and against a
device-to-device copy measured the same way (the achievable bandwidth; METHOD.md's "two
numbers first"). On the CPU, where there is no device clock, it reports wall time per call
instead (what the pytest-benchmark suites measure better); that mode exists so that the script
is tested here.

Usage: ``python benchmarks/kernel_times.py [--device cuda] [--iters 20] [--json FILE]``.
Cases (float32): bias_act forward and backward, the modconv epilogue forward and backward (split
form, NCHW), the blur (fir2d, 4x4), each at the official layer ``[8, 512, 16, 16]`` and a
memory-bound ``[32, 512, 32, 32]`` (64 MiB); svd_shift forward and backward (the gradients of
``t`` and ``d``) at the official layer (B=8, compute-bound: GFLOP/s as well as GB/s).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from navcuda.ops.bias_act import bias_act
from navcuda.ops.shifted_modconv import epilogue
from navcuda.ops.svd_shift import svd_shift
from navcuda.ops.upfirdn2d import upfirdn2d
from navcuda.shift import LayerSpace

SHAPES = {"official": (8, 512, 16, 16), "64MiB": (32, 512, 32, 32)}


def device_us(fn: Callable[[], object], device: torch.device, iters: int) -> float:
    """Microseconds per call: the summed self time of the device's kernels (CUDA), or wall time
    (CPU). Two untimed calls first."""
    for _ in range(2):
        fn()
    if device.type != "cuda":
        start = time.perf_counter()
        for _ in range(iters):
            fn()
        return (time.perf_counter() - start) / iters * 1e6
    torch.cuda.synchronize(device)
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(iters):
            fn()
        torch.cuda.synchronize(device)
    total = 0.0
    for evt in prof.key_averages():
        if getattr(evt, "device_type", None) == torch.autograd.DeviceType.CUDA:
            total += getattr(evt, "self_device_time_total", 0.0)
    return total / iters


Case = tuple[str, str, Callable[[], object], float, float]


def _layer_cases(label: str, shape: tuple[int, int, int, int], device, gen) -> list[Case]:
    """(name, impl, callable, bytes moved, flops) of the elementwise cases at one shape."""
    b, c, h, w = shape
    n = b * c * h * w

    def rand(*size):
        return torch.randn(*size, generator=gen).to(device)

    x, bias = rand(*shape), rand(c)
    xg = x.clone().requires_grad_(True)
    y0, y1 = rand(*shape).requires_grad_(True), rand(*shape).requires_grad_(True)
    ep = (y0, y1, rand(b), rand(b, c).abs() + 0.5, rand(b, 1, h, w),
          torch.tensor([0.1], device=device), bias)  # fmt: skip
    f = torch.tensor([1.0, 3.0, 3.0, 1.0], device=device)
    f = torch.outer(f, f) / 16
    cases: list[Case] = []
    for impl in ("ref", "native"):
        ya = bias_act(xg, None, act="lrelu", clamp=256.0, impl=impl)
        out = epilogue(*ep, clamp=256.0, impl=impl)
        dy = torch.ones_like(ya)

        def act_fwd(impl=impl):
            return bias_act(x, bias, act="lrelu", impl=impl)

        def act_bwd(ya=ya, dy=dy):
            return torch.autograd.grad(ya, xg, dy, retain_graph=True)

        def epi_fwd(impl=impl):
            return epilogue(*ep, clamp=256.0, impl=impl)

        def epi_bwd(out=out, dy=dy):
            return torch.autograd.grad(out, ep[:2], dy, retain_graph=True)

        def blur(impl=impl):
            return upfirdn2d(x, f, pad=(2, 1), impl=impl)

        cases += [
            (f"bias_act fwd {label}", impl, act_fwd, 8 * n, 0),  # read x, write y
            (f"bias_act bwd {label}", impl, act_bwd, 12 * n, 0),  # read dy, y; write dx
            (f"epilogue fwd {label}", impl, epi_fwd, 12 * n, 0),  # read y0, y1; write out
            # read dout, y1 and the 2-bit mask; write dy0, dy1
            (f"epilogue bwd {label}", impl, epi_bwd, (4 + 1 / 16) * 4 * n, 0),
            (f"blur fwd {label}", impl, blur, 8 * n, 0),  # read x, write the output
        ]
    return cases


def _svd_shift_cases(device, gen) -> list[Case]:
    """svd_shift forward at the official layer (B=8, full rank): compute-bound."""
    o, i, k, b = 512, 512, 3, 8
    w_cpu = torch.randn(o, i, k, k, generator=gen)
    space = LayerSpace(w_cpu)
    w, u, vh = w_cpu.to(device), space.u.float().to(device), space.vh.float().to(device)
    t, d = torch.randn(b, generator=gen).to(device), torch.randn(b, space.rank, generator=gen)
    d = d.to(device)
    flops = 2.0 * b * o * space.rank * (i * k * k)
    nbytes = 4.0 * b * o * i * k * k  # the output alone

    def shifted(impl):
        return lambda: svd_shift(w, u, vh, t, d, impl=impl)

    def backward(impl):  # gradients of t and d: the e = diag(U^T G V) kernel and a reduction
        tg, dg = t.clone().requires_grad_(True), d.clone().requires_grad_(True)
        out = svd_shift(w, u, vh, tg, dg, impl=impl)
        gout = torch.randn(out.shape, generator=gen).to(device)
        return lambda: torch.autograd.grad(out, (tg, dg), gout, retain_graph=True)

    cases = []
    for impl in ("ref", "native"):
        cases.append(("svd_shift fwd official", impl, shifted(impl), nbytes, flops))
        cases.append(("svd_shift bwd official", impl, backward(impl), nbytes, flops))
    return cases


def run(device: torch.device, iters: int, shapes: dict | None = None, copy_mib: int = 1024) -> dict:
    """Every case's time per call, GB/s (or GFLOP/s) and the copy ceiling; see the module doc."""
    shapes = SHAPES if shapes is None else shapes
    gen = torch.Generator().manual_seed(0)
    src = torch.randn(copy_mib * 2**18, generator=gen).to(device)  # copy_mib MiB of float32
    dst = torch.empty_like(src)
    copy_us = device_us(lambda: dst.copy_(src), device, max(2, iters // 4))
    ceiling = 2 * src.numel() * 4 / copy_us / 1e3  # GB/s, bytes read + written
    src = dst = None
    cases = [c for label, shape in shapes.items() for c in _layer_cases(label, shape, device, gen)]
    cases += _svd_shift_cases(device, gen)
    rows = []
    for name, impl, fn, nbytes, flops in cases:
        try:
            us = device_us(fn, device, iters)
            row = {"case": name, "impl": impl, "us": us, "GB/s": nbytes / us / 1e3}
            if flops:
                row["GFLOP/s"] = flops / us / 1e3
            row["of_copy"] = row["GB/s"] / ceiling
        except Exception as exc:  # one broken case must not cost the lease the others
            row = {"case": name, "impl": impl, "error": f"{type(exc).__name__}: {exc}"}
        rows.append(row)
    return {"device": str(device), "clock": "kernels" if device.type == "cuda" else "wall",
            "copy_GB/s": ceiling, "rows": rows}  # fmt: skip


def _table(result: dict) -> str:
    lines = [f"device {result['device']} ({result['clock']} time); "
             f"device-to-device copy {result['copy_GB/s']:.0f} GB/s"]  # fmt: skip
    ref = {r["case"]: r.get("us") for r in result["rows"] if r["impl"] == "ref"}
    for r in result["rows"]:
        if "error" in r:
            lines.append(f"{r['case']:<24} {r['impl']:<7} ERROR {r['error']}")
            continue
        speed = ref.get(r["case"])
        ratio = f"{speed / r['us']:6.2f}x" if speed and r["impl"] == "native" else " " * 7
        extra = f"  {r['GFLOP/s']:8.0f} GFLOP/s" if "GFLOP/s" in r else ""
        lines.append(f"{r['case']:<24} {r['impl']:<7} {r['us']:10.1f} us {r['GB/s']:8.1f} GB/s "
                     f"{r['of_copy']:5.0%} of copy {ratio}{extra}")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--shapes", default=",".join(SHAPES), help="subset of " + ",".join(SHAPES))
    parser.add_argument("--copy-mib", type=int, default=1024, help="size of the copy ceiling")
    args = parser.parse_args(argv)
    if args.iters < 1 or args.copy_mib < 1:
        parser.error("--iters and --copy-mib must be >= 1")
    names = [s for s in args.shapes.split(",") if s]
    if not names or not set(names) <= set(SHAPES):
        parser.error(f"--shapes must name some of {', '.join(SHAPES)}, got {args.shapes!r}")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda given but torch sees no CUDA device")
    torch.manual_seed(0)
    result = run(device, args.iters, {k: SHAPES[k] for k in names}, args.copy_mib)
    print(_table(result))
    if args.json is not None:
        tmp = args.json.with_suffix(args.json.suffix + ".tmp")
        tmp.write_text(json.dumps(result, indent=1))
        tmp.replace(args.json)
    return 1 if any("error" in r or not math.isfinite(r["us"]) for r in result["rows"]) else 0


if __name__ == "__main__":
    sys.exit(main())
