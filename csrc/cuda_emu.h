// A tiny CUDA emulation for host C++: compile __global__ kernel bodies (csrc/*_kernels.cuh) with
// g++ and run them on the CPU, so kernels can be tested on machines without a GPU (test-only
// module navcuda._C_emu, csrc/emu/). Supports what the kernel style guide allows: blockIdx,
// threadIdx, blockDim, gridDim, __syncthreads() and shared arrays declared with
// NAVCUDA_SHARED(T, name, [N]...) (kernel_shared.cuh), plain arithmetic.
//
// Semantics: blocks run one after another; the threads of a block are real std::threads, so
// __syncthreads() is a true barrier. Shared arrays are function-local statics (one block runs at
// a time: launches are serialised by a global mutex), reached through checked views that play
// the part of compute-sanitizer for the mistakes a GPU would punish but a CPU run would hide:
//   - races: two threads touching one shared element between the same two barriers, at least one
//     of them writing (decided from the barrier intervals, not from timing, so a race is found
//     whichever order the threads happened to run in);
//   - reads of a shared element no thread of the running block has written (shared memory starts
//     out undefined on a GPU, and keeps nothing from the previous block);
//   - shared indices out of bounds (per dimension);
//   - divergent barriers: a thread reaching __syncthreads() after another thread of its block
//     has returned, or returning while others wait at one (undefined behaviour on a GPU; here
//     the waiting threads are released, so the run ends instead of hanging);
//   - launch shapes a GPU refuses (more than 1024 threads per block, block.z > 64,
//     grid.y or grid.z > 65535, an empty grid or block).
// launch() throws std::runtime_error (RuntimeError in Python) naming the first finding and the
// number of findings once the launch has finished. Global memory is not checked.
#pragma once

#if defined(__CUDACC__)
#error "cuda_emu.h is for host compilers only"
#endif

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
// Shared arrays must be declared with NAVCUDA_SHARED (checked views); a bare __shared__ fails to
// compile here with this name in the message.
#define __shared__ use_NAVCUDA_SHARED_to_declare_shared_arrays

struct dim3 {
  unsigned int x, y, z;
  constexpr dim3(unsigned int x_ = 1, unsigned int y_ = 1, unsigned int z_ = 1)
      : x(x_), y(y_), z(z_) {}
};

namespace navcuda_emu {

// ------------------------------------------------------------------ findings
struct Findings {
  std::mutex mutex;
  std::string first;
  std::size_t count = 0;
};

inline Findings& findings() {
  static Findings f;
  return f;
}

inline void report(const std::string& message) {
  Findings& f = findings();
  std::lock_guard<std::mutex> lock(f.mutex);
  if (f.count++ == 0) f.first = message;
}

// ------------------------------------------------------------------ per-thread state
inline thread_local dim3 tls_thread_idx;
inline thread_local dim3 tls_block_idx;
inline thread_local dim3 tls_block_dim;
inline thread_local dim3 tls_grid_dim;
inline thread_local std::uint64_t tls_block_serial = 0;  // unique per block run
inline thread_local std::uint32_t tls_interval = 0;      // barriers this thread has passed
inline thread_local class Barrier* tls_barrier = nullptr;

inline std::string str(dim3 d) {
  std::ostringstream os;
  os << '(' << d.x << ", " << d.y << ", " << d.z << ')';
  return os.str();
}

inline std::uint32_t linear_thread() {
  return (tls_thread_idx.z * tls_block_dim.y + tls_thread_idx.y) * tls_block_dim.x +
         tls_thread_idx.x;
}

inline dim3 thread_of(std::uint32_t linear) {
  const dim3 b = tls_block_dim;
  return dim3(linear % b.x, (linear / b.x) % b.y, linear / (b.x * b.y));
}

// ------------------------------------------------------------------ barrier
// Reusable barrier for the threads of one block (std::barrier needs C++20) that also notices
// divergence: threads that returned are counted out, and a barrier reached after (or waiting
// during) a return is reported.
class Barrier {
 public:
  explicit Barrier(std::size_t count) : count_(count) {}

  void wait() {
    std::unique_lock<std::mutex> lock(mutex_);
    if (exited_ > 0)
      divergence("reached __syncthreads() after another thread of the block returned");
    const std::size_t gen = generation_;
    if (++waiting_ >= count_) {
      release();
    } else {
      cv_.wait(lock, [&] { return gen != generation_; });
    }
  }

  // Called when a thread's kernel body returns.
  void exit() {
    std::lock_guard<std::mutex> lock(mutex_);
    ++exited_;
    --count_;
    if (waiting_ > 0) {
      divergence("returned while other threads of the block wait at __syncthreads()");
      if (waiting_ >= count_) release();
    }
  }

 private:
  void release() {
    waiting_ = 0;
    ++generation_;
    cv_.notify_all();
  }

  void divergence(const char* what) {
    if (reported_) return;
    reported_ = true;
    report("divergent __syncthreads() in block " + str(tls_block_idx) + ": thread " +
           str(tls_thread_idx) + " " + what +
           " (every thread of a block must reach the same barriers)");
  }

  std::mutex mutex_;
  std::condition_variable cv_;
  std::size_t count_;
  std::size_t waiting_ = 0;
  std::size_t exited_ = 0;
  std::size_t generation_ = 0;
  bool reported_ = false;
};

inline void syncthreads() {
  tls_barrier->wait();
  ++tls_interval;
}

// ------------------------------------------------------------------ checked shared arrays
// Access history of one shared element within the running block.
struct Access {
  std::uint64_t block = 0;  // block serial the history belongs to (older: nothing written yet)
  bool written = false, read = false;
  std::uint32_t write_interval = 0, writer = 0;
  std::uint32_t read_interval = 0, reader = 0;  // reader == kMany: several threads
};
constexpr std::uint32_t kMany = 0xffffffffu;

template <typename T, std::size_t N>
class SharedStorage {
 public:
  explicit SharedStorage(const char* name) : name_(name) {}

  T load(std::size_t i) {
    std::lock_guard<std::mutex> lock(mutex_);
    Access& a = fresh(i);
    const std::uint32_t me = linear_thread();
    if (!a.written) {
      finding(i, "read before any thread of the block wrote it (shared memory starts undefined)");
    } else if (a.write_interval == tls_interval && a.writer != me) {
      finding(i, "read by thread " + str(tls_thread_idx) + " and written by thread " +
                     str(thread_of(a.writer)) + " between the same two barriers");
    }
    if (a.read && a.read_interval == tls_interval) {
      if (a.reader != me) a.reader = kMany;
    } else {
      a.read = true;
      a.read_interval = tls_interval;
      a.reader = me;
    }
    return data_[i];
  }

  void store(std::size_t i, T value) {
    std::lock_guard<std::mutex> lock(mutex_);
    Access& a = fresh(i);
    const std::uint32_t me = linear_thread();
    if (a.written && a.write_interval == tls_interval && a.writer != me) {
      finding(i, "written by threads " + str(thread_of(a.writer)) + " and " + str(tls_thread_idx) +
                     " between the same two barriers");
    } else if (a.read && a.read_interval == tls_interval && a.reader != me) {
      finding(i, "written by thread " + str(tls_thread_idx) + " and read by " +
                     (a.reader == kMany ? std::string("other threads")
                                        : "thread " + str(thread_of(a.reader))) +
                     " between the same two barriers");
    }
    a.written = true;
    a.write_interval = tls_interval;
    a.writer = me;
    data_[i] = value;
  }

  void out_of_bounds(long long index, std::size_t extent, std::size_t base) {
    std::ostringstream os;
    os << "shared array '" << name_ << "' in block " << str(tls_block_idx) << ": thread "
       << str(tls_thread_idx) << " indexed " << index << " in a dimension of extent " << extent
       << " (flat offset " << base << ")";
    report(os.str());
  }

 private:
  Access& fresh(std::size_t i) {
    Access& a = access_[i];
    if (a.block != tls_block_serial) a = Access{tls_block_serial};
    return a;
  }

  void finding(std::size_t i, const std::string& what) {
    std::ostringstream os;
    os << "shared array '" << name_ << "' element " << i << " in block " << str(tls_block_idx)
       << ": " << what;
    report(os.str());
  }

  std::mutex mutex_;
  const char* name_;
  T data_[N] = {};
  Access access_[N] = {};
};

// One element: reads and writes go through the storage's checks.
template <typename T, std::size_t N>
class SharedElement {
 public:
  SharedElement(SharedStorage<T, N>* s, std::size_t i) : s_(s), i_(i) {}
  operator T() const { return s_->load(i_); }  // NOLINT: implicit, as a T lvalue reads
  SharedElement& operator=(T v) {
    s_->store(i_, v);
    return *this;
  }
  SharedElement& operator=(const SharedElement& other) { return *this = T(other); }
  SharedElement& operator+=(T v) { return *this = s_->load(i_) + v; }
  SharedElement& operator-=(T v) { return *this = s_->load(i_) - v; }
  SharedElement& operator*=(T v) { return *this = s_->load(i_) * v; }

 private:
  SharedStorage<T, N>* s_;
  std::size_t i_;
};

// View of a (sub)array of type A (T[n0][n1]...) starting at flat offset `base`.
template <typename A, typename T, std::size_t N>
class SharedView {
  using Sub = std::remove_extent_t<A>;
  static constexpr std::size_t kExtent = std::extent_v<A>;
  static constexpr std::size_t kStride = sizeof(Sub) / sizeof(T);

 public:
  SharedView(SharedStorage<T, N>* s, std::size_t base) : s_(s), base_(base) {}

  auto operator[](long long i) const {
    if (i < 0 || static_cast<std::size_t>(i) >= kExtent) {
      s_->out_of_bounds(i, kExtent, base_);
      i = 0;  // keep running on a valid element; the launch fails afterwards
    }
    const std::size_t at = base_ + static_cast<std::size_t>(i) * kStride;
    if constexpr (std::rank_v<Sub> == 0) {
      return SharedElement<T, N>(s_, at);
    } else {
      return SharedView<Sub, T, N>(s_, at);
    }
  }

 private:
  SharedStorage<T, N>* s_;
  std::size_t base_;
};

template <typename A>
using StorageOf =
    SharedStorage<std::remove_all_extents_t<A>, sizeof(A) / sizeof(std::remove_all_extents_t<A>)>;

template <typename A>
SharedView<A, std::remove_all_extents_t<A>, sizeof(A) / sizeof(std::remove_all_extents_t<A>)> view(
    StorageOf<A>& storage) {
  return {&storage, 0};
}

// ------------------------------------------------------------------ launch
inline std::mutex& launch_mutex() {
  static std::mutex m;
  return m;
}

inline std::atomic<std::uint64_t>& block_counter() {
  static std::atomic<std::uint64_t> counter{0};
  return counter;
}

// Throws if the launch shape is one a GPU refuses.
inline void check_shape(const char* name, dim3 grid, dim3 block) {
  const unsigned long long threads = 1ULL * block.x * block.y * block.z;
  const char* bad = nullptr;
  if (grid.x == 0 || grid.y == 0 || grid.z == 0 || threads == 0)
    bad = "an empty grid or block";
  else if (threads > 1024)
    bad = "more than 1024 threads per block";
  else if (block.z > 64)
    bad = "block.z > 64";
  else if (grid.y > 65535 || grid.z > 65535)
    bad = "grid.y or grid.z > 65535";
  if (bad) {
    throw std::runtime_error(std::string("cuda_emu: ") + name + " (grid " + str(grid) + ", block " +
                             str(block) + "): invalid launch shape: " + bad);
  }
}

// Run kernel(args...) over grid x block, like kernel<<<grid, block>>>(args...) followed by a
// device synchronisation, then throw if the checks found anything (name: the kernel, for the
// message). Kernels do not throw.
template <typename Kernel, typename... Args>
void launch(const char* name, dim3 grid, dim3 block, Kernel kernel, Args... args) {
  std::lock_guard<std::mutex> guard(launch_mutex());
  check_shape(name, grid, block);
  {
    Findings& f = findings();
    std::lock_guard<std::mutex> lock(f.mutex);
    f.first.clear();
    f.count = 0;
  }
  const std::size_t threads = std::size_t(block.x) * block.y * block.z;
  for (unsigned int bz = 0; bz < grid.z; ++bz) {
    for (unsigned int by = 0; by < grid.y; ++by) {
      for (unsigned int bx = 0; bx < grid.x; ++bx) {
        const std::uint64_t serial = ++block_counter();
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
                tls_block_serial = serial;
                tls_interval = 0;
                tls_barrier = &barrier;
                kernel(args...);
                barrier.exit();
              });
            }
          }
        }
        for (auto& t : pool) t.join();
      }
    }
  }
  Findings& f = findings();
  std::lock_guard<std::mutex> lock(f.mutex);
  if (f.count > 0) {
    std::ostringstream os;
    os << "cuda_emu: " << name << " (grid " << str(grid) << ", block " << str(block)
       << "): " << f.first;
    if (f.count > 1) os << " [" << f.count - 1 << " more finding(s)]";
    throw std::runtime_error(os.str());
  }
}

}  // namespace navcuda_emu

#define threadIdx (::navcuda_emu::tls_thread_idx)
#define blockIdx (::navcuda_emu::tls_block_idx)
#define blockDim (::navcuda_emu::tls_block_dim)
#define gridDim (::navcuda_emu::tls_grid_dim)
#define __syncthreads() (::navcuda_emu::syncthreads())

// NAVCUDA_SHARED(T, name, [n0][n1]...): one storage per kernel instantiation (function-local
// static), reached through a checked view named `name`.
#define NAVCUDA_SHARED(T, name, dims)                             \
  static ::navcuda_emu::StorageOf<T dims> name##_storage_(#name); \
  const auto name = ::navcuda_emu::view<T dims>(name##_storage_)
