#!/usr/bin/env bash
# Everything navcuda needs a GPU for, prepared for a short GPU lease (the project's sessions get
# ~15 minutes of device time, machine start included, and one command may run 10 minutes), in
# two phases of one command each: `tests` (steps 1-3) and `bench` (steps 1, 2 -- a no-op when
# the build is still there -- and 4); `all` (the default) runs both in one go:
#
#   1. record the machine (nvidia-smi, torch, nvcc);
#   2. build navcuda in place for this GPU only (no network, so no dependency resolution and no
#      build isolation: the machine's own torch, pybind11, scikit-build-core, cmake and ninja;
#      the torch==2.14.1 pin is not enforced there), or, with NAVCUDA_GPU_PREBUILT=1, import the
#      modules that benchmarks/build_for_lease.sh built elsewhere and the lease carried;
#   3. the CUDA tests: `pytest -m gpu` (the real-device half of every CUDA-path test) and the
#      self-test on the device;
#   4. the kernels' device times (benchmarks/kernel_times.py), then the benchmarks with
#      --device cuda, in two bounded parts (ops, then discovery/spectrum);
#   5. compute-sanitizer's memcheck over the device self-test, where the tool is there;
#   6. the op suite once more with the GPU present, in the time that is left.
# A failed build ends the run at once, so that a retry keeps most of the lease.
#
# Each step has its own time limit so that one slow step cannot eat the lease. Five files land
# in $OUT (default /tmp/navcuda-gpu), the files that come back: summary.txt (machine, each
# step's status and last lines), log.txt (every step's full output), kernels.json and the two
# benchmark JSONs. Usage on the device: `bash benchmarks/run_on_gpu.sh` (arch defaults to the GPU's
# own, e.g. 90 on an H100/H200; NAVCUDA_GPU_ARCH=80 overrides). Runs here too (no GPU: the GPU
# steps skip), which is how it was tested.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-/tmp/navcuda-gpu}"
mkdir -p "$out"
export PYTHONUNBUFFERED=1
py="${PYTHON:-python3}"
phase="${1:-all}"
case "$phase" in all | tests | bench) ;; *) echo "usage: $0 [all|tests|bench]" >&2; exit 2 ;; esac
status=0

# The whole run ends by $NAVCUDA_GPU_BUDGET seconds (default 540, under the lease's 600-second
# command limit): each step's limit is cut to the time left, and a step with under 20 s left is
# skipped, so the files in $OUT are always complete when the lease's own timeout would strike.
budget="${NAVCUDA_GPU_BUDGET:-540}"

step() {  # step NAME SECONDS COMMAND...: run with a time limit, append its output to log.txt
  local name="$1" limit="$2"
  shift 2
  local left=$((budget - SECONDS - 5))
  if [ "$left" -lt 20 ]; then
    echo "== $name skipped: ${left}s of the ${budget}s budget left" | tee -a "$out/summary.txt"
    status=1
    return 1
  fi
  [ "$limit" -le "$left" ] || limit=$left
  echo "== $name (limit ${limit}s)" | tee -a "$out/summary.txt"
  echo "======== $name: $*" >>"$out/log.txt"
  local start=$SECONDS
  # SIGINT first: pytest then finishes its session, so pytest-benchmark still writes its JSON.
  timeout -s INT -k 15 "$limit" "$@" >"$out/step.log" 2>&1
  local rc=$?
  cat "$out/step.log" >>"$out/log.txt"
  echo "   rc=$rc in $((SECONDS - start))s; last lines:" | tee -a "$out/summary.txt"
  tail -n 4 "$out/step.log" | sed 's/^/   | /' | tee -a "$out/summary.txt"
  rm -f "$out/step.log"
  [ "$rc" -eq 0 ] || status=1
  return "$rc"
}

# The lease's machines may keep nvcc outside PATH; a missing pure-Python dependency (lpips) can
# travel as a wheel in .whl/ (see the device tool's README) and is installed for this run only.
[ -d /usr/local/cuda/bin ] && export PATH="$PATH:/usr/local/cuda/bin"
if compgen -G ".whl/*.whl" >/dev/null; then
  "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/navcuda-site .whl/*.whl && export PYTHONPATH="/tmp/navcuda-site${PYTHONPATH:+:$PYTHONPATH}"
fi

{
  date -u +"date: %Y-%m-%dT%H:%M:%SZ"
  # The lease copies the working tree without .git: pass NAVCUDA_COMMIT=<hash> from here.
  echo "commit: ${NAVCUDA_COMMIT:-$(git rev-parse HEAD 2>/dev/null || echo unknown)}"
  echo "kernel: $(uname -r)"
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1
  "$py" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda,
      'device', torch.cuda.get_device_name() if torch.cuda.is_available() else None)"
  nvcc --version 2>&1 | tail -n 1
  echo "phase: $phase"
} 2>&1 | tee "$out/summary.txt"

arch="${NAVCUDA_GPU_ARCH:-$("$py" -c "import torch
if torch.cuda.is_available():
    major, minor = torch.cuda.get_device_capability()
    print(f'{major}{minor}')
else:
    print('90')")}"
# NAVCUDA_GPU_PREBUILT=1: modules built here by benchmarks/build_for_lease.sh and carried into
# navcuda/ are imported from the source tree instead of building (saves the build's minutes).
if [ "${NAVCUDA_GPU_PREBUILT:-0}" = 1 ]; then
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
  build_cmd=("$py" -c "import navcuda._C, navcuda._C_emu; print('prebuilt:', navcuda._C.__file__)")
else
  build_cmd=("$py" -m pip install --no-deps --no-build-isolation -e .
    -C "cmake.define.NAVCUDA_CUDA_ARCHS=${arch}-real")
fi
if ! step build 200 "${build_cmd[@]}"; then
  echo "== done: status=1 (the build failed; nothing else ran); files in $out" | tee -a "$out/summary.txt"
  exit 1
fi
step build-info 30 "$py" -c "import navcuda._C as C, json; print(json.dumps(C.build_info()))"
if [ "$phase" != bench ]; then
  step selftest 60 "$py" -c "
import torch
from navcuda.ops.selftest import selftest
device = 'cuda' if torch.cuda.is_available() else 'cpu'
results = selftest(device, mark=False)
for r in results:
    print(r)
raise SystemExit(any(r.status != 'pass' for r in results))"
  step tests-gpu 120 "$py" -m pytest python_tests -m gpu -q -p no:cacheprovider -rs
fi
if [ "$phase" != tests ]; then
  # Device time of each fused kernel and its reference (the profiler's kernel clock), against a
  # device-to-device copy: what the host-timed suites below cannot separate from overhead.
  step kernels 90 "$py" benchmarks/kernel_times.py --json "$out/kernels.json"
  step bench-ops 180 "$py" -m pytest benchmarks --device cuda -s \
    --ignore=benchmarks/test_bench_spectrum.py --ignore=benchmarks/test_bench_discovery.py \
    --benchmark-min-rounds=5 --benchmark-max-time=0.5 --benchmark-json="$out/bench-ops.json"
  step bench-discovery 200 "$py" -m pytest benchmarks/test_bench_discovery.py \
    benchmarks/test_bench_spectrum.py --device cuda -s -k "not solver_memory" \
    --benchmark-min-rounds=3 --benchmark-max-time=0.5 --benchmark-json="$out/bench-discovery.json"
fi
# compute-sanitizer's memcheck over the device self-test (every CUDA kernel, small shapes), with
# torch's caching allocator off so that an out-of-bounds access leaves its allocation. Not on
# every lease's machine (gVisor refuses the device): a failure here is read from the log.
if [ "$phase" != bench ] && command -v compute-sanitizer >/dev/null; then
  PYTORCH_NO_CUDA_MEMORY_CACHING=1 step memcheck 120 compute-sanitizer --tool memcheck \
    --error-exitcode 3 "$py" -c "
import torch
from navcuda.ops.selftest import selftest
if torch.cuda.is_available():
    results = selftest('cuda', mark=False)
    print([(r.op, r.status) for r in results])"
fi
# Last, as it only repeats CI's CPU suite with a GPU present: whatever time is left.
[ "$phase" = bench ] || step tests-ops 120 "$py" -m pytest python_tests/ops -q -p no:cacheprovider \
  --maxfail=20
echo "== done: status=$status (0: every step passed); files in $out" | tee -a "$out/summary.txt"
exit "$status"
