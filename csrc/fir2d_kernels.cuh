// CUDA kernel body for fir2d (launch code in fir2d.cu). Kept to the subset csrc/cuda_emu.h
// provides (see there), so navcuda._C_emu runs it on the CPU in the tests.
#pragma once

#include "fir2d.h"
#include "kernel_shared.cuh"

namespace navcuda {

// One output pixel per thread, grid-stride over planes * ho * wo. Taps outside the input read a
// zero (implicit zero padding) that is still multiplied, as the reference's padded convolution
// and the CPU kernel do: a NaN tap gives NaN, an infinite one NaN where it meets the padding
// (for finite filters the zero products leave every sum bit-identical). Idx: int where the
// launcher's dispatch_index allows it (integer divisions per output, 32-bit ones several times
// cheaper on a GPU).
template <typename T, typename Idx>
__global__ void fir2d_kernel(const T* x, const T* w, T* out, Idx planes, Idx h, Idx wd, Idx kh,
                             Idx kw, Idx pad_y, Idx pad_x, Idx ho, Idx wo) {
  const Idx n = planes * ho * wo;
  const Idx stride = Idx(blockDim.x) * Idx(gridDim.x);
  for (Idx e = Idx(blockIdx.x) * Idx(blockDim.x) + Idx(threadIdx.x); e < n; e += stride) {
    const auto [xo, y, p] = unravel3(e, wo, ho);
    const T* src = x + p * h * wd;
    T acc = T(0);
    for (Idx i = 0; i < kh; ++i) {
      const Idx iy = y + i - pad_y;
      const bool row_inside = iy >= 0 && iy < h;
      for (Idx j = 0; j < kw; ++j) {
        const Idx ix = xo + j - pad_x;
        const T v = row_inside && ix >= 0 && ix < wd ? src[iy * wd + ix] : T(0);
        acc += w[i * kw + j] * v;
      }
    }
    out[e] = acc;
  }
}

}  // namespace navcuda
