// fir2d: the up=1, down=1 case of upfirdn2d (the blur after a transposed convolution, the blur
// before a strided one), as a plain 2-D correlation with implicit zero padding:
//
//   out[p, y, x] = sum_{i < kh, j < kw} w[i, j] * in[p, y + i - pad_y, x + j - pad_x]
//
// over planes p (batch * channels) of contiguous [planes, h, w] input and [planes, ho, wo]
// output; input pixels outside [0, h) x [0, w) read as zero, and negative pads crop. The caller
// passes the filter already flipped (upfirdn2d convolves). The adjoint w.r.t. the input is the
// same op with the filter flipped and the pads (kh - 1 - pad_y, kw - 1 - pad_x), output h x w.
//
// The padded input is never materialised: the CPU kernel (fir2d.cpp) pads one cache-sized strip
// of rows at a time into scratch and filters it (separably where the filter is rank 1); the CUDA
// kernel (fir2d_kernels.cuh) computes one output pixel per thread.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdlib>

#include "common.h"

namespace navcuda {

// ----------------------------------------------------------------------- CPU (fir2d.cpp)
// Buffers (common.h): x [planes, h, wd], w [kh, kw], out [planes, ho, wo], all of `dtype`.
void fir2d_cpu(Buffer x, Buffer w, Buffer out, int64_t planes, int64_t h, int64_t wd, int64_t kh,
               int64_t kw, int64_t pad_y, int64_t pad_x, int64_t ho, int64_t wo, int dtype);

#if defined(NAVCUDA_WITH_CUDA) || defined(NAVCUDA_CUDA_EMU)
// ----------------------------------------------------------------------- CUDA (fir2d.cu)
void fir2d_cuda(Buffer x, Buffer w, Buffer out, int64_t planes, int64_t h, int64_t wd, int64_t kh,
                int64_t kw, int64_t pad_y, int64_t pad_x, int64_t ho, int64_t wo, int dtype,
                std::uintptr_t stream);
#endif

// Largest filter side the kernels accept (the CUDA body keeps the filter in registers' reach).
constexpr int64_t kFir2dMaxTaps = 16;

// Shared argument checks (common.h's helpers; throw std::invalid_argument); inline so that
// navcuda._C_emu, which compiles only the kernel headers, has them too. Pads may be negative
// (crops) but not beyond kMaxElements, so that the kernels' coordinates cannot overflow. Returns
// the output's element count.
inline int64_t fir2d_check_args(const char* op, const Buffer& x, const Buffer& w, const Buffer& out,
                                int64_t planes, int64_t h, int64_t wd, int64_t kh, int64_t kw,
                                int64_t pad_y, int64_t pad_x, int64_t ho, int64_t wo, int dtype) {
  check_dims(op, {{"planes", planes}, {"h", h}, {"w", wd}, {"ho", ho}, {"wo", wo}});
  NAVCUDA_CHECK(kh >= 1 && kw >= 1 && kh <= kFir2dMaxTaps && kw <= kFir2dMaxTaps,
                op << ": filter must be between 1x1 and " << kFir2dMaxTaps << "x" << kFir2dMaxTaps
                   << ", got " << kh << "x" << kw);
  NAVCUDA_CHECK(pad_y >= -kMaxElements && pad_y <= kMaxElements && pad_x >= -kMaxElements &&
                    pad_x <= kMaxElements,
                op << ": pads must lie within +-2^58, got pad_y=" << pad_y << " pad_x=" << pad_x);
  const int es = dtype_bytes(dtype, op);
  check_buffer(op, "x", x, es, "[planes, h, w]", {planes, h, wd});
  check_buffer(op, "w", w, es, "[kh, kw]", {kh, kw});
  return check_buffer(op, "out", out, es, "[planes, ho, wo]", {planes, ho, wo});
}

// The largest magnitude the CUDA kernel's indices reach (for dispatch_index): the input's and the
// output's element counts, and a tap's coordinates y + i - pad_y, x + j - pad_x.
inline long long fir2d_index_extent(int64_t planes, int64_t h, int64_t wd, int64_t kh, int64_t kw,
                                    int64_t pad_y, int64_t pad_x, int64_t ho, int64_t wo) {
  return std::max<long long>({planes * h * wd, planes * ho * wo, ho + kh + std::llabs(pad_y),
                              wo + kw + std::llabs(pad_x)});
}

}  // namespace navcuda
