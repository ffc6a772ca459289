// svd_shift: per-sample shifted conv kernels in the singular-value basis of the flattened kernel.
//
//   out[b, o, i, y, x] = W[o, i, y, x] + sum_j vh[j, o] * s[b, j] * u[(y*kw + x)*in + i, j]
//
// with s[b, j] = t_b * d_b[j] / ||d_b|| computed by the Python wrapper (O(B*r), cheap). Shapes
// (all contiguous): W [out, in, taps] (taps = kh*kw), u [K, r] with K = taps*in (rows ordered
// (tap, in) as in navcuda.shift.flatten_kernel), vh [r, out], s [B, r], out [B, out, in, taps].
//
// The kernels compute the transposed product, one GEMM per sample in the output's own layout:
//   C_b[o, c] = W[o, c] + sum_j (vh[j, o] * s[b, j]) * uT[j, c],   c = i*taps + tap,
//   uT[j, c] = u[kidx(c), j],   kidx(c) = (c % taps) * in + c / taps,
// so the (kh, kw, in, out) -> (out, in, kh, kw) unflatten is folded into the indexing of u (a
// permuted copy of the constant u, packed once per call) and the output is written once, in its
// final layout.
//
// Backward (the "grad" entry points) computes only the O(B*K*out*r) part:
//   e[b, j] = u_j^T G_b^flat v_j = sum_o vh[j, o] * P_b[o, j],   P_b[o, j] = sum_c G_b[o, c] uT[j,
//   c]
// (the diagonal of U^T G_b^flat V, without forming the r x r product). dL/dt_b = <dhat_b, e_b>,
// dL/d(dhat_b) = t_b e_b and dL/dW = sum_b G_b are O(B*r) / memory-bound and done in torch.
#pragma once

#include <cstdint>

#include "common.h"

namespace navcuda {

// Row of u (in flattened (tap, in) order) feeding output column c = i*taps + tap.
NAVCUDA_HD int64_t svd_shift_kidx(int64_t c, int64_t n_in, int64_t taps) {
  return (c % taps) * n_in + c / taps;
}

// The CUDA backward splits the output rows into chunks of whole kSvdShiftGradRowTile-row tiles
// (one tile per chunk unless that would exceed the grid's y limit), reduces each chunk into
// part[b, chunk, j], and then sums the chunks in order (deterministic, no atomics). The caller
// supplies `part` as scratch of svd_shift_grad_workspace() elements of the op's dtype, from its
// own allocator (torch's caching allocator in navcuda.ops.svd_shift). The CPU kernels need none.
constexpr int64_t kSvdShiftGradRowTile = 64;
constexpr int64_t kSvdShiftGradMaxChunks = 65535;  // gridDim.y

// Rows per chunk (a multiple of `row_tile`) so that at most `max_chunks` chunks cover n_out rows.
inline int64_t svd_shift_grad_rows_per_chunk(int64_t n_out, int64_t row_tile, int64_t max_chunks) {
  const int64_t tiles = n_out > 0 ? (n_out + row_tile - 1) / row_tile : 1;
  return ((tiles + max_chunks - 1) / max_chunks) * row_tile;
}

inline int64_t svd_shift_grad_chunks(int64_t n_out, int64_t rows_per_chunk) {
  return n_out > 0 ? (n_out + rows_per_chunk - 1) / rows_per_chunk : 1;
}

// Scratch elements svd_shift_grad_cuda needs: batch * chunks * rank.
inline int64_t svd_shift_grad_workspace(int64_t batch, int64_t n_out, int64_t rank) {
  check_dims("svd_shift_grad_workspace", {{"batch", batch}, {"out", n_out}, {"rank", rank}});
  const int64_t rows =
      svd_shift_grad_rows_per_chunk(n_out, kSvdShiftGradRowTile, kSvdShiftGradMaxChunks);
  return checked_count("svd_shift_grad_workspace", "the scratch",
                       {batch, svd_shift_grad_chunks(n_out, rows), rank});
}

// Shared argument checks (common.h's helpers; throw std::invalid_argument with a clear message).
// Inline: the test-only emulation module uses them without linking svd_shift.cpp.
//
// The sizes and the constant factors u [in * taps, rank] and vh [rank, out]; returns the bytes
// per element.
inline int svd_shift_check_factors(const char* op, const Buffer& u, const Buffer& vh, int64_t batch,
                                   int64_t n_out, int64_t n_in, int64_t taps, int64_t rank,
                                   int dtype) {
  check_dims(op, {{"batch", batch}, {"out", n_out}, {"in", n_in}, {"taps", taps}, {"rank", rank}});
  const int es = dtype_bytes(dtype, op);
  check_buffer(op, "u", u, es, "[in * taps, rank]", {n_in, taps, rank});
  check_buffer(op, "vh", vh, es, "[rank, out]", {rank, n_out});
  return es;
}

// Forward: also w [out, in, taps], s [batch, rank] and out [batch, out, in, taps]; returns the
// output's element count.
inline int64_t svd_shift_check_args(const char* op, const Buffer& w, const Buffer& u,
                                    const Buffer& vh, const Buffer& s, const Buffer& out,
                                    int64_t batch, int64_t n_out, int64_t n_in, int64_t taps,
                                    int64_t rank, int dtype) {
  const int es = svd_shift_check_factors(op, u, vh, batch, n_out, n_in, taps, rank, dtype);
  check_buffer(op, "w", w, es, "[out, in, taps]", {n_out, n_in, taps});
  check_buffer(op, "s", s, es, "[batch, rank]", {batch, rank});
  return check_buffer(op, "out", out, es, "[batch, out, in, taps]", {batch, n_out, n_in, taps});
}

// Backward: also g [batch, out, in, taps] and e [batch, rank]; returns e's element count.
inline int64_t svd_shift_grad_check_args(const char* op, const Buffer& g, const Buffer& u,
                                         const Buffer& vh, const Buffer& e, int64_t batch,
                                         int64_t n_out, int64_t n_in, int64_t taps, int64_t rank,
                                         int dtype) {
  const int es = svd_shift_check_factors(op, u, vh, batch, n_out, n_in, taps, rank, dtype);
  check_buffer(op, "g", g, es, "[batch, out, in, taps]", {batch, n_out, n_in, taps});
  return check_buffer(op, "e", e, es, "[batch, rank]", {batch, rank});
}

// ----------------------------------------------------------------- CPU entry points
// (svd_shift.cpp) out[b] = W + unflatten(u diag(s[b]) vh) for every b (see above).
void svd_shift_cpu(Buffer w, Buffer u, Buffer vh, Buffer s, Buffer out, int64_t batch,
                   int64_t n_out, int64_t n_in, int64_t taps, int64_t rank, int dtype);
// e[b, j] = u_j^T G_b^flat v_j from g [B, out, in, taps]. `work`: the scratch of the CUDA entry
// point's signature, unused here (the CPU tasks keep their own).
void svd_shift_grad_cpu(Buffer g, Buffer u, Buffer vh, Buffer e, Buffer work, int64_t batch,
                        int64_t n_out, int64_t n_in, int64_t taps, int64_t rank, int dtype);

#if defined(NAVCUDA_WITH_CUDA) || defined(NAVCUDA_CUDA_EMU)
// ----------------------------------------------------------------- CUDA entry points
// (svd_shift.cu)
void svd_shift_cuda(Buffer w, Buffer u, Buffer vh, Buffer s, Buffer out, int64_t batch,
                    int64_t n_out, int64_t n_in, int64_t taps, int64_t rank, int dtype,
                    std::uintptr_t stream);
// `work`: at least svd_shift_grad_workspace(batch, n_out, rank) elements of `dtype`.
void svd_shift_grad_cuda(Buffer g, Buffer u, Buffer vh, Buffer e, Buffer work, int64_t batch,
                         int64_t n_out, int64_t n_in, int64_t taps, int64_t rank, int dtype,
                         std::uintptr_t stream);
#endif

}  // namespace navcuda
