"""The one place where ops meet the compiled module ``navcuda._C``.

Every op in :mod:`navcuda.ops` uses this module to

- find the native module (imported lazily, once; nothing is ever compiled at import time; if the
  import fails the error text is kept and reported by :func:`import_error` and ``build_info()``),
- decide between its pure-torch reference and the native kernels (:func:`resolve_impl`),
- validate tensors before their memory crosses into C++ (:func:`check_tensor`,
  :func:`check_op_tensors`, :func:`buffer`; the C++ entry points check every buffer's size
  against the sizes they are given, Python what C++ cannot see: devices, dtypes, layouts),
- call a kernel on the right device and CUDA stream (:func:`run_kernel`), or, for tests on
  machines without a GPU, through the CUDA launchers compiled against the CPU emulator
  (:func:`emulated_cuda`).

Choosing an implementation
--------------------------
``impl="auto"`` (the default of every op) uses the native kernels when ``_C`` is importable and
supports the tensor's device and dtype, and otherwise falls back to the reference with a one-time
:class:`NativeFallbackWarning` per (op, reason): falling back is explicit, never silent.
Where a native kernel was measured slower than torch's own kernels on a device type, auto runs
the reference there without a warning (:data:`AUTO_REFERENCE`: on CUDA, ``svd_shift``,
``upfirdn2d`` and ``bias_act``; see the table's comment). ``impl="ref"`` always uses the
reference; ``impl="native"`` raises :class:`RuntimeError` when the native kernels cannot run.
The environment variable ``NAVCUDA_IMPL`` (``auto``, ``ref`` or ``native``) overrides
``impl="auto"`` (an explicit ``impl="ref"``/``"native"`` argument wins).

A self-test can disable the native path of an op on a device type with :func:`mark_failed`; auto
then falls back (with the warning) and ``impl="native"`` raises. The first ``impl="auto"`` call
on a CUDA tensor runs :func:`navcuda.selftest` on that device once, automatically (the CUDA
kernels are checked against their references before their results are used: milliseconds);
``$NAVCUDA_SELFTEST`` picks the device types that get this (``cuda``, the default; ``cpu,cuda``;
``never``). It is skipped, and left for a later call, while torch is compiling or a CUDA graph
is being captured: run ``navcuda.selftest()`` yourself before those.

CPU instruction set
-------------------
``_C`` is built with portable flags and carries each CPU kernel twice, generic (SSE2) and for
AVX2 + FMA; the AVX2 ones run where the CPU has them (:func:`cpu_isa`). :func:`set_cpu_isa` (or
the environment variable ``NAVCUDA_CPU_ISA=generic``, read when ``_C`` is first imported) picks
the generic ones, e.g. to compare or to rule them out when chasing a numerical difference.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from types import ModuleType
from typing import Literal, NamedTuple

import torch

__all__ = [
    "AUTO_REFERENCE",
    "ENV_CPU_ISA",
    "ENV_IMPL",
    "ENV_SELFTEST",
    "NATIVE_DTYPES",
    "NativeFallbackWarning",
    "OpTensor",
    "auto_prefers_reference",
    "buffer",
    "check_op_tensors",
    "check_tensor",
    "clamp_value",
    "clear_failed",
    "cpu_isa",
    "cpu_isas",
    "data_ptr",
    "dtype_code",
    "emulated_cuda",
    "failed_ops",
    "has_cuda",
    "import_error",
    "mark_failed",
    "native_module",
    "native_unavailable_reason",
    "register_auto_selftest",
    "requested_impl",
    "resolve_impl",
    "run_kernel",
    "set_cpu_isa",
    "stream_handle",
]

ENV_IMPL = "NAVCUDA_IMPL"
_IMPLS = ("auto", "ref", "native")
ENV_SELFTEST = "NAVCUDA_SELFTEST"
ENV_CPU_ISA = "NAVCUDA_CPU_ISA"

# dtypes the native kernels of most ops support; an op may pass its own set to resolve_impl.
NATIVE_DTYPES: frozenset[torch.dtype] = frozenset({torch.float32, torch.float64})

# Device types _C has kernels for.
_NATIVE_DEVICES = ("cpu", "cuda")

# (op, device type) pairs where impl="auto" runs the reference although the native kernel could
# run: torch's kernels were faster there (benchmarks/RESULTS.md, "GPU: NVIDIA H200", 2026-11-28,
# forward + backward against the reference in the same run): svd_shift 0.28x at the official
# 512-channel layer (cuBLAS's products; 1.26x at 64 channels, where both are launch-bound), the
# blur 0.47x / 0.57x and the upsampling 0.21x at [8, 3, 512, 512] (cuDNN), bias_act 0.80x (the
# native op's per-call cost at these sizes). impl="native" still runs them (and the CUDA tests
# do); the shifted convolution's epilogue and demodulation stay native on CUDA.
AUTO_REFERENCE: frozenset[tuple[str, str]] = frozenset(
    {("svd_shift", "cuda"), ("upfirdn2d", "cuda"), ("bias_act", "cuda")}
)


class NativeFallbackWarning(UserWarning):
    """An op ran its pure-torch reference because the native kernels could not be used."""


# ------------------------------------------------------------------------- the compiled module

_module: ModuleType | None = None
_import_error: str | None = None
_import_tried = False


def native_module() -> ModuleType | None:
    """``navcuda._C``, or ``None`` if it cannot be imported (see :func:`import_error`)."""
    global _module, _import_error, _import_tried
    if not _import_tried:
        _import_tried = True
        try:
            _module = importlib.import_module("navcuda._C")
        except ImportError as exc:  # not built, built for another Python, missing libgomp, ...
            _import_error = f"{type(exc).__name__}: {exc}"
        else:
            _apply_env_cpu_isa(_module)
    return _module


def _apply_env_cpu_isa(mod: ModuleType) -> None:
    """Apply ``$NAVCUDA_CPU_ISA`` (if set) to the freshly imported ``_C``; warn and keep the
    automatic choice when it names an instruction set this build or CPU cannot run."""
    name = os.environ.get(ENV_CPU_ISA, "").strip().lower()
    if not name:
        return
    try:
        mod.set_cpu_isa(name)
    except ValueError as exc:
        warnings.warn(
            f"{ENV_CPU_ISA}={name!r} ignored ({exc}); running the {mod.cpu_isa()} CPU kernels. "
            f"Valid here: 'auto', {', '.join(repr(i) for i in mod.cpu_isas())}.",
            stacklevel=3,
        )


def cpu_isas() -> list[str]:
    """Instruction sets of the CPU kernels this build has and this CPU can run, e.g.
    ``["generic", "avx2"]`` (``[]`` when ``_C`` did not import)."""
    mod = native_module()
    return list(mod.cpu_isas()) if mod is not None else []


def cpu_isa() -> str | None:
    """The instruction set whose CPU kernels run now (``"avx2"`` or ``"generic"``), or ``None``
    when ``_C`` did not import."""
    mod = native_module()
    return mod.cpu_isa() if mod is not None else None


def set_cpu_isa(name: str) -> None:
    """Run the CPU kernels of ``name`` from now on, process-wide: ``"generic"``, ``"avx2"`` (if in
    :func:`cpu_isas`) or ``"auto"`` (the best this CPU supports). Raises :class:`ValueError` for
    another name or an instruction set this build or CPU lacks, :class:`RuntimeError` without
    ``_C``."""
    mod = native_module()
    if mod is None:
        raise RuntimeError(f"navcuda._C is not available: {_import_error}")
    if not isinstance(name, str):
        raise TypeError(f"set_cpu_isa: name must be a str, got {type(name).__name__}")
    mod.set_cpu_isa(name)


def import_error() -> str | None:
    """Why ``navcuda._C`` could not be imported, or ``None`` if it imported (or was not tried)."""
    native_module()
    return _import_error


def has_cuda() -> bool:
    """True only if ``_C`` was compiled with CUDA and sees at least one CUDA device now."""
    mod = native_module()
    return bool(mod is not None and mod.has_cuda())


_dtype_codes: dict[torch.dtype, int] | None = None


def dtype_code(dtype: torch.dtype) -> int:
    """The integer code ``_C`` uses for ``dtype`` (read from ``_C.dtype_codes()``)."""
    global _dtype_codes
    if _dtype_codes is None:
        mod = native_module()
        if mod is None:
            raise RuntimeError(f"navcuda._C is not available: {_import_error}")
        _dtype_codes = {getattr(torch, name): code for name, code in mod.dtype_codes().items()}
    try:
        return _dtype_codes[dtype]
    except KeyError:
        raise TypeError(f"navcuda._C has no dtype code for {dtype}") from None


# ------------------------------------------------------------------------- failed-op registry

_failed: dict[tuple[str, str], str] = {}


def mark_failed(op: str, device_type: str, reason: str) -> None:
    """Disable the native path of ``op`` on ``device_type`` ("cpu"/"cuda"), e.g. after a failed
    self-test. ``impl="auto"`` then falls back to the reference with a warning naming ``reason``."""
    _failed[(op, device_type)] = reason


def clear_failed(op: str | None = None, device_type: str | None = None) -> None:
    """Undo :func:`mark_failed` for matching entries (``None`` matches everything)."""
    for key in list(_failed):
        if (op is None or key[0] == op) and (device_type is None or key[1] == device_type):
            del _failed[key]


def failed_ops() -> dict[tuple[str, str], str]:
    """A copy of the registry: ``{(op, device_type): reason}``."""
    return dict(_failed)


# ------------------------------------------------------------------------- choosing an impl

_warned: set[tuple[str, str]] = set()


def _reset_fallback_warnings() -> None:
    """Forget which fallback warnings were shown (tests use this)."""
    _warned.clear()


def native_unavailable_reason(
    op: str, tensor: torch.Tensor, dtypes: Iterable[torch.dtype] = NATIVE_DTYPES
) -> str | None:
    """Why the native kernel of ``op`` cannot run on ``tensor`` (None if it can)."""
    device_type = tensor.device.type
    if native_module() is None:
        return f"navcuda._C could not be imported ({_import_error})"
    if device_type not in _NATIVE_DEVICES:
        return f"no native kernels for device type {device_type!r}"
    if device_type == "cuda" and not has_cuda():
        info = native_module().build_info()
        if not info["cuda_compiled"]:
            return "navcuda._C was built without CUDA (nvcc was not found at build time)"
        why = info.get("cuda_runtime_error")
        detail = (
            f" ({why}; the driver must support CUDA {info.get('cuda_version')}, the runtime "
            "navcuda._C was built with)"
            if why
            else ""
        )
        return f"navcuda._C was built with CUDA but its CUDA runtime sees no device{detail}"
    if tensor.dtype not in frozenset(dtypes):
        names = ", ".join(sorted(str(d).removeprefix("torch.") for d in dtypes))
        return f"no native kernel for dtype {tensor.dtype} (native supports {names})"
    if (op, device_type) in _failed:
        return f"native {op} was marked failed on {device_type}: {_failed[(op, device_type)]}"
    return None


def is_channels_last(tensor: torch.Tensor) -> bool:
    """True for a 4-D tensor laid out channels-last (NHWC in memory) and not also NCHW.

    The native ``bias_act`` and ``fir2d`` kernels read NCHW: copying a channels-last activation
    to NCHW and back costs more than they save, while torch's own kernels (oneDNN, cuDNN) are
    fastest on channels-last convolutions and keep the layout through elementwise ops. So
    ``impl="auto"`` runs their reference for such tensors, without a warning: a choice by
    layout, not a fallback. (The modconv epilogue reads both layouts and resolves with
    ``by_layout=False``.)"""
    return (
        tensor.ndim == 4
        and not tensor.is_contiguous()
        and tensor.is_contiguous(memory_format=torch.channels_last)
    )


def auto_prefers_reference(op: str, device_type: str) -> bool:
    """True where ``impl="auto"`` runs ``op``'s reference on ``device_type`` by choice, the
    reference having been measured faster there (:data:`AUTO_REFERENCE`)."""
    return (op, device_type) in AUTO_REFERENCE


def requested_impl(op: str, impl: str) -> str:
    """``impl`` validated (``"auto"``, ``"ref"`` or ``"native"``), with ``$NAVCUDA_IMPL`` applied
    to ``"auto"``: what the caller asked for, before asking whether the native kernel can run
    (:func:`resolve_impl`; a pure-torch fast path that needs no ``_C`` stops here)."""
    if impl not in _IMPLS:
        raise ValueError(f"{op}: impl must be one of {_IMPLS}, got {impl!r}")
    if impl == "auto":
        env = os.environ.get(ENV_IMPL, "auto").strip().lower() or "auto"
        if env not in _IMPLS:
            raise ValueError(
                f"{op}: environment variable {ENV_IMPL} must be one of {_IMPLS}, got {env!r}; "
                f"unset it or fix its value"
            )
        impl = env
    return impl


def resolve_impl(
    op: str,
    impl: str,
    tensor: torch.Tensor,
    dtypes: Iterable[torch.dtype] = NATIVE_DTYPES,
    *,
    by_layout: bool = True,
) -> Literal["ref", "native"]:
    """Pick ``"ref"`` or ``"native"`` for running ``op`` on ``tensor``.

    ``impl`` is ``"auto"``, ``"ref"`` or ``"native"``; ``$NAVCUDA_IMPL`` overrides ``"auto"``.
    Auto picks ``"ref"`` for a channels-last ``tensor`` (:func:`is_channels_last`; not with
    ``by_layout=False``, for a composite op whose own code works in any layout and that lets its
    image kernels decide) and falls back to ``"ref"`` with a one-time
    :class:`NativeFallbackWarning` per (op, reason); ``"native"`` raises :class:`RuntimeError`
    when the native kernel cannot run.
    """
    impl = requested_impl(op, impl)
    if impl == "ref" or (impl == "auto" and by_layout and is_channels_last(tensor)):
        return "ref"
    if impl == "auto" and auto_prefers_reference(op, tensor.device.type):
        return "ref"
    if impl == "auto":
        _auto_selftest(tensor)
    reason = native_unavailable_reason(op, tensor, dtypes)
    if reason is None:
        return "native"
    if impl == "native":
        raise RuntimeError(
            f"{op}: impl='native' was requested but {reason}; "
            f"use impl='ref' (or impl='auto' to fall back automatically)"
        )
    if (op, reason) not in _warned:
        _warned.add((op, reason))
        warnings.warn(
            f"{op}: using the pure-torch reference because {reason}. "
            f"Set {ENV_IMPL}=ref or pass impl='ref' to silence this warning.",
            NativeFallbackWarning,
            stacklevel=3,
        )
    return "ref"


_selftested: set[str] = set()  # device types the automatic self-test has run on
_selftest_running = False
# The self-test the automatic run calls (:func:`register_auto_selftest`); None until navcuda.ops
# has finished importing.
_auto_selftest_fn: Callable[[torch.device], list] | None = None


def register_auto_selftest(fn: Callable[[torch.device], list]) -> None:
    """Set the self-test that the first native ``impl="auto"`` call on a device type runs:
    ``fn(device)`` runs a marking self-test there and returns its results (each with ``op``,
    ``device``, ``status`` and ``detail``). :mod:`navcuda.ops` registers
    :func:`navcuda.ops.selftest.run_automatic` on import: this module cannot import the
    self-test, which imports it and every op it checks."""
    global _auto_selftest_fn
    _auto_selftest_fn = fn


def _auto_selftest_types() -> frozenset[str]:
    raw = os.environ.get(ENV_SELFTEST, "cuda").strip().lower() or "cuda"
    if raw in ("never", "none", "off", "0"):
        return frozenset()
    kinds = frozenset(part.strip() for part in raw.split(","))
    if not kinds <= set(_NATIVE_DEVICES):
        raise ValueError(
            f"environment variable {ENV_SELFTEST} must be 'never' or a comma-separated list of "
            f"{', '.join(_NATIVE_DEVICES)}; got {raw!r}"
        )
    return kinds


def _auto_selftest(tensor: torch.Tensor) -> None:
    """Run the self-test once per device type in :func:`_auto_selftest_types` before the first
    native ``impl="auto"`` call there (failures mark the ops failed, so auto falls back)."""
    global _selftest_running
    kind = tensor.device.type
    if _selftest_running or kind in _selftested or kind not in _auto_selftest_types():
        return
    if native_module() is None or (kind == "cuda" and not has_cuda()):
        return  # nothing native to check; resolve_impl reports why
    capturing = kind == "cuda" and torch.cuda.is_current_stream_capturing()
    if torch.compiler.is_compiling() or capturing:
        return  # no real computation now; a later eager call runs it
    run = _auto_selftest_fn
    if run is None:
        return  # navcuda.ops is still importing (it registers the self-test); a later call runs it
    _selftested.add(kind)
    _selftest_running = True
    try:
        with torch.inference_mode(False), torch.enable_grad():
            results = run(tensor.device)
    finally:
        _selftest_running = False
    for r in results:
        if r.status == "fail":
            warnings.warn(
                f"navcuda self-test on {r.device}: native {r.op} disagrees with its reference "
                f"({r.detail}); it falls back to the reference on {kind}",
                NativeFallbackWarning,
                stacklevel=4,
            )


# ------------------------------------------------------------------------- validation


def index_range(index: torch.Tensor) -> tuple[int, int]:
    """``(min, max)`` of a non-empty integer tensor in one device-to-host transfer (``int()`` of
    each would synchronise a GPU twice); for range checks of direction indices."""
    lo, hi = torch.stack(torch.aminmax(index)).tolist()
    return lo, hi


def clamp_value(op: str, clamp: float | None) -> float:
    """An op's ``clamp`` argument as the native kernels take it: ``-1.0`` for None (no clamp),
    else ``float(clamp)``, which must be ``>= 0`` (ValueError otherwise, NaN included)."""
    if clamp is None:
        return -1.0
    value = float(clamp)
    if not value >= 0:
        raise ValueError(f"{op}: clamp must be None or >= 0, got {clamp!r}")
    return value


def check_tensor(
    op: str,
    name: str,
    t: object,
    *,
    dtypes: Iterable[torch.dtype] | None = None,
    ndim: int | None = None,
    min_ndim: int | None = None,
    shape: Sequence[int | None] | None = None,
    like: torch.Tensor | None = None,
    like_name: str = "x",
) -> torch.Tensor:
    """Validate one tensor argument of ``op`` and return it.

    ``dtypes``: allowed dtypes (TypeError otherwise); ``ndim``/``min_ndim``: rank; ``shape``: exact
    sizes, ``None`` entries match anything; ``like``: must have the same device and dtype as this
    tensor (named ``like_name`` in messages). Errors say what was expected, found, and what to do.
    """
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{op}: {name} must be a torch.Tensor, got {type(t).__name__}")
    if dtypes is not None:
        dtypes = tuple(dtypes)
        if t.dtype not in dtypes:
            names = [str(d).removeprefix("torch.") for d in dtypes]
            names = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]
            raise TypeError(
                f"{op}: {name} must have dtype {names}, got {t.dtype}; convert it first "
                f"(e.g. {name}.to({_suggested_dtype(dtypes)}))"
            )
    if ndim is not None and t.ndim != ndim:
        raise ValueError(f"{op}: {name} must have {ndim} dimension(s), got shape {tuple(t.shape)}")
    if min_ndim is not None and t.ndim < min_ndim:
        raise ValueError(
            f"{op}: {name} must have at least {min_ndim} dimension(s), got shape {tuple(t.shape)}"
        )
    if shape is not None:
        ok = len(shape) == t.ndim and all(
            s is None or s == int(n) for s, n in zip(shape, t.shape, strict=False)
        )
        if not ok:
            want = "[" + ", ".join("*" if s is None else str(s) for s in shape) + "]"
            raise ValueError(f"{op}: {name} must have shape {want}, got {list(t.shape)}")
    if like is not None:
        if t.device != like.device:
            raise ValueError(
                f"{op}: {name} is on {t.device} but {like_name} is on {like.device}; "
                f"move both to the same device (e.g. {name}.to({like_name}.device))"
            )
        if t.dtype != like.dtype:
            raise TypeError(
                f"{op}: {name} has dtype {t.dtype} but {like_name} has {like.dtype}; "
                f"cast one of them (e.g. {name}.to({like_name}.dtype))"
            )
    return t


def _suggested_dtype(dtypes: Sequence[torch.dtype]) -> str:
    return str(torch.float32 if torch.float32 in dtypes else dtypes[0])


def data_ptr(t: torch.Tensor | None, layout: torch.memory_format = torch.contiguous_format) -> int:
    """Address of the data of a tensor contiguous in ``layout`` (a kernel that reads
    channels-last says so) as an int for ``_C`` (0 for ``None``)."""
    if t is None:
        return 0
    if not t.is_contiguous(memory_format=layout):
        raise ValueError(
            f"internal error: a tensor not contiguous in {layout} reached the native code"
        )
    return int(t.data_ptr())


def buffer(
    t: torch.Tensor | None, layout: torch.memory_format = torch.contiguous_format
) -> tuple[int, int] | None:
    """A tensor contiguous in ``layout`` as ``_C`` takes a buffer: ``(address, bytes)``, from
    which every entry point checks the buffer's size against its other arguments before touching
    memory; ``None`` for ``None`` (an absent optional buffer)."""
    if t is None:
        return None
    return data_ptr(t, layout), t.numel() * t.element_size()


class OpTensor(NamedTuple):
    """One tensor argument of a native custom op, for :func:`check_op_tensors`: its ``name``, the
    ``tensor`` (``None``: absent, allowed), its number of dimensions (``None``: any) and its
    dtype (``None``: that of the op's first tensor)."""

    name: str
    tensor: torch.Tensor | None
    ndim: int | None = None
    dtype: torch.dtype | None = None


def check_op_tensors(
    op: str, *args: OpTensor, dtypes: Iterable[torch.dtype] = NATIVE_DTYPES
) -> None:
    """What a native custom op (``torch.ops.navcuda.<op>``, callable directly, without its
    wrapper's checks) must know before the C++ side sees its buffers, which carry addresses and
    sizes only: the first tensor is on a device with native kernels and has one of ``dtypes``;
    every other given tensor is a tensor on the same device with its expected dtype and number
    of dimensions. (Sizes, and on the CPU index values, are checked by the C++ entry points.)
    TypeError or ValueError naming ``op`` and the argument otherwise."""
    first = args[0]
    for arg in args:
        t = arg.tensor
        if t is None:
            if arg is first:
                raise TypeError(f"{op}: {arg.name} must be a torch.Tensor, got None")
            continue
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{op}: {arg.name} must be a torch.Tensor, got {type(t).__name__}")
        if arg is first:
            if t.device.type not in _NATIVE_DEVICES:
                raise ValueError(f"{op}: no native kernels for device type {t.device.type!r}")
            if t.dtype not in frozenset(dtypes):
                raise TypeError(f"{op}: no native kernel for dtype {t.dtype}")
        elif t.device != first.tensor.device:
            raise ValueError(
                f"{op}: {arg.name} is on {t.device} but {first.name} is on {first.tensor.device}"
            )
        want = first.tensor.dtype if arg.dtype is None else arg.dtype
        if t.dtype != want:
            raise TypeError(f"{op}: {arg.name} must have dtype {want}, got {t.dtype}")
        if arg.ndim is not None and t.ndim != arg.ndim:
            raise ValueError(
                f"{op}: {arg.name} must have {arg.ndim} dimension(s), got shape {list(t.shape)}"
            )


def stream_handle(device: torch.device) -> int:
    """The current CUDA stream of ``device`` as an int (``cudaStream_t``); 0 on CPU."""
    if device.type != "cuda":
        return 0
    return int(torch.cuda.current_stream(device).cuda_stream)


@contextlib.contextmanager
def _device_guard(device: torch.device) -> Iterator[None]:
    if device.type == "cuda":
        with torch.cuda.device(device):
            yield
    else:
        yield


_emulator: ModuleType | None = None


@contextlib.contextmanager
def emulated_cuda() -> Iterator[ModuleType]:
    """Within the block, native kernels called on CPU tensors run the CUDA path instead of the
    C++ CPU kernels: ``navcuda._C``'s own ``*_cuda`` launchers and kernels, compiled as host C++
    against the CPU emulator (``csrc/cuda_emu.h``) into the test-only module ``navcuda._C_emu``.

    This is how the CUDA code is executed end to end on a machine without a GPU (launch shapes,
    argument checks, kernel sequences, shared-memory race checks), through the same op code as
    on the CPU. For tests: slow, and not thread-safe (it switches a module-level setting).
    Raises :class:`RuntimeError` if ``navcuda._C_emu`` was not built (a development install
    builds it). Yields the emulator module.
    """
    global _emulator
    try:
        emulator = importlib.import_module("navcuda._C_emu")
    except ImportError as exc:
        raise RuntimeError(
            "emulated_cuda() needs the test-only module navcuda._C_emu, built by a development "
            f"install (pip install -e .): {exc}"
        ) from exc
    previous, _emulator = _emulator, emulator
    try:
        yield emulator
    finally:
        _emulator = previous


def run_kernel(name: str, device: torch.device, *args: object) -> None:
    """Call ``_C.<name>_cpu(*args)`` or ``_C.<name>_cuda(*args, stream)`` for ``device``.

    On CUDA the device is made current and the current torch stream is passed, so kernels are
    ordered with torch's own work on that stream. Inside :func:`emulated_cuda`, CPU tensors go
    to the emulated ``<name>_cuda`` instead.
    """
    mod = native_module()
    if mod is None:
        raise RuntimeError(f"{name}: navcuda._C is not available ({_import_error})")
    if device.type == "cpu" and _emulator is not None:
        getattr(_emulator, f"{name}_cuda")(*args, 0)
    elif device.type == "cpu":
        getattr(mod, f"{name}_cpu")(*args)
    elif device.type == "cuda":
        with _device_guard(device):
            getattr(mod, f"{name}_cuda")(*args, stream_handle(device))
    else:
        raise RuntimeError(f"{name}: no native kernels for device type {device.type!r}")
