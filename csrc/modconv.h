// modconv: the native pieces of navcuda.ops.shifted_modconv around the (torch) convolutions.
//
// (1) Demodulation coefficients of a shifted, modulated kernel for a batch:
//       n[b,o]     = scale2 * sum_i s[b,i]^2 * (Q0[r0(b),o,i] + 2 t_b Q1[k(b),o,i] + t_b^2
//       Q2[k(b),o,i]) dcoef[b,o] = (n[b,o] + 1e-8)^(-1/2)
//     with Q0 = sum over kernel taps of W_b^2 ([1, out, in] shared or [B, out, in] per sample,
//     r0(b) = 0 or b), and for the split-by-linearity strategy Q1 = sum_taps W*Delta_k and
//     Q2 = sum_taps Delta_k^2 ([n_dir, out, in], k(b) = index[b], or b when index == 0).
//     Q1/Q2/t are all given or all absent.
// (2) The epilogue over contiguous [B, C, HW] planes (or, with channels_last, [B, HW, C] rows):
//       z   = dcoef[b,c] * (y0 + t_b * y1) + ns * noise[b or 0, hw] + bias[c]
//       out = clamp(act(z) * gain, -clamp, clamp)                        (clamp < 0: no clamp)
//     y1/t, dcoef, noise (with ns, a buffer of one element), bias may each be absent.
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
#include <limits>

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

// Whether direction row k exists. The CPU entry points check every index value on the host
// before running (modconv_check_index_values); the CUDA launchers cannot read device memory, so
// their kernels guard each row instead: a sample whose index lies outside [0, n_dir) gets NaN
// (its dcoef, ds and dt) rather than a read outside Q1/Q2.
NAVCUDA_HD bool modconv_dir_row_valid(long long k, long long n_dir) { return k >= 0 && k < n_dir; }

template <typename T>
NAVCUDA_HD T modconv_nan() {
  return std::numeric_limits<T>::quiet_NaN();
}

// --------------------------------------------------------------------------------- CPU
// (modconv.cpp) Buffers (common.h): contiguous arrays of `dtype` (index: int64, mask: uint8);
// optional ones may be absent. Every entry point checks them with the *_check_args below.
void modconv_demod_cpu(Buffer s, Buffer q0, Buffer q1, Buffer q2, Buffer t, Buffer index,
                       Buffer dcoef, int64_t batch, int64_t n_out, int64_t n_in, int64_t n0,
                       int64_t n_dir, int dtype, double scale2);

// Gradient of the demodulation from g = dL/d(dcoef) [B, out]:
//   dn[b,o] = -0.5 * scale2 * g * dcoef^3                    (written to `dn`, always)
//   ds[b,i] = 2 s[b,i] sum_o dn[b,o] (Q0 + 2 t Q1 + t^2 Q2)[o,i]                   (if ds given)
//   dt[b, p] = sum_o dn[b,o] sum_{i in tile p} s[b,i]^2 (2 Q1 + 2 t Q2)[o,i]        (if dt given)
//            partial sums over tiles of kModconvTile input channels, [B, modconv_demod_dt_parts]:
//            the caller sums the last dimension (the CUDA kernel reduces one tile per block)
//   dq0[r,o,i] = sum_{b: r0(b)=r} dn[b,o] s[b,i]^2                                (if dq0 given)
//   dq1[k,o,i] = sum_{b: k(b)=k} 2 t_b dn[b,o] s[b,i]^2, dq2 likewise with t_b^2  (if given)
void modconv_demod_grad_cpu(Buffer g, Buffer dcoef, Buffer s, Buffer q0, Buffer q1, Buffer q2,
                            Buffer t, Buffer index, Buffer dn, Buffer ds, Buffer dt, Buffer dq0,
                            Buffer dq1, Buffer dq2, int64_t batch, int64_t n_out, int64_t n_in,
                            int64_t n0, int64_t n_dir, int dtype, double scale2);

// noise_bstride: elements between the noise planes of consecutive samples (0: one shared plane).
// mask: uint8 buffer of rows * modconv_mask_row_bytes(inner, modconv_mask_bits(clamp >= 0))
// packed codes (rows x inner = B*C x HW, or channels-last B*HW x C), written when given.
void modconv_epilogue_cpu(Buffer y0, Buffer y1, Buffer t, Buffer dcoef, Buffer noise,
                          int64_t noise_bstride, Buffer ns, Buffer bias, Buffer out, Buffer mask,
                          int64_t batch, int64_t channels, int64_t hw, int channels_last, int dtype,
                          int act, double alpha, double gain, double clamp);

// Gradient of the epilogue from dout and the forward's mask (read only with lrelu or a clamp;
// may be absent otherwise). With dz = dL/dz (bias_act_grad_from_code; y0 is read only for ddcoef
// and may be absent without it, so that a caller whose dcoef needs no gradient need not keep y0
// alive for the backward):
//   dy0 = dz * dcoef (always), dy1 = dz * dcoef * t_b, dz itself         (each if given)
//   ddcoef[b,c] = sum_hw dz * (y0 + t_b y1)
//   p_dz[b,c]   = sum_hw dz,   p_dzy1[b,c] = sum_hw dz * y1,   p_dzn[b,c] = sum_hw dz * noise
// (the per-plane partial sums from which the caller forms dbias, dt and d(ns)).
void modconv_epilogue_grad_cpu(Buffer dout, Buffer mask, Buffer y0, Buffer y1, Buffer t,
                               Buffer dcoef, Buffer noise, int64_t noise_bstride, Buffer dy0,
                               Buffer dy1, Buffer dz, Buffer ddcoef, Buffer p_dz, Buffer p_dzy1,
                               Buffer p_dzn, int64_t batch, int64_t channels, int64_t hw,
                               int channels_last, int dtype, int act, double alpha, double gain,
                               double clamp);

#if defined(NAVCUDA_WITH_CUDA) || defined(NAVCUDA_CUDA_EMU)
// ------------------------------------------------------------------------- CUDA (modconv.cu)
void modconv_demod_cuda(Buffer s, Buffer q0, Buffer q1, Buffer q2, Buffer t, Buffer index,
                        Buffer dcoef, int64_t batch, int64_t n_out, int64_t n_in, int64_t n0,
                        int64_t n_dir, int dtype, double scale2, std::uintptr_t stream);
void modconv_demod_grad_cuda(Buffer g, Buffer dcoef, Buffer s, Buffer q0, Buffer q1, Buffer q2,
                             Buffer t, Buffer index, Buffer dn, Buffer ds, Buffer dt, Buffer dq0,
                             Buffer dq1, Buffer dq2, int64_t batch, int64_t n_out, int64_t n_in,
                             int64_t n0, int64_t n_dir, int dtype, double scale2,
                             std::uintptr_t stream);
void modconv_epilogue_cuda(Buffer y0, Buffer y1, Buffer t, Buffer dcoef, Buffer noise,
                           int64_t noise_bstride, Buffer ns, Buffer bias, Buffer out, Buffer mask,
                           int64_t batch, int64_t channels, int64_t hw, int channels_last,
                           int dtype, int act, double alpha, double gain, double clamp,
                           std::uintptr_t stream);
void modconv_epilogue_grad_cuda(Buffer dout, Buffer mask, Buffer y0, Buffer y1, Buffer t,
                                Buffer dcoef, Buffer noise, int64_t noise_bstride, Buffer dy0,
                                Buffer dy1, Buffer dz, Buffer ddcoef, Buffer p_dz, Buffer p_dzy1,
                                Buffer p_dzn, int64_t batch, int64_t channels, int64_t hw,
                                int channels_last, int dtype, int act, double alpha, double gain,
                                double clamp, std::uintptr_t stream);
#endif

// Columns of i handled by one block of the CUDA demod-gradient kernel (dt partials per block).
constexpr int kModconvTile = 128;
inline int64_t modconv_demod_dt_parts(int64_t n_in) {
  check_dims("modconv_demod_dt_parts", {{"in", n_in}});
  return (n_in + kModconvTile - 1) / kModconvTile;
}

// Shared argument checks (common.h's helpers; throw std::invalid_argument); inline so that
// navcuda._C_emu, which compiles only the kernel headers, has them too.

// The demodulation's inputs: s [batch, in], q0 [n0, out, in] with n0 = 1 or batch; q1, q2
// [n_dir, out, in] and t [batch], all three or none; index [batch] (int64) only with them
// (absent: sample b uses row b, so n_dir >= batch). Returns the bytes per element.
inline int modconv_demod_check_inputs(const char* op, const Buffer& s, const Buffer& q0,
                                      const Buffer& q1, const Buffer& q2, const Buffer& t,
                                      const Buffer& index, int64_t batch, int64_t n_out,
                                      int64_t n_in, int64_t n0, int64_t n_dir, int dtype) {
  check_dims(op, {{"batch", batch}, {"out", n_out}, {"in", n_in}, {"n_dir", n_dir}});
  NAVCUDA_CHECK(n0 == 1 || n0 == batch,
                op << ": q0 must have 1 or batch=" << batch << " rows, got " << n0);
  const bool has_t = q1.present() || q2.present() || t.present();
  NAVCUDA_CHECK(!has_t || (q1.present() && q2.present() && t.present()),
                op << ": q1, q2 and t must be given together");
  NAVCUDA_CHECK(has_t || !index.present(), op << ": index selects rows of q1/q2; it needs them");
  NAVCUDA_CHECK(!has_t || index.present() || n_dir >= batch,
                op << ": without index, q1/q2 need a row per sample: n_dir=" << n_dir
                   << " < batch=" << batch);
  const int es = dtype_bytes(dtype, op);
  const Need with_t = has_t ? Need::kRequired : Need::kOptional;
  check_buffer(op, "s", s, es, "[batch, in]", {batch, n_in});
  check_buffer(op, "q0", q0, es, "[n0, out, in]", {n0, n_out, n_in});
  check_buffer(op, "q1", q1, es, "[n_dir, out, in]", {n_dir, n_out, n_in}, with_t);
  check_buffer(op, "q2", q2, es, "[n_dir, out, in]", {n_dir, n_out, n_in}, with_t);
  check_buffer(op, "t", t, es, "[batch]", {batch}, with_t);
  check_buffer(op, "index", index, 8, "[batch] (int64)", {batch}, Need::kOptional);
  // The kernels' work: a [batch, out, in] sum (within int64, as every element count).
  checked_count(op, "the demodulation [batch, out, in]", {batch, n_out, n_in});
  return es;
}

// CPU entry points: the index values (host memory) select existing rows of q1/q2. (The CUDA
// kernels guard each row instead: modconv_dir_row_valid.)
inline void modconv_check_index_values(const char* op, const Buffer& index, int64_t batch,
                                       int64_t n_dir) {
  if (index.present())
    check_index_values(op, "index", as_ptr<const long long>(index), batch, n_dir);
}

// Forward: the inputs and dcoef [batch, out]; returns dcoef's element count.
inline int64_t modconv_demod_check_args(const char* op, const Buffer& s, const Buffer& q0,
                                        const Buffer& q1, const Buffer& q2, const Buffer& t,
                                        const Buffer& index, const Buffer& dcoef, int64_t batch,
                                        int64_t n_out, int64_t n_in, int64_t n0, int64_t n_dir,
                                        int dtype) {
  const int es =
      modconv_demod_check_inputs(op, s, q0, q1, q2, t, index, batch, n_out, n_in, n0, n_dir, dtype);
  return check_buffer(op, "dcoef", dcoef, es, "[batch, out]", {batch, n_out});
}

// Gradient: the inputs, g, dcoef and dn [batch, out]; optional outputs ds [batch, in], dt
// [batch, ceil(in / dt_tile)] (dt_tile: kModconvTile, the emulator's tests choose theirs), dq0
// like q0, dq1 and dq2 like q1 (dt, dq1, dq2 only with q1, q2 and t). Returns dn's element count.
inline int64_t modconv_demod_grad_check_args(const char* op, const Buffer& g, const Buffer& dcoef,
                                             const Buffer& s, const Buffer& q0, const Buffer& q1,
                                             const Buffer& q2, const Buffer& t, const Buffer& index,
                                             const Buffer& dn, const Buffer& ds, const Buffer& dt,
                                             const Buffer& dq0, const Buffer& dq1,
                                             const Buffer& dq2, int64_t batch, int64_t n_out,
                                             int64_t n_in, int64_t n0, int64_t n_dir, int dtype,
                                             int64_t dt_tile = kModconvTile) {
  const int es =
      modconv_demod_check_inputs(op, s, q0, q1, q2, t, index, batch, n_out, n_in, n0, n_dir, dtype);
  NAVCUDA_CHECK(t.present() || !(dt.present() || dq1.present() || dq2.present()),
                op << ": dt/dq1/dq2 need q1, q2 and t");
  const auto opt = Need::kOptional;
  check_buffer(op, "g", g, es, "[batch, out]", {batch, n_out});
  check_buffer(op, "dcoef", dcoef, es, "[batch, out]", {batch, n_out});
  check_buffer(op, "ds", ds, es, "[batch, in]", {batch, n_in}, opt);
  check_buffer(op, "dt", dt, es, "[batch, ceil(in / tile)]",
               {batch, (n_in + dt_tile - 1) / dt_tile}, opt);
  check_buffer(op, "dq0", dq0, es, "[n0, out, in]", {n0, n_out, n_in}, opt);
  check_buffer(op, "dq1", dq1, es, "[n_dir, out, in]", {n_dir, n_out, n_in}, opt);
  check_buffer(op, "dq2", dq2, es, "[n_dir, out, in]", {n_dir, n_out, n_in}, opt);
  return check_buffer(op, "dn", dn, es, "[batch, out]", {batch, n_out});
}

// The epilogue's operands shared by the forward and the gradient: the sizes, act, y1
// [batch, channels, hw] (channels-last: the same count) with t [batch], both or neither; dcoef
// [batch, channels]; noise [1 or batch, hw] as noise_bstride is 0 or hw. Returns the bytes per
// element.
inline int modconv_epilogue_check_operands(const char* op, const Buffer& y1, const Buffer& t,
                                           const Buffer& dcoef, const Buffer& noise,
                                           int64_t noise_bstride, int64_t batch, int64_t channels,
                                           int64_t hw, int dtype, int act) {
  check_dims(op, {{"batch", batch}, {"channels", channels}, {"hw", hw}});
  check_act(op, act);
  NAVCUDA_CHECK(y1.present() == t.present(), op << ": y1 and t must be given together");
  NAVCUDA_CHECK(noise_bstride == 0 || noise_bstride == hw,
                op << ": noise_bstride must be 0 or hw=" << hw << ", got " << noise_bstride);
  const int es = dtype_bytes(dtype, op);
  const auto opt = Need::kOptional;
  check_buffer(op, "y1", y1, es, "[batch, channels, hw]", {batch, channels, hw}, opt);
  check_buffer(op, "t", t, es, "[batch]", {batch}, opt);
  check_buffer(op, "dcoef", dcoef, es, "[batch, channels]", {batch, channels}, opt);
  check_buffer(op, "noise", noise, es, "[1 or batch, hw]", {noise_bstride ? batch : 1, hw}, opt);
  return es;
}

// The packed mask codes: rows (B*C NCHW, B*HW channels-last) of modconv_mask_row_bytes(inner,
// bits) bytes, bits = modconv_mask_bits(clamp >= 0).
inline void modconv_check_mask(const char* op, const Buffer& mask, int64_t batch, int64_t channels,
                               int64_t hw, int channels_last, double clamp, Need need) {
  const int64_t inner = channels_last ? channels : hw;
  const int64_t row_bytes = modconv_mask_row_bytes(inner, modconv_mask_bits(clamp >= 0));
  check_buffer(op, "mask", mask, 1, "[rows, row bytes] (uint8)",
               {batch, channels_last ? hw : channels, row_bytes}, need);
}

// Forward: also y0 and out [batch, channels, hw], ns [1] with noise, bias [channels] and the mask
// (optional). Returns the element count of out.
inline int64_t modconv_epilogue_check_args(const char* op, const Buffer& y0, const Buffer& y1,
                                           const Buffer& t, const Buffer& dcoef,
                                           const Buffer& noise, int64_t noise_bstride,
                                           const Buffer& ns, const Buffer& bias, const Buffer& out,
                                           const Buffer& mask, int64_t batch, int64_t channels,
                                           int64_t hw, int channels_last, int dtype, int act,
                                           double clamp) {
  const int es = modconv_epilogue_check_operands(op, y1, t, dcoef, noise, noise_bstride, batch,
                                                 channels, hw, dtype, act);
  NAVCUDA_CHECK(noise.present() == ns.present(), op << ": noise and its strength go together");
  check_buffer(op, "y0", y0, es, "[batch, channels, hw]", {batch, channels, hw});
  check_buffer(op, "ns", ns, es, "[1]", {1}, Need::kOptional);
  check_buffer(op, "bias", bias, es, "[channels]", {channels}, Need::kOptional);
  modconv_check_mask(op, mask, batch, channels, hw, channels_last, clamp, Need::kOptional);
  return check_buffer(op, "out", out, es, "[batch, channels, hw]", {batch, channels, hw});
}

// Gradient: also dout and dy0 [batch, channels, hw]; the mask (required with lrelu or a clamp);
// y0 (required for ddcoef), dy1 (required with y1) and dz like dout; ddcoef (needs dcoef), p_dz,
// p_dzy1, p_dzn [batch, channels]. Returns the element count of dout.
inline int64_t modconv_epilogue_grad_check_args(
    const char* op, const Buffer& dout, const Buffer& mask, const Buffer& y0, const Buffer& y1,
    const Buffer& t, const Buffer& dcoef, const Buffer& noise, int64_t noise_bstride,
    const Buffer& dy0, const Buffer& dy1, const Buffer& dz, const Buffer& ddcoef,
    const Buffer& p_dz, const Buffer& p_dzy1, const Buffer& p_dzn, int64_t batch, int64_t channels,
    int64_t hw, int channels_last, int dtype, int act, double clamp) {
  const int es = modconv_epilogue_check_operands(op, y1, t, dcoef, noise, noise_bstride, batch,
                                                 channels, hw, dtype, act);
  NAVCUDA_CHECK(!ddcoef.present() || dcoef.present(), op << ": ddcoef needs dcoef");
  const bool reads_mask = act == static_cast<int>(Act::kLrelu) || clamp >= 0;
  const auto req = Need::kRequired, opt = Need::kOptional;
  modconv_check_mask(op, mask, batch, channels, hw, channels_last, clamp, reads_mask ? req : opt);
  const char* image = "[batch, channels, hw]";
  const char* planes = "[batch, channels]";
  check_buffer(op, "y0", y0, es, image, {batch, channels, hw}, ddcoef.present() ? req : opt);
  check_buffer(op, "dy0", dy0, es, image, {batch, channels, hw});
  check_buffer(op, "dy1", dy1, es, image, {batch, channels, hw}, y1.present() ? req : opt);
  check_buffer(op, "dz", dz, es, image, {batch, channels, hw}, opt);
  check_buffer(op, "ddcoef", ddcoef, es, planes, {batch, channels}, opt);
  check_buffer(op, "p_dz", p_dz, es, planes, {batch, channels}, opt);
  check_buffer(op, "p_dzy1", p_dzy1, es, planes, {batch, channels}, opt);
  check_buffer(op, "p_dzn", p_dzn, es, planes, {batch, channels}, opt);
  return check_buffer(op, "dout", dout, es, image, {batch, channels, hw});
}

}  // namespace navcuda
