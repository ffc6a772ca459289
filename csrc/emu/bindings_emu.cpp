// navcuda._C_emu: test-only module running the CUDA kernel bodies (csrc/*_kernels.cuh) on the CPU
// through csrc/cuda_emu.h. Two ways in: navcuda._C's own *_cuda entry points (the real launchers,
// launchers_emu.cpp), and *_emu functions with the same buffer API but the launch shape
// (grid, block) chosen by the caller instead of a stream, so tests can exercise grid-stride loops
// with small grids. Not shipped in wheels (built with -DNAVCUDA_BUILD_EMU=ON).
#include "cuda_emu.h"  // must come first: defines __global__, threadIdx, ...

#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "bias_act.h"
#include "bias_act_kernels.cuh"
#include "checker_probes.cuh"
#include "common.h"
#include "cuda_launch.cuh"  // dispatch_index, index32_max
#include "fir2d.h"
#include "fir2d_kernels.cuh"
#include "modconv.h"
#include "modconv_kernels.cuh"
#include "py_buffer.h"
#include "svd_shift.h"
#include "svd_shift_kernels.cuh"

namespace py = pybind11;

namespace {

using navcuda::as_ptr;
using navcuda::Buffer;

// The caller's launch shape: a grid of 1 to kLaunchMaxBlocks blocks of 1 to 1024 threads.
void check_emu_launch(const char* op, unsigned int grid, unsigned int block) {
  NAVCUDA_CHECK(grid > 0 && grid <= navcuda::kLaunchMaxBlocks && block > 0 && block <= 1024,
                op << ": grid must be in [1, " << navcuda::kLaunchMaxBlocks
                   << "] and block in [1, 1024], got grid=" << grid << " block=" << block);
}

void bias_act_emu(Buffer x, Buffer b, Buffer y, int64_t outer, int64_t channels, int64_t inner,
                  int dtype, int act, double alpha, double gain, double clamp, unsigned int grid,
                  unsigned int block) {
  const long long n =
      navcuda::bias_act_check_args("bias_act_emu", x, b, y, outer, channels, inner, dtype, act);
  check_emu_launch("bias_act_emu", grid, block);
  if (n == 0) return;
  navcuda::dispatch_float(dtype, "bias_act_emu", [&](auto zero) {
    using T = decltype(zero);
    navcuda::dispatch_act(act, clamp >= 0, [&](auto act_c, auto clamp_c) {
      constexpr int kAct = decltype(act_c)::value;
      constexpr bool kClamp = decltype(clamp_c)::value;
      navcuda::dispatch_index(n, [&](auto idx) {
        using Idx = decltype(idx);
        navcuda_emu::launch("bias_act_forward_kernel", dim3(grid), dim3(block),
                            &navcuda::bias_act_forward_kernel<T, kAct, kClamp, Idx>,
                            as_ptr<const T>(x), as_ptr<const T>(b), as_ptr<T>(y), Idx(n),
                            Idx(channels), Idx(inner), T(alpha), T(gain), T(clamp));
      });
    });
  });
}

void bias_act_grad_emu(Buffer dy, Buffer y, Buffer dx, int64_t n, int dtype, int act, double alpha,
                       double gain, double clamp, unsigned int grid, unsigned int block) {
  navcuda::bias_act_grad_check_args("bias_act_grad_emu", dy, y, dx, n, dtype, act);
  check_emu_launch("bias_act_grad_emu", grid, block);
  if (n == 0) return;
  navcuda::dispatch_float(dtype, "bias_act_grad_emu", [&](auto zero) {
    using T = decltype(zero);
    navcuda::dispatch_act(act, clamp >= 0, [&](auto act_c, auto clamp_c) {
      constexpr int kAct = decltype(act_c)::value;
      constexpr bool kClamp = decltype(clamp_c)::value;
      navcuda_emu::launch("bias_act_grad_kernel", dim3(grid), dim3(block),
                          &navcuda::bias_act_grad_kernel<T, kAct, kClamp>, as_ptr<const T>(dy),
                          as_ptr<const T>(y), as_ptr<T>(dx), (long long)n, T(alpha), T(gain),
                          T(clamp));
    });
  });
}

// svd_shift kernels; config 0 = the production launch shape (svd_shift.cu), 1 = small tiles.
template <typename Config>
void svd_shift_emu_impl(const Buffer& w, const Buffer& u, const Buffer& vh, const Buffer& s,
                        const Buffer& out, int64_t batch, int64_t n_out, int64_t n_in, int64_t taps,
                        int64_t rank, int dtype) {
  using C = Config;
  const long long K = n_in * taps;
  const long long x_blocks = (K + C::BN - 1) / C::BN, y_blocks = (n_out + C::BM - 1) / C::BM;
  navcuda::svd_shift_check_grid("svd_shift_emu", x_blocks, y_blocks, batch);
  const dim3 grid(static_cast<unsigned>(x_blocks), static_cast<unsigned>(y_blocks),
                  static_cast<unsigned>(batch));
  navcuda::dispatch_float(dtype, "svd_shift_emu", [&](auto zero) {
    using T = decltype(zero);
    navcuda_emu::launch("svd_shift_forward_kernel", grid, dim3(C::BN / C::TN, C::BM / C::TM),
                        &navcuda::svd_shift_forward_kernel<T, C::BM, C::BN, C::BK, C::TM, C::TN>,
                        as_ptr<const T>(w), as_ptr<const T>(u), as_ptr<const T>(vh),
                        as_ptr<const T>(s), as_ptr<T>(out), (long long)n_out, (long long)n_in,
                        (long long)taps, (long long)rank);
  });
}

template <typename Config>
void svd_shift_grad_emu_impl(const Buffer& g, const Buffer& u, const Buffer& vh, const Buffer& e,
                             int64_t batch, int64_t n_out, int64_t n_in, int64_t taps, int64_t rank,
                             int dtype, int64_t max_chunks) {
  using C = Config;
  const long long rows = navcuda::svd_shift_grad_rows_per_chunk(n_out, C::BM, max_chunks);
  const long long chunks = navcuda::svd_shift_grad_chunks(n_out, rows);
  const long long x_blocks = (rank + C::BN - 1) / C::BN;
  navcuda::svd_shift_check_grid("svd_shift_grad_emu", x_blocks, chunks, batch);
  const dim3 grid(static_cast<unsigned>(x_blocks), static_cast<unsigned>(chunks),
                  static_cast<unsigned>(batch));
  navcuda::dispatch_float(dtype, "svd_shift_grad_emu", [&](auto zero) {
    using T = decltype(zero);
    std::vector<T> part(static_cast<size_t>(batch * chunks * rank));
    navcuda_emu::launch("svd_shift_grad_kernel", grid, dim3(C::BN / C::TN, C::BM / C::TM),
                        &navcuda::svd_shift_grad_kernel<T, C::BM, C::BN, C::BK, C::TM, C::TN>,
                        as_ptr<const T>(g), as_ptr<const T>(u), as_ptr<const T>(vh), part.data(),
                        (long long)n_out, (long long)n_in, (long long)taps, (long long)rank,
                        (long long)rows);
    // A small grid (3 blocks of 32) so the grid-stride loop wraps on the test shapes.
    navcuda_emu::launch("svd_shift_grad_reduce_kernel", dim3(3), dim3(32),
                        &navcuda::svd_shift_grad_reduce_kernel<T>, (const T*)part.data(),
                        as_ptr<T>(e), (long long)(batch * rank), (long long)chunks,
                        (long long)rank);
  });
}

void svd_shift_emu(Buffer w, Buffer u, Buffer vh, Buffer s, Buffer out, int64_t batch,
                   int64_t n_out, int64_t n_in, int64_t taps, int64_t rank, int dtype, int config) {
  const int64_t n = navcuda::svd_shift_check_args("svd_shift_emu", w, u, vh, s, out, batch, n_out,
                                                  n_in, taps, rank, dtype);
  NAVCUDA_CHECK(config == 0 || config == 1, "svd_shift_emu: config must be 0 or 1");
  if (n == 0) return;
  (config == 0 ? svd_shift_emu_impl<navcuda::SvdShiftConfigLarge>
               : svd_shift_emu_impl<navcuda::SvdShiftConfigSmall>)(w, u, vh, s, out, batch, n_out,
                                                                   n_in, taps, rank, dtype);
}

// max_chunks: the cap on row chunks (the launcher's is 65535); a small cap makes each block
// of the gradient kernel loop over several row tiles.
void svd_shift_grad_emu(Buffer g, Buffer u, Buffer vh, Buffer e, int64_t batch, int64_t n_out,
                        int64_t n_in, int64_t taps, int64_t rank, int dtype, int config,
                        int64_t max_chunks) {
  const int64_t n = navcuda::svd_shift_grad_check_args("svd_shift_grad_emu", g, u, vh, e, batch,
                                                       n_out, n_in, taps, rank, dtype);
  NAVCUDA_CHECK(config == 0 || config == 1, "svd_shift_grad_emu: config must be 0 or 1");
  NAVCUDA_CHECK(max_chunks >= 1 && max_chunks <= navcuda::kSvdShiftGradMaxChunks,
                "svd_shift_grad_emu: max_chunks must be in [1, " << navcuda::kSvdShiftGradMaxChunks
                                                                 << "], got " << max_chunks);
  if (n == 0) return;
  (config == 0 ? svd_shift_grad_emu_impl<navcuda::SvdShiftConfigLarge>
               : svd_shift_grad_emu_impl<navcuda::SvdShiftConfigSmall>)(g, u, vh, e, batch, n_out,
                                                                        n_in, taps, rank, dtype,
                                                                        max_chunks);
}

// modconv kernels. `block` must be a power of two <= 256 (the shared-memory tree reductions).
void modconv_check_block(const char* op, unsigned int block) {
  NAVCUDA_CHECK(block > 0 && block <= 256 && (block & (block - 1)) == 0,
                op << ": block must be a power of two <= 256, got " << block);
}

template <typename Fn>
void emu_dispatch_bool(bool v, Fn&& fn) {
  v ? fn(std::true_type{}) : fn(std::false_type{});
}

void modconv_demod_emu(Buffer s, Buffer q0, Buffer q1, Buffer q2, Buffer t, Buffer index,
                       Buffer dcoef, int64_t batch, int64_t n_out, int64_t n_in, int64_t n0,
                       int64_t n_dir, int dtype, double scale2, unsigned int block) {
  // As on a GPU, the index values are not read on the host: the kernel guards each row.
  const int64_t n = navcuda::modconv_demod_check_args("modconv_demod_emu", s, q0, q1, q2, t, index,
                                                      dcoef, batch, n_out, n_in, n0, n_dir, dtype);
  modconv_check_block("modconv_demod_emu", block);
  NAVCUDA_CHECK(batch <= 65535 && n_out <= navcuda::kLaunchMaxGridX,
                "modconv_demod_emu: batch or out too large for the grid");
  if (n == 0) return;
  navcuda::dispatch_float(dtype, "modconv_demod_emu", [&](auto zero) {
    using T = decltype(zero);
    emu_dispatch_bool(t.present(), [&](auto has_t) {
      navcuda_emu::launch("modconv_demod_kernel", dim3(unsigned(n_out), unsigned(batch)),
                          dim3(block), &navcuda::modconv_demod_kernel<T, decltype(has_t)::value>,
                          as_ptr<const T>(s), as_ptr<const T>(q0), as_ptr<const T>(q1),
                          as_ptr<const T>(q2), as_ptr<const T>(t), as_ptr<const long long>(index),
                          as_ptr<T>(dcoef), (long long)n_out, (long long)n_in, (long long)n0,
                          (long long)n_dir, T(scale2));
    });
  });
}

// dt is written as partials [batch, ceil(n_in / block)].
void modconv_demod_grad_emu(Buffer g, Buffer dcoef, Buffer s, Buffer q0, Buffer q1, Buffer q2,
                            Buffer t, Buffer index, Buffer dn, Buffer ds, Buffer dt, Buffer dq0,
                            Buffer dq1, Buffer dq2, int64_t batch, int64_t n_out, int64_t n_in,
                            int64_t n0, int64_t n_dir, int dtype, double scale2, unsigned int grid,
                            unsigned int block) {
  modconv_check_block("modconv_demod_grad_emu", block);  // (before its use as dt's tile)
  const int64_t n = navcuda::modconv_demod_grad_check_args(
      "modconv_demod_grad_emu", g, dcoef, s, q0, q1, q2, t, index, dn, ds, dt, dq0, dq1, dq2, batch,
      n_out, n_in, n0, n_dir, dtype, /*dt_tile=*/block);
  check_emu_launch("modconv_demod_grad_emu", grid, block);
  NAVCUDA_CHECK(batch <= 65535, "modconv_demod_grad_emu: batch must be <= 65535");
  if (n == 0) return;
  navcuda::dispatch_float(dtype, "modconv_demod_grad_emu", [&](auto zero) {
    using T = decltype(zero);
    const long long* idx = as_ptr<const long long>(index);
    navcuda_emu::launch("modconv_demod_dn_kernel", dim3(grid), dim3(block),
                        &navcuda::modconv_demod_dn_kernel<T>, as_ptr<const T>(g),
                        as_ptr<const T>(dcoef), as_ptr<T>(dn), (long long)(batch * n_out),
                        T(scale2));
    if ((ds.present() || dt.present()) && n_in > 0) {
      emu_dispatch_bool(t.present(), [&](auto has_t) {
        navcuda_emu::launch(
            "modconv_demod_grad_s_kernel",
            dim3(unsigned((n_in + block - 1) / block), unsigned(batch)), dim3(block),
            &navcuda::modconv_demod_grad_s_kernel<T, decltype(has_t)::value>, as_ptr<const T>(dn),
            as_ptr<const T>(s), as_ptr<const T>(q0), as_ptr<const T>(q1), as_ptr<const T>(q2),
            as_ptr<const T>(t), idx, as_ptr<T>(ds), as_ptr<T>(dt), (long long)n_out,
            (long long)n_in, (long long)n0, (long long)n_dir);
      });
    }
    const Buffer dqs[3] = {dq0, dq1, dq2};
    for (int mode = 0; mode < 3; ++mode) {
      if (!dqs[mode].present()) continue;
      const long long rows = mode == 0 ? n0 : n_dir;
      navcuda::dispatch_index(
          std::max<long long>({rows * n_out * n_in, batch * n_in, batch * n_out}),
          [&](auto index_type) {
            using Idx = decltype(index_type);
            navcuda_emu::launch("modconv_demod_grad_q_kernel", dim3(grid), dim3(block),
                                &navcuda::modconv_demod_grad_q_kernel<T, Idx>, as_ptr<const T>(dn),
                                as_ptr<const T>(s), as_ptr<const T>(t), idx, as_ptr<T>(dqs[mode]),
                                Idx(rows), Idx(batch), Idx(n_out), Idx(n_in), Idx(n0), mode);
          });
    }
  });
}

void modconv_epilogue_emu(Buffer y0, Buffer y1, Buffer t, Buffer dcoef, Buffer noise,
                          int64_t noise_bstride, Buffer ns, Buffer bias, Buffer out, Buffer mask,
                          int64_t batch, int64_t channels, int64_t hw, int channels_last, int dtype,
                          int act, double alpha, double gain, double clamp, unsigned int grid,
                          unsigned int block) {
  const long long n = navcuda::modconv_epilogue_check_args(
      "modconv_epilogue_emu", y0, y1, t, dcoef, noise, noise_bstride, ns, bias, out, mask, batch,
      channels, hw, channels_last, dtype, act, clamp);
  check_emu_launch("modconv_epilogue_emu", grid, block);
  NAVCUDA_CHECK(block <= navcuda::kModconvMaxThreads,
                "modconv_epilogue_emu: block must be <= " << navcuda::kModconvMaxThreads);
  if (n == 0) return;
  navcuda::dispatch_float(dtype, "modconv_epilogue_emu", [&](auto zero) {
    using T = decltype(zero);
    navcuda::dispatch_act(act, clamp >= 0, [&](auto act_c, auto clamp_c) {
      emu_dispatch_bool(y1.present(), [&](auto has_y1) {
        emu_dispatch_bool(noise.present(), [&](auto has_noise) {
          constexpr int kA = decltype(act_c)::value;
          constexpr bool kC = decltype(clamp_c)::value, kY1 = decltype(has_y1)::value,
                         kN = decltype(has_noise)::value;
          navcuda::dispatch_index(n, [&](auto idx) {
            using Idx = decltype(idx);
            navcuda_emu::launch(
                channels_last ? "modconv_epilogue_kernel<nhwc>" : "modconv_epilogue_kernel",
                dim3(grid), dim3(block),
                channels_last ? &navcuda::modconv_epilogue_kernel<T, kA, kC, kY1, kN, true, Idx>
                              : &navcuda::modconv_epilogue_kernel<T, kA, kC, kY1, kN, false, Idx>,
                as_ptr<const T>(y0), as_ptr<const T>(y1), as_ptr<const T>(t),
                as_ptr<const T>(dcoef), as_ptr<const T>(noise), Idx(noise_bstride),
                as_ptr<const T>(ns), as_ptr<const T>(bias), as_ptr<T>(out),
                as_ptr<std::uint8_t>(mask), Idx(n), Idx(channels), Idx(hw), T(alpha), T(gain),
                T(clamp));
          });
        });
      });
    });
  });
}

void modconv_epilogue_grad_emu(Buffer dout, Buffer mask, Buffer y0, Buffer y1, Buffer t,
                               Buffer dcoef, Buffer noise, int64_t noise_bstride, Buffer dy0,
                               Buffer dy1, Buffer dz, Buffer ddcoef, Buffer p_dz, Buffer p_dzy1,
                               Buffer p_dzn, int64_t batch, int64_t channels, int64_t hw,
                               int channels_last, int dtype, int act, double alpha, double gain,
                               double clamp, unsigned int grid, unsigned int block) {
  const int64_t n = navcuda::modconv_epilogue_grad_check_args(
      "modconv_epilogue_grad_emu", dout, mask, y0, y1, t, dcoef, noise, noise_bstride, dy0, dy1, dz,
      ddcoef, p_dz, p_dzy1, p_dzn, batch, channels, hw, channels_last, dtype, act, clamp);
  modconv_check_block("modconv_epilogue_grad_emu", block);
  check_emu_launch("modconv_epilogue_grad_emu", grid, block);
  if (n == 0) return;
  navcuda::dispatch_float(dtype, "modconv_epilogue_grad_emu", [&](auto zero) {
    using T = decltype(zero);
    navcuda::dispatch_act(act, clamp >= 0, [&](auto act_c, auto clamp_c) {
      emu_dispatch_bool(y1.present(), [&](auto has_y1) {
        emu_dispatch_bool(noise.present(), [&](auto has_noise) {
          constexpr int kA = decltype(act_c)::value;
          constexpr bool kC = decltype(clamp_c)::value, kY1 = decltype(has_y1)::value,
                         kN = decltype(has_noise)::value;
          NAVCUDA_CHECK(!channels_last || block >= navcuda::kModconvNhwcTile,
                        "modconv_epilogue_grad_emu: channels-last blocks need >= "
                            << navcuda::kModconvNhwcTile << " threads, got " << block);
          navcuda_emu::launch(
              channels_last ? "modconv_epilogue_grad_nhwc_kernel" : "modconv_epilogue_grad_kernel",
              dim3(grid), dim3(block),
              channels_last ? &navcuda::modconv_epilogue_grad_nhwc_kernel<T, kA, kC, kY1, kN>
                            : &navcuda::modconv_epilogue_grad_kernel<T, kA, kC, kY1, kN>,
              as_ptr<const T>(dout), as_ptr<const std::uint8_t>(mask), as_ptr<const T>(y0),
              as_ptr<const T>(y1), as_ptr<const T>(t), as_ptr<const T>(dcoef),
              as_ptr<const T>(noise), (long long)noise_bstride, as_ptr<T>(dy0), as_ptr<T>(dy1),
              as_ptr<T>(dz), as_ptr<T>(ddcoef), as_ptr<T>(p_dz), as_ptr<T>(p_dzy1),
              as_ptr<T>(p_dzn), (long long)batch, (long long)channels, (long long)hw, T(alpha),
              T(gain), T(clamp));
        });
      });
    });
  });
}

void fir2d_emu(Buffer x, Buffer w, Buffer out, int64_t planes, int64_t h, int64_t wd, int64_t kh,
               int64_t kw, int64_t pad_y, int64_t pad_x, int64_t ho, int64_t wo, int dtype,
               unsigned int grid, unsigned int block) {
  const int64_t n = navcuda::fir2d_check_args("fir2d_emu", x, w, out, planes, h, wd, kh, kw, pad_y,
                                              pad_x, ho, wo, dtype);
  check_emu_launch("fir2d_emu", grid, block);
  if (n == 0) return;
  navcuda::dispatch_float(dtype, "fir2d_emu", [&](auto zero) {
    using T = decltype(zero);
    const long long extent =
        navcuda::fir2d_index_extent(planes, h, wd, kh, kw, pad_y, pad_x, ho, wo);
    navcuda::dispatch_index(extent, [&](auto idx) {
      using Idx = decltype(idx);
      navcuda_emu::launch("fir2d_kernel", dim3(grid), dim3(block), &navcuda::fir2d_kernel<T, Idx>,
                          as_ptr<const T>(x), as_ptr<const T>(w), as_ptr<T>(out), Idx(planes),
                          Idx(h), Idx(wd), Idx(kh), Idx(kw), Idx(pad_y), Idx(pad_x), Idx(ho),
                          Idx(wo));
    });
  });
}

}  // namespace

PYBIND11_MODULE(_C_emu, m) {
  m.doc() = "Test-only: navcuda CUDA kernel bodies run on the CPU through csrc/cuda_emu.h";
  using py::arg;
  auto nogil = py::call_guard<py::gil_scoped_release>();
  m.def(
      "index32_max", [] { return navcuda::index32_max(); },
      "Element count up to which the kernels taking an index type use 32-bit ints.");
  m.def(
      "set_index32_max",
      [](long long v) {
        // Only lower: above 2^30 a 32-bit index would overflow on the tensors it then admits.
        NAVCUDA_CHECK(v <= navcuda::kIndex32Limit,
                      "set_index32_max: limit must be <= 2^30 (the default), got " << v);
        navcuda::index32_max() = v;
      },
      arg("limit"),
      "Test hook: lower the 32-bit index limit (e.g. to -1) to run the 64-bit index variants.");
  m.def("bias_act_emu", &bias_act_emu, nogil, arg("x"), arg("b"), arg("y"), arg("outer"),
        arg("channels"), arg("inner"), arg("dtype"), arg("act"), arg("alpha"), arg("gain"),
        arg("clamp"), arg("grid"), arg("block"));
  m.def("bias_act_grad_emu", &bias_act_grad_emu, nogil, arg("dy"), arg("y"), arg("dx"), arg("n"),
        arg("dtype"), arg("act"), arg("alpha"), arg("gain"), arg("clamp"), arg("grid"),
        arg("block"));
  m.def("svd_shift_emu", &svd_shift_emu, nogil, arg("w"), arg("u"), arg("vh"), arg("s"), arg("out"),
        arg("batch"), arg("n_out"), arg("n_in"), arg("taps"), arg("rank"), arg("dtype"),
        arg("config"));
  m.def("svd_shift_grad_emu", &svd_shift_grad_emu, nogil, arg("g"), arg("u"), arg("vh"), arg("e"),
        arg("batch"), arg("n_out"), arg("n_in"), arg("taps"), arg("rank"), arg("dtype"),
        arg("config"), arg("max_chunks") = 65535);
  m.def("modconv_demod_emu", &modconv_demod_emu, nogil);
  m.def("modconv_demod_grad_emu", &modconv_demod_grad_emu, nogil);
  m.def("modconv_epilogue_emu", &modconv_epilogue_emu, nogil);
  m.def("modconv_epilogue_grad_emu", &modconv_epilogue_grad_emu, nogil);
  m.def("fir2d_emu", &fir2d_emu, nogil, arg("x"), arg("w"), arg("out"), arg("planes"), arg("h"),
        arg("wd"), arg("kh"), arg("kw"), arg("pad_y"), arg("pad_x"), arg("ho"), arg("wo"),
        arg("dtype"), arg("grid"), arg("block"));
  // The real CUDA launchers (csrc/*.cu, compiled in launchers_emu.cpp), same signatures as in
  // navcuda._C; the stream argument is ignored.
  m.def("bias_act_cuda", &navcuda::bias_act_cuda, nogil);
  m.def("bias_act_grad_cuda", &navcuda::bias_act_grad_cuda, nogil);
  m.def("svd_shift_cuda", &navcuda::svd_shift_cuda, nogil);
  m.def("svd_shift_grad_cuda", &navcuda::svd_shift_grad_cuda, nogil);
  m.def("modconv_demod_cuda", &navcuda::modconv_demod_cuda, nogil);
  m.def("modconv_demod_grad_cuda", &navcuda::modconv_demod_grad_cuda, nogil);
  m.def("modconv_epilogue_cuda", &navcuda::modconv_epilogue_cuda, nogil);
  m.def("modconv_epilogue_grad_cuda", &navcuda::modconv_epilogue_grad_cuda, nogil);
  m.def("fir2d_cuda", &navcuda::fir2d_cuda, nogil);
  m.def(
      "launch_count",
      [] {
        std::lock_guard<std::mutex> guard(navcuda_emu::launch_mutex());
        return navcuda_emu::launch_count();
      },
      "Kernel launches the emulator has run in this process.");
  m.def("checker_probe", &navcuda_probe::run_probe, nogil, arg("case"), arg("grid") = 1,
        arg("block") = 8,
        "Run one of the emulator's check probes (csrc/emu/checker_probes.cuh); returns out.");
}
