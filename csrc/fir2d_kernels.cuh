// CUDA kernel body for fir2d (launch code in fir2d.cu). Kept to the subset csrc/cuda_emu.h
// provides (see there), so navcuda._C_emu runs it on the CPU in the tests.
#pragma once

#include "fir2d.h"

namespace navcuda {

// One output pixel per thread, grid-stride over planes * ho * wo; taps outside the input are
// skipped (implicit zero padding).
template <typename T>
__global__ void fir2d_kernel(const T* x, const T* w, T* out, long long planes, long long h,
                             long long wd, long long kh, long long kw, long long pad_y,
                             long long pad_x, long long ho, long long wo) {
  const long long n = planes * ho * wo;
  const long long stride = (long long)blockDim.x * gridDim.x;
  for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < n; e += stride) {
    const long long xo = e % wo;
    const long long y = (e / wo) % ho;
    const long long p = e / (wo * ho);
    const T* src = x + p * h * wd;
    T acc = T(0);
    for (long long i = 0; i < kh; ++i) {
      const long long iy = y + i - pad_y;
      if (iy < 0 || iy >= h) continue;
      for (long long j = 0; j < kw; ++j) {
        const long long ix = xo + j - pad_x;
        if (ix < 0 || ix >= wd) continue;
        acc += w[i * kw + j] * src[iy * wd + ix];
      }
    }
    out[e] = acc;
  }
}

}  // namespace navcuda
