// bias_act: y = clamp(act(x + b[c]) * gain, -clamp, clamp), and its gradient.
//
// Memory layout (contiguous x viewed as [outer, channels, inner]): the bias index of flat element
// i is (i / inner) % channels. `clamp < 0` means no clamping (the NVlabs convention).
//
// The element-wise math below is shared by the CPU kernel (bias_act.cpp) and the CUDA kernels
// (bias_act_kernels.cuh), so both paths compute exactly the same expression.
#pragma once

#include <cstdint>
#include <type_traits>

#include "common.h"

namespace navcuda {

enum class Act : int { kLinear = 0, kLrelu = 1 };

// Branch-free act(v) * gain, clamp and gradient: both arms are computed before each select, so
// GCC can if-convert and vectorise the loops (a conditional `v * alpha` is not speculated under
// -ftrapping-math and leaves a branch per element: ~10x slower on random signs, measured). The
// CPU sources also relax -ftrapping-math (see bias_act.cpp); values are unchanged.
template <typename T, int kAct>
NAVCUDA_HD T bias_act_value(T v, T alpha, T gain) {
  if (kAct == static_cast<int>(Act::kLrelu)) {
    const T neg = v * alpha;
    v = v > T(0) ? v : neg;
  }
  return v * gain;
}

// Clamp to [-c, c]; NaN stays NaN (like torch.clamp).
template <typename T>
NAVCUDA_HD T bias_act_clamp(T v, T c) {
  const T lo = -c;
  T r = v > c ? c : v;
  return v < lo ? lo : r;
}

// dx for one element from dy and the saved output y. The slope of lrelu is read from the sign of
// the pre-activation, which equals the sign of y * gain (gain may be negative). Clamped outputs
// (|y| >= clamp) get zero gradient, as in NVlabs stylegan2-ada.
template <typename T, int kAct, bool kClamp>
NAVCUDA_HD T bias_act_grad_value(T dy, T y, T alpha, T gain, T clamp) {
  T g = dy * gain;
  if (kAct == static_cast<int>(Act::kLrelu)) {
    const T ga = g * alpha;
    g = (y * gain > T(0)) ? g : ga;
  }
  if (kClamp) {
    const bool inside = (y > -clamp) & (y < clamp);
    g = inside ? g : T(0);
  }
  return g;
}

// The part of an output y that its gradient reads, in one byte: bit 0 = positive lrelu slope
// (y * gain > 0), bit 1 = inside the clamp (|y| < clamp; always set without one). Saving this
// instead of y keeps a quarter of the memory for the backward; the gradient is the same.
template <typename T, int kAct, bool kClamp>
NAVCUDA_HD std::uint8_t bias_act_grad_code(T y, T gain, T clamp) {
  const bool pos = kAct == static_cast<int>(Act::kLrelu) ? (y * gain > T(0)) : true;
  const bool inside = kClamp ? ((y > -clamp) & (y < clamp)) : true;
  return static_cast<std::uint8_t>(pos) | static_cast<std::uint8_t>(inside << 1);
}

// bias_act_grad_value from the code of bias_act_grad_code instead of y.
template <typename T, int kAct, bool kClamp>
NAVCUDA_HD T bias_act_grad_from_code(T dy, std::uint8_t code, T alpha, T gain) {
  T g = dy * gain;
  if (kAct == static_cast<int>(Act::kLrelu)) {
    const T ga = g * alpha;
    g = (code & 1) ? g : ga;
  }
  if (kClamp) g = (code & 2) ? g : T(0);
  return g;
}

// Turn the runtime (act, has_clamp) into compile-time constants: calls
// fn(std::integral_constant<int, act>{}, std::bool_constant<has_clamp>{}). Host code only.
template <typename Fn>
inline void dispatch_act(int act, bool has_clamp, Fn&& fn) {
  using Linear = std::integral_constant<int, static_cast<int>(Act::kLinear)>;
  using Lrelu = std::integral_constant<int, static_cast<int>(Act::kLrelu)>;
  if (act == static_cast<int>(Act::kLinear)) {
    has_clamp ? fn(Linear{}, std::true_type{}) : fn(Linear{}, std::false_type{});
  } else if (act == static_cast<int>(Act::kLrelu)) {
    has_clamp ? fn(Lrelu{}, std::true_type{}) : fn(Lrelu{}, std::false_type{});
  } else {
    throw_invalid(
        NAVCUDA_MSG("bias_act: unknown activation code " << act << " (0=linear, 1=lrelu)"));
  }
}

// ----------------------------------------------------------------- CPU entry points (bias_act.cpp)
// Buffers (common.h): contiguous arrays of `dtype`; b may be absent (no bias).
void bias_act_cpu(Buffer x, Buffer b, Buffer y, int64_t outer, int64_t channels, int64_t inner,
                  int dtype, int act, double alpha, double gain, double clamp);
void bias_act_grad_cpu(Buffer dy, Buffer y, Buffer dx, int64_t n, int dtype, int act, double alpha,
                       double gain, double clamp);

#if defined(NAVCUDA_WITH_CUDA) || defined(NAVCUDA_CUDA_EMU)
// ----------------------------------------------------------------- CUDA entry points (bias_act.cu)
// Enqueue on `stream` (a cudaStream_t passed as an integer; 0 = legacy default stream). The caller
// makes the tensors' device current. Errors from the launch are thrown as std::runtime_error.
void bias_act_cuda(Buffer x, Buffer b, Buffer y, int64_t outer, int64_t channels, int64_t inner,
                   int dtype, int act, double alpha, double gain, double clamp,
                   std::uintptr_t stream);
void bias_act_grad_cuda(Buffer dy, Buffer y, Buffer dx, int64_t n, int dtype, int act, double alpha,
                        double gain, double clamp, std::uintptr_t stream);
#endif

// Shared argument checks (common.h's helpers; throw std::invalid_argument with a clear message),
// inline so that navcuda._C_emu, which compiles the CUDA launchers against the emulator, shares
// them.
inline void check_act(const char* op, int act) {
  NAVCUDA_CHECK(act == static_cast<int>(Act::kLinear) || act == static_cast<int>(Act::kLrelu),
                op << ": unknown activation code " << act << " (0=linear, 1=lrelu)");
}

// x and y: [outer, channels, inner]; b: [channels] or absent. Returns the element count.
inline int64_t bias_act_check_args(const char* op, const Buffer& x, const Buffer& b,
                                   const Buffer& y, int64_t outer, int64_t channels, int64_t inner,
                                   int dtype, int act) {
  check_dims(op, {{"outer", outer}, {"channels", channels}, {"inner", inner}});
  check_act(op, act);
  const int es = dtype_bytes(dtype, op);
  const char* shape = "[outer, channels, inner]";
  check_buffer(op, "x", x, es, shape, {outer, channels, inner});
  check_buffer(op, "b", b, es, "[channels]", {channels}, Need::kOptional);
  return check_buffer(op, "y", y, es, shape, {outer, channels, inner});
}

// dy, y and dx: [n].
inline void bias_act_grad_check_args(const char* op, const Buffer& dy, const Buffer& y,
                                     const Buffer& dx, int64_t n, int dtype, int act) {
  check_dims(op, {{"n", n}});
  check_act(op, act);
  const int es = dtype_bytes(dtype, op);
  check_buffer(op, "dy", dy, es, "[n]", {n});
  check_buffer(op, "y", y, es, "[n]", {n});
  check_buffer(op, "dx", dx, es, "[n]", {n});
}

}  // namespace navcuda
