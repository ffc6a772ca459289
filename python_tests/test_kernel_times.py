"""benchmarks/kernel_times.py, the device-clock table for a GPU lease, runs end to end on the
CPU (wall-clock mode), writes its JSON atomically, and refuses bad arguments."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from navcuda.ops import _native

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "kernel_times.py"
_spec = importlib.util.spec_from_file_location("navcuda_bench_kernel_times", _PATH)
kernel_times = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(kernel_times)


@pytest.mark.skipif(_native.native_module() is None, reason="needs navcuda._C")
def test_runs_every_case_and_writes_json(tmp_path, capsys):
    out = tmp_path / "kernels.json"
    rc = kernel_times.main(
        [
            "--device",
            "cpu",
            "--iters",
            "1",
            "--copy-mib",
            "4",
            "--shapes",
            "official",
            "--json",
            str(out),
        ]  # fmt: skip
    )
    assert rc == 0
    result = json.loads(out.read_text())
    assert result["clock"] == "wall" and result["copy_GB/s"] > 0
    cases = {(r["case"], r["impl"]) for r in result["rows"]}
    names = ["bias_act fwd", "bias_act bwd", "epilogue fwd", "epilogue bwd", "blur fwd"]
    want = {(f"{n} official", i) for n in names for i in ("ref", "native")}
    want |= {(f"svd_shift {p} official", i) for p in ("fwd", "bwd") for i in ("ref", "native")}
    assert cases == want
    assert all(r["us"] > 0 and r["GB/s"] > 0 for r in result["rows"])
    assert all(r["GFLOP/s"] > 0 for r in result["rows"] if r["case"].startswith("svd_shift"))
    assert not list(tmp_path.glob("*.tmp"))
    table = capsys.readouterr().out
    assert "device cpu (wall time)" in table and table.count("\n") == len(want) + 1  # header + rows


@pytest.mark.parametrize(
    "argv", [["--shapes", "huge"], ["--shapes", ","], ["--iters", "0"], ["--copy-mib", "0"]]
)
def test_bad_arguments_are_refused(argv):
    with pytest.raises(SystemExit) as info:
        kernel_times.main(["--device", "cpu", *argv])
    assert info.value.code == 2


def test_a_broken_case_is_reported_not_fatal(monkeypatch):
    def boom():
        raise RuntimeError("kernel exploded")

    monkeypatch.setattr(
        kernel_times, "_svd_shift_cases", lambda device, gen: [("svd_shift", "native", boom, 1, 1)]
    )
    result = kernel_times.run(kernel_times.torch.device("cpu"), 1, {}, copy_mib=1)
    assert result["rows"] == [
        {"case": "svd_shift", "impl": "native", "error": "RuntimeError: kernel exploded"}
    ]
    assert "ERROR RuntimeError: kernel exploded" in kernel_times._table(result)
