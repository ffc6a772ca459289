// CPU kernels for bias_act: OpenMP over rows, branch-free inner loops the compiler vectorises.
// (-fno-trapping-math, set for every CPU source in CMakeLists.txt, lets GCC vectorise the selects.)
#include "bias_act.h"

#include <cstdint>

namespace navcuda {
namespace {

// Parallelise only when there is enough work to pay for waking the threads.
constexpr int64_t kParallelMin = 1 << 15;

template <typename T, int kAct, bool kClamp>
void forward_kernel(const T* __restrict x, const T* __restrict b, T* __restrict y, int64_t outer,
                    int64_t channels, int64_t inner, T alpha, T gain, T clamp) {
  const int64_t n = outer * channels * inner;
  if (inner == 1) {
    // Channels are the fastest dimension: rows of `channels` elements, bias varies along the row.
#pragma omp parallel for schedule(static) if (n >= kParallelMin)
    for (int64_t o = 0; o < outer; ++o) {
      const T* xr = x + o * channels;
      T* yr = y + o * channels;
      for (int64_t c = 0; c < channels; ++c) {
        T v = bias_act_value<T, kAct>(xr[c] + (b ? b[c] : T(0)), alpha, gain);
        yr[c] = kClamp ? bias_act_clamp(v, clamp) : v;
      }
    }
    return;
  }
  // One row of `inner` contiguous elements per (outer, channel): the bias is constant in a row.
  const int64_t rows = outer * channels;
#pragma omp parallel for schedule(static) if (n >= kParallelMin)
  for (int64_t r = 0; r < rows; ++r) {
    const T bias = b ? b[r % channels] : T(0);
    const T* xr = x + r * inner;
    T* yr = y + r * inner;
    for (int64_t i = 0; i < inner; ++i) {
      T v = bias_act_value<T, kAct>(xr[i] + bias, alpha, gain);
      yr[i] = kClamp ? bias_act_clamp(v, clamp) : v;
    }
  }
}

template <typename T, int kAct, bool kClamp>
void grad_kernel(const T* __restrict dy, const T* __restrict y, T* __restrict dx, int64_t n,
                 T alpha, T gain, T clamp) {
  constexpr int64_t kChunk = 4096;
  const int64_t chunks = (n + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static) if (n >= kParallelMin)
  for (int64_t k = 0; k < chunks; ++k) {
    const int64_t end = (k + 1) * kChunk < n ? (k + 1) * kChunk : n;
    for (int64_t i = k * kChunk; i < end; ++i) {
      dx[i] = bias_act_grad_value<T, kAct, kClamp>(dy[i], y[i], alpha, gain, clamp);
    }
  }
}

}  // namespace

void bias_act_cpu(std::uintptr_t x, std::uintptr_t b, std::uintptr_t y, int64_t outer,
                  int64_t channels, int64_t inner, int dtype, int act, double alpha, double gain,
                  double clamp) {
  bias_act_check_args("bias_act_cpu", x, y, outer, channels, inner, act);
  if (outer * channels * inner == 0) return;
  dispatch_float(dtype, "bias_act_cpu", [&](auto zero) {
    using T = decltype(zero);
    dispatch_act(act, clamp >= 0, [&](auto act_c, auto clamp_c) {
      constexpr int kAct = decltype(act_c)::value;
      constexpr bool kClamp = decltype(clamp_c)::value;
      forward_kernel<T, kAct, kClamp>(as_ptr<const T>(x), as_ptr<const T>(b), as_ptr<T>(y), outer,
                                      channels, inner, T(alpha), T(gain), T(clamp));
    });
  });
}

void bias_act_grad_cpu(std::uintptr_t dy, std::uintptr_t y, std::uintptr_t dx, int64_t n, int dtype,
                       int act, double alpha, double gain, double clamp) {
  bias_act_check_args("bias_act_grad_cpu", dy, dx, 1, 1, n, act);
  NAVCUDA_CHECK(n == 0 || y != 0, "bias_act_grad_cpu: null pointer for y");
  if (n == 0) return;
  dispatch_float(dtype, "bias_act_grad_cpu", [&](auto zero) {
    using T = decltype(zero);
    dispatch_act(act, clamp >= 0, [&](auto act_c, auto clamp_c) {
      constexpr int kAct = decltype(act_c)::value;
      constexpr bool kClamp = decltype(clamp_c)::value;
      grad_kernel<T, kAct, kClamp>(as_ptr<const T>(dy), as_ptr<const T>(y), as_ptr<T>(dx), n,
                                   T(alpha), T(gain), T(clamp));
    });
  });
}

}  // namespace navcuda
