"""Run-time choice of the CPU kernels' instruction set (generic SSE2 or AVX2 + FMA).

Every native-vs-reference parity test marked ``usefixtures("cpu_isa")`` runs once per instruction
set (the ``cpu_isa`` fixture); these tests check the switch itself.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from navcuda.build_info import build_info
from navcuda.ops import _native

pytestmark = pytest.mark.skipif(
    _native.native_module() is None,
    reason=f"navcuda._C is not importable: {_native.import_error()}",
)


@pytest.fixture
def restore_isa():
    before = _native.cpu_isa()
    yield
    _native.set_cpu_isa(before)


def test_generic_is_always_there_and_auto_picks_the_best(restore_isa):
    isas = _native.cpu_isas()
    assert isas[0] == "generic" and set(isas) <= {"generic", "avx2"}
    _native.set_cpu_isa("auto")
    assert _native.cpu_isa() == isas[-1]
    assert build_info()["cpu_isa"] == isas[-1]


@pytest.mark.parametrize("name", ["generic", "avx2"])
def test_set_cpu_isa_switches_and_reports(name, restore_isa):
    if name not in _native.cpu_isas():
        with pytest.raises(ValueError, match="not available here"):
            _native.set_cpu_isa(name)
        return
    _native.set_cpu_isa(name)
    assert _native.cpu_isa() == name
    assert build_info()["cpu_isa"] == name


@pytest.mark.parametrize("name", ["avx512", "", "AVX2 ", "sse2"])
def test_unknown_names_are_refused(name, restore_isa):
    before = _native.cpu_isa()
    with pytest.raises(ValueError, match="expected 'auto', 'generic' or 'avx2'"):
        _native.set_cpu_isa(name)
    assert _native.cpu_isa() == before


def test_name_must_be_a_string(restore_isa):
    with pytest.raises(TypeError, match="must be a str"):
        _native.set_cpu_isa(2)  # type: ignore[arg-type]


def _isa_in_subprocess(value: str, cwd) -> subprocess.CompletedProcess:
    # Run from an empty folder: from the repository root, `-c` would import the source tree's
    # navcuda (which has no compiled _C in a non-editable install) instead of the installed one.
    env = {**os.environ, _native.ENV_CPU_ISA: value}
    code = (
        "import warnings; warnings.simplefilter('always')\n"
        "from navcuda.ops import _native\n"
        "print(_native.cpu_isa())\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=cwd, capture_output=True, text=True, check=True
    )


def test_environment_variable_picks_the_generic_kernels(tmp_path):
    assert _isa_in_subprocess("generic", tmp_path).stdout.strip() == "generic"
    assert _isa_in_subprocess(" Generic ", tmp_path).stdout.strip() == "generic"


def test_bad_environment_variable_warns_and_keeps_the_automatic_choice(tmp_path):
    out = _isa_in_subprocess("avx512", tmp_path)
    assert out.stdout.strip() == _native.cpu_isas()[-1]
    assert "NAVCUDA_CPU_ISA='avx512' ignored" in out.stderr
    assert "Valid here: 'auto', 'generic'" in out.stderr
