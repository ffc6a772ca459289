// CPU kernel for fir2d: OpenMP over output rows of all planes. Each output row reads kh input
// rows (a shared zero row stands for rows outside the image, so the padded input is never
// built); its interior columns are one vectorised pass with the taps unrolled for the 4x4 blur
// (each output written once), generic filters use kh*kw clipped saxpy passes.
#include "fir2d.h"

#include <algorithm>
#include <cstdint>
#include <vector>

namespace navcuda {
namespace {

constexpr int64_t kParallelMin = 1 << 15;

// One output row from kh input-row pointers (rows[i] = input row y + i - pad_y, or a zero row
// where that is outside the image). Columns whose taps all lie inside the row are computed in one
// vectorised pass (each output written once); the few border columns check every tap.
template <typename T, int KH, int KW>
void fir2d_row(const T* const* rows, const T* __restrict w, T* __restrict dst, int64_t wd,
               int64_t kh_rt, int64_t kw_rt, int64_t pad_x, int64_t wo) {
  const int64_t kh = KH > 0 ? KH : kh_rt;
  const int64_t kw = KW > 0 ? KW : kw_rt;
  // Interior: xo - pad_x >= 0 and xo - pad_x + kw - 1 < wd.
  const int64_t lo = std::min<int64_t>(wo, std::max<int64_t>(0, pad_x));
  const int64_t hi = std::max<int64_t>(lo, std::min<int64_t>(wo, wd - kw + 1 + pad_x));
  auto border = [&](int64_t xo) {
    T acc = T(0);
    for (int64_t i = 0; i < kh; ++i) {
      for (int64_t j = 0; j < kw; ++j) {
        const int64_t ix = xo + j - pad_x;
        if (ix >= 0 && ix < wd) acc += w[i * kw + j] * rows[i][ix];
      }
    }
    dst[xo] = acc;
  };
  for (int64_t xo = 0; xo < lo; ++xo) border(xo);
  if constexpr (KH == 4 && KW == 4) {
    // Written out so that GCC vectorises along xo (the nested tap loops defeated it).
    const T* __restrict a = rows[0] - pad_x;
    const T* __restrict b = rows[1] - pad_x;
    const T* __restrict c = rows[2] - pad_x;
    const T* __restrict d = rows[3] - pad_x;
    const T w00 = w[0], w01 = w[1], w02 = w[2], w03 = w[3], w10 = w[4], w11 = w[5], w12 = w[6],
            w13 = w[7], w20 = w[8], w21 = w[9], w22 = w[10], w23 = w[11], w30 = w[12], w31 = w[13],
            w32 = w[14], w33 = w[15];
#pragma omp simd
    for (int64_t xo = lo; xo < hi; ++xo) {
      dst[xo] = (w00 * a[xo] + w01 * a[xo + 1] + w02 * a[xo + 2] + w03 * a[xo + 3]) +
                (w10 * b[xo] + w11 * b[xo + 1] + w12 * b[xo + 2] + w13 * b[xo + 3]) +
                (w20 * c[xo] + w21 * c[xo + 1] + w22 * c[xo + 2] + w23 * c[xo + 3]) +
                (w30 * d[xo] + w31 * d[xo + 1] + w32 * d[xo + 2] + w33 * d[xo + 3]);
    }
  } else {
    for (int64_t xo = lo; xo < hi; ++xo) dst[xo] = T(0);
    for (int64_t i = 0; i < kh; ++i) {
      for (int64_t j = 0; j < kw; ++j) {
        const T cij = w[i * kw + j];
        const T* s = rows[i] + j - pad_x;
#pragma omp simd
        for (int64_t xo = lo; xo < hi; ++xo) dst[xo] += cij * s[xo];
      }
    }
  }
  for (int64_t xo = hi; xo < wo; ++xo) border(xo);
}

template <typename T, int KH, int KW>
void fir2d_kernel(const T* __restrict x, const T* __restrict w, T* __restrict out, int64_t planes,
                  int64_t h, int64_t wd, int64_t kh, int64_t kw, int64_t pad_y, int64_t pad_x,
                  int64_t ho, int64_t wo) {
  const int64_t rows = planes * ho;
  const std::vector<T> zeros(static_cast<size_t>(wd), T(0));
#pragma omp parallel for schedule(static) if (rows * wo * kh * kw >= kParallelMin)
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t p = r / ho, y = r % ho;
    const T* in_rows[kFir2dMaxTaps];
    for (int64_t i = 0; i < kh; ++i) {
      const int64_t iy = y + i - pad_y;
      in_rows[i] = (iy < 0 || iy >= h) ? zeros.data() : x + (p * h + iy) * wd;
    }
    fir2d_row<T, KH, KW>(in_rows, w, out + r * wo, wd, kh, kw, pad_x, wo);
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
    auto run = [&](auto kernel) {
      kernel(as_ptr<const T>(x), as_ptr<const T>(w), as_ptr<T>(out), planes, h, wd, kh, kw, pad_y,
             pad_x, ho, wo);
    };
    if (kh == 4 && kw == 4) {  // StyleGAN2's [1, 3, 3, 1] blur: taps unrolled at compile time
      run(fir2d_kernel<T, 4, 4>);
    } else {
      run(fir2d_kernel<T, 0, 0>);
    }
  });
}

}  // namespace navcuda
