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
#include "svd_shift.h"
#include "svd_shift_kernels.cuh"

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

// svd_shift kernels; config 0 = the production launch shape (svd_shift.cu), 1 = small tiles.
template <typename Config>
void svd_shift_emu_impl(std::uintptr_t w, std::uintptr_t u, std::uintptr_t vh, std::uintptr_t s,
                        std::uintptr_t out, int64_t batch, int64_t n_out, int64_t n_in,
                        int64_t taps, int64_t rank, int dtype) {
  using C = Config;
  const long long K = n_in * taps;
  const dim3 grid(unsigned((K + C::BN - 1) / C::BN), unsigned((n_out + C::BM - 1) / C::BM),
                  unsigned(batch));
  navcuda::dispatch_float(dtype, "svd_shift_emu", [&](auto zero) {
    using T = decltype(zero);
    navcuda_emu::launch(grid, dim3(C::BN / C::TN, C::BM / C::TM),
                        &navcuda::svd_shift_forward_kernel<T, C::BM, C::BN, C::BK, C::TM, C::TN>,
                        as_ptr<const T>(w), as_ptr<const T>(u), as_ptr<const T>(vh),
                        as_ptr<const T>(s), as_ptr<T>(out), (long long)n_out, (long long)n_in,
                        (long long)taps, (long long)rank);
  });
}

template <typename Config>
void svd_shift_grad_emu_impl(std::uintptr_t g, std::uintptr_t u, std::uintptr_t vh,
                             std::uintptr_t e, int64_t batch, int64_t n_out, int64_t n_in,
                             int64_t taps, int64_t rank, int dtype) {
  using C = Config;
  const dim3 grid(unsigned((rank + C::BN - 1) / C::BN), 1, unsigned(batch));
  navcuda::dispatch_float(dtype, "svd_shift_grad_emu", [&](auto zero) {
    using T = decltype(zero);
    navcuda_emu::launch(grid, dim3(C::BN / C::TN, C::BM / C::TM),
                        &navcuda::svd_shift_grad_kernel<T, C::BM, C::BN, C::BK, C::TM, C::TN>,
                        as_ptr<const T>(g), as_ptr<const T>(u), as_ptr<const T>(vh), as_ptr<T>(e),
                        (long long)n_out, (long long)n_in, (long long)taps, (long long)rank);
  });
}

void svd_shift_emu(std::uintptr_t w, std::uintptr_t u, std::uintptr_t vh, std::uintptr_t s,
                   std::uintptr_t out, int64_t batch, int64_t n_out, int64_t n_in, int64_t taps,
                   int64_t rank, int dtype, int config) {
  navcuda::svd_shift_check_args("svd_shift_emu", batch, n_out, n_in, taps, rank);
  NAVCUDA_CHECK(config == 0 || config == 1, "svd_shift_emu: config must be 0 or 1");
  if (batch * n_out * n_in * taps == 0) return;
  (config == 0 ? svd_shift_emu_impl<navcuda::SvdShiftConfigLarge>
               : svd_shift_emu_impl<navcuda::SvdShiftConfigSmall>)(w, u, vh, s, out, batch, n_out,
                                                                   n_in, taps, rank, dtype);
}

void svd_shift_grad_emu(std::uintptr_t g, std::uintptr_t u, std::uintptr_t vh, std::uintptr_t e,
                        int64_t batch, int64_t n_out, int64_t n_in, int64_t taps, int64_t rank,
                        int dtype, int config) {
  navcuda::svd_shift_check_args("svd_shift_grad_emu", batch, n_out, n_in, taps, rank);
  NAVCUDA_CHECK(config == 0 || config == 1, "svd_shift_grad_emu: config must be 0 or 1");
  if (batch * rank == 0) return;
  (config == 0 ? svd_shift_grad_emu_impl<navcuda::SvdShiftConfigLarge>
               : svd_shift_grad_emu_impl<navcuda::SvdShiftConfigSmall>)(g, u, vh, e, batch, n_out,
                                                                        n_in, taps, rank, dtype);
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
  m.def("svd_shift_emu", &svd_shift_emu, nogil, arg("w"), arg("u"), arg("vh"), arg("s"), arg("out"),
        arg("batch"), arg("n_out"), arg("n_in"), arg("taps"), arg("rank"), arg("dtype"),
        arg("config"));
  m.def("svd_shift_grad_emu", &svd_shift_grad_emu, nogil, arg("g"), arg("u"), arg("vh"), arg("e"),
        arg("batch"), arg("n_out"), arg("n_in"), arg("taps"), arg("rank"), arg("dtype"),
        arg("config"));
}
