// CPU kernel for fir2d. Work is split into strips of output rows of one plane (OpenMP over all
// strips of all planes). Each task first copies the input rows its strip reads into a
// thread-local, zero-padded scratch strip sized to stay in L1/L2 (so neither the padded input is
// built in memory nor any border is special-cased afterwards), then filters it with long
// contiguous loops the compiler vectorises:
//  - a separable filter (w = a b^T up to rounding, e.g. StyleGAN2's [1, 3, 3, 1] blur) runs as a
//    horizontal pass over the strip (kw taps per padded row) and a vertical pass (kh taps per
//    output row): kh + kw multiply-adds per output instead of kh * kw;
//  - any other filter accumulates kh * kw shifted rows of the strip into each output row.
#include "fir2d.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

namespace navcuda {
namespace {

constexpr int64_t kParallelMin = 1 << 15;
// Scratch per task: the padded strip (and its horizontal pass) in about this many bytes.
constexpr int64_t kStripBytes = 32 << 10;

// Rank-1 factors a (kh) and b (kw) with w[i, j] == a[i] * b[j] within a few ulps of T relative to
// max |w|; false where the filter is not separable to that precision (then the 2-D path runs).
template <typename T>
bool separable_factors(const T* w, int64_t kh, int64_t kw, std::vector<T>& a, std::vector<T>& b) {
  int64_t i0 = 0, j0 = 0;
  double wmax = 0;
  for (int64_t i = 0; i < kh; ++i) {
    for (int64_t j = 0; j < kw; ++j) {
      const double v = std::abs(double(w[i * kw + j]));
      if (v > wmax) {
        wmax = v;
        i0 = i;
        j0 = j;
      }
    }
  }
  if (wmax == 0 || kh * kw < 4) return false;  // nothing to gain below 2x2
  a.resize(static_cast<size_t>(kh));
  b.resize(static_cast<size_t>(kw));
  for (int64_t i = 0; i < kh; ++i) a[i] = w[i * kw + j0];
  for (int64_t j = 0; j < kw; ++j) b[j] = T(double(w[i0 * kw + j]) / double(w[i0 * kw + j0]));
  const double tol = 8 * double(std::numeric_limits<T>::epsilon()) * wmax;
  for (int64_t i = 0; i < kh; ++i) {
    for (int64_t j = 0; j < kw; ++j) {
      if (std::abs(double(a[i]) * double(b[j]) - double(w[i * kw + j])) > tol) return false;
    }
  }
  return true;
}

// Padded rows [r0, r0 + n) of one plane into scratch (row stride pw): padded pixel (r, c) is
// input pixel (r - pad_y, c - pad_x), or zero outside the image.
template <typename T>
void fill_strip(const T* __restrict plane, T* __restrict s, int64_t r0, int64_t n, int64_t h,
                int64_t wd, int64_t pad_y, int64_t pad_x, int64_t pw) {
  const int64_t c_lo = std::clamp<int64_t>(pad_x, 0, pw);          // first column inside the image
  const int64_t c_hi = std::clamp<int64_t>(wd + pad_x, c_lo, pw);  // one past the last
  for (int64_t r = 0; r < n; ++r) {
    T* dst = s + r * pw;
    const int64_t iy = r0 + r - pad_y;
    if (iy < 0 || iy >= h) {
      std::fill(dst, dst + pw, T(0));
      continue;
    }
    std::fill(dst, dst + c_lo, T(0));
    std::memcpy(dst + c_lo, plane + iy * wd + (c_lo - pad_x), sizeof(T) * (c_hi - c_lo));
    std::fill(dst + c_hi, dst + pw, T(0));
  }
}

// out[y, x] = sum_j b[j] s[y, x + j]  for n rows (the horizontal pass; row strides pw and wo).
template <typename T, int K>
void horizontal(const T* __restrict s, const T* __restrict b, T* __restrict out, int64_t n,
                int64_t pw, int64_t wo, int64_t k_rt) {
  const int64_t k = K > 0 ? K : k_rt;
  for (int64_t r = 0; r < n; ++r) {
    const T* __restrict src = s + r * pw;
    T* __restrict dst = out + r * wo;
    if constexpr (K == 4) {
      const T b0 = b[0], b1 = b[1], b2 = b[2], b3 = b[3];
#pragma omp simd
      for (int64_t x = 0; x < wo; ++x)
        dst[x] = (b0 * src[x] + b1 * src[x + 1]) + (b2 * src[x + 2] + b3 * src[x + 3]);
    } else {
      std::fill(dst, dst + wo, T(0));
      for (int64_t j = 0; j < k; ++j) {
        const T bj = b[j];
#pragma omp simd
        for (int64_t x = 0; x < wo; ++x) dst[x] += bj * src[x + j];
      }
    }
  }
}

// out[y, x] = sum_i a[i] t[y + i, x]  for n output rows (the vertical pass; all strides wo).
template <typename T, int K>
void vertical(const T* __restrict t, const T* __restrict a, T* __restrict out, int64_t n,
              int64_t wo, int64_t k_rt) {
  const int64_t k = K > 0 ? K : k_rt;
  for (int64_t y = 0; y < n; ++y) {
    T* __restrict dst = out + y * wo;
    const T* __restrict r0 = t + y * wo;
    if constexpr (K == 4) {
      const T* __restrict r1 = r0 + wo;
      const T* __restrict r2 = r1 + wo;
      const T* __restrict r3 = r2 + wo;
      const T a0 = a[0], a1 = a[1], a2 = a[2], a3 = a[3];
#pragma omp simd
      for (int64_t x = 0; x < wo; ++x)
        dst[x] = (a0 * r0[x] + a1 * r1[x]) + (a2 * r2[x] + a3 * r3[x]);
    } else {
      std::fill(dst, dst + wo, T(0));
      for (int64_t i = 0; i < k; ++i) {
        const T ai = a[i];
        const T* __restrict src = r0 + i * wo;
#pragma omp simd
        for (int64_t x = 0; x < wo; ++x) dst[x] += ai * src[x];
      }
    }
  }
}

// out[y, x] = sum_{i, j} w[i, j] s[y + i, x + j]  for n output rows (any filter).
template <typename T>
void full_2d(const T* __restrict s, const T* __restrict w, T* __restrict out, int64_t n, int64_t pw,
             int64_t wo, int64_t kh, int64_t kw) {
  for (int64_t y = 0; y < n; ++y) {
    T* __restrict dst = out + y * wo;
    if (kh == 4 && kw == 4) {  // one pass, taps unrolled (written out so that GCC vectorises)
      const T* __restrict a = s + y * pw;
      const T* __restrict b = a + pw;
      const T* __restrict c = b + pw;
      const T* __restrict d = c + pw;
      const T w00 = w[0], w01 = w[1], w02 = w[2], w03 = w[3], w10 = w[4], w11 = w[5], w12 = w[6],
              w13 = w[7], w20 = w[8], w21 = w[9], w22 = w[10], w23 = w[11], w30 = w[12],
              w31 = w[13], w32 = w[14], w33 = w[15];
#pragma omp simd
      for (int64_t x = 0; x < wo; ++x) {
        dst[x] = (w00 * a[x] + w01 * a[x + 1] + w02 * a[x + 2] + w03 * a[x + 3]) +
                 (w10 * b[x] + w11 * b[x + 1] + w12 * b[x + 2] + w13 * b[x + 3]) +
                 (w20 * c[x] + w21 * c[x + 1] + w22 * c[x + 2] + w23 * c[x + 3]) +
                 (w30 * d[x] + w31 * d[x + 1] + w32 * d[x + 2] + w33 * d[x + 3]);
      }
      continue;
    }
    std::fill(dst, dst + wo, T(0));
    for (int64_t i = 0; i < kh; ++i) {
      for (int64_t j = 0; j < kw; ++j) {
        const T c = w[i * kw + j];
        const T* __restrict src = s + (y + i) * pw + j;
#pragma omp simd
        for (int64_t x = 0; x < wo; ++x) dst[x] += c * src[x];
      }
    }
  }
}

template <typename T>
void fir2d_kernel(const T* __restrict x, const T* __restrict w, T* __restrict out, int64_t planes,
                  int64_t h, int64_t wd, int64_t kh, int64_t kw, int64_t pad_y, int64_t pad_x,
                  int64_t ho, int64_t wo) {
  std::vector<T> a, b;
  const bool sep = separable_factors(w, kh, kw, a, b);
  const int64_t pw = wo + kw - 1;
  // Output rows per strip: the padded strip (and the horizontal pass) within kStripBytes.
  const int64_t row_bytes = int64_t(sizeof(T)) * (pw + (sep ? wo : 0));
  const int64_t strip = std::clamp<int64_t>(kStripBytes / row_bytes - (kh - 1), 1, ho);
  const int64_t strips = (ho + strip - 1) / strip;
  const int64_t tasks = planes * strips;
#pragma omp parallel if (planes * ho * wo * (sep ? kh + kw : kh * kw) >= kParallelMin)
  {
    std::vector<T> scratch(static_cast<size_t>((strip + kh - 1) * pw));
    std::vector<T> hpass(sep ? static_cast<size_t>((strip + kh - 1) * wo) : 0);
#pragma omp for schedule(static)
    for (int64_t task = 0; task < tasks; ++task) {
      const int64_t p = task / strips, y0 = (task % strips) * strip;
      const int64_t n = std::min(strip, ho - y0);
      fill_strip(x + p * h * wd, scratch.data(), y0, n + kh - 1, h, wd, pad_y, pad_x, pw);
      T* dst = out + (p * ho + y0) * wo;
      if (!sep) {
        full_2d(scratch.data(), w, dst, n, pw, wo, kh, kw);
      } else if (kh == 4 && kw == 4) {  // StyleGAN2's blur: taps unrolled at compile time
        horizontal<T, 4>(scratch.data(), b.data(), hpass.data(), n + kh - 1, pw, wo, kw);
        vertical<T, 4>(hpass.data(), a.data(), dst, n, wo, kh);
      } else {
        horizontal<T, 0>(scratch.data(), b.data(), hpass.data(), n + kh - 1, pw, wo, kw);
        vertical<T, 0>(hpass.data(), a.data(), dst, n, wo, kh);
      }
    }
  }
}

}  // namespace

void fir2d_cpu(std::uintptr_t x, std::uintptr_t w, std::uintptr_t out, int64_t planes, int64_t h,
               int64_t wd, int64_t kh, int64_t kw, int64_t pad_y, int64_t pad_x, int64_t ho,
               int64_t wo, int dtype) {
  fir2d_check_args("fir2d_cpu", x, w, out, planes, h, wd, kh, kw, ho, wo);
  if (planes * ho * wo == 0) return;
  dispatch_float(dtype, "fir2d_cpu", [&](auto zero) {
    using T = decltype(zero);
    fir2d_kernel<T>(as_ptr<const T>(x), as_ptr<const T>(w), as_ptr<T>(out), planes, h, wd, kh, kw,
                    pad_y, pad_x, ho, wo);
  });
}

}  // namespace navcuda
