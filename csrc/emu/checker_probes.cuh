// Deliberately broken kernels (and one correct one) that show the emulator's checks firing:
// navcuda._C_emu.checker_probe(case) runs one (python_tests/ops/test_cuda_emu.py). Compiled only
// into the test-only module, never by nvcc.
#pragma once

#include "cuda_emu.h"

#include <stdexcept>
#include <string>
#include <vector>

#include "kernel_shared.cuh"

namespace navcuda_probe {

constexpr int kMaxThreads = 64;

// out[blockIdx.x] = sum(x[0..blockDim.x)): a correct shared-memory tree reduction (blockDim.x a
// power of two); with kBarrierInLoop false the barrier between the tree's levels is missing.
template <bool kBarrierInLoop>
__global__ void block_sum(const float* x, float* out) {
  NAVCUDA_SHARED(float, buf, [kMaxThreads]);
  buf[threadIdx.x] = x[threadIdx.x];
  __syncthreads();
  for (unsigned int half = blockDim.x / 2; half > 0; half >>= 1) {
    if (threadIdx.x < half) buf[threadIdx.x] += buf[threadIdx.x + half];
    if (kBarrierInLoop) __syncthreads();
  }
  if (threadIdx.x == 0) out[blockIdx.x] = buf[0];
  __syncthreads();
}

// Every thread reads its right neighbour's slot after a barrier: the last thread's neighbour
// slot was never written.
__global__ void read_unwritten(const float* x, float* out) {
  NAVCUDA_SHARED(float, buf, [kMaxThreads + 1]);
  buf[threadIdx.x] = x[threadIdx.x];
  __syncthreads();
  out[threadIdx.x] = buf[threadIdx.x + 1];
}

// Block 0 fills the array; the other blocks read it expecting block 0's values (on a GPU each
// block has its own, undefined, shared memory).
__global__ void read_other_blocks_value(const float* x, float* out) {
  NAVCUDA_SHARED(float, buf, [1]);
  if (blockIdx.x == 0 && threadIdx.x == 0) buf[0] = x[0];
  __syncthreads();
  if (threadIdx.x == 0) out[blockIdx.x] = buf[0];
}

// A column index past its row: inside the array's bytes, outside its second dimension.
__global__ void index_past_row(const float* x, float* out) {
  NAVCUDA_SHARED(float, tile, [2][4]);
  if (threadIdx.x == 0) {
    tile[0][0] = x[0];
    tile[0][5] = x[1];
  }
  __syncthreads();
  if (threadIdx.x == 0) out[0] = tile[0][0];
}

// Every thread writes the same slot between two barriers.
__global__ void all_write_one_slot(const float* x, float* out) {
  NAVCUDA_SHARED(float, buf, [1]);
  buf[0] = x[threadIdx.x];
  __syncthreads();
  if (threadIdx.x == 0) out[0] = buf[0];
}

// Thread 0 leaves before a barrier the others wait at.
__global__ void return_before_barrier(const float* x, float* out) {
  NAVCUDA_SHARED(float, buf, [kMaxThreads]);
  if (threadIdx.x == 0) return;
  buf[threadIdx.x] = x[threadIdx.x];
  __syncthreads();
  out[threadIdx.x] = buf[threadIdx.x];
}

// Runs one probe on x = 1, 2, ..., with `block` threads per block and `grid` blocks, and returns
// out (as many entries as threads times blocks). Throws what launch() throws.
inline std::vector<float> run_probe(const std::string& name, unsigned int grid,
                                    unsigned int block) {
  if (block > 1024 && name != "too_many_threads") {
    throw std::invalid_argument("checker_probe: block must be <= 1024");
  }
  // too_many_threads exists to show the launch refused: with a block the emulator would run,
  // its threads would read past x's kMaxThreads + 1 elements.
  if (name == "too_many_threads" && block <= 1024) {
    throw std::invalid_argument("checker_probe: too_many_threads needs a block > 1024");
  }
  if (grid == 0 || grid > 65535)
    throw std::invalid_argument("checker_probe: grid must be 1..65535");
  std::vector<float> x(kMaxThreads + 1), out(std::size_t(grid) * block, 0.0f);
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = float(i + 1);
  const bool small = block <= kMaxThreads;
  if (name == "block_sum" || name == "block_sum_missing_barrier") {
    if (!small || (block & (block - 1)) != 0) {
      throw std::invalid_argument("checker_probe: block_sum needs a power-of-two block <= 64");
    }
    navcuda_emu::launch(name.c_str(), dim3(grid), dim3(block),
                        name == "block_sum" ? &block_sum<true> : &block_sum<false>, x.data(),
                        out.data());
  } else if (name == "read_unwritten" && small) {
    navcuda_emu::launch(name.c_str(), dim3(grid), dim3(block), &read_unwritten, x.data(),
                        out.data());
  } else if (name == "read_other_blocks_value") {
    navcuda_emu::launch(name.c_str(), dim3(grid), dim3(block), &read_other_blocks_value, x.data(),
                        out.data());
  } else if (name == "index_past_row") {
    navcuda_emu::launch(name.c_str(), dim3(grid), dim3(block), &index_past_row, x.data(),
                        out.data());
  } else if (name == "all_write_one_slot" && small) {
    navcuda_emu::launch(name.c_str(), dim3(grid), dim3(block), &all_write_one_slot, x.data(),
                        out.data());
  } else if (name == "return_before_barrier" && small) {
    navcuda_emu::launch(name.c_str(), dim3(grid), dim3(block), &return_before_barrier, x.data(),
                        out.data());
  } else if (name == "too_many_threads") {
    navcuda_emu::launch(name.c_str(), dim3(grid), dim3(block), &block_sum<true>, x.data(),
                        out.data());
  } else {
    throw std::invalid_argument("checker_probe: unknown case or block > 64: " + name);
  }
  return out;
}

}  // namespace navcuda_probe
