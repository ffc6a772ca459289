// Launch helpers shared by the CUDA launchers (csrc/*.cu only: needs the CUDA runtime).
#pragma once

#include <cuda_runtime.h>

#include "common.h"

namespace navcuda {

// Threads per block of the grid-stride kernels, and the cap on their grid size.
constexpr int kLaunchThreads = 256;
constexpr long long kLaunchMaxBlocks = 65535LL * 4;

// Blocks for a grid-stride loop over n items (at least 1, at most kLaunchMaxBlocks).
inline unsigned int launch_blocks(long long n, int threads = kLaunchThreads) {
  long long blocks = (n + threads - 1) / threads;
  if (blocks < 1) blocks = 1;
  return static_cast<unsigned int>(blocks < kLaunchMaxBlocks ? blocks : kLaunchMaxBlocks);
}

// Throw std::runtime_error (RuntimeError in Python) if the last launch failed.
inline void check_launch(const char* op) {
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) {
    throw_runtime(NAVCUDA_MSG(op << ": CUDA kernel launch failed: " << cudaGetErrorName(err) << ": "
                                 << cudaGetErrorString(err)));
  }
}

}  // namespace navcuda
