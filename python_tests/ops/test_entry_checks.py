"""Every native entry point refuses bad arguments with a named exception before it touches memory
(issue 22, item 2): the registered custom ops called directly (``torch.ops.navcuda.*``, which
skip the public wrappers' checks) and every function of the raw modules ``navcuda._C`` and
``navcuda._C_emu``. Buffers cross as ``(address, bytes)``: the C++ side checks every size against
them (and, on the CPU, index values), the Python ops what C++ cannot see (devices, dtypes,
ranks). Before these checks, the issue's two reproductions segfaulted or read out of bounds."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
import torch

from navcuda.ops import _native

pytestmark = pytest.mark.skipif(
    _native.native_module() is None,
    reason=f"navcuda._C is not importable: {_native.import_error()}",
)

F32 = torch.float32


def _ops():
    import navcuda.ops  # noqa: F401  (registers the custom ops)

    return torch.ops.navcuda


def _randn(*shape, dtype=F32, seed=0):
    return torch.randn(*shape, dtype=dtype, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------- the cases


def test_svd_shift_op_with_u_of_one_row_is_refused(native_path):
    """u [1, 100000] for a [64, 64, 3, 3] kernel: the kernels read u as [576, 100000] (segfault)."""
    w, u, vh = _randn(64, 64, 3, 3), _randn(1, 100000), _randn(8, 64)
    t, dhat = torch.ones(2), _randn(2, 8)
    with pytest.raises(ValueError, match=r"svd_shift_cuda|svd_shift_cpu") as info:
        _ops().svd_shift(w, u, vh, t, dhat)
    assert "u must hold [in * taps, rank] = 57600000 elements" in str(info.value)


def test_bias_act_op_with_one_bias_for_a_million_channels_is_refused(native_path):
    """A 1-element bias for 10^6 channels: the kernel read b[c] for every channel."""
    x, b = _randn(1, 10**6, 1, 1), _randn(1)
    with pytest.raises(ValueError, match=r"bias_act_c(pu|uda): b must hold \[channels\] = 1000000"):
        _ops().bias_act(x, b, 1, "linear", 0.2, 1.0, -1.0)


# ------------------------------------------------------------------------- the raw entry points
# Each family: the arguments of a valid call of its `<name>_cpu` entry point, in order (tensors
# and None are buffers, the rest sizes and scalars), with the names of its sizes, and how its
# emulator function `<name>_emu` takes them (`<name>_cuda` adds a stream). Every case changes one
# argument of the valid call.


@dataclass
class Family:
    name: str
    args: list[tuple[str, object]]
    sizes: tuple[str, ...]
    emu: Callable[[list[tuple[str, object]]], list[tuple[str, object]]] = field(
        default=lambda a: [*a, ("grid", 2), ("block", 32)]
    )


def _bias_act():
    x, b, y = _randn(2, 3, 5), _randn(3), torch.empty(2, 3, 5)
    return Family(
        "bias_act",
        [("x", x), ("b", b), ("y", y), ("outer", 2), ("channels", 3), ("inner", 5),
         ("dtype", 0), ("act", 1), ("alpha", 0.2), ("gain", 1.0), ("clamp", -1.0)],
        ("outer", "channels", "inner"),
    )  # fmt: skip


def _bias_act_grad():
    dy, y, dx = _randn(7), _randn(7, seed=1), torch.empty(7)
    return Family(
        "bias_act_grad",
        [("dy", dy), ("y", y), ("dx", dx), ("n", 7), ("dtype", 0), ("act", 1), ("alpha", 0.2),
         ("gain", 1.0), ("clamp", 1.0)],
        ("n",),
    )  # fmt: skip


def _svd_shift():
    b, o, i, taps, r = 2, 5, 3, 4, 3
    return Family(
        "svd_shift",
        [("w", _randn(o, i, taps)), ("u", _randn(i * taps, r)), ("vh", _randn(r, o)),
         ("s", _randn(b, r)), ("out", torch.empty(b, o, i, taps)), ("batch", b), ("n_out", o),
         ("n_in", i), ("taps", taps), ("rank", r), ("dtype", 0)],
        ("batch", "n_out", "n_in", "taps", "rank"),
        emu=lambda a: [*a, ("config", 1)],
    )  # fmt: skip


def _svd_shift_grad():
    b, o, i, taps, r = 2, 5, 3, 4, 3
    work = torch.empty(_native.native_module().svd_shift_grad_workspace(b, o, r))
    return Family(
        "svd_shift_grad",
        [("g", _randn(b, o, i, taps)), ("u", _randn(i * taps, r)), ("vh", _randn(r, o)),
         ("e", torch.empty(b, r)), ("work", work), ("batch", b), ("n_out", o), ("n_in", i),
         ("taps", taps), ("rank", r), ("dtype", 0)],
        ("batch", "n_out", "n_in", "taps", "rank"),
        emu=lambda a: [p for p in a if p[0] != "work"] + [("config", 1), ("max_chunks", 2)],
    )  # fmt: skip


DEMOD = dict(batch=3, n_out=4, n_in=5, n0=1, n_dir=2)


def _demod_inputs():
    b, o, i, n_dir = DEMOD["batch"], DEMOD["n_out"], DEMOD["n_in"], DEMOD["n_dir"]
    return [("s", _randn(b, i)), ("q0", _randn(1, o, i).abs()), ("q1", _randn(n_dir, o, i)),
            ("q2", _randn(n_dir, o, i).abs()), ("t", _randn(b)),
            ("index", torch.tensor([1, 0, 1]))]  # fmt: skip


def _demod_sizes():
    return [(k, v) for k, v in DEMOD.items()] + [("dtype", 0), ("scale2", 0.5)]


def _modconv_demod():
    b, o = DEMOD["batch"], DEMOD["n_out"]
    return Family(
        "modconv_demod",
        [*_demod_inputs(), ("dcoef", torch.empty(b, o)), *_demod_sizes()],
        ("batch", "n_out", "n_in", "n_dir"),
        emu=lambda a: [*a, ("block", 8)],
    )


def _modconv_demod_grad():
    b, o, i, n_dir = DEMOD["batch"], DEMOD["n_out"], DEMOD["n_in"], DEMOD["n_dir"]
    parts = _native.native_module().modconv_demod_dt_parts(i)
    inputs = _demod_inputs()
    outs = [("dn", torch.empty(b, o)), ("ds", torch.empty(b, i)), ("dt", torch.zeros(b, parts)),
            ("dq0", torch.empty(1, o, i)), ("dq1", torch.empty(n_dir, o, i)),
            ("dq2", torch.empty(n_dir, o, i))]  # fmt: skip
    # (the emulated kernels write dt per block of `block` channels: block 8 -> one part for 5)
    return Family(
        "modconv_demod_grad",
        [("g", _randn(b, o)), ("dcoef", _randn(b, o).abs()), *inputs, *outs, *_demod_sizes()],
        ("batch", "n_out", "n_in", "n_dir"),
        emu=lambda a: [*a, ("grid", 2), ("block", 8)],
    )


EPI = dict(batch=2, channels=3, hw=4 * 5)


def _mask(bits=2):
    b, c, hw = EPI["batch"], EPI["channels"], EPI["hw"]
    return torch.zeros(b * c, (hw * bits + 7) // 8, dtype=torch.uint8)


def _epi_sizes():
    return [*EPI.items(), ("channels_last", 0), ("dtype", 0), ("act", 1), ("alpha", 0.2),
            ("gain", 1.4), ("clamp", 2.0)]  # fmt: skip


def _image(seed=0):
    return _randn(EPI["batch"], EPI["channels"], 4, 5, seed=seed)


def _modconv_epilogue():
    b, c, hw = EPI["batch"], EPI["channels"], EPI["hw"]
    return Family(
        "modconv_epilogue",
        [("y0", _image()), ("y1", _image(1)), ("t", _randn(b)), ("dcoef", _randn(b, c)),
         ("noise", _randn(b, 1, 4, 5)), ("noise_bstride", hw), ("ns", _randn(1)),
         ("bias", _randn(c)), ("out", torch.empty(b, c, 4, 5)), ("mask", _mask()),
         *_epi_sizes()],
        ("batch", "channels", "hw"),
    )  # fmt: skip


def _modconv_epilogue_grad():
    b, c = EPI["batch"], EPI["channels"]
    return Family(
        "modconv_epilogue_grad",
        [("dout", _image(2)), ("mask", _mask()), ("y0", _image()), ("y1", _image(1)),
         ("t", _randn(b)), ("dcoef", _randn(b, c)), ("noise", _randn(1, 1, 4, 5)),
         ("noise_bstride", 0), ("dy0", torch.empty(b, c, 4, 5)), ("dy1", torch.empty(b, c, 4, 5)),
         ("dz", torch.empty(b, c, 4, 5)), ("ddcoef", torch.empty(b, c)),
         ("p_dz", torch.empty(b, c)), ("p_dzy1", torch.empty(b, c)), ("p_dzn", torch.empty(b, c)),
         *_epi_sizes()],
        ("batch", "channels", "hw"),
    )  # fmt: skip


def _fir2d():
    return Family(
        "fir2d",
        [("x", _randn(2, 6, 7)), ("w", _randn(3, 4)), ("out", torch.empty(2, 6, 7)),
         ("planes", 2), ("h", 6), ("wd", 7), ("kh", 3), ("kw", 4), ("pad_y", 1), ("pad_x", 2),
         ("ho", 6), ("wo", 7), ("dtype", 0)],
        ("planes", "h", "wd", "ho", "wo"),
    )  # fmt: skip


FAMILIES = {
    f.__name__.lstrip("_"): f
    for f in (_bias_act, _bias_act_grad, _svd_shift, _svd_shift_grad, _modconv_demod,
              _modconv_demod_grad, _modconv_epilogue, _modconv_epilogue_grad, _fir2d)
}  # fmt: skip


def _emu_module():
    try:
        return importlib.import_module("navcuda._C_emu")
    except ImportError as exc:
        pytest.skip(f"navcuda._C_emu not built: {exc}")


def _with_stream(args):
    return [*args, ("stream", 0)]


def _entry(family: Family, kind: str):
    """(the entry point, how it takes the family's arguments)."""
    if kind == "cpu":
        return getattr(_native.native_module(), f"{family.name}_cpu"), lambda a: a
    if kind == "cuda":
        return getattr(_native.native_module(), f"{family.name}_cuda"), _with_stream
    if kind == "emu_cuda":
        return getattr(_emu_module(), f"{family.name}_cuda"), _with_stream
    return getattr(_emu_module(), f"{family.name}_emu"), family.emu


def _call(fn, args: list[tuple[str, object]]):
    def value(v):
        if v is None or isinstance(v, torch.Tensor):
            return _native.buffer(v)
        return v

    return fn(*(value(v) for _, v in args))


def _replace(args, name, value):
    assert name in dict(args), name
    return [(k, value if k == name else v) for k, v in args]


KINDS = ["cpu", "emu_cuda", "emu", "cuda"]


def _cases():
    """(family, case id, change) for every buffer (one element short, one too many) and every
    size (negative) of every family. (svd_shift_grad's scratch `work`, unused on the CPU and
    sized "at least" on CUDA: test_svd_shift.py.)"""
    out = []
    for fam_name, make in FAMILIES.items():
        fam = make()
        for name, v in fam.args:
            if isinstance(v, torch.Tensor) and name != "work":
                out.append((fam_name, f"{name}-short", name))
                out.append((fam_name, f"{name}-long", name))
        for name in fam.sizes:
            out.append((fam_name, f"{name}-negative", name))
    return out


def _changed(fam: Family, case: str, name: str):
    kind = case.rsplit("-", 1)[1]
    v = dict(fam.args)[name]
    if kind == "short":
        return _replace(fam.args, name, v.flatten()[:-1])
    if kind == "long":
        return _replace(fam.args, name, torch.cat([v.flatten(), v.flatten()[:1]]))
    return _replace(fam.args, name, -1)


def _expect_refusal(kind: str):
    # navcuda._C's *_cuda entry points: checked like the others where compiled with CUDA, a
    # RuntimeError naming the missing CUDA support otherwise.
    return (ValueError, RuntimeError) if kind == "cuda" else ValueError


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("fam_name", list(FAMILIES))
def test_raw_entry_point_runs_the_valid_call(fam_name, kind):
    """The unchanged arguments are accepted (so each refusal below is the change's doing)."""
    if kind == "cuda" and not _native.has_cuda():
        pytest.skip("navcuda._C's CUDA entry points need a device for a valid call")
    fam = FAMILIES[fam_name]()
    if kind == "cuda":
        fam.args = [(k, v.cuda() if isinstance(v, torch.Tensor) else v) for k, v in fam.args]
    fn, adapt = _entry(fam, kind)
    _call(fn, adapt(fam.args))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("fam_name", "case", "name"), _cases(), ids=lambda v: str(v))
def test_raw_entry_point_refuses_a_wrong_size(fam_name, case, name, kind):
    fam = FAMILIES[fam_name]()
    fn, adapt = _entry(fam, kind)
    args = adapt(_changed(fam, case, name))
    with pytest.raises(_expect_refusal(kind)) as info:
        _call(fn, args)
    if info.type is ValueError:
        msg = str(info.value)
        assert msg.startswith(fam.name), msg  # names the entry point ...
        if case.endswith("negative"):
            assert "must be >= 0" in msg, msg
        elif dict(fam.args)[name].numel() > 1:  # (one short of one element: absent, refused too)
            assert f" {name} must hold" in msg, msg  # ... and the buffer


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("fam_name", list(FAMILIES))
def test_raw_entry_point_refuses_a_bad_dtype_code_and_a_bare_address(fam_name, kind):
    fam = FAMILIES[fam_name]()
    fn, adapt = _entry(fam, kind)
    with pytest.raises(_expect_refusal(kind), match="dtype code 7|without CUDA"):
        _call(fn, adapt(_replace(fam.args, "dtype", 7)))
    # a float64 buffer where float32 is declared: its byte count does not match
    first = fam.args[0][0]
    args = _replace(fam.args, first, dict(fam.args)[first].double())
    with pytest.raises(_expect_refusal(kind), match=f"{first} must hold|without CUDA"):
        _call(fn, adapt(args))
    # an address without its size cannot be checked: refused by the binding
    bare = [(k, v.data_ptr() if k == first else _native.buffer(v) if isinstance(v, torch.Tensor)
             else v) for k, v in adapt(fam.args)]  # fmt: skip
    # (navcuda._C built without CUDA takes anything in its *_cuda stubs and raises RuntimeError)
    with pytest.raises((TypeError, RuntimeError) if kind == "cuda" else TypeError):
        fn(*(v for _, v in bare))


def test_every_raw_entry_point_is_covered():
    """New entry points must join this file: every function of navcuda._C and navcuda._C_emu is a
    family's entry point above or one of the helpers tested below."""
    helpers = {"has_cuda", "build_info", "dtype_codes", "cpu_isa", "cpu_isas", "set_cpu_isa",
               "svd_shift_grad_workspace", "modconv_demod_dt_parts", "index32_max",
               "set_index32_max", "launch_count", "checker_probe"}  # fmt: skip
    covered = {f"{f}_{k}" for f in (fam().name for fam in FAMILIES.values())
               for k in ("cpu", "cuda", "emu")} | helpers  # fmt: skip
    modules = [_native.native_module()]
    try:
        modules.append(importlib.import_module("navcuda._C_emu"))
    except ImportError:
        pass
    for mod in modules:
        public = {n for n in dir(mod) if not n.startswith("_") and callable(getattr(mod, n))}
        assert public <= covered, f"{mod.__name__}: untested entry points {public - covered}"


def test_raw_helpers_refuse_bad_values():
    mod = _native.native_module()
    with pytest.raises(ValueError, match="svd_shift_grad_workspace: batch must be >= 0"):
        mod.svd_shift_grad_workspace(-1, 4, 4)
    with pytest.raises(ValueError, match="svd_shift_grad_workspace: the scratch is too large"):
        mod.svd_shift_grad_workspace(2**40, 64, 2**40)
    with pytest.raises(ValueError, match="modconv_demod_dt_parts: in must be >= 0"):
        mod.modconv_demod_dt_parts(-5)
    with pytest.raises(ValueError, match="set_cpu_isa"):
        mod.set_cpu_isa("avx9000")
    assert mod.svd_shift_grad_workspace(2, 130, 70) == 2 * 3 * 70
    assert isinstance(mod.build_info(), dict) and isinstance(mod.has_cuda(), bool)
    assert set(mod.dtype_codes()) == {"float32", "float64", "float16"}
    assert mod.cpu_isa() in mod.cpu_isas()


def test_emulator_helpers_refuse_bad_values(emu):
    before = emu.index32_max()
    with pytest.raises(ValueError, match="set_index32_max: limit must be <= 2\\^30"):
        emu.set_index32_max(2**40)  # 32-bit indices on tensors past 2^31 elements
    assert emu.index32_max() == before
    with pytest.raises(ValueError, match="too_many_threads needs a block > 1024"):
        emu.checker_probe("too_many_threads", block=100)  # would read past its input
    with pytest.raises(ValueError, match="grid must be"):
        emu.checker_probe("block_sum", grid=0, block=8)
    with pytest.raises(ValueError, match="fir2d_emu: grid must be in"):
        emu.fir2d_emu(*map(_native.buffer, (_randn(1, 2, 2), _randn(1, 1), torch.empty(1, 2, 2))),
                      1, 2, 2, 1, 1, 0, 0, 2, 2, 0, 0, 32)  # fmt: skip
    assert isinstance(emu.launch_count(), int)


def test_raw_fir2d_refuses_filters_and_pads_out_of_range():
    mod = _native.native_module()
    x, out = _randn(1, 4, 4), torch.empty(1, 4, 4)
    for kh, kw in [(0, 3), (17, 1), (-1, 2)]:
        w = _randn(max(kh, 1), max(kw, 1))
        with pytest.raises(ValueError, match="fir2d_cpu: filter must be between 1x1 and 16x16"):
            mod.fir2d_cpu(*map(_native.buffer, (x, w, out)), 1, 4, 4, kh, kw, 0, 0, 4, 4, 0)
    w = _randn(1, 1)
    with pytest.raises(ValueError, match="fir2d_cpu: pads must lie within"):
        mod.fir2d_cpu(*map(_native.buffer, (x, w, out)), 1, 4, 4, 1, 1, -(2**62), 0, 4, 4, 0)


def test_raw_counts_that_overflow_are_refused():
    """Sizes whose product overflows int64 never reach a kernel (their buffers could not match)."""
    mod = _native.native_module()
    big = 2**40
    with pytest.raises(ValueError, match="bias_act_cpu: x is too large"):
        mod.bias_act_cpu(None, None, None, big, big, big, 0, 0, 0.2, 1.0, -1.0)
    # a zero size makes the count 0, but the other factors must still fit
    with pytest.raises(ValueError, match="too large"):
        mod.bias_act_cpu(None, None, None, big, 0, 2**30, 0, 0, 0.2, 1.0, -1.0)
    mod.bias_act_cpu(None, None, None, 2**20, 0, 2**20, 0, 0, 0.2, 1.0, -1.0)  # empty: no work


# ------------------------------------------------------------------------- index values


def _demod_call(index):
    fam = _modconv_demod()
    return _replace(fam.args, "index", index)


def test_cpu_demod_refuses_index_values_out_of_range():
    mod = _native.native_module()
    for bad in ([1, 2, 0], [0, -1, 1]):
        args = _demod_call(torch.tensor(bad))
        with pytest.raises(ValueError, match=r"demod_cpu: index values must lie in \[0, 2\)"):
            _call(mod.modconv_demod_cpu, args)
    fam = _modconv_demod_grad()
    args = _replace(fam.args, "index", torch.tensor([0, 5, 1]))
    with pytest.raises(ValueError, match=r"modconv_demod_grad_cpu: index values must lie in"):
        _call(mod.modconv_demod_grad_cpu, args)


@pytest.mark.parametrize("kind", ["emu_cuda", "emu"])
def test_cuda_demod_kernels_guard_index_values_out_of_range(kind):
    """On CUDA the index values are in device memory: the kernels give NaN for a sample whose
    index is out of range instead of reading past q1/q2 (the other samples are unaffected)."""
    fam = _modconv_demod()
    fn, adapt = _entry(fam, kind)
    args = _demod_call(torch.tensor([1, 7, 0]))
    _call(fn, adapt(args))
    dcoef = dict(args)["dcoef"]
    assert dcoef[1].isnan().all() and torch.isfinite(dcoef[[0, 2]]).all()
    grad = _modconv_demod_grad()
    fn, adapt = _entry(grad, kind)
    gargs = _replace(grad.args, "index", torch.tensor([1, -3, 0]))
    _call(fn, adapt(gargs))  # (dt: one part of 5 channels, per 128 or per the emulator's 8)
    ds, dt = dict(gargs)["ds"], dict(gargs)["dt"]
    assert ds[1].isnan().all() and torch.isfinite(ds[[0, 2]]).all()
    assert dt[1].isnan().all() and torch.isfinite(dt[[0, 2]]).all()


def test_demod_without_index_needs_a_row_per_sample():
    mod = _native.native_module()
    args = _replace(_demod_call(None), "n_dir", 2)  # batch 3 > n_dir 2, index absent
    with pytest.raises(ValueError, match="without index, q1/q2 need a row per sample"):
        _call(mod.modconv_demod_cpu, args)


# ------------------------------------------------------------------------- torch.ops.navcuda


def _op_calls():
    """(op name, a valid call's arguments) for every registered navcuda op."""
    b, c = 2, 3
    x = _randn(b, c, 4, 5)
    s, q0 = _randn(b, 6), _randn(1, c, 6).abs()
    q1, q2, t = _randn(2, c, 6), _randn(2, c, 6).abs(), _randn(b)
    index = torch.tensor([1, 0])
    mask = torch.zeros(b * c, (20 * 2 + 7) // 8, dtype=torch.uint8)
    return {
        "bias_act": (x, _randn(c), 1, "lrelu", 0.2, 1.4, -1.0),
        "bias_act_grad": (x, _randn(b, c, 4, 5, seed=1), "lrelu", 0.2, 1.4, -1.0),
        "svd_shift": (_randn(5, 3, 2, 2), _randn(12, 4), _randn(4, 5), _randn(b), _randn(b, 4)),
        "svd_shift_grad": (_randn(b, 5, 3, 2, 2), _randn(12, 4), _randn(4, 5), [5, 3, 2, 2]),
        "modconv_demod": (s, q0, q1, q2, t, index, 0.5),
        "modconv_demod_grad": (_randn(b, c), _randn(b, c).abs(), s, q0, q1, q2, t, index, 0.5,
                               [True] * 5),
        "modconv_epilogue": (x, x, t, _randn(b, c), _randn(1, 1, 4, 5), _randn(1), _randn(c),
                             "lrelu", 0.2, 1.4, 2.0, True),
        "modconv_epilogue_grad": (x, mask, x, x, t, _randn(b, c), _randn(1, 1, 4, 5), _randn(1),
                                  "lrelu", 0.2, 1.4, 2.0, [True] * 5),
        "fir2d": (x, _randn(3, 3), 1, 1, 4, 5),
    }  # fmt: skip


def test_every_registered_op_is_covered():
    _ops()
    names = torch._C._dispatch_get_all_op_names()
    registered = {n.split("::")[1] for n in names if n.startswith("navcuda::")}
    assert registered == set(_op_calls())


# (op, argument position, replacement, exception, message): one wrong argument per case.
def _bad_op_args():
    b, c = 2, 3
    return [
        ("bias_act", 1, _randn(1), ValueError, r"b must hold \[channels\] = 3"),
        ("bias_act", 1, _randn(c, dtype=torch.float64), TypeError, "b must have dtype"),
        ("bias_act", 0, _randn(b, c, dtype=torch.float16), TypeError, "no native kernel"),
        ("bias_act", 2, 7, ValueError, "dim=7 is not a dimension"),
        ("bias_act", 3, "tanh", ValueError, "act must be one of"),
        ("bias_act_grad", 1, _randn(b, c), ValueError, "does not match y"),
        ("svd_shift", 1, _randn(1, 100000), ValueError, "u must hold"),
        ("svd_shift", 2, _randn(3, 5), ValueError, "vh must hold"),
        ("svd_shift", 4, _randn(b, 7), ValueError, "s must hold"),
        ("svd_shift", 0, _randn(5, 3, 4), ValueError, "w must have 4 dimension"),
        ("svd_shift_grad", 0, _randn(b, 5, 3, 2, 3), ValueError, "g must hold"),
        ("svd_shift_grad", 3, [5, 3, 2], ValueError, "w_shape must have 4 sizes"),
        ("svd_shift_grad", 1, _randn(12, 4).int(), TypeError, "u must have dtype"),
        ("modconv_demod", 1, _randn(1, c, 5), ValueError, "q0 must hold"),
        ("modconv_demod", 2, _randn(2, c + 1, 6), ValueError, "q1 must hold"),
        ("modconv_demod", 4, _randn(b + 1), ValueError, "t must hold"),
        ("modconv_demod", 5, torch.tensor([1, 0], dtype=torch.int32), TypeError, "index must"),
        ("modconv_demod", 5, torch.tensor([0, 2]), ValueError, "index values must lie in"),
        ("modconv_demod", 5, torch.tensor([1, 0, 1]), ValueError, "index must hold"),
        ("modconv_demod_grad", 0, _randn(b, c + 1), ValueError, "g must hold"),
        ("modconv_demod_grad", 9, [True] * 4, ValueError, "needs must have 5 entries"),
        ("modconv_demod_grad", 7, torch.tensor([3, 0]), ValueError, "index values must lie in"),
        ("modconv_epilogue", 2, _randn(b + 1), ValueError, "t must hold"),
        ("modconv_epilogue", 3, _randn(b, c + 1), ValueError, "dcoef must hold"),
        ("modconv_epilogue", 6, _randn(c + 2), ValueError, "bias must hold"),
        ("modconv_epilogue", 4, _randn(1, 1, 5, 4 + 1), ValueError, "noise must hold"),
        ("modconv_epilogue", 1, _randn(b, c, 4, 4), ValueError, "y1 must hold"),
        ("modconv_epilogue", 7, "relu", ValueError, "act must be one of"),
        ("modconv_epilogue_grad", 1, torch.zeros(b * c, 1, dtype=torch.uint8), ValueError,
         "mask must hold"),
        ("modconv_epilogue_grad", 1, torch.zeros(b * c, 5), TypeError, "mask must have dtype"),
        ("modconv_epilogue_grad", 1, None, ValueError, "mask must hold"),
        ("modconv_epilogue_grad", 5, _randn(b, 1), ValueError, "dcoef must hold"),
        ("fir2d", 1, _randn(17, 3), ValueError, "filter must be between"),
        ("fir2d", 1, _randn(3, 3, 1), ValueError, "w must have 2 dimension"),
        ("fir2d", 2, -(2**61), ValueError, "pads must lie within"),
        ("fir2d", 0, _randn(b, c, 4, 5).to(torch.float64), TypeError, "w must have dtype"),
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("op", "pos", "value", "exc", "match"),
    _bad_op_args(),
    ids=lambda v: v if isinstance(v, str) and v.isidentifier() else "",
)
def test_op_called_directly_refuses_a_bad_argument(op, pos, value, exc, match, native_path):
    if match.startswith("index values") and native_path != "cpu":
        pytest.skip("CUDA kernels guard index values: test_op_on_cuda_path_guards_index_values")
    args = list(_op_calls()[op])
    args[pos] = value
    with pytest.raises(exc, match=match):
        getattr(_ops(), op)(*args)


@pytest.mark.parametrize("op", list(_op_calls()))
def test_op_called_directly_runs_the_valid_call(op, native_path):
    out = getattr(_ops(), op)(*_op_calls()[op])
    for v in out if isinstance(out, tuple) else (out,):
        assert isinstance(v, torch.Tensor) and not (v.is_floating_point() and v.isnan().any())


def test_op_tensors_must_share_the_first_ones_device():
    """(A tensor on another device than the op's first one would hand C++ an address it cannot
    read; the dispatcher sends mixed CPU / meta calls to the fake kernels, so the check itself is
    tested here.)"""
    x, T = _randn(2, 3), _native.OpTensor
    with pytest.raises(ValueError, match="op: b is on meta but x is on cpu"):
        _native.check_op_tensors("op", T("x", x), T("b", _randn(3).to("meta")))
    with pytest.raises(ValueError, match="op: no native kernels for device type 'meta'"):
        _native.check_op_tensors("op", T("x", x.to("meta")))
    with pytest.raises(TypeError, match="op: b must be a torch.Tensor, got list"):
        _native.check_op_tensors("op", T("x", x), T("b", [1.0]))


def test_op_on_cuda_path_guards_index_values(emulated_cuda):
    """The emulated CUDA path: an index out of range gives NaN for its sample, never a read past
    q1/q2 (the CPU path raises, test_op_called_directly_refuses_a_bad_argument)."""
    args = list(_op_calls()["modconv_demod"])
    args[5] = torch.tensor([0, 9])
    dcoef = _ops().modconv_demod(*args)
    assert dcoef[1].isnan().all() and torch.isfinite(dcoef[0]).all()
