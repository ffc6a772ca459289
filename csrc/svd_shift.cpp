// CPU kernels for svd_shift: a cache-blocked, register-blocked GEMM per sample with the `+ W` and
// the unflatten fused into the store (see svd_shift.h for the math and the layouts).
//
// Structure (BLIS-like, simplified): the constant u is packed once per call into the row-major
// operand the GEMM streams (uT [r, K] for the forward, u permuted to [K, r] for the backward);
// OpenMP runs independent tasks (sample, row block) / (sample, column block); inside a task, for
// each KC-deep slice the A operand (vh scaled by s_b, or a row block of G_b) is packed into MR-row
// micro-panels and an MR x NR micro-kernel with fixed-size accumulators runs over the tile
// (`#pragma omp simd` over the contiguous NR columns). The build uses portable flags only, so the
// tasks are compiled twice, generically and with `target("avx2,fma")` (wider micro-tiles), and
// picked at run time by the module-wide ISA choice (cpu_isa.h).
#include "svd_shift.h"
#include "cpu_isa.h"

#include <algorithm>
#include <cstdint>
#include <vector>

namespace navcuda {
namespace {

constexpr int64_t kKC = 256;   // depth of one slice (A micro-panel MR x KC, B panel KC x NR)
constexpr int64_t kMC = 96;    // forward: output rows per task (multiple of kMR)
constexpr int64_t kNCB = 128;  // backward: columns of P (singular directions) per task
constexpr int kMR = 6;         // micro-tile rows
constexpr int64_t kParallelMin = 1 << 16;  // multiply-adds below which one thread runs

#if defined(__GNUC__)
#define SVD_INLINE inline __attribute__((always_inline))
#else
#define SVD_INLINE inline
#endif

// C[m, n] = (Cin ? Cin[m, n] : 0) + sum_p Ap[p*MR + m] * B[p*ldb + n] for m < mr, n < nr.
// Ap is an MR-row micro-panel (rows >= mr are zero-padded), B a row-major slice with stride ldb.
template <typename T, int MR, int NR>
SVD_INLINE void micro_kernel(int64_t kc, const T* __restrict Ap, const T* __restrict B, int64_t ldb,
                             T* C, int64_t ldc, const T* Cin, int64_t ldcin, int mr, int nr) {
  if (nr == NR) {
    T acc[MR][NR];
    for (int m = 0; m < MR; ++m) {
#pragma omp simd
      for (int n = 0; n < NR; ++n) acc[m][n] = T(0);
    }
    for (int64_t p = 0; p < kc; ++p) {
      const T* __restrict b = B + p * ldb;
      const T* __restrict a = Ap + p * MR;
      for (int m = 0; m < MR; ++m) {
        const T am = a[m];
#pragma omp simd
        for (int n = 0; n < NR; ++n) acc[m][n] += am * b[n];
      }
    }
    for (int m = 0; m < mr; ++m) {
      T* c = C + m * ldc;
      if (Cin) {
        const T* ci = Cin + m * ldcin;
#pragma omp simd
        for (int n = 0; n < NR; ++n) c[n] = ci[n] + acc[m][n];
      } else {
#pragma omp simd
        for (int n = 0; n < NR; ++n) c[n] = acc[m][n];
      }
    }
    return;
  }
  // Column edge: same arithmetic order, runtime width.
  T acc[MR][NR] = {};
  for (int64_t p = 0; p < kc; ++p) {
    const T* b = B + p * ldb;
    const T* a = Ap + p * MR;
    for (int m = 0; m < MR; ++m) {
      for (int n = 0; n < nr; ++n) acc[m][n] += a[m] * b[n];
    }
  }
  for (int m = 0; m < mr; ++m) {
    for (int n = 0; n < nr; ++n) C[m * ldc + n] = (Cin ? Cin[m * ldcin + n] : T(0)) + acc[m][n];
  }
}

// Forward task: rows [o0, o0 + mc) of sample b. Ap: scratch of kKC * kMC elements.
template <typename T, int NR>
SVD_INLINE void forward_task(const T* __restrict w, const T* __restrict ut, const T* __restrict vh,
                             const T* __restrict s, T* __restrict out, int64_t b, int64_t o0,
                             int64_t mc, int64_t n_out, int64_t K, int64_t rank, T* __restrict Ap) {
  const T* sb = s + b * rank;
  T* ob = out + b * n_out * K;
  for (int64_t pc = 0; pc < rank; pc += kKC) {
    const int64_t kc = std::min(kKC, rank - pc);
    // Pack A(o, j) = vh[j, o] * s[b, j] for o in [o0, o0 + mc), j in [pc, pc + kc).
    for (int64_t mb = 0; mb < mc; mb += kMR) {
      T* ap = Ap + mb * kc;
      const int mr = int(std::min<int64_t>(kMR, mc - mb));
      for (int64_t p = 0; p < kc; ++p) {
        const T* v = vh + (pc + p) * n_out + o0 + mb;
        const T sj = sb[pc + p];
        for (int m = 0; m < kMR; ++m) ap[p * kMR + m] = m < mr ? v[m] * sj : T(0);
      }
    }
    for (int64_t n0 = 0; n0 < K; n0 += NR) {
      const int nr = int(std::min<int64_t>(NR, K - n0));
      const T* bp = ut + pc * K + n0;
      for (int64_t mb = 0; mb < mc; mb += kMR) {
        const int mr = int(std::min<int64_t>(kMR, mc - mb));
        T* c = ob + (o0 + mb) * K + n0;
        const T* cin = pc == 0 ? w + (o0 + mb) * K + n0 : c;
        micro_kernel<T, kMR, NR>(kc, Ap + mb * kc, bp, K, c, K, cin, K, mr, nr);
      }
    }
  }
}

// Backward task: e[b, j] for j in [j0, j0 + nc). Ap: kKC * kMR scratch; P: n_out * kNCB scratch.
template <typename T, int NR>
SVD_INLINE void grad_task(const T* __restrict g, const T* __restrict ug, const T* __restrict vh,
                          T* __restrict e, int64_t b, int64_t j0, int64_t nc, int64_t n_out,
                          int64_t K, int64_t rank, T* __restrict Ap, T* __restrict P) {
  const T* gb = g + b * n_out * K;
  for (int64_t pc = 0; pc < K; pc += kKC) {
    const int64_t kc = std::min(kKC, K - pc);
    for (int64_t mb = 0; mb < n_out; mb += kMR) {
      const int mr = int(std::min<int64_t>(kMR, n_out - mb));
      // Pack A(o, c) = G_b[o, c] for o in [mb, mb + mr), c in [pc, pc + kc).
      for (int m = 0; m < kMR; ++m) {
        const T* row = gb + (mb + m) * K + pc;
        if (m < mr) {
          for (int64_t p = 0; p < kc; ++p) Ap[p * kMR + m] = row[p];
        } else {
          for (int64_t p = 0; p < kc; ++p) Ap[p * kMR + m] = T(0);
        }
      }
      for (int64_t n0 = 0; n0 < nc; n0 += NR) {
        const int nr = int(std::min<int64_t>(NR, nc - n0));
        T* c = P + mb * kNCB + n0;
        micro_kernel<T, kMR, NR>(kc, Ap, ug + pc * rank + j0 + n0, rank, c, kNCB,
                                 pc == 0 ? nullptr : c, kNCB, mr, nr);
      }
    }
  }
  // e[b, j] = sum_o vh[j, o] * P[o, j - j0].
  for (int64_t jj = 0; jj < nc; ++jj) {
    const T* v = vh + (j0 + jj) * n_out;
    T sum = T(0);
    for (int64_t o = 0; o < n_out; ++o) sum += v[o] * P[o * kNCB + jj];
    e[b * rank + j0 + jj] = sum;
  }
}

// Instantiate the tasks once per ISA under distinct names (the always_inline bodies are compiled
// with the target of the function they are inlined into).
#define SVD_SHIFT_TASKS(SUFFIX, ATTR, NR_F, NR_D)                                                  \
  ATTR void forward_task_##SUFFIX(const float* w, const float* ut, const float* vh,                \
                                  const float* s, float* out, int64_t b, int64_t o0, int64_t mc,   \
                                  int64_t n_out, int64_t K, int64_t rank, float* Ap) {             \
    forward_task<float, NR_F>(w, ut, vh, s, out, b, o0, mc, n_out, K, rank, Ap);                   \
  }                                                                                                \
  ATTR void forward_task_##SUFFIX(const double* w, const double* ut, const double* vh,             \
                                  const double* s, double* out, int64_t b, int64_t o0, int64_t mc, \
                                  int64_t n_out, int64_t K, int64_t rank, double* Ap) {            \
    forward_task<double, NR_D>(w, ut, vh, s, out, b, o0, mc, n_out, K, rank, Ap);                  \
  }                                                                                                \
  ATTR void grad_task_##SUFFIX(const float* g, const float* ug, const float* vh, float* e,         \
                               int64_t b, int64_t j0, int64_t nc, int64_t n_out, int64_t K,        \
                               int64_t rank, float* Ap, float* P) {                                \
    grad_task<float, NR_F>(g, ug, vh, e, b, j0, nc, n_out, K, rank, Ap, P);                        \
  }                                                                                                \
  ATTR void grad_task_##SUFFIX(const double* g, const double* ug, const double* vh, double* e,     \
                               int64_t b, int64_t j0, int64_t nc, int64_t n_out, int64_t K,        \
                               int64_t rank, double* Ap, double* P) {                              \
    grad_task<double, NR_D>(g, ug, vh, e, b, j0, nc, n_out, K, rank, Ap, P);                       \
  }

// Generic: 2 SSE2 vectors per micro-tile row on x86-64 (portable baseline).
SVD_SHIFT_TASKS(generic, , 8, 4)

#if defined(NAVCUDA_CPU_HAVE_AVX2)
// 2 AVX2 vectors per micro-tile row: 6 x 2 accumulators + 2 B vectors + 1 broadcast <= 16 ymm.
SVD_SHIFT_TASKS(avx2, NAVCUDA_CPU_TARGET_AVX2, 16, 8)
#endif

bool use_avx2() { return cpu_isa() == CpuIsa::kAvx2; }

template <typename T>
void forward_impl(const T* w, const T* u, const T* vh, const T* s, T* out, int64_t batch,
                  int64_t n_out, int64_t n_in, int64_t taps, int64_t rank) {
  const int64_t K = n_in * taps;
  const bool parallel = double(batch) * n_out * K * rank >= kParallelMin;  // (double: no overflow)
  // uT[j, c] = u[kidx(c), j]: the permuted transpose of the constant u, packed once per call.
  std::vector<T> ut(static_cast<size_t>(rank * K));
  constexpr int64_t kTile = 32;
#pragma omp parallel for schedule(static) if (parallel)
  for (int64_t c0 = 0; c0 < K; c0 += kTile) {
    const int64_t c1 = std::min(K, c0 + kTile);
    for (int64_t j0 = 0; j0 < rank; j0 += kTile) {
      const int64_t j1 = std::min(rank, j0 + kTile);
      for (int64_t c = c0; c < c1; ++c) {
        const T* urow = u + svd_shift_kidx(c, n_in, taps) * rank;
        for (int64_t j = j0; j < j1; ++j) ut[j * K + c] = urow[j];
      }
    }
  }
  const int64_t blocks = (n_out + kMC - 1) / kMC;
  const bool avx2 = use_avx2();
#pragma omp parallel if (parallel)
  {
    std::vector<T> Ap(static_cast<size_t>(kKC * kMC));
#pragma omp for schedule(dynamic) collapse(2)
    for (int64_t b = 0; b < batch; ++b) {
      for (int64_t blk = 0; blk < blocks; ++blk) {
        const int64_t o0 = blk * kMC;
        const int64_t mc = std::min(kMC, n_out - o0);
#if defined(NAVCUDA_CPU_HAVE_AVX2)
        if (avx2) {
          forward_task_avx2(w, ut.data(), vh, s, out, b, o0, mc, n_out, K, rank, Ap.data());
          continue;
        }
#endif
        (void)avx2;
        forward_task_generic(w, ut.data(), vh, s, out, b, o0, mc, n_out, K, rank, Ap.data());
      }
    }
  }
}

template <typename T>
void grad_impl(const T* g, const T* u, const T* vh, T* e, int64_t batch, int64_t n_out,
               int64_t n_in, int64_t taps, int64_t rank) {
  const int64_t K = n_in * taps;
  const bool parallel = double(batch) * n_out * K * rank >= kParallelMin;  // (double: no overflow)
  // ug[c, j] = u[kidx(c), j]: rows of u in the order of G's columns.
  std::vector<T> ug(static_cast<size_t>(K * rank));
#pragma omp parallel for schedule(static) if (parallel)
  for (int64_t c = 0; c < K; ++c) {
    std::copy_n(u + svd_shift_kidx(c, n_in, taps) * rank, rank, ug.data() + c * rank);
  }
  const int64_t blocks = (rank + kNCB - 1) / kNCB;
  const bool avx2 = use_avx2();
#pragma omp parallel if (parallel)
  {
    std::vector<T> Ap(static_cast<size_t>(kKC * kMR));
    std::vector<T> P(static_cast<size_t>((n_out + kMR) * kNCB));
#pragma omp for schedule(dynamic) collapse(2)
    for (int64_t b = 0; b < batch; ++b) {
      for (int64_t blk = 0; blk < blocks; ++blk) {
        const int64_t j0 = blk * kNCB;
        const int64_t nc = std::min(kNCB, rank - j0);
#if defined(NAVCUDA_CPU_HAVE_AVX2)
        if (avx2) {
          grad_task_avx2(g, ug.data(), vh, e, b, j0, nc, n_out, K, rank, Ap.data(), P.data());
          continue;
        }
#endif
        (void)avx2;
        grad_task_generic(g, ug.data(), vh, e, b, j0, nc, n_out, K, rank, Ap.data(), P.data());
      }
    }
  }
}

}  // namespace

void svd_shift_cpu(Buffer w, Buffer u, Buffer vh, Buffer s, Buffer out, int64_t batch,
                   int64_t n_out, int64_t n_in, int64_t taps, int64_t rank, int dtype) {
  if (svd_shift_check_args("svd_shift_cpu", w, u, vh, s, out, batch, n_out, n_in, taps, rank,
                           dtype) == 0) {
    return;
  }
  dispatch_float(dtype, "svd_shift_cpu", [&](auto zero) {
    using T = decltype(zero);
    if (rank == 0) {  // no directions: every sample gets W
      const int64_t n = n_out * n_in * taps;
      for (int64_t b = 0; b < batch; ++b)
        std::copy_n(as_ptr<const T>(w), n, as_ptr<T>(out) + b * n);
      return;
    }
    forward_impl<T>(as_ptr<const T>(w), as_ptr<const T>(u), as_ptr<const T>(vh), as_ptr<const T>(s),
                    as_ptr<T>(out), batch, n_out, n_in, taps, rank);
  });
}

void svd_shift_grad_cpu(Buffer g, Buffer u, Buffer vh, Buffer e, Buffer work, int64_t batch,
                        int64_t n_out, int64_t n_in, int64_t taps, int64_t rank, int dtype) {
  (void)work;
  if (svd_shift_grad_check_args("svd_shift_grad_cpu", g, u, vh, e, batch, n_out, n_in, taps, rank,
                                dtype) == 0) {
    return;
  }
  dispatch_float(dtype, "svd_shift_grad_cpu", [&](auto zero) {
    using T = decltype(zero);
    grad_impl<T>(as_ptr<const T>(g), as_ptr<const T>(u), as_ptr<const T>(vh), as_ptr<T>(e), batch,
                 n_out, n_in, taps, rank);
  });
}

}  // namespace navcuda
