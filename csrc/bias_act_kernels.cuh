// CUDA kernel bodies for bias_act. Launch code lives in bias_act.cu.
//
// Kept to the subset a small CUDA-emulation header can provide on the host: __global__,
// blockIdx/blockDim/gridDim/threadIdx and plain arithmetic (no intrinsics, no warp functions), so
// the same bodies can later be compiled as host C++ and tested without a GPU.
#pragma once

#include "bias_act.h"

namespace navcuda {

// y[i] = clamp(act(x[i] + b[(i / inner) % channels]) * gain). Grid-stride loop over n elements;
// Idx: int where the launcher's dispatch_index allows it (32-bit division per element).
template <typename T, int kAct, bool kClamp, typename Idx>
__global__ void bias_act_forward_kernel(const T* x, const T* b, T* y, Idx n, Idx channels,
                                        Idx inner, T alpha, T gain, T clamp) {
  const Idx stride = Idx(blockDim.x) * Idx(gridDim.x);
  for (Idx i = Idx(blockIdx.x) * Idx(blockDim.x) + Idx(threadIdx.x); i < n; i += stride) {
    T v = x[i];
    if (b) v += b[(i / inner) % channels];
    v = bias_act_value<T, kAct>(v, alpha, gain);
    y[i] = kClamp ? bias_act_clamp(v, clamp) : v;
  }
}

// dx[i] = dy[i] * gain * act'(.) * clamp mask, read from the saved output y[i].
template <typename T, int kAct, bool kClamp>
__global__ void bias_act_grad_kernel(const T* dy, const T* y, T* dx, long long n, T alpha, T gain,
                                     T clamp) {
  const long long stride = (long long)blockDim.x * gridDim.x;
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
    dx[i] = bias_act_grad_value<T, kAct, kClamp>(dy[i], y[i], alpha, gain, clamp);
  }
}

}  // namespace navcuda
