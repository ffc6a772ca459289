// A tiny CUDA emulation for host C++: compile __global__ kernel bodies (csrc/*_kernels.cuh) and
// their launchers (csrc/*.cu, through cuda_launch.cuh's launch_kernel) with g++ and run them on
// the CPU, so they can be tested on machines without a GPU (test-only module navcuda._C_emu,
// csrc/emu/). Supports what the kernel style guide allows: blockIdx, threadIdx, blockDim,
// gridDim, __syncthreads() and shared arrays declared with NAVCUDA_SHARED(T, name, [N]...)
// (kernel_shared.cuh), plain arithmetic; launches through launch_kernel (not <<<>>>), streams
// accepted and ignored (every launch completes before it returns).
//
// Semantics: blocks run one after another; the threads of a block are fibers (ucontext) run
// round-robin on the launching thread: each runs until it reaches __syncthreads() or returns,
// and the next barrier interval starts once every thread has arrived, so __syncthreads() is a
// true barrier at a fraction of an OS thread's cost (production launch shapes, 256-thread
// blocks, run in tests). When thread (0, 0, 0) returns without reaching a barrier the block's
// other threads run as plain calls (grid-stride kernels: ~30 ns per thread). Shared arrays
// are function-local statics (one block runs at a time: launches are serialised by a global
// mutex), reached through checked views that play the part of compute-sanitizer for the
// mistakes a GPU would punish but a sequential run would hide:
//   - races: two threads touching one shared element between the same two barriers, at least one
//     of them writing (decided from the barrier intervals, not from the order the fibers ran in);
//   - reads of a shared element no thread of the running block has written (shared memory starts
//     out undefined on a GPU, and keeps nothing from the previous block);
//   - shared indices out of bounds (per dimension);
//   - divergent barriers: some threads of a block returning while others wait at
//     __syncthreads() (undefined behaviour on a GPU; here the waiting threads go on);
//   - launch shapes a GPU refuses (more than 1024 threads per block, block.z > 64,
//     grid.y or grid.z > 65535, an empty grid or block).
// launch() throws std::runtime_error (RuntimeError in Python) naming the first finding and the
// number of findings once the launch has finished. Global memory is checked by building this
// module with AddressSanitizer (.ci/sanitize).
#pragma once

#if defined(__CUDACC__)
#error "cuda_emu.h is for host compilers only"
#endif

#include <ucontext.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "common.h"  // navcuda::Msg: messages are built without iostreams (see there)

// Tells shared headers (cuda_launch.cuh, kernel_shared.cuh, the *_cuda declarations) that they
// are compiled for the emulator.
#define NAVCUDA_CUDA_EMU 1

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
// Shared arrays must be declared with NAVCUDA_SHARED (checked views); a bare __shared__ fails to
// compile here with this name in the message.
#define __shared__ use_NAVCUDA_SHARED_to_declare_shared_arrays

// Streams are accepted and ignored: every emulated launch completes before it returns.
using cudaStream_t = struct CUstream_st*;

struct dim3 {
  unsigned int x, y, z;
  constexpr dim3(unsigned int x_ = 1, unsigned int y_ = 1, unsigned int z_ = 1)
      : x(x_), y(y_), z(z_) {}
};

namespace navcuda_emu {

// ------------------------------------------------------------------ findings
struct Findings {
  std::string first;
  std::size_t count = 0;
};

inline Findings& findings() {
  static Findings f;
  return f;
}

inline void report(const std::string& message) {
  Findings& f = findings();
  if (f.count++ == 0) f.first = message;
}

inline std::string str(dim3 d) {
  ::navcuda::Msg os;
  os << '(' << d.x << ", " << d.y << ", " << d.z << ')';
  return os.str();
}

// ------------------------------------------------------------------ fibers
struct Fiber {
  enum class State { kReady, kAtBarrier, kDone };
  ucontext_t context;
  dim3 thread_idx;
  std::uint32_t linear = 0;    // linear thread index in the block
  std::uint32_t interval = 0;  // barriers this thread has passed
  State state = State::kReady;
  bool direct = false;  // run as a plain call (its block has no barrier; see run_block)
};

// The block being run on this (launching) thread.
struct BlockRun {
  ucontext_t scheduler;
  std::vector<Fiber> fibers;
  Fiber* current = nullptr;
  dim3 block_idx, block_dim, grid_dim;
  std::uint64_t serial = 0;  // unique per block run (shared-memory histories key on it)
  void (*body)(void*) = nullptr;
  void* body_arg = nullptr;
};

inline thread_local BlockRun* tls_run = nullptr;

inline BlockRun& block_run() { return *tls_run; }
inline Fiber& fiber() { return *tls_run->current; }

inline dim3 thread_of(std::uint32_t linear) {
  const dim3 b = tls_run->block_dim;
  return dim3(linear % b.x, (linear / b.x) % b.y, linear / (b.x * b.y));
}

inline void fiber_entry() {
  BlockRun& r = block_run();
  r.body(r.body_arg);
  r.current->state = Fiber::State::kDone;
  // returning resumes r.scheduler (uc_link)
}

inline void syncthreads() {
  BlockRun& r = block_run();
  Fiber& f = *r.current;
  if (f.direct) {  // thread (0, 0, 0) returned without reaching a barrier
    report("divergent __syncthreads() in block " + str(r.block_idx) + ": thread " +
           str(f.thread_idx) + " reached a barrier that thread (0, 0, 0) returned without " +
           "reaching (every thread of a block must reach the same barriers)");
    return;
  }
  f.state = Fiber::State::kAtBarrier;
  swapcontext(&f.context, &r.scheduler);
  ++f.interval;
}

// Stacks for the fibers, reused across launches (pages are touched only as used).
constexpr std::size_t kFiberStack = 128 * 1024;

inline char* fiber_stack(std::size_t i) {
  static std::vector<std::unique_ptr<char[]>> stacks;
  while (stacks.size() <= i) stacks.emplace_back(new char[kFiberStack]);
  return stacks[i].get();
}

inline void start_fiber(BlockRun& r, Fiber& f, std::size_t i) {
  getcontext(&f.context);
  f.context.uc_stack.ss_sp = fiber_stack(i);
  f.context.uc_stack.ss_size = kFiberStack;
  f.context.uc_link = &r.scheduler;
  makecontext(&f.context, &fiber_entry, 0);
}

// Runs body(arg) as every thread of one block: fibers round-robin, one barrier interval at a
// time. Thread (0, 0, 0) runs first; if it returns without reaching a barrier, no correct kernel
// has one in this block, so the other threads run as plain calls (a grid-stride kernel's block
// costs no context switches), and one that does reach a barrier is reported as divergent.
inline void run_block(BlockRun& r, std::size_t threads) {
  if (r.fibers.size() != threads) r.fibers.resize(threads);  // reused across the launch's blocks
  for (std::size_t i = 0; i < threads; ++i) {
    Fiber& f = r.fibers[i];
    f.linear = static_cast<std::uint32_t>(i);
    f.thread_idx = thread_of(f.linear);
    f.interval = 0;
    f.state = Fiber::State::kReady;
    f.direct = false;
  }
  Fiber& first = r.fibers[0];
  start_fiber(r, first, 0);
  r.current = &first;
  swapcontext(&r.scheduler, &first.context);
  if (first.state == Fiber::State::kDone) {
    for (std::size_t i = 1; i < threads; ++i) {
      Fiber& f = r.fibers[i];
      f.direct = true;
      r.current = &f;
      r.body(r.body_arg);
      f.state = Fiber::State::kDone;
    }
    r.current = nullptr;
    return;
  }
  for (std::size_t i = 1; i < threads; ++i) start_fiber(r, r.fibers[i], i);
  bool reported = false;
  for (;;) {
    for (Fiber& f : r.fibers) {
      if (f.state != Fiber::State::kReady) continue;
      r.current = &f;
      swapcontext(&r.scheduler, &f.context);  // back at a barrier or after the body returned
    }
    std::size_t waiting = 0;
    const Fiber* done = nullptr;
    const Fiber* waiter = nullptr;
    for (const Fiber& f : r.fibers) {
      if (f.state == Fiber::State::kAtBarrier) {
        ++waiting;
        waiter = &f;
      } else {
        done = &f;
      }
    }
    if (waiting == 0) break;
    if (done && !reported) {
      reported = true;
      report("divergent __syncthreads() in block " + str(r.block_idx) + ": thread " +
             str(done->thread_idx) + " returned while thread " + str(waiter->thread_idx) +
             " waits at a barrier (every thread of a block must reach the same barriers)");
    }
    for (Fiber& f : r.fibers) {
      if (f.state == Fiber::State::kAtBarrier) f.state = Fiber::State::kReady;
    }
  }
  r.current = nullptr;
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
    Access& a = fresh(i);
    const Fiber& me = fiber();
    if (!a.written) {
      finding(i, "read before any thread of the block wrote it (shared memory starts undefined)");
    } else if (a.write_interval == me.interval && a.writer != me.linear) {
      finding(i, "read by thread " + str(me.thread_idx) + " and written by thread " +
                     str(thread_of(a.writer)) + " between the same two barriers");
    }
    if (a.read && a.read_interval == me.interval) {
      if (a.reader != me.linear) a.reader = kMany;
    } else {
      a.read = true;
      a.read_interval = me.interval;
      a.reader = me.linear;
    }
    return data_[i];
  }

  void store(std::size_t i, T value) {
    Access& a = fresh(i);
    const Fiber& me = fiber();
    if (a.written && a.write_interval == me.interval && a.writer != me.linear) {
      finding(i, "written by threads " + str(thread_of(a.writer)) + " and " + str(me.thread_idx) +
                     " between the same two barriers");
    } else if (a.read && a.read_interval == me.interval && a.reader != me.linear) {
      finding(i, "written by thread " + str(me.thread_idx) + " and read by " +
                     (a.reader == kMany ? std::string("other threads")
                                        : "thread " + str(thread_of(a.reader))) +
                     " between the same two barriers");
    }
    a.written = true;
    a.write_interval = me.interval;
    a.writer = me.linear;
    data_[i] = value;
  }

  void out_of_bounds(long long index, std::size_t extent, std::size_t base) {
    ::navcuda::Msg os;
    os << "shared array '" << name_ << "' in block " << str(block_run().block_idx) << ": thread "
       << str(fiber().thread_idx) << " indexed " << index << " in a dimension of extent " << extent
       << " (flat offset " << base << ")";
    report(os.str());
  }

 private:
  Access& fresh(std::size_t i) {
    Access& a = access_[i];
    const std::uint64_t serial = block_run().serial;
    if (a.block != serial) a = Access{serial};
    return a;
  }

  void finding(std::size_t i, const std::string& what) {
    ::navcuda::Msg os;
    os << "shared array '" << name_ << "' element " << i << " in block "
       << str(block_run().block_idx) << ": " << what;
    report(os.str());
  }

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
// Launches run so far (tests check that a path went through the emulator).
inline std::uint64_t& launch_count() {
  static std::uint64_t count = 0;
  return count;
}

template <typename Kernel, typename... Args>
void launch(const char* name, dim3 grid, dim3 block, Kernel kernel, Args... args) {
  std::lock_guard<std::mutex> guard(launch_mutex());
  check_shape(name, grid, block);
  ++launch_count();
  findings() = Findings{};
  static std::uint64_t serial = 0;
  auto call = [&] { kernel(args...); };
  BlockRun r;
  r.block_dim = block;
  r.grid_dim = grid;
  r.body = [](void* arg) { (*static_cast<decltype(call)*>(arg))(); };
  r.body_arg = &call;
  BlockRun* const outer = tls_run;
  tls_run = &r;
  const std::size_t threads = std::size_t(block.x) * block.y * block.z;
  for (unsigned int bz = 0; bz < grid.z; ++bz) {
    for (unsigned int by = 0; by < grid.y; ++by) {
      for (unsigned int bx = 0; bx < grid.x; ++bx) {
        r.block_idx = dim3(bx, by, bz);
        r.serial = ++serial;
        run_block(r, threads);
      }
    }
  }
  tls_run = outer;
  const Findings f = findings();
  if (f.count > 0) {
    ::navcuda::Msg os;
    os << "cuda_emu: " << name << " (grid " << str(grid) << ", block " << str(block)
       << "): " << f.first;
    if (f.count > 1) os << " [" << f.count - 1 << " more finding(s)]";
    throw std::runtime_error(os.str());
  }
}

}  // namespace navcuda_emu

#define threadIdx (::navcuda_emu::fiber().thread_idx)
#define blockIdx (::navcuda_emu::block_run().block_idx)
#define blockDim (::navcuda_emu::block_run().block_dim)
#define gridDim (::navcuda_emu::block_run().grid_dim)
#define __syncthreads() (::navcuda_emu::syncthreads())

// NAVCUDA_SHARED(T, name, [n0][n1]...): one storage per kernel instantiation (function-local
// static), reached through a checked view named `name`.
#define NAVCUDA_SHARED(T, name, dims)                             \
  static ::navcuda_emu::StorageOf<T dims> name##_storage_(#name); \
  const auto name = ::navcuda_emu::view<T dims>(name##_storage_)
