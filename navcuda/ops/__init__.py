"""Hot math of navcuda: each op has a pure-torch reference ``ref_*`` and a dispatcher that runs the
native kernels of ``navcuda._C`` when it can (see :mod:`navcuda.ops._native`)."""

from navcuda.ops import _native
from navcuda.ops._native import NativeFallbackWarning, has_cuda
from navcuda.ops.bias_act import bias_act, ref_bias_act
from navcuda.ops.modulated_conv2d import (
    modulated_conv2d,
    ref_modulated_conv2d,
    ref_modulated_weight,
)
from navcuda.ops.selftest import run_automatic
from navcuda.ops.shifted_modconv import (
    PerSampleShift,
    SharedShift,
    SplitShift,
    SVDShift,
    ref_shifted_modconv,
    shifted_modconv,
)
from navcuda.ops.svd_shift import ref_svd_shift, svd_shift
from navcuda.ops.upfirdn2d import make_filter, ref_upfirdn2d, upfirdn2d

# The dispatcher's automatic first-use self-test, wired here: _native cannot import the self-test
# (which imports _native and every op it checks).
_native.register_auto_selftest(run_automatic)

__all__ = [
    "NativeFallbackWarning",
    "PerSampleShift",
    "SVDShift",
    "SharedShift",
    "SplitShift",
    "bias_act",
    "has_cuda",
    "make_filter",
    "modulated_conv2d",
    "ref_bias_act",
    "ref_modulated_conv2d",
    "ref_modulated_weight",
    "ref_shifted_modconv",
    "ref_svd_shift",
    "ref_upfirdn2d",
    "shifted_modconv",
    "svd_shift",
    "upfirdn2d",
]
