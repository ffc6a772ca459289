// Shared definitions for every navcuda kernel: dtype codes (mirrored by navcuda/ops/_native.py,
// which reads them from `_C.dtype_codes()`), error macros and small helpers.
//
// This header is included by host C++ (.cpp) and by nvcc (.cu); it must not include pybind11 or
// any CUDA header, so that kernel headers stay compilable as plain C++.
#pragma once

#include <charconv>
#include <cstdint>
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
      throw_invalid(NAVCUDA_MSG(op << ": unsupported dtype code " << dtype
                                   << " (native kernels support float32=0 and float64=1); "
                                      "use impl='ref' for other dtypes"));
  }
}

}  // namespace navcuda
