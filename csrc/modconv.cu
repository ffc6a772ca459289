// CUDA launchers for modconv (kernel bodies in modconv_kernels.cuh).
#include <algorithm>
#include <type_traits>

#include "cuda_launch.cuh"
#include "modconv.h"
#include "modconv_kernels.cuh"

namespace navcuda {
namespace {

constexpr int kDemodThreads = 128;

template <typename Fn>
void dispatch_bool(bool v, Fn&& fn) {
  v ? fn(std::true_type{}) : fn(std::false_type{});
}

}  // namespace

static_assert(kModconvTile <= kModconvMaxThreads, "demod tile exceeds the reduction buffer");
static_assert(kModconvNhwcTile <= kLaunchThreads && kLaunchThreads <= kModconvMaxThreads,
              "channels-last gradient blocks must hold a channel tile and fit the buffer");

void modconv_demod_cuda(Buffer s, Buffer q0, Buffer q1, Buffer q2, Buffer t, Buffer index,
                        Buffer dcoef, int64_t batch, int64_t n_out, int64_t n_in, int64_t n0,
                        int64_t n_dir, int dtype, double scale2, std::uintptr_t stream) {
  // The index values are not read here (device memory): the kernel guards each row.
  if (modconv_demod_check_args("modconv_demod_cuda", s, q0, q1, q2, t, index, dcoef, batch, n_out,
                               n_in, n0, n_dir, dtype) == 0) {
    return;
  }
  NAVCUDA_CHECK(batch <= 65535, "modconv_demod_cuda: batch must be <= 65535");
  NAVCUDA_CHECK(n_out <= kLaunchMaxGridX, "modconv_demod_cuda: out is too large for the grid");
  auto st = reinterpret_cast<cudaStream_t>(stream);
  const dim3 grid(static_cast<unsigned int>(n_out), static_cast<unsigned int>(batch));
  dispatch_float(dtype, "modconv_demod_cuda", [&](auto zero) {
    using T = decltype(zero);
    dispatch_bool(t.present(), [&](auto has_t) {
      launch_kernel("modconv_demod_kernel", &modconv_demod_kernel<T, decltype(has_t)::value>, grid,
                    kDemodThreads, st, as_ptr<const T>(s), as_ptr<const T>(q0), as_ptr<const T>(q1),
                    as_ptr<const T>(q2), as_ptr<const T>(t), as_ptr<const long long>(index),
                    as_ptr<T>(dcoef), n_out, n_in, n0, n_dir, T(scale2));
    });
  });
  check_launch("modconv_demod_cuda");
}

void modconv_demod_grad_cuda(Buffer g, Buffer dcoef, Buffer s, Buffer q0, Buffer q1, Buffer q2,
                             Buffer t, Buffer index, Buffer dn, Buffer ds, Buffer dt, Buffer dq0,
                             Buffer dq1, Buffer dq2, int64_t batch, int64_t n_out, int64_t n_in,
                             int64_t n0, int64_t n_dir, int dtype, double scale2,
                             std::uintptr_t stream) {
  // The index values are not read here (device memory): the kernels guard each row.
  if (modconv_demod_grad_check_args("modconv_demod_grad_cuda", g, dcoef, s, q0, q1, q2, t, index,
                                    dn, ds, dt, dq0, dq1, dq2, batch, n_out, n_in, n0, n_dir,
                                    dtype) == 0) {
    return;
  }
  NAVCUDA_CHECK(batch <= 65535, "modconv_demod_grad_cuda: batch must be <= 65535");
  auto st = reinterpret_cast<cudaStream_t>(stream);
  dispatch_float(dtype, "modconv_demod_grad_cuda", [&](auto zero) {
    using T = decltype(zero);
    const long long n = batch * n_out;
    launch_kernel("modconv_demod_dn_kernel", &modconv_demod_dn_kernel<T>, launch_blocks(n),
                  kLaunchThreads, st, as_ptr<const T>(g), as_ptr<const T>(dcoef), as_ptr<T>(dn), n,
                  T(scale2));
    const long long* idx = as_ptr<const long long>(index);
    if ((ds.present() || dt.present()) && n_in > 0) {
      const dim3 grid(static_cast<unsigned int>(modconv_demod_dt_parts(n_in)),
                      static_cast<unsigned int>(batch));
      dispatch_bool(t.present(), [&](auto has_t) {
        launch_kernel("modconv_demod_grad_s_kernel",
                      &modconv_demod_grad_s_kernel<T, decltype(has_t)::value>, grid, kModconvTile,
                      st, as_ptr<const T>(dn), as_ptr<const T>(s), as_ptr<const T>(q0),
                      as_ptr<const T>(q1), as_ptr<const T>(q2), as_ptr<const T>(t), idx,
                      as_ptr<T>(ds), as_ptr<T>(dt), n_out, n_in, n0, n_dir);
      });
    }
    const Buffer dqs[3] = {dq0, dq1, dq2};
    for (int mode = 0; mode < 3; ++mode) {
      if (!dqs[mode].present()) continue;
      const long long rows = mode == 0 ? n0 : n_dir;
      const long long m = rows * n_out * n_in;
      if (m == 0) continue;
      // Indices reach dq's, s's and dn's element counts.
      dispatch_index(std::max<long long>({m, batch * n_in, batch * n_out}), [&](auto index_type) {
        using Idx = decltype(index_type);
        launch_kernel("modconv_demod_grad_q_kernel", &modconv_demod_grad_q_kernel<T, Idx>,
                      launch_blocks(m), kLaunchThreads, st, as_ptr<const T>(dn), as_ptr<const T>(s),
                      as_ptr<const T>(t), idx, as_ptr<T>(dqs[mode]), rows, batch, n_out, n_in, n0,
                      mode);
      });
    }
  });
  check_launch("modconv_demod_grad_cuda");
}

void modconv_epilogue_cuda(Buffer y0, Buffer y1, Buffer t, Buffer dcoef, Buffer noise,
                           int64_t noise_bstride, Buffer ns, Buffer bias, Buffer out, Buffer mask,
                           int64_t batch, int64_t channels, int64_t hw, int channels_last,
                           int dtype, int act, double alpha, double gain, double clamp,
                           std::uintptr_t stream) {
  const long long n = modconv_epilogue_check_args("modconv_epilogue_cuda", y0, y1, t, dcoef, noise,
                                                  noise_bstride, ns, bias, out, mask, batch,
                                                  channels, hw, channels_last, dtype, act, clamp);
  if (n == 0) return;
  // Block tiles of kLaunchThreads bytes of packed mask codes (8 or 4 outputs of a row each).
  static_assert(kLaunchThreads <= kModconvMaxThreads, "epilogue tiles need one code slot each");
  const long long inner = channels_last ? channels : hw;
  const long long groups = n / inner * modconv_mask_row_bytes(inner, modconv_mask_bits(clamp >= 0));
  auto st = reinterpret_cast<cudaStream_t>(stream);
  dispatch_float(dtype, "modconv_epilogue_cuda", [&](auto zero) {
    using T = decltype(zero);
    dispatch_act(act, clamp >= 0, [&](auto act_c, auto clamp_c) {
      dispatch_bool(y1.present(), [&](auto has_y1) {
        dispatch_bool(noise.present(), [&](auto has_noise) {
          constexpr int kA = decltype(act_c)::value;
          constexpr bool kC = decltype(clamp_c)::value, kY1 = decltype(has_y1)::value,
                         kN = decltype(has_noise)::value;
          dispatch_index(n, [&](auto idx) {
            using Idx = decltype(idx);
            auto kernel = channels_last ? &modconv_epilogue_kernel<T, kA, kC, kY1, kN, true, Idx>
                                        : &modconv_epilogue_kernel<T, kA, kC, kY1, kN, false, Idx>;
            launch_kernel(
                channels_last ? "modconv_epilogue_kernel<nhwc>" : "modconv_epilogue_kernel", kernel,
                launch_blocks(groups), kLaunchThreads, st, as_ptr<const T>(y0), as_ptr<const T>(y1),
                as_ptr<const T>(t), as_ptr<const T>(dcoef), as_ptr<const T>(noise), noise_bstride,
                as_ptr<const T>(ns), as_ptr<const T>(bias), as_ptr<T>(out),
                as_ptr<std::uint8_t>(mask), n, channels, hw, T(alpha), T(gain), T(clamp));
          });
        });
      });
    });
  });
  check_launch("modconv_epilogue_cuda");
}

void modconv_epilogue_grad_cuda(Buffer dout, Buffer mask, Buffer y0, Buffer y1, Buffer t,
                                Buffer dcoef, Buffer noise, int64_t noise_bstride, Buffer dy0,
                                Buffer dy1, Buffer dz, Buffer ddcoef, Buffer p_dz, Buffer p_dzy1,
                                Buffer p_dzn, int64_t batch, int64_t channels, int64_t hw,
                                int channels_last, int dtype, int act, double alpha, double gain,
                                double clamp, std::uintptr_t stream) {
  if (modconv_epilogue_grad_check_args("modconv_epilogue_grad_cuda", dout, mask, y0, y1, t, dcoef,
                                       noise, noise_bstride, dy0, dy1, dz, ddcoef, p_dz, p_dzy1,
                                       p_dzn, batch, channels, hw, channels_last, dtype, act,
                                       clamp) == 0) {
    return;
  }
  const long long planes = batch * channels;
  auto st = reinterpret_cast<cudaStream_t>(stream);
  // One block per plane, or per (sample, channel tile) channels-last.
  const long long items =
      channels_last ? batch * ((channels + kModconvNhwcTile - 1) / kModconvNhwcTile) : planes;
  const unsigned int blocks =
      static_cast<unsigned int>(items < kLaunchMaxBlocks ? items : kLaunchMaxBlocks);
  dispatch_float(dtype, "modconv_epilogue_grad_cuda", [&](auto zero) {
    using T = decltype(zero);
    dispatch_act(act, clamp >= 0, [&](auto act_c, auto clamp_c) {
      dispatch_bool(y1.present(), [&](auto has_y1) {
        dispatch_bool(noise.present(), [&](auto has_noise) {
          constexpr int kA = decltype(act_c)::value;
          constexpr bool kC = decltype(clamp_c)::value, kY1 = decltype(has_y1)::value,
                         kN = decltype(has_noise)::value;
          // Same arguments; one block per (b, c) plane, or per (sample, channel tile).
          auto kernel = channels_last ? &modconv_epilogue_grad_nhwc_kernel<T, kA, kC, kY1, kN>
                                      : &modconv_epilogue_grad_kernel<T, kA, kC, kY1, kN>;
          launch_kernel(
              channels_last ? "modconv_epilogue_grad_nhwc_kernel" : "modconv_epilogue_grad_kernel",
              kernel, blocks, kLaunchThreads, st, as_ptr<const T>(dout),
              as_ptr<const std::uint8_t>(mask), as_ptr<const T>(y0), as_ptr<const T>(y1),
              as_ptr<const T>(t), as_ptr<const T>(dcoef), as_ptr<const T>(noise), noise_bstride,
              as_ptr<T>(dy0), as_ptr<T>(dy1), as_ptr<T>(dz), as_ptr<T>(ddcoef), as_ptr<T>(p_dz),
              as_ptr<T>(p_dzy1), as_ptr<T>(p_dzn), batch, channels, hw, T(alpha), T(gain),
              T(clamp));
        });
      });
    });
  });
  check_launch("modconv_epilogue_grad_cuda");
}

}  // namespace navcuda
