// CUDA launchers for bias_act (kernel bodies in bias_act_kernels.cuh).
#include "bias_act.h"
#include "bias_act_kernels.cuh"
#include "cuda_launch.cuh"

namespace navcuda {

void bias_act_cuda(Buffer x, Buffer b, Buffer y, int64_t outer, int64_t channels, int64_t inner,
                   int dtype, int act, double alpha, double gain, double clamp,
                   std::uintptr_t stream) {
  const long long n =
      bias_act_check_args("bias_act_cuda", x, b, y, outer, channels, inner, dtype, act);
  if (n == 0) return;
  auto s = reinterpret_cast<cudaStream_t>(stream);
  dispatch_float(dtype, "bias_act_cuda", [&](auto zero) {
    using T = decltype(zero);
    dispatch_act(act, clamp >= 0, [&](auto act_c, auto clamp_c) {
      constexpr int kAct = decltype(act_c)::value;
      constexpr bool kClamp = decltype(clamp_c)::value;
      dispatch_index(n, [&](auto idx) {
        using Idx = decltype(idx);
        launch_kernel("bias_act_forward_kernel", &bias_act_forward_kernel<T, kAct, kClamp, Idx>,
                      launch_blocks(n), kLaunchThreads, s, as_ptr<const T>(x), as_ptr<const T>(b),
                      as_ptr<T>(y), n, channels, inner, T(alpha), T(gain), T(clamp));
      });
    });
  });
  check_launch("bias_act_cuda");
}

void bias_act_grad_cuda(Buffer dy, Buffer y, Buffer dx, int64_t n, int dtype, int act, double alpha,
                        double gain, double clamp, std::uintptr_t stream) {
  bias_act_grad_check_args("bias_act_grad_cuda", dy, y, dx, n, dtype, act);
  if (n == 0) return;
  auto s = reinterpret_cast<cudaStream_t>(stream);
  dispatch_float(dtype, "bias_act_grad_cuda", [&](auto zero) {
    using T = decltype(zero);
    dispatch_act(act, clamp >= 0, [&](auto act_c, auto clamp_c) {
      constexpr int kAct = decltype(act_c)::value;
      constexpr bool kClamp = decltype(clamp_c)::value;
      launch_kernel("bias_act_grad_kernel", &bias_act_grad_kernel<T, kAct, kClamp>,
                    launch_blocks(n), kLaunchThreads, s, as_ptr<const T>(dy), as_ptr<const T>(y),
                    as_ptr<T>(dx), n, T(alpha), T(gain), T(clamp));
    });
  });
  check_launch("bias_act_grad_cuda");
}

}  // namespace navcuda
