// modconv: the native pieces of navcuda.ops.shifted_modconv around the (torch) convolutions.
//
// (1) Demodulation coefficients of a shifted, modulated kernel for a batch:
//       n[b,o]     = scale2 * sum_i s[b,i]^2 * (Q0[r0(b),o,i] + 2 t_b Q1[k(b),o,i] + t_b^2
//       Q2[k(b),o,i]) dcoef[b,o] = (n[b,o] + 1e-8)^(-1/2)
//     with Q0 = sum over kernel taps of W_b^2 ([1, out, in] shared or [B, out, in] per sample,
//     r0(b) = 0 or b), and for the split-by-linearity strategy Q1 = sum_taps W*Delta_k and
//     Q2 = sum_taps Delta_k^2 ([n_dir, out, in], k(b) = index[b], or b when index == 0).
//     Q1/Q2/t are all given or all absent (null pointers).
// (2) The epilogue over contiguous [B, C, HW] planes (or, with channels_last, [B, HW, C] rows):
//       z   = dcoef[b,c] * (y0 + t_b * y1) + ns * noise[b or 0, hw] + bias[c]
//       out = clamp(act(z) * gain, -clamp, clamp)                        (clamp < 0: no clamp)
//     y1/t, dcoef, noise (with ns, a pointer to one element), bias may each be absent.
//     Optionally also `mask`: bias_act_grad_code(out) of every output (bit 0: slope sign; bit
//     1: inside the clamp, kept only with a clamp), all the gradient needs of the output (a
//     32nd or a 16th of its float32 memory), packed along each row of `inner` outputs (an NCHW
//     plane of HW, or a channels-last pixel of C channels), rows padded to whole bytes:
//     modconv_mask_bits, modconv_mask_row_bytes, modconv_mask_code.
// (3) Their gradients (see the entry points below).
//
// The element-wise math is shared by the CPU kernels (modconv.cpp) and the CUDA kernel bodies
// (modconv_kernels.cuh), which also compile as host C++ through cuda_emu.h (navcuda._C_emu).
#pragma once

#include <cmath>
#include <cstdint>

#include "bias_act.h"  // Act, bias_act_value, bias_act_clamp, bias_act_grad_value, dispatch_act
#include "common.h"

namespace navcuda {

constexpr double kDemodEps = 1e-8;

template <typename T>
NAVCUDA_HD T modconv_rsqrt(T v) {
  using std::sqrt;
  return T(1) / sqrt(v);
}

// act / clamp / their gradient: bias_act_value, bias_act_clamp, bias_act_grad_value (bias_act.h).

// One element of the epilogue: clamp(act(d (y0 + t y1) + nz + bias) gain), with nz the noise
// term ns * noise; absent pieces are passed as d = 1, nz = 0, bias = 0 (exact no-ops).
template <typename T, int kAct, bool kClamp, bool kHasY1>
NAVCUDA_HD T modconv_epilogue_value(T y0, T y1, T tb, T d, T nz, T bias, T alpha, T gain, T clamp) {
  T v = y0;
  if (kHasY1) v += tb * y1;
  v = bias_act_value<T, kAct>(v * d + nz + bias, alpha, gain);
  return kClamp ? bias_act_clamp(v, clamp) : v;
}

// Packed masks: kBits = modconv_mask_bits(has_clamp) bits per code (the clamp bit only with a
// clamp); a row of `inner` codes takes modconv_mask_row_bytes(inner, kBits) bytes, code k in
// bits kBits*(k % (8/kBits)) .. of byte k / (8/kBits). Rows are padded to whole bytes, so that
// work split by rows (CPU tasks) or by bytes (CUDA threads) never shares a byte.
NAVCUDA_HD constexpr int modconv_mask_bits(bool has_clamp) { return has_clamp ? 2 : 1; }

template <bool kClamp>
constexpr int kModconvMaskBits = modconv_mask_bits(kClamp);

// Whether the epilogue's gradient reads the forward's mask (a slope or a clamp to undo).
template <int kAct, bool kClamp>
constexpr bool kModconvReadsMask = kClamp || kAct == static_cast<int>(Act::kLrelu);

NAVCUDA_HD long long modconv_mask_row_bytes(long long inner, int bits) {
  return (inner * bits + 7) / 8;
}

template <int kBits>
NAVCUDA_HD std::uint8_t modconv_mask_code(const std::uint8_t* row, long long k) {
  constexpr int kPerByte = 8 / kBits;
  return static_cast<std::uint8_t>((row[k / kPerByte] >> ((k % kPerByte) * kBits)) &
                                   ((1 << kBits) - 1));
}

// Row of Q0 used by sample b: the shared row 0 or the sample's own row.
NAVCUDA_HD long long modconv_q0_row(long long b, long long n0) { return n0 == 1 ? 0 : b; }

// Row of Q1/Q2 (direction) used by sample b.
NAVCUDA_HD long long modconv_dir_row(const long long* index, long long b) {
  return index ? index[b] : b;
}

// --------------------------------------------------------------------------------- CPU
// (modconv.cpp) All pointers: contiguous buffers of `dtype` (index: int64), 0 = absent.
void modconv_demod_cpu(std::uintptr_t s, std::uintptr_t q0, std::uintptr_t q1, std::uintptr_t q2,
                       std::uintptr_t t, std::uintptr_t index, std::uintptr_t dcoef, int64_t batch,
                       int64_t n_out, int64_t n_in, int64_t n0, int64_t n_dir, int dtype,
                       double scale2);

// Gradient of the demodulation from g = dL/d(dcoef) [B, out]:
//   dn[b,o] = -0.5 * scale2 * g * dcoef^3                    (written to `dn`, always)
//   ds[b,i] = 2 s[b,i] sum_o dn[b,o] (Q0 + 2 t Q1 + t^2 Q2)[o,i]                   (if ds != 0)
//   dt[b, p] = sum_o dn[b,o] sum_{i in tile p} s[b,i]^2 (2 Q1 + 2 t Q2)[o,i]        (if dt != 0)
//            partial sums over tiles of kModconvTile input channels, [B, modconv_demod_dt_parts]:
//            the caller sums the last dimension (the CUDA kernel reduces one tile per block)
//   dq0[r,o,i] = sum_{b: r0(b)=r} dn[b,o] s[b,i]^2                                 (if dq0 != 0)
//   dq1[k,o,i] = sum_{b: k(b)=k} 2 t_b dn[b,o] s[b,i]^2, dq2 likewise with t_b^2   (if != 0)
void modconv_demod_grad_cpu(std::uintptr_t g, std::uintptr_t dcoef, std::uintptr_t s,
                            std::uintptr_t q0, std::uintptr_t q1, std::uintptr_t q2,
                            std::uintptr_t t, std::uintptr_t index, std::uintptr_t dn,
                            std::uintptr_t ds, std::uintptr_t dt, std::uintptr_t dq0,
                            std::uintptr_t dq1, std::uintptr_t dq2, int64_t batch, int64_t n_out,
                            int64_t n_in, int64_t n0, int64_t n_dir, int dtype, double scale2);

// noise_bstride: elements between the noise planes of consecutive samples (0: one shared plane).
// mask: uint8 buffer of rows * modconv_mask_row_bytes(inner, modconv_mask_bits(clamp >= 0))
// packed codes (rows x inner = B*C x HW, or channels-last B*HW x C), written when non-zero.
void modconv_epilogue_cpu(std::uintptr_t y0, std::uintptr_t y1, std::uintptr_t t,
                          std::uintptr_t dcoef, std::uintptr_t noise, int64_t noise_bstride,
                          std::uintptr_t ns, std::uintptr_t bias, std::uintptr_t out,
                          std::uintptr_t mask, int64_t batch, int64_t channels, int64_t hw,
                          int channels_last, int dtype, int act, double alpha, double gain,
                          double clamp);

// Gradient of the epilogue from dout and the forward's mask (read only with lrelu or a clamp;
// may be 0 otherwise). With dz = dL/dz (bias_act_grad_from_code; y0 is read only for ddcoef
// and may be 0 without it, so that a caller whose dcoef needs no gradient need not keep y0
// alive for the backward):
//   dy0 = dz * dcoef (always), dy1 = dz * dcoef * t_b, dz itself         (each if its ptr != 0)
//   ddcoef[b,c] = sum_hw dz * (y0 + t_b y1)
//   p_dz[b,c]   = sum_hw dz,   p_dzy1[b,c] = sum_hw dz * y1,   p_dzn[b,c] = sum_hw dz * noise
// (the per-plane partial sums from which the caller forms dbias, dt and d(ns)).
void modconv_epilogue_grad_cpu(std::uintptr_t dout, std::uintptr_t mask, std::uintptr_t y0,
                               std::uintptr_t y1, std::uintptr_t t, std::uintptr_t dcoef,
                               std::uintptr_t noise, int64_t noise_bstride, std::uintptr_t dy0,
                               std::uintptr_t dy1, std::uintptr_t dz, std::uintptr_t ddcoef,
                               std::uintptr_t p_dz, std::uintptr_t p_dzy1, std::uintptr_t p_dzn,
                               int64_t batch, int64_t channels, int64_t hw, int channels_last,
                               int dtype, int act, double alpha, double gain, double clamp);

#if defined(NAVCUDA_WITH_CUDA) || defined(NAVCUDA_CUDA_EMU)
// ------------------------------------------------------------------------- CUDA (modconv.cu)
void modconv_demod_cuda(std::uintptr_t s, std::uintptr_t q0, std::uintptr_t q1, std::uintptr_t q2,
                        std::uintptr_t t, std::uintptr_t index, std::uintptr_t dcoef, int64_t batch,
                        int64_t n_out, int64_t n_in, int64_t n0, int64_t n_dir, int dtype,
                        double scale2, std::uintptr_t stream);
void modconv_demod_grad_cuda(std::uintptr_t g, std::uintptr_t dcoef, std::uintptr_t s,
                             std::uintptr_t q0, std::uintptr_t q1, std::uintptr_t q2,
                             std::uintptr_t t, std::uintptr_t index, std::uintptr_t dn,
                             std::uintptr_t ds, std::uintptr_t dt, std::uintptr_t dq0,
                             std::uintptr_t dq1, std::uintptr_t dq2, int64_t batch, int64_t n_out,
                             int64_t n_in, int64_t n0, int64_t n_dir, int dtype, double scale2,
                             std::uintptr_t stream);
void modconv_epilogue_cuda(std::uintptr_t y0, std::uintptr_t y1, std::uintptr_t t,
                           std::uintptr_t dcoef, std::uintptr_t noise, int64_t noise_bstride,
                           std::uintptr_t ns, std::uintptr_t bias, std::uintptr_t out,
                           std::uintptr_t mask, int64_t batch, int64_t channels, int64_t hw,
                           int channels_last, int dtype, int act, double alpha, double gain,
                           double clamp, std::uintptr_t stream);
void modconv_epilogue_grad_cuda(std::uintptr_t dout, std::uintptr_t mask, std::uintptr_t y0,
                                std::uintptr_t y1, std::uintptr_t t, std::uintptr_t dcoef,
                                std::uintptr_t noise, int64_t noise_bstride, std::uintptr_t dy0,
                                std::uintptr_t dy1, std::uintptr_t dz, std::uintptr_t ddcoef,
                                std::uintptr_t p_dz, std::uintptr_t p_dzy1, std::uintptr_t p_dzn,
                                int64_t batch, int64_t channels, int64_t hw, int channels_last,
                                int dtype, int act, double alpha, double gain, double clamp,
                                std::uintptr_t stream);
#endif

// Columns of i handled by one block of the CUDA demod-gradient kernel (dt partials per block).
constexpr int kModconvTile = 128;
inline int64_t modconv_demod_dt_parts(int64_t n_in) {
  return (n_in + kModconvTile - 1) / kModconvTile;
}

// Shared argument checks (throw std::invalid_argument); inline so that navcuda._C_emu, which
// compiles only the kernel headers, has them too.

inline void modconv_demod_check_args(const char* op, std::uintptr_t s, std::uintptr_t q0,
                                     std::uintptr_t q1, std::uintptr_t q2, std::uintptr_t t,
                                     int64_t batch, int64_t n_out, int64_t n_in, int64_t n0,
                                     int64_t n_dir) {
  NAVCUDA_CHECK(batch >= 0 && n_out >= 0 && n_in >= 0 && n_dir >= 0,
                op << ": sizes must be >= 0, got batch=" << batch << " out=" << n_out
                   << " in=" << n_in << " n_dir=" << n_dir);
  NAVCUDA_CHECK(n0 == 1 || n0 == batch,
                op << ": q0 must have 1 or batch=" << batch << " rows, got " << n0);
  const bool has_t = q1 != 0 || q2 != 0 || t != 0;
  NAVCUDA_CHECK(!has_t || (q1 != 0 && q2 != 0 && t != 0),
                op << ": q1, q2 and t must be given together");
  if (batch * n_out * n_in > 0) {
    NAVCUDA_CHECK(s != 0 && q0 != 0, op << ": null data pointer for a non-empty tensor");
  }
}

inline void modconv_epilogue_check_args(const char* op, std::uintptr_t y0, std::uintptr_t y1,
                                        std::uintptr_t t, std::uintptr_t noise, std::uintptr_t ns,
                                        int64_t noise_bstride, int64_t batch, int64_t channels,
                                        int64_t hw, int act, bool need_y0 = true) {
  NAVCUDA_CHECK(batch >= 0 && channels >= 0 && hw >= 0,
                op << ": sizes must be >= 0, got batch=" << batch << " channels=" << channels
                   << " hw=" << hw);
  NAVCUDA_CHECK(act == static_cast<int>(Act::kLinear) || act == static_cast<int>(Act::kLrelu),
                op << ": unknown activation code " << act << " (0=linear, 1=lrelu)");
  NAVCUDA_CHECK((y1 == 0) == (t == 0), op << ": y1 and t must be given together");
  NAVCUDA_CHECK((noise == 0) == (ns == 0), op << ": noise and its strength go together");
  NAVCUDA_CHECK(noise_bstride == 0 || noise_bstride == hw,
                op << ": noise_bstride must be 0 or hw=" << hw << ", got " << noise_bstride);
  if (batch * channels * hw > 0 && need_y0) {
    NAVCUDA_CHECK(y0 != 0, op << ": null data pointer for a non-empty tensor");
  }
}

}  // namespace navcuda
