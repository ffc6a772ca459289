// CUDA kernel bodies for svd_shift (launchers in svd_shift.cu; the same bodies run on the CPU in
// the test-only module navcuda._C_emu through cuda_emu.h). Math and layouts: svd_shift.h.
//
// Only the subset cuda_emu.h emulates is used: blockIdx/threadIdx/blockDim/gridDim,
// NAVCUDA_SHARED arrays, __syncthreads() and plain arithmetic (no warp functions, no atomics).
//
// Both kernels are classic shared-memory tiled GEMMs: a block of (BN/TN) x (BM/TM) threads owns a
// BM x BN output tile, stages BK-deep slices of A and B in shared memory, and every thread
// accumulates a TM x TN register micro-tile. A thread's rows/columns are strided by the thread
// grid (row ty + i*TY, column tx + jj*TX), so shared-memory reads of a warp hit consecutive words
// and the global stores of the epilogue are coalesced.
#pragma once

#include "kernel_shared.cuh"
#include "svd_shift.h"

namespace navcuda {

// out[b, o, c] = W[o, c] + sum_j (vh[j, o] * s[b, j]) * u[kidx(c), j].
// Grid: (ceil(K / BN), ceil(n_out / BM), batch); block: (BN / TN, BM / TM).
template <typename T, int BM, int BN, int BK, int TM, int TN>
__global__ void svd_shift_forward_kernel(const T* w, const T* u, const T* vh, const T* s, T* out,
                                         long long n_out, long long n_in, long long taps,
                                         long long rank) {
  constexpr int TX = BN / TN;
  constexpr int TY = BM / TM;
  constexpr int NT = TX * TY;
  static_assert(NT >= BN, "svd_shift_forward_kernel: one thread per column of u's row table");
  NAVCUDA_SHARED(T, As, [BK][BM]);  // As[p][m] = vh[p0 + p, o0 + m] * s[b, p0 + p]
  NAVCUDA_SHARED(
      T, Bs, [BK][BN + 1]);  // Bs[p][n] = u[kidx(c0 + n), p0 + p] (padded: no bank conflicts)
  NAVCUDA_SHARED(long long, urow, [BN]);  // offset of u's row kidx(c0 + n), -1 past the end
  const long long K = n_in * taps;
  const long long b = blockIdx.z;
  const long long o0 = (long long)blockIdx.y * BM;
  const long long c0 = (long long)blockIdx.x * BN;
  const int tx = threadIdx.x;
  const int ty = threadIdx.y;
  const int tid = ty * TX + tx;
  // The block's columns are fixed: their rows of u are found once (two integer divisions per
  // column), not per staged element of every rank slice.
  if (tid < BN) urow[tid] = c0 + tid < K ? svd_shift_kidx(c0 + tid, n_in, taps) * rank : -1;
  __syncthreads();
  T acc[TM][TN];
  for (int i = 0; i < TM; ++i)
    for (int jj = 0; jj < TN; ++jj) acc[i][jj] = T(0);

  for (long long p0 = 0; p0 < rank; p0 += BK) {
    for (int idx = tid; idx < BK * BM; idx += NT) {  // consecutive threads: consecutive o
      const int m = idx % BM;
      const int p = idx / BM;
      const long long o = o0 + m;
      const long long j = p0 + p;
      As[p][m] = (o < n_out && j < rank) ? vh[j * n_out + o] * s[b * rank + j] : T(0);
    }
    for (int idx = tid; idx < BK * BN; idx += NT) {  // consecutive threads: consecutive j
      const int p = idx % BK;
      const int n = idx / BK;
      const long long row = urow[n];
      const long long j = p0 + p;
      Bs[p][n] = (row >= 0 && j < rank) ? u[row + j] : T(0);
    }
    __syncthreads();
    for (int p = 0; p < BK; ++p) {
      T a[TM];
      T bv[TN];
      for (int i = 0; i < TM; ++i) a[i] = As[p][ty + i * TY];
      for (int jj = 0; jj < TN; ++jj) bv[jj] = Bs[p][tx + jj * TX];
      for (int i = 0; i < TM; ++i)
        for (int jj = 0; jj < TN; ++jj) acc[i][jj] += a[i] * bv[jj];
    }
    __syncthreads();
  }
  // Fused epilogue: + W, stored once in the final [B, out, in, kh, kw] layout.
  for (int i = 0; i < TM; ++i) {
    const long long o = o0 + ty + i * TY;
    if (o >= n_out) continue;
    for (int jj = 0; jj < TN; ++jj) {
      const long long c = c0 + tx + jj * TX;
      if (c < K) out[(b * n_out + o) * K + c] = w[o * K + c] + acc[i][jj];
    }
  }
}

// Partial sums of e over one chunk of output rows:
//   part[b, y, j] = sum_{o in chunk y} vh[j, o] * sum_c G_b[o, c] * u[kidx(c), j],
// the chunk y = blockIdx.y being rows [y * rows_per_chunk, (y + 1) * rows_per_chunk) (a multiple
// of BM). Grid: (ceil(rank / BN), chunks, batch); block: (BN / TN, BM / TM). Splitting the rows
// across the grid gives batch * rank / BN * chunks blocks (512 at the official layer, not 64);
// svd_shift_grad_reduce_kernel then sums the chunks in a fixed order: no atomics, and the result
// is deterministic.
template <typename T, int BM, int BN, int BK, int TM, int TN>
__global__ void svd_shift_grad_kernel(const T* g, const T* u, const T* vh, T* part, long long n_out,
                                      long long n_in, long long taps, long long rank,
                                      long long rows_per_chunk) {
  constexpr int TX = BN / TN;
  constexpr int TY = BM / TM;
  constexpr int NT = TX * TY;
  static_assert(NT >= BK, "svd_shift_grad_kernel: one thread per row of the u table");
  NAVCUDA_SHARED(T, As, [BK][BM + 1]);       // As[p][m] = G_b[o0 + m, c0 + p]
  NAVCUDA_SHARED(T, Bs, [BK][BN]);           // Bs[p][n] = u[kidx(c0 + p), j0 + n]
  NAVCUDA_SHARED(T, red, [TY][BN]);          // per-row-of-threads partial sums of e
  NAVCUDA_SHARED(long long, urow, [2][BK]);  // offsets of u's rows kidx(c0 + p), double-buffered
  const long long K = n_in * taps;
  const long long b = blockIdx.z;
  const long long j0 = (long long)blockIdx.x * BN;
  const long long o_begin = (long long)blockIdx.y * rows_per_chunk;
  const long long o_end = o_begin + rows_per_chunk < n_out ? o_begin + rows_per_chunk : n_out;
  const int tx = threadIdx.x;
  const int ty = threadIdx.y;
  const int tid = ty * TX + tx;
  const T* gb = g + b * n_out * K;
  T part_sum[TN];
  for (int jj = 0; jj < TN; ++jj) part_sum[jj] = T(0);

  for (long long o0 = o_begin; o0 < o_end; o0 += BM) {
    T acc[TM][TN];
    for (int i = 0; i < TM; ++i)
      for (int jj = 0; jj < TN; ++jj) acc[i][jj] = T(0);
    // Row offsets of u for the first column slice; each slice's compute phase then finds the
    // next slice's into the other buffer (read after the barrier that ends the slice), so the
    // divisions of kidx cost BK per slice, not one per staged element.
    if (tid < BK) urow[0][tid] = tid < K ? svd_shift_kidx(tid, n_in, taps) * rank : -1;
    __syncthreads();
    int buf = 0;
    for (long long c0 = 0; c0 < K; c0 += BK) {
      for (int idx = tid; idx < BK * BM; idx += NT) {  // consecutive threads: consecutive c
        const int p = idx % BK;
        const int m = idx / BK;
        const long long o = o0 + m;
        const long long c = c0 + p;
        As[p][m] = (o < o_end && c < K) ? gb[o * K + c] : T(0);
      }
      for (int idx = tid; idx < BK * BN; idx += NT) {  // consecutive threads: consecutive j
        const int n = idx % BN;
        const int p = idx / BN;
        const long long row = urow[buf][p];
        const long long j = j0 + n;
        Bs[p][n] = (row >= 0 && j < rank) ? u[row + j] : T(0);
      }
      __syncthreads();
      if (tid < BK) {
        const long long c = c0 + BK + tid;
        urow[buf ^ 1][tid] = c < K ? svd_shift_kidx(c, n_in, taps) * rank : -1;
      }
      for (int p = 0; p < BK; ++p) {
        T a[TM];
        T bv[TN];
        for (int i = 0; i < TM; ++i) a[i] = As[p][ty + i * TY];
        for (int jj = 0; jj < TN; ++jj) bv[jj] = Bs[p][tx + jj * TX];
        for (int i = 0; i < TM; ++i)
          for (int jj = 0; jj < TN; ++jj) acc[i][jj] += a[i] * bv[jj];
      }
      __syncthreads();
      buf ^= 1;
    }
    // Contract this row tile of P_b with vh (only the diagonal entries of U^T G V are needed).
    for (int jj = 0; jj < TN; ++jj) {
      const long long j = j0 + tx + jj * TX;
      if (j >= rank) continue;
      for (int i = 0; i < TM; ++i) {
        const long long o = o0 + ty + i * TY;
        if (o < o_end) part_sum[jj] += vh[j * n_out + o] * acc[i][jj];
      }
    }
  }
  for (int jj = 0; jj < TN; ++jj) red[ty][tx + jj * TX] = part_sum[jj];
  __syncthreads();
  if (ty == 0) {
    for (int jj = 0; jj < TN; ++jj) {
      const int n = tx + jj * TX;
      const long long j = j0 + n;
      T sum = T(0);
      for (int y = 0; y < TY; ++y) sum += red[y][n];
      if (j < rank) part[(b * gridDim.y + blockIdx.y) * rank + j] = sum;
    }
  }
}

// e[b, j] = sum_y part[b, y, j] over the `chunks` row chunks, in order. Grid-stride loop over
// batch * rank elements; consecutive threads read consecutive j.
template <typename T>
__global__ void svd_shift_grad_reduce_kernel(const T* part, T* e, long long n, long long chunks,
                                             long long rank) {
  const long long stride = (long long)blockDim.x * gridDim.x;
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
    const long long b = i / rank;
    const long long j = i - b * rank;
    const T* p = part + b * chunks * rank + j;
    T sum = T(0);
    for (long long y = 0; y < chunks; ++y) sum += p[y * rank];
    e[i] = sum;
  }
}

// Launch configurations: 0 = production (64 x 64 tiles, 16 x 16 threads, 4 x 4 per thread),
// 1 = small (16 x 16 tiles, 8 x 8 threads, 2 x 2 per thread; used by the emulator tests to cover
// many blocks and partial tiles with small shapes).
struct SvdShiftConfigLarge {
  static constexpr int BM = 64, BN = 64, BK = 16, TM = 4, TN = 4;
};
struct SvdShiftConfigSmall {
  static constexpr int BM = 16, BN = 16, BK = 8, TM = 2, TN = 2;
};

// The launch grid of either kernel (x_blocks: tiles of K or of rank; y_blocks: row tiles or
// chunks; z: the samples) within what a GPU launches.
inline void svd_shift_check_grid(const char* op, long long x_blocks, long long y_blocks,
                                 long long batch) {
  NAVCUDA_CHECK(x_blocks <= 2147483647LL && y_blocks <= 65535 && batch <= 65535,
                op << ": too large for the launch grid: " << x_blocks << " x " << y_blocks << " x "
                   << batch << " blocks (at most (2^31 - 1) x 65535 x 65535; batch <= 65535)");
}

}  // namespace navcuda
