// CUDA kernel bodies for modconv (demodulation coefficients, fused epilogue, their gradients).
// Launch code lives in modconv.cu; navcuda._C_emu runs the same bodies on the CPU (cuda_emu.h).
//
// Kept to the subset cuda_emu.h provides: __global__, blockIdx/threadIdx/blockDim/gridDim,
// __syncthreads() and NAVCUDA_SHARED arrays, plain arithmetic (no warp intrinsics, no atomics).
// Reductions: a shared-memory tree over the threads of a block; blockDim.x must be a power of two
// <= kModconvMaxThreads.
#pragma once

#include "kernel_shared.cuh"
#include "modconv.h"

namespace navcuda {

constexpr int kModconvMaxThreads = 256;

// Tree reduction of `buf[0..blockDim.x)` (power of two) into buf[0..keep) (keep a power of two:
// buf[r] sums the entries r, r + keep, r + 2 keep, ...); every thread must call it.
template <typename Buf>
__device__ __forceinline__ void modconv_block_sum(Buf buf, int lanes, unsigned int keep = 1) {
  for (unsigned int half = blockDim.x / 2; half >= keep; half >>= 1) {
    if (threadIdx.x < half) {
      for (int k = 0; k < lanes; ++k) {
        buf[k * kModconvMaxThreads + threadIdx.x] +=
            buf[k * kModconvMaxThreads + threadIdx.x + half];
      }
    }
    __syncthreads();
  }
}

// dcoef[b,o] for one (o = blockIdx.x, b = blockIdx.y): threads stride over the input channels.
// A sample whose direction row does not exist gets NaN (modconv_dir_row_valid).
template <typename T, bool kHasT>
__global__ void modconv_demod_kernel(const T* s, const T* q0, const T* q1, const T* q2, const T* t,
                                     const long long* index, T* dcoef, long long n_out,
                                     long long n_in, long long n0, long long n_dir, T scale2) {
  NAVCUDA_SHARED(T, buf, [kModconvMaxThreads]);
  const long long o = blockIdx.x;
  const long long b = blockIdx.y;
  const T* sr = s + b * n_in;
  const T* q0r = q0 + (modconv_q0_row(b, n0) * n_out + o) * n_in;
  T acc = T(0);
  const long long k = kHasT ? modconv_dir_row(index, b) : 0;
  if (kHasT && !modconv_dir_row_valid(k, n_dir)) {
    acc = modconv_nan<T>();
  } else if (kHasT) {
    const T* q1r = q1 + (k * n_out + o) * n_in;
    const T* q2r = q2 + (k * n_out + o) * n_in;
    const T tb = t[b];
    for (long long i = threadIdx.x; i < n_in; i += blockDim.x) {
      acc += sr[i] * sr[i] * (q0r[i] + tb * (T(2) * q1r[i] + tb * q2r[i]));
    }
  } else {
    for (long long i = threadIdx.x; i < n_in; i += blockDim.x) acc += sr[i] * sr[i] * q0r[i];
  }
  buf[threadIdx.x] = acc;
  __syncthreads();
  modconv_block_sum(buf, 1);
  if (threadIdx.x == 0) dcoef[b * n_out + o] = modconv_rsqrt(scale2 * buf[0] + T(kDemodEps));
}

// dn[b,o] = -0.5 * scale2 * g * dcoef^3 (grid-stride over B*out).
template <typename T>
__global__ void modconv_demod_dn_kernel(const T* g, const T* dcoef, T* dn, long long n, T scale2) {
  const long long stride = (long long)blockDim.x * gridDim.x;
  for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < n; e += stride) {
    const T d = dcoef[e];
    dn[e] = T(-0.5) * scale2 * g[e] * d * d * d;
  }
}

// ds[b,i] and the tile partial dt_part[b, blockIdx.x]: one thread per input channel i of the
// tile blockIdx.x (tile width blockDim.x), sample b = blockIdx.y, looping over output channels.
// A sample whose direction row does not exist gets NaN (modconv_dir_row_valid).
template <typename T, bool kHasT>
__global__ void modconv_demod_grad_s_kernel(const T* dn, const T* s, const T* q0, const T* q1,
                                            const T* q2, const T* t, const long long* index, T* ds,
                                            T* dt_part, long long n_out, long long n_in,
                                            long long n0, long long n_dir) {
  NAVCUDA_SHARED(T, buf, [kModconvMaxThreads]);
  const long long b = blockIdx.y;
  const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  const T* dnr = dn + b * n_out;
  T acc = T(0), acc_t = T(0);
  const long long k = kHasT ? modconv_dir_row(index, b) : 0;
  if (i < n_in) {
    const T* q0c = q0 + modconv_q0_row(b, n0) * n_out * n_in + i;
    if (kHasT && !modconv_dir_row_valid(k, n_dir)) {
      acc = acc_t = modconv_nan<T>();
    } else if (kHasT) {
      const T* q1c = q1 + k * n_out * n_in + i;
      const T* q2c = q2 + k * n_out * n_in + i;
      const T tb = t[b];
      for (long long o = 0; o < n_out; ++o) {
        const T a1 = q1c[o * n_in], a2 = q2c[o * n_in];
        acc += dnr[o] * (q0c[o * n_in] + tb * (T(2) * a1 + tb * a2));
        acc_t += dnr[o] * (a1 + tb * a2);
      }
    } else {
      for (long long o = 0; o < n_out; ++o) acc += dnr[o] * q0c[o * n_in];
    }
    const T si = s[b * n_in + i];
    if (ds) ds[b * n_in + i] = T(2) * si * acc;
    acc_t *= T(2) * si * si;
  }
  if (dt_part) {  // uniform over the block: every thread reaches the barriers
    buf[threadIdx.x] = acc_t;
    __syncthreads();
    modconv_block_sum(buf, 1);
    if (threadIdx.x == 0) dt_part[b * gridDim.x + blockIdx.x] = buf[0];
  }
}

// dq[r,o,i] = sum_{b: row(b) = r} w_b dn[b,o] s[b,i]^2, grid-stride over rows*out*in elements.
// mode 0: row(b) = r0(b), w_b = 1 (Q0); mode 1: row(b) = k(b), w_b = 2 t_b (Q1); mode 2: t_b^2.
// Idx: int where the launcher's dispatch_index allows it (divisions per element).
template <typename T, typename Idx>
__global__ void modconv_demod_grad_q_kernel(const T* dn, const T* s, const T* t,
                                            const long long* index, T* dq, Idx rows, Idx batch,
                                            Idx n_out, Idx n_in, Idx n0, int mode) {
  const Idx n = rows * n_out * n_in;
  const Idx stride = Idx(blockDim.x) * Idx(gridDim.x);
  for (Idx e = Idx(blockIdx.x) * Idx(blockDim.x) + Idx(threadIdx.x); e < n; e += stride) {
    const auto [i, o, r] = unravel3(e, n_in, n_out);
    T acc = T(0);
    for (Idx b = 0; b < batch; ++b) {
      const Idx rb = Idx(mode == 0 ? modconv_q0_row(b, n0) : modconv_dir_row(index, b));
      if (rb != r) continue;
      const T w = mode == 0 ? T(1) : (mode == 1 ? T(2) * t[b] : t[b] * t[b]);
      const T sv = s[b * n_in + i];
      acc += w * dn[b * n_out + o] * sv * sv;
    }
    dq[e] = acc;
  }
}

// out = clamp(act(dcoef (y0 + t y1) + ns noise + bias) gain), NCHW or (kNhwc) channels-last:
// element e is (b, c, pixel j) of either layout; a row is a plane of HW, or a pixel's C channels.
// The fused epilogue and its packed mask codes (modconv.h), over a grid-stride loop of block
// tiles. A tile is blockDim.x mask bytes, i.e. blockDim.x * kPer (byte, bit) slots in row order;
// slot p goes to thread p % blockDim.x, so consecutive threads read and write consecutive outputs
// of a row (coalesced), and each writes its code to shared memory. After a barrier thread i packs
// byte i of the tile. Slots past the end of a row (its padding) or of the tensor get code 0.
// blockDim.x <= kModconvMaxThreads (any size, not only powers of two). Idx: int where the
// launcher's dispatch_index allows it (the element's (b, c, j) takes several divisions).
template <typename T, int kAct, bool kClamp, bool kHasY1, bool kHasNoise, bool kNhwc, typename Idx>
__global__ void modconv_epilogue_kernel(const T* y0, const T* y1, const T* t, const T* dcoef,
                                        const T* noise, Idx noise_bstride, const T* ns,
                                        const T* bias, T* out, std::uint8_t* mask, Idx n,
                                        Idx channels, Idx hw, T alpha, T gain, T clamp) {
  constexpr int kBits = kModconvMaskBits<kClamp>;
  constexpr int kPer = 8 / kBits;
  NAVCUDA_SHARED(std::uint8_t, codes, [kModconvMaxThreads * kPer]);
  const Idx inner = kNhwc ? channels : hw;
  const Idx row_bytes = Idx(modconv_mask_row_bytes(inner, kBits));
  const Idx groups = n / inner * row_bytes;
  const Idx threads = Idx(blockDim.x);
  for (Idx q0 = Idx(blockIdx.x) * threads; q0 < groups; q0 += threads * Idx(gridDim.x)) {
    for (int k = 0; k < kPer; ++k) {
      const Idx slot = k * threads + Idx(threadIdx.x);
      const Idx q = q0 + slot / kPer;
      const Idx pos = (q % row_bytes) * kPer + slot % kPer;  // position in the row
      unsigned code = 0;
      if (q < groups && pos < inner) {
        const Idx e = q / row_bytes * inner + pos;
        const Idx c = kNhwc ? e % channels : (e / hw) % channels;
        const Idx b = e / (channels * hw);
        const Idx j = kNhwc ? (e / channels) % hw : e % hw;
        const T v = modconv_epilogue_value<T, kAct, kClamp, kHasY1>(
            y0[e], kHasY1 ? y1[e] : T(0), kHasY1 ? t[b] : T(0),
            dcoef ? dcoef[b * channels + c] : T(1),
            kHasNoise ? ns[0] * noise[b * noise_bstride + j] : T(0), bias ? bias[c] : T(0), alpha,
            gain, clamp);
        out[e] = v;
        // (without a clamp only the slope bit is kept)
        code = unsigned(bias_act_grad_code<T, kAct, kClamp>(v, gain, clamp)) & ((1u << kBits) - 1);
      }
      codes[slot] = static_cast<std::uint8_t>(code);
    }
    __syncthreads();
    const Idx q = q0 + Idx(threadIdx.x);
    if (mask && q < groups) {
      unsigned byte = 0;
      for (int k = 0; k < kPer; ++k) byte |= unsigned(codes[threadIdx.x * kPer + k]) << (k * kBits);
      mask[q] = static_cast<std::uint8_t>(byte);
    }
    __syncthreads();  // the tile's codes are read before the next tile overwrites them
  }
}

// One element e of the epilogue's gradient: writes dy0[e] (and dy1[e], dz_out[e] when given)
// and adds dz, dz*y, dz*y1, dz*noise to sums[0..3]; nz is the element's noise value and code its
// packed mask code (modconv_mask_code of the forward's mask; 0 when the mask is not read). y0 is
// read only for ddcoef and may be null otherwise.
template <typename T, int kAct, bool kClamp, bool kHasY1, bool kHasNoise>
__device__ __forceinline__ void modconv_epilogue_grad_elem(long long e, T d, T tb, T nz,
                                                           std::uint8_t code, const T* dout,
                                                           const T* y0, const T* y1, T* dy0, T* dy1,
                                                           T* dz_out, bool with_dd, T alpha, T gain,
                                                           T* sums) {
  const T dz = bias_act_grad_from_code<T, kAct, kClamp>(dout[e], code, alpha, gain);
  dy0[e] = dz * d;
  if (dz_out) dz_out[e] = dz;
  sums[0] += dz;
  if (kHasY1) {
    if (dy1) dy1[e] = dz * d * tb;
    sums[2] += dz * y1[e];
  }
  if (with_dd) sums[1] += dz * (kHasY1 ? y0[e] + tb * y1[e] : y0[e]);
  if (kHasNoise) sums[3] += dz * nz;
}

// Reduces every thread's four sums over the block into its first `keep` lanes and lets lane r
// (r < keep, when `store`) write them at `plane` of p_dz, ddcoef, p_dzy1, p_dzn (each if given).
// Every thread of the block must call it; buf is free again on return.
template <typename T, typename Buf>
__device__ __forceinline__ void modconv_epilogue_grad_store(Buf buf, const T* sums,
                                                            unsigned int keep, bool store,
                                                            long long plane, T* p_dz, T* ddcoef,
                                                            T* p_dzy1, T* p_dzn) {
  for (int k = 0; k < 4; ++k) buf[k * kModconvMaxThreads + threadIdx.x] = sums[k];
  __syncthreads();
  modconv_block_sum(buf, 4, keep);
  if (store && threadIdx.x < keep) {
    T* const dst[4] = {p_dz, ddcoef, p_dzy1, p_dzn};
    for (int k = 0; k < 4; ++k) {
      if (dst[k]) dst[k][plane] = buf[k * kModconvMaxThreads + threadIdx.x];
    }
  }
  __syncthreads();  // buf is reused by the caller's next item
}

// Gradient of the epilogue: one block per (b, c) plane (grid-stride over planes), threads stride
// over HW; the four per-plane sums are reduced in shared memory.
template <typename T, int kAct, bool kClamp, bool kHasY1, bool kHasNoise>
__global__ void modconv_epilogue_grad_kernel(const T* dout, const std::uint8_t* mask, const T* y0,
                                             const T* y1, const T* t, const T* dcoef,
                                             const T* noise, long long noise_bstride, T* dy0,
                                             T* dy1, T* dz_out, T* ddcoef, T* p_dz, T* p_dzy1,
                                             T* p_dzn, long long batch, long long channels,
                                             long long hw, T alpha, T gain, T clamp) {
  NAVCUDA_SHARED(T, buf, [4 * kModconvMaxThreads]);
  (void)clamp;  // the forward's mask records where the clamp was active
  const long long planes = batch * channels;
  for (long long plane = blockIdx.x; plane < planes; plane += gridDim.x) {
    const long long b = plane / channels;
    const T d = dcoef ? dcoef[plane] : T(1);
    const T tb = kHasY1 ? t[b] : T(0);
    const T* nz = kHasNoise ? noise + b * noise_bstride : nullptr;
    T sums[4] = {T(0), T(0), T(0), T(0)};
    const std::uint8_t* codes =
        kModconvReadsMask<kAct, kClamp>
            ? mask + plane * modconv_mask_row_bytes(hw, kModconvMaskBits<kClamp>)
            : nullptr;
    for (long long j = threadIdx.x; j < hw; j += blockDim.x) {
      modconv_epilogue_grad_elem<T, kAct, kClamp, kHasY1, kHasNoise>(
          plane * hw + j, d, tb, kHasNoise ? nz[j] : T(0),
          kModconvReadsMask<kAct, kClamp> ? modconv_mask_code<kModconvMaskBits<kClamp>>(codes, j)
                                          : std::uint8_t(0),
          dout, y0, y1, dy0, dy1, dz_out, ddcoef != nullptr, alpha, gain, sums);
    }
    modconv_epilogue_grad_store(buf, sums, 1, true, plane, p_dz, ddcoef, p_dzy1, p_dzn);
  }
}

// Channels per block of the channels-last gradient: consecutive threads read consecutive
// channels of a pixel (coalesced); the blockDim.x / kModconvNhwcTile thread rows stride over the
// pixels, and the four per-channel sums are reduced over those rows in shared memory.
constexpr int kModconvNhwcTile = 32;

// Gradient of the channels-last epilogue: one block per (b, tile of kModconvNhwcTile channels)
// (grid-stride over batch * tiles); blockDim.x a power of two >= kModconvNhwcTile.
template <typename T, int kAct, bool kClamp, bool kHasY1, bool kHasNoise>
__global__ void modconv_epilogue_grad_nhwc_kernel(const T* dout, const std::uint8_t* mask,
                                                  const T* y0, const T* y1, const T* t,
                                                  const T* dcoef, const T* noise,
                                                  long long noise_bstride, T* dy0, T* dy1,
                                                  T* dz_out, T* ddcoef, T* p_dz, T* p_dzy1,
                                                  T* p_dzn, long long batch, long long channels,
                                                  long long hw, T alpha, T gain, T clamp) {
  NAVCUDA_SHARED(T, buf, [4 * kModconvMaxThreads]);
  (void)clamp;  // the forward's mask records where the clamp was active
  const long long tiles = (channels + kModconvNhwcTile - 1) / kModconvNhwcTile;
  const long long lane = threadIdx.x % kModconvNhwcTile;
  const long long row0 = threadIdx.x / kModconvNhwcTile;
  const long long row_step = blockDim.x / kModconvNhwcTile;
  for (long long item = blockIdx.x; item < batch * tiles; item += gridDim.x) {
    const long long b = item / tiles;
    const long long c = (item % tiles) * kModconvNhwcTile + lane;
    T sums[4] = {T(0), T(0), T(0), T(0)};
    if (c < channels) {
      const T d = dcoef ? dcoef[b * channels + c] : T(1);
      const T tb = kHasY1 ? t[b] : T(0);
      const long long row_bytes = modconv_mask_row_bytes(channels, kModconvMaskBits<kClamp>);
      for (long long j = row0; j < hw; j += row_step) {
        const std::uint8_t code =
            kModconvReadsMask<kAct, kClamp>
                ? modconv_mask_code<kModconvMaskBits<kClamp>>(mask + (b * hw + j) * row_bytes, c)
                : std::uint8_t(0);
        modconv_epilogue_grad_elem<T, kAct, kClamp, kHasY1, kHasNoise>(
            (b * hw + j) * channels + c, d, tb, kHasNoise ? noise[b * noise_bstride + j] : T(0),
            code, dout, y0, y1, dy0, dy1, dz_out, ddcoef != nullptr, alpha, gain, sums);
      }
    }
    modconv_epilogue_grad_store(buf, sums, kModconvNhwcTile, c < channels, b * channels + c, p_dz,
                                ddcoef, p_dzy1, p_dzn);
  }
}

}  // namespace navcuda
