// A tiny CUDA emulation for host C++: compile __global__ kernel bodies (csrc/*_kernels.cuh) with
// g++ and run them on the CPU, so kernels can be tested on machines without a GPU (test-only
// module navcuda._C_emu, csrc/emu/). Supports what the kernel style guide allows: blockIdx,
// threadIdx, blockDim, gridDim, __syncthreads() and __shared__ arrays, plain arithmetic.
//
// Semantics: blocks run one after another; the threads of a block are real std::threads, so
// __syncthreads() is a true barrier and data races on __shared__ memory behave like on a GPU
// (modulo timing). __shared__ variables become function-local statics, shared by the threads of
// the running block; launches are serialised by a global mutex so one block runs at a time.
#pragma once

#if defined(__CUDACC__)
#error "cuda_emu.h is for host compilers only"
#endif

#include <condition_variable>
#include <cstddef>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static

struct dim3 {
  unsigned int x, y, z;
  constexpr dim3(unsigned int x_ = 1, unsigned int y_ = 1, unsigned int z_ = 1)
      : x(x_), y(y_), z(z_) {}
};

namespace navcuda_emu {

// Reusable barrier for the threads of one block (std::barrier needs C++20).
class Barrier {
 public:
  explicit Barrier(std::size_t count) : count_(count) {}
  void wait() {
    std::unique_lock<std::mutex> lock(mutex_);
    const std::size_t gen = generation_;
    if (++waiting_ == count_) {
      waiting_ = 0;
      ++generation_;
      cv_.notify_all();
    } else {
      cv_.wait(lock, [&] { return gen != generation_; });
    }
  }

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  std::size_t count_;
  std::size_t waiting_ = 0;
  std::size_t generation_ = 0;
};

inline thread_local dim3 tls_thread_idx;
inline thread_local dim3 tls_block_idx;
inline thread_local dim3 tls_block_dim;
inline thread_local dim3 tls_grid_dim;
inline thread_local Barrier* tls_barrier = nullptr;

inline std::mutex& launch_mutex() {
  static std::mutex m;
  return m;
}

// Run kernel(args...) over grid x block, like kernel<<<grid, block>>>(args...) followed by a
// device synchronisation. Exceptions thrown by a kernel thread are not supported (kernels do not
// throw).
template <typename Kernel, typename... Args>
void launch(dim3 grid, dim3 block, Kernel kernel, Args... args) {
  std::lock_guard<std::mutex> guard(launch_mutex());
  const std::size_t threads = std::size_t(block.x) * block.y * block.z;
  for (unsigned int bz = 0; bz < grid.z; ++bz) {
    for (unsigned int by = 0; by < grid.y; ++by) {
      for (unsigned int bx = 0; bx < grid.x; ++bx) {
        Barrier barrier(threads);
        std::vector<std::thread> pool;
        pool.reserve(threads);
        for (unsigned int tz = 0; tz < block.z; ++tz) {
          for (unsigned int ty = 0; ty < block.y; ++ty) {
            for (unsigned int tx = 0; tx < block.x; ++tx) {
              pool.emplace_back([=, &barrier] {
                tls_thread_idx = dim3(tx, ty, tz);
                tls_block_idx = dim3(bx, by, bz);
                tls_block_dim = block;
                tls_grid_dim = grid;
                tls_barrier = &barrier;
                kernel(args...);
              });
            }
          }
        }
        for (auto& t : pool) t.join();
      }
    }
  }
}

}  // namespace navcuda_emu

#define threadIdx (::navcuda_emu::tls_thread_idx)
#define blockIdx (::navcuda_emu::tls_block_idx)
#define blockDim (::navcuda_emu::tls_block_dim)
#define gridDim (::navcuda_emu::tls_grid_dim)
#define __syncthreads() (::navcuda_emu::tls_barrier->wait())
