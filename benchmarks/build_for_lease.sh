#!/usr/bin/env bash
# Build navcuda's native modules here for a GPU lease's Python, so that the lease skips its own
# build (125 s of a 15-minute lease on the H200 in session 12, where modules built this way ran).
#
#   PYTHON=/path/to/python3.12 bash benchmarks/build_for_lease.sh [ARCH]   # ARCH default 90
#
# PYTHON must be the lease's minor version (3.12 on the H100/H200 image) with pybind11 and
# scikit-build-core's CMake and ninja importable or on PATH; torch is not needed to build. The
# modules (navcuda/_C.cpython-3XY-*.so, navcuda/_C_emu...) are written into navcuda/, where git
# ignores them; carry both paths to the lease and run there
#   NAVCUDA_GPU_PREBUILT=1 bash benchmarks/run_on_gpu.sh all
# which imports them from the source tree (PYTHONPATH) instead of building. Remove them after.
set -euo pipefail
cd "$(dirname "$0")/.."
py="${PYTHON:?set PYTHON to the Python of the lease (e.g. a python3.12 venv with pybind11)}"
arch="${1:-90}"
build="build/lease-$("$py" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')"
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DNAVCUDA_BUILD_EMU=ON \
  -DNAVCUDA_CUDA_ARCHS="${arch}-real" -DPython_EXECUTABLE="$py" \
  -Dpybind11_DIR="$("$py" -m pybind11 --cmakedir)" >/dev/null
ninja -C "$build" _C _C_emu >/dev/null
tag="$("$py" -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')"
cp "$build/_C$tag" "$build/_C_emu$tag" navcuda/
"$py" - "navcuda/_C$tag" <<'PY'
import importlib.util
import sys

spec = importlib.util.spec_from_file_location("_C", sys.argv[1])  # this file, not an installed one
C = importlib.util.module_from_spec(spec)
spec.loader.exec_module(C)
info = C.build_info()
assert info["cuda_compiled"], "nvcc was not found: the modules carry no CUDA kernels"
print("built", C.__file__, "archs", info["cuda_archs"], "libstdcxx", info["libstdcxx"])
PY
