// CPU kernel for fir2d. Work is split into strips of output rows of one plane (OpenMP over all
// strips of all planes). Each task first copies the input rows its strip reads into a
// thread-local, zero-padded scratch strip sized to stay in L1/L2 (so neither the padded input is
// built in memory nor any border is special-cased afterwards), then filters it with long
// contiguous loops the compiler vectorises:
//  - a separable filter (w = a b^T up to rounding, e.g. StyleGAN2's [1, 3, 3, 1] blur) runs as a
//    horizontal pass over the strip (kw taps per padded row) and a vertical pass (kh taps per
//    output row): kh + kw multiply-adds per output instead of kh * kw;
//  - any other filter accumulates kh * kw shifted rows of the strip into each output row.
// The kernels live in fir2d_cpu_kernels.inc, compiled generically and for AVX2 + FMA and picked at
// run time (cpu_isa.h).
#include "fir2d.h"
#include "cpu_isa.h"

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
// max |w|; false where the filter is not separable to that precision (then the 2-D path runs),
// and for a filter with a NaN or infinite tap: the 2-D path multiplies every tap with every
// pixel of the zero-padded input, so such a tap gives what the reference's padded convolution
// gives (NaN * 0 = NaN, inf * 0 = NaN at the padding), whereas factors built from it would hide a
// NaN off the largest tap's row and column (the comparisons below are false for NaN) or turn
// inf into inf / inf = NaN.
template <typename T>
bool separable_factors(const T* w, int64_t kh, int64_t kw, std::vector<T>& a, std::vector<T>& b) {
  int64_t i0 = 0, j0 = 0;
  double wmax = 0;
  for (int64_t i = 0; i < kh; ++i) {
    for (int64_t j = 0; j < kw; ++j) {
      if (!std::isfinite(double(w[i * kw + j]))) return false;
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

#define NAVCUDA_CPU_KERNELS "fir2d_cpu_kernels.inc"
#include "cpu_isa_variants.inc"

}  // namespace

void fir2d_cpu(Buffer x, Buffer w, Buffer out, int64_t planes, int64_t h, int64_t wd, int64_t kh,
               int64_t kw, int64_t pad_y, int64_t pad_x, int64_t ho, int64_t wo, int dtype) {
  if (fir2d_check_args("fir2d_cpu", x, w, out, planes, h, wd, kh, kw, pad_y, pad_x, ho, wo,
                       dtype) == 0) {
    return;
  }
  dispatch_float(dtype, "fir2d_cpu", [&](auto zero) {
    using T = decltype(zero);
    pick_isa(&generic::fir2d_kernel<T>, &avx2::fir2d_kernel<T>)(
        as_ptr<const T>(x), as_ptr<const T>(w), as_ptr<T>(out), planes, h, wd, kh, kw, pad_y, pad_x,
        ho, wo);
  });
}

}  // namespace navcuda
