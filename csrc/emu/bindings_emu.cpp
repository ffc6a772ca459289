// navcuda._C_emu: test-only module running the CUDA kernel bodies (csrc/*_kernels.cuh) on the CPU
// through csrc/cuda_emu.h. Same raw-pointer API as navcuda._C's *_cuda entry points, with the
// launch shape (grid, block) chosen by the caller instead of a stream, so tests can exercise
// grid-stride loops with small grids. Not shipped in wheels (built with -DNAVCUDA_BUILD_EMU=ON).
#include "cuda_emu.h"  // must come first: defines __global__, threadIdx, ...

#include <pybind11/pybind11.h>

#include <cstdint>

#include "bias_act.h"
#include "bias_act_kernels.cuh"
#include "common.h"

namespace py = pybind11;

namespace {

using navcuda::as_ptr;

void bias_act_emu(std::uintptr_t x, std::uintptr_t b, std::uintptr_t y, int64_t outer,
                  int64_t channels, int64_t inner, int dtype, int act, double alpha, double gain,
                  double clamp, unsigned int grid, unsigned int block) {
  NAVCUDA_CHECK(grid > 0 && block > 0, "bias_act_emu: grid and block must be > 0");
  const long long n = outer * channels * inner;
  if (n == 0) return;
  navcuda::dispatch_float(dtype, "bias_act_emu", [&](auto zero) {
    using T = decltype(zero);
    navcuda::dispatch_act(act, clamp >= 0, [&](auto act_c, auto clamp_c) {
      constexpr int kAct = decltype(act_c)::value;
      constexpr bool kClamp = decltype(clamp_c)::value;
      navcuda_emu::launch(dim3(grid), dim3(block),
                          &navcuda::bias_act_forward_kernel<T, kAct, kClamp>, as_ptr<const T>(x),
                          as_ptr<const T>(b), as_ptr<T>(y), n, (long long)channels,
                          (long long)inner, T(alpha), T(gain), T(clamp));
    });
  });
}

void bias_act_grad_emu(std::uintptr_t dy, std::uintptr_t y, std::uintptr_t dx, int64_t n, int dtype,
                       int act, double alpha, double gain, double clamp, unsigned int grid,
                       unsigned int block) {
  NAVCUDA_CHECK(grid > 0 && block > 0, "bias_act_grad_emu: grid and block must be > 0");
  if (n == 0) return;
  navcuda::dispatch_float(dtype, "bias_act_grad_emu", [&](auto zero) {
    using T = decltype(zero);
    navcuda::dispatch_act(act, clamp >= 0, [&](auto act_c, auto clamp_c) {
      constexpr int kAct = decltype(act_c)::value;
      constexpr bool kClamp = decltype(clamp_c)::value;
      navcuda_emu::launch(dim3(grid), dim3(block), &navcuda::bias_act_grad_kernel<T, kAct, kClamp>,
                          as_ptr<const T>(dy), as_ptr<const T>(y), as_ptr<T>(dx), (long long)n,
                          T(alpha), T(gain), T(clamp));
    });
  });
}

}  // namespace

PYBIND11_MODULE(_C_emu, m) {
  m.doc() = "Test-only: navcuda CUDA kernel bodies run on the CPU through csrc/cuda_emu.h";
  using py::arg;
  auto nogil = py::call_guard<py::gil_scoped_release>();
  m.def("bias_act_emu", &bias_act_emu, nogil, arg("x"), arg("b"), arg("y"), arg("outer"),
        arg("channels"), arg("inner"), arg("dtype"), arg("act"), arg("alpha"), arg("gain"),
        arg("clamp"), arg("grid"), arg("block"));
  m.def("bias_act_grad_emu", &bias_act_grad_emu, nogil, arg("dy"), arg("y"), arg("dx"), arg("n"),
        arg("dtype"), arg("act"), arg("alpha"), arg("gain"), arg("clamp"), arg("grid"),
        arg("block"));
}
