// Shared definitions for every navcuda kernel: dtype codes (mirrored by navcuda/ops/_native.py,
// which reads them from `_C.dtype_codes()`), error macros and small helpers.
//
// This header is included by host C++ (.cpp) and by nvcc (.cu); it must not include pybind11 or
// any CUDA header, so that kernel headers stay compilable as plain C++.
#pragma once

#include <charconv>
#include <cstdint>
#include <initializer_list>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>

#if defined(__CUDACC__)
#define NAVCUDA_HD __host__ __device__ __forceinline__
#else
#define NAVCUDA_HD inline
#endif

namespace navcuda {

// Element type of a buffer crossing from Python. Values are part of the Python <-> C++ contract.
enum class DType : int {
  kFloat32 = 0,
  kFloat64 = 1,
  kFloat16 = 2,  // reserved: no kernel supports it yet
};

inline const char* dtype_name(DType d) {
  switch (d) {
    case DType::kFloat32:
      return "float32";
    case DType::kFloat64:
      return "float64";
    case DType::kFloat16:
      return "float16";
  }
  return "unknown";
}

// Thrown for bad arguments; pybind11 translates std::invalid_argument to ValueError.
[[noreturn]] inline void throw_invalid(const std::string& msg) { throw std::invalid_argument(msg); }

// Thrown for failures while running (CUDA errors, ...): becomes RuntimeError in Python.
[[noreturn]] inline void throw_runtime(const std::string& msg) { throw std::runtime_error(msg); }

// Message text from `<<`-joined parts (strings, characters, numbers) without iostreams.
// Numbers print as a default std::ostream would (integers in decimal; floating point like %g,
// 6 significant digits; bool as 1 / 0), but no locale or stream state is involved: on a machine
// whose toolchain linked a private copy of libstdc++ into the module beside the process's
// shared one, std::ostringstream looked its num_put facet up with one copy's facet id in a
// locale built by the other, and called a codecvt facet instead (segfault, seen on an H200
// lease's image, GCC 13.3, 2026-11-28).
class Msg {
 public:
  Msg& operator<<(const char* s) {
    text_ += s != nullptr ? s : "(null)";
    return *this;
  }
  Msg& operator<<(std::string_view s) {
    text_ += s;
    return *this;
  }
  Msg& operator<<(const std::string& s) {
    text_ += s;
    return *this;
  }
  Msg& operator<<(char c) {
    text_ += c;
    return *this;
  }
  Msg& operator<<(bool b) {
    text_ += b ? '1' : '0';
    return *this;
  }
  template <typename T, std::enable_if_t<std::is_arithmetic_v<T>, int> = 0>
  Msg& operator<<(T v) {
    char buf[64];
    std::to_chars_result r;
    if constexpr (std::is_floating_point_v<T>) {
      r = std::to_chars(buf, buf + sizeof(buf), v, std::chars_format::general, 6);
    } else {
      r = std::to_chars(buf, buf + sizeof(buf), v);
    }
    text_.append(buf, r.ptr);
    return *this;
  }
  const std::string& str() const { return text_; }

 private:
  std::string text_;
};

// Build a message from `<<`-joined parts: NAVCUDA_MSG("n=" << n).
#define NAVCUDA_MSG(parts)      \
  ([&]() -> std::string {       \
    ::navcuda::Msg navcuda_msg; \
    navcuda_msg << parts;       \
    return navcuda_msg.str();   \
  }())

// Argument check on the host: NAVCUDA_CHECK(n >= 0, "bias_act: n must be >= 0, got " << n);
#define NAVCUDA_CHECK(cond, parts)                             \
  do {                                                         \
    if (!(cond)) ::navcuda::throw_invalid(NAVCUDA_MSG(parts)); \
  } while (0)

// Pointer received from Python as an integer (tensor.data_ptr()).
template <typename T>
inline T* as_ptr(std::uintptr_t p) {
  return reinterpret_cast<T*>(p);
}

[[noreturn]] inline void throw_bad_dtype(int dtype, const char* op) {
  throw_invalid(NAVCUDA_MSG(op << ": unsupported dtype code " << dtype
                               << " (native kernels support float32=0 and float64=1); "
                                  "use impl='ref' for other dtypes"));
}

// Call `fn.template operator()<scalar_t>()` for the dtype code, or throw a clear error.
template <typename Fn>
inline void dispatch_float(int dtype, const char* op, Fn&& fn) {
  switch (static_cast<DType>(dtype)) {
    case DType::kFloat32:
      fn(float{});
      return;
    case DType::kFloat64:
      fn(double{});
      return;
    default:
      throw_bad_dtype(dtype, op);
  }
}

// ------------------------------------------------------------------------ argument checks
// Every native entry point (the CPU ones, the CUDA launchers and the emulator's *_emu functions)
// checks all of its arguments before it touches memory, through one inline <op>_check_args per
// op in the op's header, built from the helpers below: sizes >= 0, element counts free of
// overflow, every buffer exactly as large as the sizes say, index values in range. They throw
// std::invalid_argument (ValueError in Python) naming the entry point and the mismatch, so that no
// call from Python can make a kernel read or write outside its tensors. (What cannot be checked
// here: that a buffer's address and size describe real memory; navcuda.ops._native.buffer takes
// both from one tensor.)

// A buffer crossing from Python: the address of a contiguous tensor's data and its size in bytes
// (navcuda.ops._native.buffer, a tuple (address, bytes)); None arrives as {0, 0}, an absent
// optional buffer. Kernels take `ptr`; 0 means absent.
struct Buffer {
  std::uintptr_t ptr = 0;
  int64_t bytes = 0;
  bool present() const { return ptr != 0; }
};

template <typename T>
inline T* as_ptr(const Buffer& b) {
  return reinterpret_cast<T*>(b.ptr);
}

// Element counts (and each partial product of their factors) stay below this, so that no index
// arithmetic of a kernel (offsets, sums of two offsets, byte counts) overflows int64.
constexpr int64_t kMaxElements = int64_t(1) << 58;

// A named size, for messages: {"channels", channels}.
struct Dim {
  const char* name;
  int64_t value;
};

// Every size >= 0.
inline void check_dims(const char* op, std::initializer_list<Dim> dims) {
  for (const Dim& d : dims) {
    NAVCUDA_CHECK(d.value >= 0, op << ": " << d.name << " must be >= 0, got " << d.value);
  }
}

// The element count of an array of `dims` (0 if one is 0), after checking that the product of
// its non-zero sizes stays within kMaxElements (`what` names the array in the message).
inline int64_t checked_count(const char* op, const char* what,
                             std::initializer_list<int64_t> dims) {
  int64_t nonzero = 1;
  bool empty = false;
  for (int64_t d : dims) {
    NAVCUDA_CHECK(d >= 0, op << ": " << what << " has a negative size " << d);
    if (d == 0) {
      empty = true;
      continue;
    }
    NAVCUDA_CHECK(nonzero <= kMaxElements / d,
                  op << ": " << what << " is too large (more than 2^58 elements)");
    nonzero *= d;
  }
  return empty ? 0 : nonzero;
}

// Bytes per element of the dtype code (throws for codes without kernels, like dispatch_float).
inline int dtype_bytes(int dtype, const char* op) {
  switch (static_cast<DType>(dtype)) {
    case DType::kFloat32:
      return 4;
    case DType::kFloat64:
      return 8;
    default:
      throw_bad_dtype(dtype, op);
  }
}

enum class Need { kRequired, kOptional };

// `buf` holds exactly an array `shape` (e.g. "[outer, channels, inner]") of `dims` with
// `elem_bytes` per element, or, kOptional, is absent ({0, 0}). Returns the element count.
inline int64_t check_buffer(const char* op, const char* name, const Buffer& buf, int elem_bytes,
                            const char* shape, std::initializer_list<int64_t> dims,
                            Need need = Need::kRequired) {
  const int64_t count = checked_count(op, name, dims);
  if (need == Need::kOptional && !buf.present()) {
    NAVCUDA_CHECK(buf.bytes == 0,
                  op << ": " << name << " has a null address but " << buf.bytes << " bytes");
    return count;
  }
  NAVCUDA_CHECK(buf.bytes == count * elem_bytes,
                op << ": " << name << " must hold " << shape << " = " << count << " elements of "
                   << elem_bytes << " bytes (" << count * elem_bytes << " bytes), got " << buf.bytes
                   << " bytes (" << buf.bytes / elem_bytes << " elements)");
  NAVCUDA_CHECK(count == 0 || buf.present(), op << ": " << name << " is null but not empty");
  return count;
}

// The n int64 values of `index` (host memory) lie in [0, rows).
inline void check_index_values(const char* op, const char* name, const long long* index, int64_t n,
                               int64_t rows) {
  if (n == 0) return;
  long long lo = index[0], hi = index[0];
  for (int64_t i = 1; i < n; ++i) {
    lo = index[i] < lo ? index[i] : lo;
    hi = index[i] > hi ? index[i] : hi;
  }
  NAVCUDA_CHECK(lo >= 0 && hi < rows, op << ": " << name << " values must lie in [0, " << rows
                                         << "), got range [" << lo << ", " << hi << "]");
}

}  // namespace navcuda
