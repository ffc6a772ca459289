"""Self-test: every native op against its pure-torch reference, on the current device.

``selftest(device)`` runs each registered case with ``impl="native"`` and ``impl="ref"`` on small
random float32 inputs, compares outputs and input gradients, and reports the worst relative error
per op. An op that fails (wrong values, or an exception) is marked failed for that device type in
the dispatcher (:func:`navcuda.ops._native.mark_failed`), so ``impl="auto"`` falls back to the
reference with a warning instead of computing wrong numbers. Ops whose native path cannot run on the
device are reported as skipped.

On the CPU the native kernels come in two instruction sets (:func:`navcuda.ops._native.cpu_isa`).
When a marking self-test fails an op with the AVX2 kernels active, it switches the process to the
generic kernels (with a :class:`~navcuda.ops._native.NativeFallbackWarning`) and tests again: an
op the generic kernels get right keeps its native path, and the result says what happened.

Tolerance: relative error (max |a - b| / max |b|) at most 1e-4 on the CPU and 1e-3 on CUDA
(reassociation): the accuracy every native op must meet. The cases run in float32 whatever
the caller's mode: autocast off (the dispatcher's automatic run can start inside a caller's
bfloat16 autocast, e.g. a training step, which would fail the references' precision and disable
native ops for the whole process) and TF32 off for matmuls and cuDNN convolutions.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from navcuda.ops import _native
from navcuda.ops.kernel_layout import flatten_kernel

__all__ = ["SelfTestResult", "selftest", "run_automatic", "register_case", "CASES"]

#: op name -> case(device, impl) -> list of tensors to compare (outputs, then gradients)
CASES: dict[str, Callable[[torch.device, str], list[torch.Tensor]]] = {}


def register_case(op: str) -> Callable:
    """Decorator registering a self-test case for ``op`` (used by each op module)."""

    def deco(fn: Callable[[torch.device, str], list[torch.Tensor]]):
        CASES[op] = fn
        return fn

    return deco


@dataclass
class SelfTestResult:
    op: str
    device: str
    status: str  # "pass", "fail", "skip"
    worst_error: float | None
    detail: str = ""


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    scale = float(b.detach().abs().max()) or 1.0
    return float((a.detach() - b.detach()).abs().max()) / scale


def selftest(device: str | torch.device | None = None, mark: bool = True) -> list[SelfTestResult]:
    """Run every registered case on ``device`` (default: CUDA when available, else CPU).

    With ``mark=True`` failures disable the native path of their op on that device type, and
    the dispatcher's automatic first-use self-test (``$NAVCUDA_SELFTEST``) is then not run there.
    """
    _register_builtin_cases()
    dev = (
        torch.device(device)
        if device is not None
        else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    )
    tol = 1e-3 if dev.type == "cuda" else 1e-4
    results = []
    for op, case in sorted(CASES.items()):
        probe = torch.zeros(1, device=dev)
        reason = _native.native_unavailable_reason(op, probe)
        if reason is not None and (op, dev.type) not in _native.failed_ops():
            results.append(SelfTestResult(op, str(dev), "skip", None, reason))
            continue
        _native.clear_failed(op, dev.type)
        try:
            with _float32_math(dev):
                native = case(dev, "native")
                ref = case(dev, "ref")
            worst = max(_rel_err(a, b) for a, b in zip(native, ref, strict=True))
            ok = worst <= tol
            detail = "" if ok else f"relative error {worst:.3g} > {tol:g}"
        except Exception as exc:  # noqa: BLE001 - any failure disables the native path
            worst, ok, detail = None, False, f"{type(exc).__name__}: {exc}"
        if not ok and mark:
            _native.mark_failed(op, dev.type, f"its self-test failed ({detail})")
        results.append(SelfTestResult(op, str(dev), "pass" if ok else "fail", worst, detail))
    failed = {r.op: r.detail for r in results if r.status == "fail"}
    isa = _native.cpu_isa() if dev.type == "cpu" else None
    if failed and mark and isa not in (None, "generic"):
        return _retry_with_generic_kernels(dev, isa, failed)
    if mark:  # the verdicts are recorded: the dispatcher's automatic run is not needed any more
        _native._selftested.add(dev.type)
    return results


def run_automatic(device: torch.device) -> list[SelfTestResult]:
    """The dispatcher's automatic first-use self-test on ``device``: a marking :func:`selftest`
    (registered with :func:`navcuda.ops._native.register_auto_selftest` by :mod:`navcuda.ops`)."""
    return selftest(device, mark=True)


def _retry_with_generic_kernels(
    dev: torch.device, isa: str, failed: dict[str, str]
) -> list[SelfTestResult]:
    """The CPU self-test again with the generic kernels, after ``failed`` (op -> why) failed
    with the ``isa`` ones; the process keeps the generic kernels."""
    _native.set_cpu_isa("generic")
    results = selftest(dev, mark=True)
    for r in results:
        if r.op in failed and r.status == "pass":
            r.detail = f"its {isa} CPU kernels failed ({failed[r.op]}); the generic ones pass"
    warnings.warn(
        f"navcuda self-test on the CPU: the {isa} kernels of {', '.join(sorted(failed))} disagree "
        f"with their references ({'; '.join(f'{op}: {d}' for op, d in sorted(failed.items()))}); "
        "this process now runs the generic CPU kernels (set NAVCUDA_CPU_ISA=generic to start so).",
        _native.NativeFallbackWarning,
        stacklevel=3,
    )
    return results


@contextlib.contextmanager
def _float32_math(dev: torch.device) -> Iterator[None]:
    """Full float32 math for one case: no autocast (on ``dev`` or the CPU), no TF32."""
    precision = torch.get_float32_matmul_precision()
    cudnn_tf32 = torch.backends.cudnn.allow_tf32
    torch.set_float32_matmul_precision("highest")
    torch.backends.cudnn.allow_tf32 = False
    try:
        with contextlib.ExitStack() as stack:
            for kind in {dev.type, "cpu"}:
                stack.enter_context(torch.autocast(device_type=kind, enabled=False))
            yield
    finally:
        torch.set_float32_matmul_precision(precision)
        torch.backends.cudnn.allow_tf32 = cudnn_tf32


def _register_builtin_cases() -> None:
    if "bias_act" in CASES:
        return

    @register_case("bias_act")
    def _bias_act(dev: torch.device, impl: str) -> list[torch.Tensor]:
        from navcuda.ops.bias_act import bias_act

        g = torch.Generator().manual_seed(0)
        x = torch.randn(3, 5, 7, 6, generator=g).to(dev).requires_grad_(True)
        b = torch.randn(5, generator=g).to(dev).requires_grad_(True)
        y = bias_act(x, b, act="lrelu", clamp=1.5, impl=impl)
        gx, gb = torch.autograd.grad(y.square().sum(), [x, b])
        return [y, gx, gb]

    @register_case("upfirdn2d")
    def _upfirdn2d(dev: torch.device, impl: str) -> list[torch.Tensor]:
        from navcuda.ops.upfirdn2d import make_filter, upfirdn2d

        g = torch.Generator().manual_seed(3)
        x = torch.randn(2, 3, 7, 6, generator=g).to(dev).requires_grad_(True)
        f = make_filter((1, 3, 3, 1), 4).to(dev)
        y = upfirdn2d(x, f, pad=(2, 1), impl=impl)
        (gx,) = torch.autograd.grad(y.square().sum(), [x])
        return [y, gx]

    @register_case("svd_shift")
    def _svd_shift(dev: torch.device, impl: str) -> list[torch.Tensor]:
        from navcuda.ops.svd_shift import svd_shift

        g = torch.Generator().manual_seed(1)
        w = torch.randn(6, 5, 3, 3, generator=g)
        u, s, vh = torch.linalg.svd(flatten_kernel(w.double()), full_matrices=False)
        u, vh = u.float().to(dev), vh.float().to(dev)
        w = w.to(dev).requires_grad_(True)
        t = torch.randn(4, generator=g).to(dev).requires_grad_(True)
        d = torch.randn(4, s.numel(), generator=g).to(dev).requires_grad_(True)
        y = svd_shift(w, u, vh, t, d, impl=impl)
        gw, gt, gd = torch.autograd.grad(y.square().sum(), [w, t, d])
        return [y, gw, gt, gd]

    @register_case("shifted_modconv")
    def _shifted_modconv(dev: torch.device, impl: str) -> list[torch.Tensor]:
        from navcuda.ops.shifted_modconv import SplitShift, shifted_modconv

        g = torch.Generator().manual_seed(2)
        x = torch.randn(4, 5, 6, 6, generator=g).to(dev).requires_grad_(True)
        w = torch.randn(6, 5, 3, 3, generator=g).to(dev).requires_grad_(True)
        s = (torch.randn(4, 5, generator=g) + 1.0).to(dev).requires_grad_(True)
        delta = (0.3 * torch.randn(2, 6, 5, 3, 3, generator=g)).to(dev).requires_grad_(True)
        t = torch.randn(4, generator=g).to(dev).requires_grad_(True)
        index = torch.tensor([0, 1, 1, 0], device=dev)
        noise = torch.randn(4, 1, 6, 6, generator=g).to(dev)
        bias = torch.randn(6, generator=g).to(dev).requires_grad_(True)
        out = []
        # Both layouts the native epilogue reads: NCHW and channels-last activations.
        for xl in (x, x.detach().contiguous(memory_format=torch.channels_last).requires_grad_()):
            y = shifted_modconv(xl, w, s, SplitShift(delta, t, index), noise=noise,
                                noise_strength=0.1, bias=bias, clamp=2.0, strategy="split",
                                impl=impl)  # fmt: skip
            out += [y, *torch.autograd.grad(y.square().sum(), [xl, w, s, delta, t, bias])]
        return out
