// CPU kernels for modconv: OpenMP over (sample, channel) planes or rows, contiguous inner loops
// marked `omp simd` so the compiler vectorises them (the branches on loop-invariant flags are
// compile-time template parameters).
// (-fno-trapping-math, set for every CPU source in CMakeLists.txt, lets GCC vectorise the selects.)
#include "modconv.h"

#include <cstdint>
#include <type_traits>
#include <vector>

namespace navcuda {
namespace {

// Parallelise only when there is enough work to pay for waking the threads.
constexpr int64_t kParallelMin = 1 << 15;

template <typename Fn>
void dispatch_bool(bool v, Fn&& fn) {
  v ? fn(std::true_type{}) : fn(std::false_type{});
}

// ------------------------------------------------------------------------------- demodulation

template <typename T, bool kHasT>
void demod_kernel(const T* __restrict s, const T* __restrict q0, const T* __restrict q1,
                  const T* __restrict q2, const T* __restrict t, const long long* index,
                  T* __restrict dcoef, int64_t batch, int64_t n_out, int64_t n_in, int64_t n0,
                  T scale2) {
  const int64_t rows = batch * n_out;
#pragma omp parallel for schedule(static) if (rows * n_in >= kParallelMin)
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t b = r / n_out, o = r % n_out;
    const T* sr = s + b * n_in;
    const T* q0r = q0 + (modconv_q0_row(b, n0) * n_out + o) * n_in;
    T acc = T(0);
    if constexpr (kHasT) {
      const int64_t k = modconv_dir_row(index, b);
      const T* q1r = q1 + (k * n_out + o) * n_in;
      const T* q2r = q2 + (k * n_out + o) * n_in;
      const T tb = t[b];
#pragma omp simd reduction(+ : acc)
      for (int64_t i = 0; i < n_in; ++i) {
        acc += sr[i] * sr[i] * (q0r[i] + tb * (T(2) * q1r[i] + tb * q2r[i]));
      }
    } else {
#pragma omp simd reduction(+ : acc)
      for (int64_t i = 0; i < n_in; ++i) acc += sr[i] * sr[i] * q0r[i];
    }
    dcoef[r] = modconv_rsqrt(scale2 * acc + T(kDemodEps));
  }
}

// ds and the tile partials of dt: one work item per (sample, tile of kModconvTile channels).
template <typename T, bool kHasT>
void demod_grad_s_kernel(const T* __restrict dn, const T* __restrict s, const T* __restrict q0,
                         const T* __restrict q1, const T* __restrict q2, const T* __restrict t,
                         const long long* index, T* __restrict ds, T* __restrict dt_part,
                         int64_t batch, int64_t n_out, int64_t n_in, int64_t n0) {
  const int64_t tiles = modconv_demod_dt_parts(n_in);
  const int64_t items = batch * tiles;
#pragma omp parallel for schedule(static) if (batch * n_out * n_in >= kParallelMin)
  for (int64_t it = 0; it < items; ++it) {
    const int64_t b = it / tiles, tile = it % tiles;
    const int64_t i0 = tile * kModconvTile;
    const int64_t len = (i0 + kModconvTile <= n_in ? kModconvTile : n_in - i0);
    T acc[kModconvTile] = {};
    T acc_t[kModconvTile] = {};
    const T* dnr = dn + b * n_out;
    const T* q0b = q0 + modconv_q0_row(b, n0) * n_out * n_in + i0;
    if constexpr (kHasT) {
      const int64_t k = modconv_dir_row(index, b);
      const T* q1b = q1 + k * n_out * n_in + i0;
      const T* q2b = q2 + k * n_out * n_in + i0;
      const T tb = t[b];
      for (int64_t o = 0; o < n_out; ++o) {
        const T d = dnr[o];
        const T* a0 = q0b + o * n_in;
        const T* a1 = q1b + o * n_in;
        const T* a2 = q2b + o * n_in;
#pragma omp simd
        for (int64_t j = 0; j < len; ++j) {
          acc[j] += d * (a0[j] + tb * (T(2) * a1[j] + tb * a2[j]));
          acc_t[j] += d * (a1[j] + tb * a2[j]);
        }
      }
    } else {
      for (int64_t o = 0; o < n_out; ++o) {
        const T d = dnr[o];
        const T* a0 = q0b + o * n_in;
#pragma omp simd
        for (int64_t j = 0; j < len; ++j) acc[j] += d * a0[j];
      }
    }
    const T* sr = s + b * n_in + i0;
    if (ds) {
      for (int64_t j = 0; j < len; ++j) ds[b * n_in + i0 + j] = T(2) * sr[j] * acc[j];
    }
    if (dt_part) {
      T sum = T(0);
      for (int64_t j = 0; j < len; ++j) sum += T(2) * sr[j] * sr[j] * acc_t[j];
      dt_part[b * tiles + tile] = sum;
    }
  }
}

// dq[r, o, :] = sum_{b: row(b) = r} w_b dn[b,o] s2[b, :]; mode as in modconv_kernels.cuh.
template <typename T>
void demod_grad_q_kernel(const T* __restrict dn, const T* __restrict s2, const T* __restrict t,
                         const long long* index, T* __restrict dq, int64_t rows, int64_t batch,
                         int64_t n_out, int64_t n_in, int64_t n0, int mode) {
  const int64_t items = rows * n_out;
#pragma omp parallel for schedule(static) if (items * n_in >= kParallelMin)
  for (int64_t it = 0; it < items; ++it) {
    const int64_t r = it / n_out, o = it % n_out;
    T* dst = dq + it * n_in;
    for (int64_t i = 0; i < n_in; ++i) dst[i] = T(0);
    for (int64_t b = 0; b < batch; ++b) {
      const int64_t rb = mode == 0 ? modconv_q0_row(b, n0) : modconv_dir_row(index, b);
      if (rb != r) continue;
      const T w = mode == 0 ? T(1) : (mode == 1 ? T(2) * t[b] : t[b] * t[b]);
      const T coef = w * dn[b * n_out + o];
      const T* sr = s2 + b * n_in;
#pragma omp simd
      for (int64_t i = 0; i < n_in; ++i) dst[i] += coef * sr[i];
    }
  }
}

// ------------------------------------------------------------------------------- epilogue

// The packed codes (modconv_mask_code) of a row of n outputs, from the outputs just written
// (still in cache): 8 / kMaskBits per byte, the last byte padded with zeros.
template <typename T, int kAct, bool kClamp>
inline void pack_codes(const T* __restrict v, int64_t n, std::uint8_t* __restrict code, T gain,
                       T clamp) {
  constexpr int kBits = kModconvMaskBits<kClamp>;
  constexpr int kPer = 8 / kBits;
  constexpr unsigned kMask = (1u << kBits) - 1;  // without a clamp only the slope bit is kept
  const int64_t full = n / kPer;
#pragma omp simd
  for (int64_t q = 0; q < full; ++q) {
    unsigned byte = 0;
    for (int k = 0; k < kPer; ++k) {
      byte |= (unsigned(bias_act_grad_code<T, kAct, kClamp>(v[q * kPer + k], gain, clamp)) & kMask)
              << (k * kBits);
    }
    code[q] = static_cast<std::uint8_t>(byte);
  }
  if (n > full * kPer) {
    unsigned last = 0;
    for (int64_t k = full * kPer; k < n; ++k) {
      last |= (unsigned(bias_act_grad_code<T, kAct, kClamp>(v[k], gain, clamp)) & kMask)
              << ((k - full * kPer) * kBits);
    }
    code[full] = static_cast<std::uint8_t>(last);
  }
}

// The codes of a packed row of n outputs, one byte each, into `out` (a per-thread scratch row):
// the gradient loops then read bytes and vectorise as before (decoding inside them would need
// per-lane variable shifts, which the baseline x86-64 target lacks).
template <int kBits>
inline void unpack_codes(const std::uint8_t* __restrict row, int64_t n,
                         std::uint8_t* __restrict out) {
  constexpr int kPer = 8 / kBits;
  constexpr unsigned kMask = (1u << kBits) - 1;
  const int64_t full = n / kPer;
  for (int64_t q = 0; q < full; ++q) {
    const unsigned byte = row[q];
    for (int k = 0; k < kPer; ++k) out[q * kPer + k] = std::uint8_t((byte >> (k * kBits)) & kMask);
  }
  for (int64_t k = full * kPer; k < n; ++k) out[k] = modconv_mask_code<kBits>(row, k);
}

// Per-thread scratch for unpacked codes, grown as needed.
inline std::uint8_t* code_scratch(int64_t n) {
  thread_local std::vector<std::uint8_t> buf;
  if (static_cast<int64_t>(buf.size()) < n) buf.resize(static_cast<size_t>(n));
  return buf.data();
}

template <typename T, int kAct, bool kClamp, bool kHasY1, bool kHasNoise, bool kMask>
void epilogue_kernel(const T* __restrict y0, const T* __restrict y1, const T* __restrict t,
                     const T* __restrict dcoef, const T* __restrict noise, int64_t noise_bstride,
                     const T* __restrict ns, const T* __restrict bias, T* __restrict out,
                     std::uint8_t* __restrict mask, int64_t batch, int64_t channels, int64_t hw,
                     T alpha, T gain, T clamp) {
  const int64_t planes = batch * channels;
  const T nsv = kHasNoise ? ns[0] : T(0);
#pragma omp parallel for schedule(static) if (planes * hw >= kParallelMin)
  for (int64_t p = 0; p < planes; ++p) {
    const int64_t b = p / channels, c = p % channels;
    const T d = dcoef ? dcoef[p] : T(1);
    const T bv = bias ? bias[c] : T(0);
    const T tb = kHasY1 ? t[b] : T(0);
    const T* a = y0 + p * hw;
    const T* a1 = kHasY1 ? y1 + p * hw : nullptr;
    const T* nz = kHasNoise ? noise + b * noise_bstride : nullptr;
    T* dst = out + p * hw;
#pragma omp simd
    for (int64_t j = 0; j < hw; ++j) {
      dst[j] = modconv_epilogue_value<T, kAct, kClamp, kHasY1>(a[j], kHasY1 ? a1[j] : T(0), tb, d,
                                                               kHasNoise ? nsv * nz[j] : T(0), bv,
                                                               alpha, gain, clamp);
    }
    if constexpr (kMask) {
      pack_codes<T, kAct, kClamp>(
          dst, hw, mask + p * modconv_mask_row_bytes(hw, kModconvMaskBits<kClamp>), gain, clamp);
    }
  }
}

template <typename T, int kAct, bool kClamp, bool kHasY1, bool kHasNoise, bool kWriteDz,
          bool kHasDd>
void epilogue_grad_kernel(const T* __restrict dout, const std::uint8_t* __restrict mask,
                          const T* __restrict y0, const T* __restrict y1, const T* __restrict t,
                          const T* __restrict dcoef, const T* __restrict noise,
                          int64_t noise_bstride, T* __restrict dy0, T* __restrict dy1,
                          T* __restrict dz_out, T* __restrict ddcoef, T* __restrict p_dz,
                          T* __restrict p_dzy1, T* __restrict p_dzn, int64_t batch,
                          int64_t channels, int64_t hw, T alpha, T gain, T clamp) {
  const int64_t planes = batch * channels;
#pragma omp parallel for schedule(static) if (planes * hw >= kParallelMin)
  for (int64_t p = 0; p < planes; ++p) {
    const int64_t b = p / channels;
    const T d = dcoef ? dcoef[p] : T(1);
    const T tb = kHasY1 ? t[b] : T(0);
    const T dtb = d * tb;
    const int64_t base = p * hw;
    const T* g = dout + base;
    std::uint8_t* code = nullptr;
    if constexpr (kModconvReadsMask<kAct, kClamp>) {
      code = code_scratch(hw);
      unpack_codes<kModconvMaskBits<kClamp>>(
          mask + p * modconv_mask_row_bytes(hw, kModconvMaskBits<kClamp>), hw, code);
    }
    const T* a = y0 + base;
    const T* a1 = kHasY1 ? y1 + base : nullptr;
    const T* nz = kHasNoise ? noise + b * noise_bstride : nullptr;
    T* g0 = dy0 + base;
    T* g1 = kHasY1 ? dy1 + base : nullptr;
    T* gz = kWriteDz ? dz_out + base : nullptr;
    T s_dz = T(0), s_dzy = T(0), s_dzy1 = T(0), s_dzn = T(0);
#pragma omp simd reduction(+ : s_dz, s_dzy, s_dzy1, s_dzn)
    for (int64_t j = 0; j < hw; ++j) {
      const T dz = bias_act_grad_from_code<T, kAct, kClamp>(
          g[j], kModconvReadsMask<kAct, kClamp> ? code[j] : std::uint8_t(0), alpha, gain);
      g0[j] = dz * d;
      if constexpr (kWriteDz) gz[j] = dz;
      s_dz += dz;
      if constexpr (kHasY1) {
        g1[j] = dz * dtb;
        s_dzy1 += dz * a1[j];
      }
      if constexpr (kHasDd) {
        T yv = a[j];
        if constexpr (kHasY1) yv += tb * a1[j];
        s_dzy += dz * yv;
      }
      if constexpr (kHasNoise) s_dzn += dz * nz[j];
    }
    if (p_dz) p_dz[p] = s_dz;
    if (ddcoef) ddcoef[p] = s_dzy;
    if (p_dzy1) p_dzy1[p] = s_dzy1;
    if (p_dzn) p_dzn[p] = s_dzn;
  }
}

// Channels-last (NHWC) epilogue: rows of `channels` contiguous values, one row per (b, pixel).
// dcoef and bias are per-channel vectors here; absent ones read a row of ones / zeros.
template <typename T, int kAct, bool kClamp, bool kHasY1, bool kHasNoise, bool kMask>
void epilogue_nhwc_kernel(const T* __restrict y0, const T* __restrict y1, const T* __restrict t,
                          const T* dcoef, const T* __restrict noise, int64_t noise_bstride,
                          const T* __restrict ns, const T* bias, T* __restrict out,
                          std::uint8_t* __restrict mask, int64_t batch, int64_t channels,
                          int64_t hw, T alpha, T gain, T clamp) {
  const std::vector<T> ones(dcoef ? 0 : channels, T(1)), zeros(bias ? 0 : channels, T(0));
  const int64_t rows = batch * hw;
  const T nsv = kHasNoise ? ns[0] : T(0);
#pragma omp parallel for schedule(static) if (rows * channels >= kParallelMin)
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t b = r / hw, j = r % hw;
    const T* __restrict d = dcoef ? dcoef + b * channels : ones.data();
    const T* __restrict bv = bias ? bias : zeros.data();
    const T tb = kHasY1 ? t[b] : T(0);
    const T nz = kHasNoise ? nsv * noise[b * noise_bstride + j] : T(0);
    const T* a = y0 + r * channels;
    const T* a1 = kHasY1 ? y1 + r * channels : nullptr;
    T* dst = out + r * channels;
#pragma omp simd
    for (int64_t c = 0; c < channels; ++c) {
      dst[c] = modconv_epilogue_value<T, kAct, kClamp, kHasY1>(a[c], kHasY1 ? a1[c] : T(0), tb,
                                                               d[c], nz, bv[c], alpha, gain, clamp);
    }
    if constexpr (kMask) {
      pack_codes<T, kAct, kClamp>(
          dst, channels, mask + r * modconv_mask_row_bytes(channels, kModconvMaskBits<kClamp>),
          gain, clamp);
    }
  }
}

// Pixels per work item of the channels-last gradient: each item keeps four per-channel partial
// sums, added up per sample afterwards.
constexpr int64_t kNhwcRowsPerItem = 256;

template <typename T, int kAct, bool kClamp, bool kHasY1, bool kHasNoise, bool kWriteDz,
          bool kHasDd>
void epilogue_grad_nhwc_kernel(const T* __restrict dout, const std::uint8_t* __restrict mask,
                               const T* __restrict y0, const T* __restrict y1,
                               const T* __restrict t, const T* dcoef, const T* __restrict noise,
                               int64_t noise_bstride, T* __restrict dy0, T* __restrict dy1,
                               T* __restrict dz_out, T* __restrict ddcoef, T* __restrict p_dz,
                               T* __restrict p_dzy1, T* __restrict p_dzn, int64_t batch,
                               int64_t channels, int64_t hw, T alpha, T gain, T clamp) {
  const std::vector<T> ones(dcoef ? 0 : channels, T(1));
  const int64_t chunks = (hw + kNhwcRowsPerItem - 1) / kNhwcRowsPerItem;
  const int64_t items = batch * chunks;
  // part[item][k][c]: k = 0 sum dz, 1 sum dz*y, 2 sum dz*y1, 3 sum dz*noise.
  std::vector<T> part(static_cast<size_t>(items * 4 * channels), T(0));
#pragma omp parallel for schedule(static) if (batch * hw * channels >= kParallelMin)
  for (int64_t it = 0; it < items; ++it) {
    const int64_t b = it / chunks;
    const int64_t j0 = (it % chunks) * kNhwcRowsPerItem;
    const int64_t j1 = j0 + kNhwcRowsPerItem < hw ? j0 + kNhwcRowsPerItem : hw;
    const T* __restrict d = dcoef ? dcoef + b * channels : ones.data();
    const T tb = kHasY1 ? t[b] : T(0);
    T* __restrict s_dz = part.data() + it * 4 * channels;
    T* __restrict s_dzy = s_dz + channels;
    T* __restrict s_dzy1 = s_dz + 2 * channels;
    T* __restrict s_dzn = s_dz + 3 * channels;
    for (int64_t j = j0; j < j1; ++j) {
      const int64_t base = (b * hw + j) * channels;
      const T nz = kHasNoise ? noise[b * noise_bstride + j] : T(0);
      const T* g = dout + base;
      std::uint8_t* code = nullptr;
      if constexpr (kModconvReadsMask<kAct, kClamp>) {
        code = code_scratch(channels);
        unpack_codes<kModconvMaskBits<kClamp>>(
            mask + (b * hw + j) * modconv_mask_row_bytes(channels, kModconvMaskBits<kClamp>),
            channels, code);
      }
      const T* a = y0 + base;
      const T* a1 = kHasY1 ? y1 + base : nullptr;
      T* g0 = dy0 + base;
      T* g1 = kHasY1 ? dy1 + base : nullptr;
      T* gz = kWriteDz ? dz_out + base : nullptr;
#pragma omp simd
      for (int64_t c = 0; c < channels; ++c) {
        const T dz = bias_act_grad_from_code<T, kAct, kClamp>(
            g[c], kModconvReadsMask<kAct, kClamp> ? code[c] : std::uint8_t(0), alpha, gain);
        g0[c] = dz * d[c];
        if constexpr (kWriteDz) gz[c] = dz;
        s_dz[c] += dz;
        if constexpr (kHasY1) {
          g1[c] = dz * d[c] * tb;
          s_dzy1[c] += dz * a1[c];
        }
        if constexpr (kHasDd) {
          T yv = a[c];
          if constexpr (kHasY1) yv += tb * a1[c];
          s_dzy[c] += dz * yv;
        }
        if constexpr (kHasNoise) s_dzn[c] += dz * nz;
      }
    }
  }
  T* const dst[4] = {p_dz, ddcoef, p_dzy1, p_dzn};
  for (int64_t b = 0; b < batch; ++b) {
    for (int k = 0; k < 4; ++k) {
      if (!dst[k]) continue;
      T* row = dst[k] + b * channels;
      for (int64_t c = 0; c < channels; ++c) row[c] = T(0);
      for (int64_t q = 0; q < chunks; ++q) {
        const T* src = part.data() + ((b * chunks + q) * 4 + k) * channels;
        for (int64_t c = 0; c < channels; ++c) row[c] += src[c];
      }
    }
  }
}

}  // namespace

// ------------------------------------------------------------------------------- entry points

void modconv_demod_cpu(std::uintptr_t s, std::uintptr_t q0, std::uintptr_t q1, std::uintptr_t q2,
                       std::uintptr_t t, std::uintptr_t index, std::uintptr_t dcoef, int64_t batch,
                       int64_t n_out, int64_t n_in, int64_t n0, int64_t n_dir, int dtype,
                       double scale2) {
  modconv_demod_check_args("modconv_demod_cpu", s, q0, q1, q2, t, batch, n_out, n_in, n0, n_dir);
  if (batch * n_out == 0) return;
  NAVCUDA_CHECK(dcoef != 0, "modconv_demod_cpu: null output pointer");
  dispatch_float(dtype, "modconv_demod_cpu", [&](auto zero) {
    using T = decltype(zero);
    dispatch_bool(t != 0, [&](auto has_t) {
      demod_kernel<T, decltype(has_t)::value>(as_ptr<const T>(s), as_ptr<const T>(q0),
                                              as_ptr<const T>(q1), as_ptr<const T>(q2),
                                              as_ptr<const T>(t), as_ptr<const long long>(index),
                                              as_ptr<T>(dcoef), batch, n_out, n_in, n0, T(scale2));
    });
  });
}

void modconv_demod_grad_cpu(std::uintptr_t g, std::uintptr_t dcoef, std::uintptr_t s,
                            std::uintptr_t q0, std::uintptr_t q1, std::uintptr_t q2,
                            std::uintptr_t t, std::uintptr_t index, std::uintptr_t dn,
                            std::uintptr_t ds, std::uintptr_t dt, std::uintptr_t dq0,
                            std::uintptr_t dq1, std::uintptr_t dq2, int64_t batch, int64_t n_out,
                            int64_t n_in, int64_t n0, int64_t n_dir, int dtype, double scale2) {
  modconv_demod_check_args("modconv_demod_grad_cpu", s, q0, q1, q2, t, batch, n_out, n_in, n0,
                           n_dir);
  NAVCUDA_CHECK(t != 0 || (dt == 0 && dq1 == 0 && dq2 == 0),
                "modconv_demod_grad_cpu: dt/dq1/dq2 need q1, q2 and t");
  NAVCUDA_CHECK(batch * n_out == 0 || (g != 0 && dcoef != 0 && dn != 0),
                "modconv_demod_grad_cpu: null g, dcoef or dn");
  dispatch_float(dtype, "modconv_demod_grad_cpu", [&](auto zero) {
    using T = decltype(zero);
    const T* gp = as_ptr<const T>(g);
    const T* dp = as_ptr<const T>(dcoef);
    T* dnp = as_ptr<T>(dn);
    const T sc = T(scale2);
    for (int64_t e = 0; e < batch * n_out; ++e) {
      const T d = dp[e];
      dnp[e] = T(-0.5) * sc * gp[e] * d * d * d;
    }
    const long long* idx = as_ptr<const long long>(index);
    if (ds != 0 || dt != 0) {
      dispatch_bool(t != 0, [&](auto has_t) {
        demod_grad_s_kernel<T, decltype(has_t)::value>(
            dnp, as_ptr<const T>(s), as_ptr<const T>(q0), as_ptr<const T>(q1), as_ptr<const T>(q2),
            as_ptr<const T>(t), idx, as_ptr<T>(ds), as_ptr<T>(dt), batch, n_out, n_in, n0);
      });
    }
    if (dq0 != 0 || dq1 != 0 || dq2 != 0) {
      std::vector<T> s2(static_cast<size_t>(batch * n_in));
      const T* sp = as_ptr<const T>(s);
      for (int64_t e = 0; e < batch * n_in; ++e) s2[e] = sp[e] * sp[e];
      const T* tp = as_ptr<const T>(t);
      if (dq0)
        demod_grad_q_kernel<T>(dnp, s2.data(), tp, idx, as_ptr<T>(dq0), n0, batch, n_out, n_in, n0,
                               0);
      if (dq1)
        demod_grad_q_kernel<T>(dnp, s2.data(), tp, idx, as_ptr<T>(dq1), n_dir, batch, n_out, n_in,
                               n0, 1);
      if (dq2)
        demod_grad_q_kernel<T>(dnp, s2.data(), tp, idx, as_ptr<T>(dq2), n_dir, batch, n_out, n_in,
                               n0, 2);
    }
  });
}

void modconv_epilogue_cpu(std::uintptr_t y0, std::uintptr_t y1, std::uintptr_t t,
                          std::uintptr_t dcoef, std::uintptr_t noise, int64_t noise_bstride,
                          std::uintptr_t ns, std::uintptr_t bias, std::uintptr_t out,
                          std::uintptr_t mask, int64_t batch, int64_t channels, int64_t hw,
                          int channels_last, int dtype, int act, double alpha, double gain,
                          double clamp) {
  modconv_epilogue_check_args("modconv_epilogue_cpu", y0, y1, t, noise, ns, noise_bstride, batch,
                              channels, hw, act);
  if (batch * channels * hw == 0) return;
  NAVCUDA_CHECK(out != 0, "modconv_epilogue_cpu: null output pointer");
  dispatch_float(dtype, "modconv_epilogue_cpu", [&](auto zero) {
    using T = decltype(zero);
    dispatch_act(act, clamp >= 0, [&](auto act_c, auto clamp_c) {
      dispatch_bool(y1 != 0, [&](auto has_y1) {
        dispatch_bool(noise != 0, [&](auto has_noise) {
          dispatch_bool(mask != 0, [&](auto has_mask) {
            constexpr int kA = decltype(act_c)::value;
            constexpr bool kC = decltype(clamp_c)::value, kY1 = decltype(has_y1)::value,
                           kN = decltype(has_noise)::value, kM = decltype(has_mask)::value;
            auto kernel = channels_last ? &epilogue_nhwc_kernel<T, kA, kC, kY1, kN, kM>
                                        : &epilogue_kernel<T, kA, kC, kY1, kN, kM>;
            kernel(as_ptr<const T>(y0), as_ptr<const T>(y1), as_ptr<const T>(t),
                   as_ptr<const T>(dcoef), as_ptr<const T>(noise), noise_bstride,
                   as_ptr<const T>(ns), as_ptr<const T>(bias), as_ptr<T>(out),
                   as_ptr<std::uint8_t>(mask), batch, channels, hw, T(alpha), T(gain), T(clamp));
          });
        });
      });
    });
  });
}

void modconv_epilogue_grad_cpu(std::uintptr_t dout, std::uintptr_t mask, std::uintptr_t y0,
                               std::uintptr_t y1, std::uintptr_t t, std::uintptr_t dcoef,
                               std::uintptr_t noise, int64_t noise_bstride, std::uintptr_t dy0,
                               std::uintptr_t dy1, std::uintptr_t dz, std::uintptr_t ddcoef,
                               std::uintptr_t p_dz, std::uintptr_t p_dzy1, std::uintptr_t p_dzn,
                               int64_t batch, int64_t channels, int64_t hw, int channels_last,
                               int dtype, int act, double alpha, double gain, double clamp) {
  // ns is not needed by the gradient; pass noise as its own "strength" for the pairing check.
  modconv_epilogue_check_args("modconv_epilogue_grad_cpu", y0, y1, t, noise, noise, noise_bstride,
                              batch, channels, hw, act, ddcoef != 0);
  if (batch * channels * hw == 0) return;
  NAVCUDA_CHECK(dout != 0 && dy0 != 0, "modconv_epilogue_grad_cpu: null dout or dy0");
  NAVCUDA_CHECK(mask != 0 || (act == static_cast<int>(Act::kLinear) && clamp < 0),
                "modconv_epilogue_grad_cpu: lrelu or a clamp needs the forward's mask");
  NAVCUDA_CHECK(y1 == 0 || dy1 != 0, "modconv_epilogue_grad_cpu: dy1 is required with y1");
  NAVCUDA_CHECK(ddcoef == 0 || dcoef != 0, "modconv_epilogue_grad_cpu: ddcoef needs dcoef");
  dispatch_float(dtype, "modconv_epilogue_grad_cpu", [&](auto zero) {
    using T = decltype(zero);
    dispatch_act(act, clamp >= 0, [&](auto act_c, auto clamp_c) {
      dispatch_bool(y1 != 0, [&](auto has_y1) {
        dispatch_bool(noise != 0, [&](auto has_noise) {
          dispatch_bool(dz != 0, [&](auto write_dz) {
            dispatch_bool(ddcoef != 0, [&](auto has_dd) {
              constexpr int kA = decltype(act_c)::value;
              constexpr bool kC = decltype(clamp_c)::value, kY1 = decltype(has_y1)::value,
                             kN = decltype(has_noise)::value, kDz = decltype(write_dz)::value,
                             kDd = decltype(has_dd)::value;
              auto kernel = channels_last ? &epilogue_grad_nhwc_kernel<T, kA, kC, kY1, kN, kDz, kDd>
                                          : &epilogue_grad_kernel<T, kA, kC, kY1, kN, kDz, kDd>;
              kernel(as_ptr<const T>(dout), as_ptr<const std::uint8_t>(mask), as_ptr<const T>(y0),
                     as_ptr<const T>(y1), as_ptr<const T>(t), as_ptr<const T>(dcoef),
                     as_ptr<const T>(noise), noise_bstride, as_ptr<T>(dy0), as_ptr<T>(dy1),
                     as_ptr<T>(dz), as_ptr<T>(ddcoef), as_ptr<T>(p_dz), as_ptr<T>(p_dzy1),
                     as_ptr<T>(p_dzn), batch, channels, hw, T(alpha), T(gain), T(clamp));
            });
          });
        });
      });
    });
  });
}

}  // namespace navcuda
