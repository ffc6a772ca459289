// CPU kernels for bias_act: OpenMP over rows, branch-free inner loops the compiler vectorises
// (bias_act_cpu_kernels.inc, compiled generically and for AVX2 + FMA, picked at run time).
// (-fno-trapping-math, set for every CPU source in CMakeLists.txt, lets GCC vectorise the selects.)
#include "bias_act.h"
#include "cpu_isa.h"

#include <cstdint>

namespace navcuda {
namespace {

// Parallelise only when there is enough work to pay for waking the threads.
constexpr int64_t kParallelMin = 1 << 15;

#define NAVCUDA_CPU_KERNELS "bias_act_cpu_kernels.inc"
#include "cpu_isa_variants.inc"

}  // namespace

void bias_act_cpu(Buffer x, Buffer b, Buffer y, int64_t outer, int64_t channels, int64_t inner,
                  int dtype, int act, double alpha, double gain, double clamp) {
  if (bias_act_check_args("bias_act_cpu", x, b, y, outer, channels, inner, dtype, act) == 0) return;
  dispatch_float(dtype, "bias_act_cpu", [&](auto zero) {
    using T = decltype(zero);
    dispatch_act(act, clamp >= 0, [&](auto act_c, auto clamp_c) {
      constexpr int kAct = decltype(act_c)::value;
      constexpr bool kClamp = decltype(clamp_c)::value;
      pick_isa(&generic::forward_kernel<T, kAct, kClamp>, &avx2::forward_kernel<T, kAct, kClamp>)(
          as_ptr<const T>(x), as_ptr<const T>(b), as_ptr<T>(y), outer, channels, inner, T(alpha),
          T(gain), T(clamp));
    });
  });
}

void bias_act_grad_cpu(Buffer dy, Buffer y, Buffer dx, int64_t n, int dtype, int act, double alpha,
                       double gain, double clamp) {
  bias_act_grad_check_args("bias_act_grad_cpu", dy, y, dx, n, dtype, act);
  if (n == 0) return;
  dispatch_float(dtype, "bias_act_grad_cpu", [&](auto zero) {
    using T = decltype(zero);
    dispatch_act(act, clamp >= 0, [&](auto act_c, auto clamp_c) {
      constexpr int kAct = decltype(act_c)::value;
      constexpr bool kClamp = decltype(clamp_c)::value;
      pick_isa(&generic::grad_kernel<T, kAct, kClamp>, &avx2::grad_kernel<T, kAct, kClamp>)(
          as_ptr<const T>(dy), as_ptr<const T>(y), as_ptr<T>(dx), n, T(alpha), T(gain), T(clamp));
    });
  });
}

}  // namespace navcuda
