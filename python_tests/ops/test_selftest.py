"""The native-vs-reference self-test and its effect on dispatch."""

from __future__ import annotations

import warnings

import pytest
import torch

from navcuda.ops import _native
from navcuda.ops.bias_act import bias_act
from navcuda.ops.selftest import CASES, selftest

pytestmark = pytest.mark.skipif(_native.native_module() is None, reason="navcuda._C is not built")


def test_selftest_passes_on_cpu():
    results = selftest("cpu")
    by_op = {r.op: r for r in results}
    assert {"bias_act", "svd_shift"} <= set(by_op)
    for r in results:
        assert r.status == "pass", r
        assert r.worst_error is not None and r.worst_error <= 1e-4


def test_selftest_runs_in_float32_inside_a_callers_autocast():
    """The automatic self-test can start inside a caller's bfloat16 autocast (a training step's
    first op call): the cases still run in float32, so no native op is wrongly disabled; the
    caller's autocast and matmul precision are back afterwards."""
    precision = torch.get_float32_matmul_precision()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        results = selftest("cpu", mark=False)
        assert torch.is_autocast_enabled("cpu")
    assert torch.get_float32_matmul_precision() == precision
    for r in results:
        assert r.status == "pass", r
        assert r.worst_error is not None and r.worst_error <= 1e-4


def test_failed_selftest_disables_native_path(monkeypatch):
    selftest("cpu")  # registers the cases
    good = CASES["bias_act"]

    def broken(dev, impl):
        out = good(dev, impl)
        return [o + 1.0 for o in out] if impl == "native" else out

    monkeypatch.setitem(CASES, "bias_act", broken)
    isa = _native.cpu_isa()
    try:
        with warnings.catch_warnings():  # with AVX2 active it retries the generic kernels first
            warnings.simplefilter("ignore", _native.NativeFallbackWarning)
            results = {r.op: r for r in selftest("cpu")}
        assert results["bias_act"].status == "fail"
        assert "relative error" in results["bias_act"].detail
        _native._reset_fallback_warnings()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            bias_act(torch.randn(2, 3), torch.zeros(3), act="lrelu")
        assert any("self-test failed" in str(w.message) for w in caught)
    finally:
        _native.clear_failed()
        _native.set_cpu_isa(isa)


def _broken_under_avx2(monkeypatch, op: str) -> None:
    """Make ``op``'s self-test case wrong only while the AVX2 CPU kernels are active."""
    good = CASES[op]

    def case(dev, impl):
        out = good(dev, impl)
        wrong = impl == "native" and _native.cpu_isa() == "avx2"
        return [o + 1.0 for o in out] if wrong else out

    monkeypatch.setitem(CASES, op, case)


@pytest.fixture
def avx2_active():
    if "avx2" not in _native.cpu_isas():
        pytest.skip("no AVX2 CPU kernels here")
    before = _native.cpu_isa()
    _native.set_cpu_isa("avx2")
    selftest("cpu", mark=False)  # registers the cases
    yield
    _native.clear_failed()
    _native.set_cpu_isa(before)


@pytest.mark.usefixtures("avx2_active")
def test_failing_avx2_kernels_switch_the_process_to_the_generic_ones(monkeypatch):
    _broken_under_avx2(monkeypatch, "upfirdn2d")
    with pytest.warns(_native.NativeFallbackWarning, match="avx2 kernels of upfirdn2d disagree"):
        results = {r.op: r for r in selftest("cpu")}
    assert _native.cpu_isa() == "generic"
    assert all(r.status == "pass" for r in results.values()), results
    assert "its avx2 CPU kernels failed (relative error" in results["upfirdn2d"].detail
    assert "generic ones pass" in results["upfirdn2d"].detail
    assert _native.failed_ops() == {}


@pytest.mark.usefixtures("avx2_active")
def test_a_reporting_selftest_changes_no_instruction_set(monkeypatch):
    _broken_under_avx2(monkeypatch, "upfirdn2d")
    with warnings.catch_warnings():
        warnings.simplefilter("error", _native.NativeFallbackWarning)
        results = {r.op: r for r in selftest("cpu", mark=False)}
    assert results["upfirdn2d"].status == "fail"
    assert _native.cpu_isa() == "avx2"
    assert _native.failed_ops() == {}


@pytest.fixture
def auto_selftest_on_cpu(monkeypatch):
    """The automatic self-test (CUDA-only by default) enabled for the CPU, from a clean state."""
    monkeypatch.setenv(_native.ENV_SELFTEST, "cpu")
    monkeypatch.setattr(_native, "_selftested", set())
    _native._reset_fallback_warnings()
    yield
    _native.clear_failed()
    _native._reset_fallback_warnings()


def _count_selftests(monkeypatch) -> list:
    import navcuda.ops.selftest as module

    calls = []
    real = module.selftest

    def spy(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, "selftest", spy)
    return calls


@pytest.mark.usefixtures("auto_selftest_on_cpu")
def test_first_auto_call_runs_the_selftest_once(monkeypatch):
    calls = _count_selftests(monkeypatch)
    x = torch.randn(2, 3, 4, 4)
    with torch.inference_mode():  # the self-test still differentiates its cases
        bias_act(x, act="lrelu")
    bias_act(x, act="lrelu")
    bias_act(x, act="lrelu", impl="native")
    assert len(calls) == 1 and torch.device(calls[0][0]).type == "cpu"
    assert _native.failed_ops() == {}


@pytest.mark.usefixtures("auto_selftest_on_cpu")
def test_explicit_impls_do_not_trigger_it(monkeypatch):
    calls = _count_selftests(monkeypatch)
    x = torch.randn(2, 3, 4, 4)
    bias_act(x, act="lrelu", impl="native")
    bias_act(x, act="lrelu", impl="ref")
    assert calls == []


@pytest.mark.usefixtures("auto_selftest_on_cpu")
def test_auto_selftest_failure_falls_back_with_warnings(monkeypatch):
    selftest("cpu", mark=False)  # registers the cases
    good = CASES["bias_act"]

    def broken(dev, impl):
        out = good(dev, impl)
        return [o + 1.0 for o in out] if impl == "native" else out

    monkeypatch.setitem(CASES, "bias_act", broken)
    x = torch.randn(2, 3, 4, 4)
    with pytest.warns(_native.NativeFallbackWarning) as caught:
        y = bias_act(x, act="lrelu")
    messages = [str(w.message) for w in caught]
    assert any("self-test on cpu: native bias_act disagrees" in m for m in messages), messages
    assert ("bias_act", "cpu") in _native.failed_ops()
    torch.testing.assert_close(y, bias_act(x, act="lrelu", impl="ref"))


@pytest.mark.parametrize("value", ["never", "cuda"])
def test_auto_selftest_off_for_the_cpu(monkeypatch, value):
    monkeypatch.setenv(_native.ENV_SELFTEST, value)
    monkeypatch.setattr(_native, "_selftested", set())
    calls = _count_selftests(monkeypatch)
    bias_act(torch.randn(2, 3, 4, 4), act="lrelu")
    assert calls == []


def test_bad_selftest_setting_is_refused(monkeypatch):
    monkeypatch.setenv(_native.ENV_SELFTEST, "tpu")
    monkeypatch.setattr(_native, "_selftested", set())
    with pytest.raises(ValueError, match="NAVCUDA_SELFTEST must be 'never' or"):
        bias_act(torch.randn(2, 3, 4, 4), act="lrelu")


@pytest.mark.usefixtures("auto_selftest_on_cpu")
def test_an_explicit_marking_selftest_replaces_the_automatic_one(monkeypatch):
    selftest("cpu", mark=False)
    calls = _count_selftests(monkeypatch)
    bias_act(torch.randn(2, 3, 4, 4), act="lrelu")
    assert len(calls) == 1  # mark=False recorded nothing: the automatic run still happened
    monkeypatch.setattr(_native, "_selftested", set())
    selftest("cpu")  # explicit, marking (not through the spy)
    bias_act(torch.randn(2, 3, 4, 4), act="lrelu")
    assert len(calls) == 1  # no automatic run after it
