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


def test_failed_selftest_disables_native_path(monkeypatch):
    selftest("cpu")  # registers the cases
    good = CASES["bias_act"]

    def broken(dev, impl):
        out = good(dev, impl)
        return [o + 1.0 for o in out] if impl == "native" else out

    monkeypatch.setitem(CASES, "bias_act", broken)
    try:
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
