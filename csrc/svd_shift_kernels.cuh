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
  NAVCUDA_SHARED(T, As, [BK][BM]);  // As[p][m] = vh[p0 + p, o0 + m] * s[b, p0 + p]
  NAVCUDA_SHARED(
      T, Bs, [BK][BN + 1]);  // Bs[p][n] = u[kidx(c0 + n), p0 + p] (padded: no bank conflicts)
  const long long K = n_in * taps;
  const long long b = blockIdx.z;
  const long long o0 = (long long)blockIdx.y * BM;
  const long long c0 = (long long)blockIdx.x * BN;
  const int tx = threadIdx.x;
  const int ty = threadIdx.y;
  const int tid = ty * TX + tx;
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
      const long long c = c0 + n;
      const long long j = p0 + p;
      Bs[p][n] = (c < K && j < rank) ? u[svd_shift_kidx(c, n_in, taps) * rank + j] : T(0);
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

// e[b, j] = sum_o vh[j, o] * sum_c G_b[o, c] * u[kidx(c), j]  (diagonal of U^T G_b^flat V).
// Grid: (ceil(rank / BN), 1, batch); block: (BN / TN, BM / TM). Each block loops over all output
// rows in BM tiles and reduces its column partial sums in shared memory: no atomics, and the
// result is deterministic.
template <typename T, int BM, int BN, int BK, int TM, int TN>
__global__ void svd_shift_grad_kernel(const T* g, const T* u, const T* vh, T* e, long long n_out,
                                      long long n_in, long long taps, long long rank) {
  constexpr int TX = BN / TN;
  constexpr int TY = BM / TM;
  constexpr int NT = TX * TY;
  NAVCUDA_SHARED(T, As, [BK][BM + 1]);  // As[p][m] = G_b[o0 + m, c0 + p]
  NAVCUDA_SHARED(T, Bs, [BK][BN]);      // Bs[p][n] = u[kidx(c0 + p), j0 + n]
  NAVCUDA_SHARED(T, red, [TY][BN]);     // per-row-of-threads partial sums of e
  const long long K = n_in * taps;
  const long long b = blockIdx.z;
  const long long j0 = (long long)blockIdx.x * BN;
  const int tx = threadIdx.x;
  const int ty = threadIdx.y;
  const int tid = ty * TX + tx;
  const T* gb = g + b * n_out * K;
  T part[TN];
  for (int jj = 0; jj < TN; ++jj) part[jj] = T(0);

  for (long long o0 = 0; o0 < n_out; o0 += BM) {
    T acc[TM][TN];
    for (int i = 0; i < TM; ++i)
      for (int jj = 0; jj < TN; ++jj) acc[i][jj] = T(0);
    for (long long c0 = 0; c0 < K; c0 += BK) {
      for (int idx = tid; idx < BK * BM; idx += NT) {  // consecutive threads: consecutive c
        const int p = idx % BK;
        const int m = idx / BK;
        const long long o = o0 + m;
        const long long c = c0 + p;
        As[p][m] = (o < n_out && c < K) ? gb[o * K + c] : T(0);
      }
      for (int idx = tid; idx < BK * BN; idx += NT) {  // consecutive threads: consecutive j
        const int n = idx % BN;
        const int p = idx / BN;
        const long long c = c0 + p;
        const long long j = j0 + n;
        Bs[p][n] = (c < K && j < rank) ? u[svd_shift_kidx(c, n_in, taps) * rank + j] : T(0);
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
    // Contract this row tile of P_b with vh (only the diagonal entries of U^T G V are needed).
    for (int jj = 0; jj < TN; ++jj) {
      const long long j = j0 + tx + jj * TX;
      if (j >= rank) continue;
      for (int i = 0; i < TM; ++i) {
        const long long o = o0 + ty + i * TY;
        if (o < n_out) part[jj] += vh[j * n_out + o] * acc[i][jj];
      }
    }
  }
  for (int jj = 0; jj < TN; ++jj) red[ty][tx + jj * TX] = part[jj];
  __syncthreads();
  if (ty == 0) {
    for (int jj = 0; jj < TN; ++jj) {
      const int n = tx + jj * TX;
      const long long j = j0 + n;
      T sum = T(0);
      for (int y = 0; y < TY; ++y) sum += red[y][n];
      if (j < rank) e[b * rank + j] = sum;
    }
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

}  // namespace navcuda
