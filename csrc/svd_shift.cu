// CUDA launchers for svd_shift (kernel bodies in svd_shift_kernels.cuh).
#include "cuda_launch.cuh"
#include "svd_shift.h"
#include "svd_shift_kernels.cuh"

namespace navcuda {
namespace {

unsigned int blocks_for(long long n, int tile) {
  return static_cast<unsigned int>((n + tile - 1) / tile);
}

}  // namespace

void svd_shift_cuda(std::uintptr_t w, std::uintptr_t u, std::uintptr_t vh, std::uintptr_t s,
                    std::uintptr_t out, int64_t batch, int64_t n_out, int64_t n_in, int64_t taps,
                    int64_t rank, int dtype, std::uintptr_t stream) {
  svd_shift_check_args("svd_shift_cuda", batch, n_out, n_in, taps, rank);
  const long long K = n_in * taps;
  if (batch * n_out * K == 0) return;
  NAVCUDA_CHECK(batch <= 65535, "svd_shift_cuda: batch " << batch << " exceeds 65535");
  using C = SvdShiftConfigLarge;
  NAVCUDA_CHECK((n_out + C::BM - 1) / C::BM <= 65535,
                "svd_shift_cuda: out=" << n_out << " is too large for the launch grid");
  auto st = reinterpret_cast<cudaStream_t>(stream);
  const dim3 grid(blocks_for(K, C::BN), blocks_for(n_out, C::BM), static_cast<unsigned>(batch));
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

void svd_shift_grad_cuda(std::uintptr_t g, std::uintptr_t u, std::uintptr_t vh, std::uintptr_t e,
                         std::uintptr_t work, int64_t work_numel, int64_t batch, int64_t n_out,
                         int64_t n_in, int64_t taps, int64_t rank, int dtype,
                         std::uintptr_t stream) {
  svd_shift_check_args("svd_shift_grad_cuda", batch, n_out, n_in, taps, rank);
  if (batch * rank == 0) return;
  NAVCUDA_CHECK(batch <= 65535, "svd_shift_grad_cuda: batch " << batch << " exceeds 65535");
  using C = SvdShiftConfigLarge;
  static_assert(C::BM == kSvdShiftGradRowTile, "svd_shift_grad_workspace assumes BM-row tiles");
  const long long rows = svd_shift_grad_rows_per_chunk(n_out, C::BM, kSvdShiftGradMaxChunks);
  const long long chunks = svd_shift_grad_chunks(n_out, rows);
  const long long needed = batch * chunks * rank;
  NAVCUDA_CHECK(work && work_numel >= needed, "svd_shift_grad_cuda: scratch of "
                                                  << work_numel << " elements, needs " << needed
                                                  << " (svd_shift_grad_workspace)");
  auto st = reinterpret_cast<cudaStream_t>(stream);
  const dim3 grid(blocks_for(rank, C::BN), static_cast<unsigned>(chunks),
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
