// Launch helpers shared by the CUDA launchers (csrc/*.cu). Under nvcc they use the CUDA runtime;
// navcuda._C_emu compiles the same launchers as host C++ against cuda_emu.h (included first, it
// defines NAVCUDA_CUDA_EMU), so the launch shapes, argument checks and kernel sequences of every
// *_cuda entry point run in the tests too (csrc/emu/launchers_emu.cpp).
#pragma once

#if !defined(NAVCUDA_CUDA_EMU)
#include <cuda_runtime.h>
#endif

#include "common.h"

namespace navcuda {

// Threads per block of the grid-stride kernels, and the cap on their grid size.
constexpr int kLaunchThreads = 256;
constexpr long long kLaunchMaxBlocks = 65535LL * 4;
// Largest grid.x a GPU launches (2^31 - 1); grid.y and grid.z stop at 65535.
constexpr long long kLaunchMaxGridX = 2147483647LL;

// Blocks for a grid-stride loop over n items (at least 1, at most kLaunchMaxBlocks).
inline unsigned int launch_blocks(long long n, int threads = kLaunchThreads) {
  long long blocks = (n + threads - 1) / threads;
  if (blocks < 1) blocks = 1;
  return static_cast<unsigned int>(blocks < kLaunchMaxBlocks ? blocks : kLaunchMaxBlocks);
}

// Element counts up to which a kernel taking an index type runs with 32-bit `int` indices
// (dispatch_index): a GPU divides 32-bit integers several times faster than 64-bit ones, and the
// element-wise kernels divide per element. 2^30 leaves room below INT_MAX for every grid-stride
// step past the end (at most kLaunchMaxBlocks * kLaunchThreads * 8). A function, not a constant,
// so that navcuda._C_emu's tests can lower it to run the 64-bit variants on small tensors.
constexpr long long kIndex32Limit = 1LL << 30;
inline long long& index32_max() {
  static long long limit = kIndex32Limit;
  return limit;
}

// fn(int{}) when every index of the launch (the largest element count it touches, `extent`)
// fits index32_max(), else fn((long long){}).
template <typename Fn>
void dispatch_index(long long extent, Fn&& fn) {
  if (extent <= index32_max()) {
    fn(int{});
  } else {
    fn(static_cast<long long>(0));
  }
}

// kernel<<<grid, block, 0, stream>>>(args...), each argument converted to the kernel's parameter
// type; `name` (the kernel) labels the emulator's findings.
template <typename... Params, typename... Args>
void launch_kernel(const char* name, void (*kernel)(Params...), dim3 grid, dim3 block,
                   cudaStream_t stream, Args... args) {
  static_assert(sizeof...(Params) == sizeof...(Args), "launch_kernel: wrong number of arguments");
#if defined(NAVCUDA_CUDA_EMU)
  (void)stream;
  navcuda_emu::launch(name, grid, block, kernel, static_cast<Params>(args)...);
#else
  // An error still pending from earlier asynchronous work (any kernel, torch's included) would
  // otherwise be reported after this launch as this kernel's failure.
  const cudaError_t pending = cudaGetLastError();
  if (pending != cudaSuccess) {
    throw_runtime(NAVCUDA_MSG("navcuda kernel "
                              << name << " not launched: a CUDA error from "
                              << "earlier work is pending (not caused by navcuda's kernel): "
                              << cudaGetErrorName(pending) << ": " << cudaGetErrorString(pending)));
  }
  // clang-format off
  kernel<<<grid, block, 0, stream>>>(static_cast<Params>(args)...);
  // clang-format on
#endif
}

// Throw std::runtime_error (RuntimeError in Python) if the last launch failed (the emulator's
// launch throws by itself).
inline void check_launch(const char* op) {
#if defined(NAVCUDA_CUDA_EMU)
  (void)op;
#else
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) {
    throw_runtime(NAVCUDA_MSG(op << ": CUDA kernel launch failed: " << cudaGetErrorName(err) << ": "
                                 << cudaGetErrorString(err)));
  }
#endif
}

}  // namespace navcuda
