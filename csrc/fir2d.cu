// CUDA launcher for fir2d (kernel body in fir2d_kernels.cuh).
#include "cuda_launch.cuh"
#include "fir2d.h"
#include "fir2d_kernels.cuh"

namespace navcuda {

void fir2d_cuda(Buffer x, Buffer w, Buffer out, int64_t planes, int64_t h, int64_t wd, int64_t kh,
                int64_t kw, int64_t pad_y, int64_t pad_x, int64_t ho, int64_t wo, int dtype,
                std::uintptr_t stream) {
  const long long n =
      fir2d_check_args("fir2d_cuda", x, w, out, planes, h, wd, kh, kw, pad_y, pad_x, ho, wo, dtype);
  if (n == 0) return;
  auto s = reinterpret_cast<cudaStream_t>(stream);
  dispatch_float(dtype, "fir2d_cuda", [&](auto zero) {
    using T = decltype(zero);
    dispatch_index(fir2d_index_extent(planes, h, wd, kh, kw, pad_y, pad_x, ho, wo), [&](auto idx) {
      using Idx = decltype(idx);
      launch_kernel("fir2d_kernel", &fir2d_kernel<T, Idx>, launch_blocks(n), kLaunchThreads, s,
                    as_ptr<const T>(x), as_ptr<const T>(w), as_ptr<T>(out), planes, h, wd, kh, kw,
                    pad_y, pad_x, ho, wo);
    });
  });
  check_launch("fir2d_cuda");
}

}  // namespace navcuda
