"""The CUDA emulator's own checks (csrc/cuda_emu.h), shown on the probe kernels of
csrc/emu/checker_probes.cuh: each broken probe makes its launch fail with a message naming the
mistake, whichever order the emulated threads ran in, and the correct one runs clean. The op
tests then run every real CUDA kernel under the same checks: directly with chosen launch shapes
(``test_*_emulated``), and through the ops with ``navcuda._C``'s own CUDA launchers
(``cuda_device`` = ``emulated``, :func:`navcuda.ops._native.emulated_cuda`), tested here."""

from __future__ import annotations

import re

import pytest
import torch

from navcuda.ops import _native
from navcuda.ops.bias_act import bias_act
from navcuda.ops.selftest import selftest

# (probe, launch shape (grid, block), what the message must say)
BROKEN = [
    (
        "block_sum_missing_barrier",
        (1, 8),
        r"shared array 'buf' element \d+ in block \(0, 0, 0\): (written|read) by thread .* "
        r"between the same two barriers",
    ),
    (
        "all_write_one_slot",
        (1, 4),
        r"'buf' element 0 .*written by threads \(\d, 0, 0\) and \(\d, 0, 0\) between the same",
    ),
    ("read_unwritten", (1, 8), r"'buf' element 8 .*read before any thread of the block wrote it"),
    (
        "read_other_blocks_value",
        (3, 2),
        r"'buf' element 0 in block \(1, 0, 0\): read before any thread of the block wrote it",
    ),
    ("index_past_row", (1, 2), r"'tile' .*indexed 5 in a dimension of extent 4"),
    ("return_before_barrier", (1, 8), r"divergent __syncthreads\(\) in block \(0, 0, 0\)"),
    ("too_many_threads", (1, 2048), r"invalid launch shape: more than 1024 threads per block"),
]


@pytest.mark.parametrize(("case", "shape", "message"), BROKEN, ids=[c[0] for c in BROKEN])
def test_broken_probe_fails_with_its_finding(emu, case, shape, message):
    grid, block = shape
    for _ in range(3):  # deterministic: decided from barrier intervals, not from run order
        with pytest.raises(RuntimeError, match=message) as info:
            emu.checker_probe(case, grid=grid, block=block)
        assert str(info.value).startswith(f"cuda_emu: {case} (grid ({grid}, 1, 1)")


@pytest.mark.parametrize("block", [1, 2, 8, 64])
def test_correct_reduction_runs_clean(emu, block):
    grid = 3
    out = emu.checker_probe("block_sum", grid=grid, block=block)
    expected = block * (block + 1) / 2  # x = 1, 2, ..., one sum per block
    assert out[:grid] == [expected] * grid


def test_a_failed_launch_leaves_no_finding_behind(emu):
    with pytest.raises(RuntimeError):
        emu.checker_probe("block_sum_missing_barrier", block=8)
    assert emu.checker_probe("block_sum", block=8)[0] == 36.0


def test_finding_count_is_reported(emu):
    # 4 threads all write slot 0 in one interval: every write after the first is a finding.
    with pytest.raises(RuntimeError) as info:
        emu.checker_probe("all_write_one_slot", block=4)
    more = re.search(r"\[(\d+) more finding\(s\)\]", str(info.value))
    assert more is not None and int(more.group(1)) >= 2


def test_unknown_probe_is_refused(emu):
    with pytest.raises(ValueError, match="unknown case"):
        emu.checker_probe("no_such_probe")


# ------------------------------------------------------------------------- the emulated CUDA path


def _bias_act_with_bad_activation() -> None:
    x = torch.zeros(4)
    code = _native.dtype_code(x.dtype)
    buf = _native.buffer(x)
    _native.run_kernel("bias_act", x.device, buf, None, buf, 1, 1, 4, code, 7, 0.2, 1.0, -1.0)


def test_emulated_cuda_routes_cpu_tensors_to_the_cuda_launchers(emu):
    with _native.emulated_cuda() as module:
        assert module is emu
        with pytest.raises(ValueError, match="bias_act_cuda: unknown activation code 7"):
            _bias_act_with_bad_activation()
    with pytest.raises(ValueError, match="bias_act_cpu: unknown activation code 7"):
        _bias_act_with_bad_activation()  # back on the C++ CPU kernels


def test_emulated_cuda_is_restored_after_an_error(emu):
    with pytest.raises(KeyError), _native.emulated_cuda():
        raise KeyError("boom")
    with pytest.raises(ValueError, match="bias_act_cpu"):
        _bias_act_with_bad_activation()


def test_selftest_passes_through_the_emulated_cuda_path(emu):
    before = _native.failed_ops()
    with _native.emulated_cuda():
        results = selftest("cpu", mark=False)
    assert {r.op for r in results} == {"bias_act", "shifted_modconv", "svd_shift", "upfirdn2d"}
    assert all(r.status == "pass" for r in results), results
    assert _native.failed_ops() == before


def test_the_cuda_device_fixture_really_emulates(cuda_device, emu):
    if cuda_device.type == "cuda":
        pytest.skip("checks the fixture's emulated variant")
    before = emu.launch_count()
    bias_act(torch.randn(2, 3, 4, 4, device=cuda_device), act="lrelu", impl="native")
    assert emu.launch_count() > before
