// CUDA launchers for svd_shift (kernel bodies in svd_shift_kernels.cuh).
#include "cuda_launch.cuh"
#include "svd_shift.h"
#include "svd_shift_kernels.cuh"

namespace navcuda {
namespace {

long long blocks_for(long long n, int tile) { return (n + tile - 1) / tile; }

}  // namespace

void svd_shift_cuda(Buffer w, Buffer u, Buffer vh, Buffer s, Buffer out, int64_t batch,
                    int64_t n_out, int64_t n_in, int64_t taps, int64_t rank, int dtype,
                    std::uintptr_t stream) {
  if (svd_shift_check_args("svd_shift_cuda", w, u, vh, s, out, batch, n_out, n_in, taps, rank,
                           dtype) == 0) {
    return;
  }
  const long long K = n_in * taps;
  using C = SvdShiftConfigLarge;
  svd_shift_check_grid("svd_shift_cuda", blocks_for(K, C::BN), blocks_for(n_out, C::BM), batch);
  auto st = reinterpret_cast<cudaStream_t>(stream);
  const dim3 grid(static_cast<unsigned>(blocks_for(K, C::BN)),
                  static_cast<unsigned>(blocks_for(n_out, C::BM)), static_cast<unsigned>(batch));
  const dim3 block(C::BN / C::TN, C::BM / C::TM);
  dispatch_float(dtype, "svd_shift_cuda", [&](auto zero) {
    using T = decltype(zero);
    launch_kernel("svd_shift_forward_kernel",
                  &svd_shift_forward_kernel<T, C::BM, C::BN, C::BK, C::TM, C::TN>, grid, block, st,
                  as_ptr<const T>(w), as_ptr<const T>(u), as_ptr<const T>(vh), as_ptr<const T>(s),
                  as_ptr<T>(out), n_out, n_in, taps, rank);
  });
  check_launch("svd_shift_cuda");
}

void svd_shift_grad_cuda(Buffer g, Buffer u, Buffer vh, Buffer e, Buffer work, int64_t batch,
                         int64_t n_out, int64_t n_in, int64_t taps, int64_t rank, int dtype,
                         std::uintptr_t stream) {
  if (svd_shift_grad_check_args("svd_shift_grad_cuda", g, u, vh, e, batch, n_out, n_in, taps, rank,
                                dtype) == 0) {
    return;
  }
  using C = SvdShiftConfigLarge;
  static_assert(C::BM == kSvdShiftGradRowTile, "svd_shift_grad_workspace assumes BM-row tiles");
  const long long rows = svd_shift_grad_rows_per_chunk(n_out, C::BM, kSvdShiftGradMaxChunks);
  const long long chunks = svd_shift_grad_chunks(n_out, rows);
  svd_shift_check_grid("svd_shift_grad_cuda", blocks_for(rank, C::BN), chunks, batch);
  const long long needed = batch * chunks * rank;
  const int es = dtype_bytes(dtype, "svd_shift_grad_cuda");
  NAVCUDA_CHECK(work.present() && work.bytes >= needed * es,
                "svd_shift_grad_cuda: scratch of " << work.bytes / es << " elements, needs "
                                                   << needed << " (svd_shift_grad_workspace)");
  auto st = reinterpret_cast<cudaStream_t>(stream);
  const dim3 grid(static_cast<unsigned>(blocks_for(rank, C::BN)), static_cast<unsigned>(chunks),
                  static_cast<unsigned>(batch));
  const dim3 block(C::BN / C::TN, C::BM / C::TM);
  dispatch_float(dtype, "svd_shift_grad_cuda", [&](auto zero) {
    using T = decltype(zero);
    launch_kernel("svd_shift_grad_kernel",
                  &svd_shift_grad_kernel<T, C::BM, C::BN, C::BK, C::TM, C::TN>, grid, block, st,
                  as_ptr<const T>(g), as_ptr<const T>(u), as_ptr<const T>(vh), as_ptr<T>(work),
                  n_out, n_in, taps, rank, rows);
    check_launch("svd_shift_grad_cuda");  // before the next launch reads the error state
    launch_kernel("svd_shift_grad_reduce_kernel", &svd_shift_grad_reduce_kernel<T>,
                  dim3(launch_blocks(batch * rank)), dim3(kLaunchThreads), st,
                  as_ptr<const T>(work), as_ptr<T>(e), batch * rank, chunks, rank);
  });
  check_launch("svd_shift_grad_cuda");
}

}  // namespace navcuda
