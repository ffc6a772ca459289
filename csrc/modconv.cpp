// CPU kernels for modconv: OpenMP over (sample, channel) planes or rows, contiguous inner loops
// marked `omp simd` so the compiler vectorises them (the branches on loop-invariant flags are
// compile-time template parameters). The kernels live in modconv_cpu_kernels.inc, compiled
// generically and for AVX2 + FMA and picked at run time (cpu_isa.h).
// (-fno-trapping-math, set for every CPU source in CMakeLists.txt, lets GCC vectorise the selects.)
#include "modconv.h"
#include "cpu_isa.h"

#include <cstdint>
#include <type_traits>
#include <vector>

namespace navcuda {
namespace {

// Parallelise only when there is enough work to pay for waking the threads.
constexpr int64_t kParallelMin = 1 << 15;

template <typename Fn>
void dispatch_bool(bool v, Fn&& fn) {
  v ? fn(std::true_type{}) : fn(std::false_type{});
}

// Pixels per work item of the channels-last gradient: each item keeps four per-channel partial
// sums, added up per sample afterwards.
constexpr int64_t kNhwcRowsPerItem = 256;

#define NAVCUDA_CPU_KERNELS "modconv_cpu_kernels.inc"
#include "cpu_isa_variants.inc"

}  // namespace

// ------------------------------------------------------------------------------- entry points

void modconv_demod_cpu(Buffer s, Buffer q0, Buffer q1, Buffer q2, Buffer t, Buffer index,
                       Buffer dcoef, int64_t batch, int64_t n_out, int64_t n_in, int64_t n0,
                       int64_t n_dir, int dtype, double scale2) {
  const char* op = "modconv_demod_cpu";
  const int64_t n = modconv_demod_check_args(op, s, q0, q1, q2, t, index, dcoef, batch, n_out, n_in,
                                             n0, n_dir, dtype);
  modconv_check_index_values(op, index, batch, n_dir);
  if (n == 0) return;
  dispatch_float(dtype, "modconv_demod_cpu", [&](auto zero) {
    using T = decltype(zero);
    dispatch_bool(t.present(), [&](auto has_t) {
      constexpr bool kHasT = decltype(has_t)::value;
      pick_isa(&generic::demod_kernel<T, kHasT>, &avx2::demod_kernel<T, kHasT>)(
          as_ptr<const T>(s), as_ptr<const T>(q0), as_ptr<const T>(q1), as_ptr<const T>(q2),
          as_ptr<const T>(t), as_ptr<const long long>(index), as_ptr<T>(dcoef), batch, n_out, n_in,
          n0, T(scale2));
    });
  });
}

void modconv_demod_grad_cpu(Buffer g, Buffer dcoef, Buffer s, Buffer q0, Buffer q1, Buffer q2,
                            Buffer t, Buffer index, Buffer dn, Buffer ds, Buffer dt, Buffer dq0,
                            Buffer dq1, Buffer dq2, int64_t batch, int64_t n_out, int64_t n_in,
                            int64_t n0, int64_t n_dir, int dtype, double scale2) {
  const char* op = "modconv_demod_grad_cpu";
  modconv_demod_grad_check_args(op, g, dcoef, s, q0, q1, q2, t, index, dn, ds, dt, dq0, dq1, dq2,
                                batch, n_out, n_in, n0, n_dir, dtype);
  modconv_check_index_values(op, index, batch, n_dir);
  dispatch_float(dtype, "modconv_demod_grad_cpu", [&](auto zero) {
    using T = decltype(zero);
    const T* gp = as_ptr<const T>(g);
    const T* dp = as_ptr<const T>(dcoef);
    T* dnp = as_ptr<T>(dn);
    const T sc = T(scale2);
    for (int64_t e = 0; e < batch * n_out; ++e) {
      const T d = dp[e];
      dnp[e] = T(-0.5) * sc * gp[e] * d * d * d;
    }
    const long long* idx = as_ptr<const long long>(index);
    if (ds.present() || dt.present()) {
      dispatch_bool(t.present(), [&](auto has_t) {
        constexpr bool kHasT = decltype(has_t)::value;
        pick_isa(&generic::demod_grad_s_kernel<T, kHasT>, &avx2::demod_grad_s_kernel<T, kHasT>)(
            dnp, as_ptr<const T>(s), as_ptr<const T>(q0), as_ptr<const T>(q1), as_ptr<const T>(q2),
            as_ptr<const T>(t), idx, as_ptr<T>(ds), as_ptr<T>(dt), batch, n_out, n_in, n0);
      });
    }
    if (dq0.present() || dq1.present() || dq2.present()) {
      std::vector<T> s2(static_cast<size_t>(batch * n_in));
      const T* sp = as_ptr<const T>(s);
      for (int64_t e = 0; e < batch * n_in; ++e) s2[e] = sp[e] * sp[e];
      const T* tp = as_ptr<const T>(t);
      const auto demod_grad_q_kernel =
          pick_isa(&generic::demod_grad_q_kernel<T>, &avx2::demod_grad_q_kernel<T>);
      if (dq0.present())
        demod_grad_q_kernel(dnp, s2.data(), tp, idx, as_ptr<T>(dq0), n0, batch, n_out, n_in, n0, 0);
      if (dq1.present())
        demod_grad_q_kernel(dnp, s2.data(), tp, idx, as_ptr<T>(dq1), n_dir, batch, n_out, n_in, n0,
                            1);
      if (dq2.present())
        demod_grad_q_kernel(dnp, s2.data(), tp, idx, as_ptr<T>(dq2), n_dir, batch, n_out, n_in, n0,
                            2);
    }
  });
}

void modconv_epilogue_cpu(Buffer y0, Buffer y1, Buffer t, Buffer dcoef, Buffer noise,
                          int64_t noise_bstride, Buffer ns, Buffer bias, Buffer out, Buffer mask,
                          int64_t batch, int64_t channels, int64_t hw, int channels_last, int dtype,
                          int act, double alpha, double gain, double clamp) {
  if (modconv_epilogue_check_args("modconv_epilogue_cpu", y0, y1, t, dcoef, noise, noise_bstride,
                                  ns, bias, out, mask, batch, channels, hw, channels_last, dtype,
                                  act, clamp) == 0) {
    return;
  }
  dispatch_float(dtype, "modconv_epilogue_cpu", [&](auto zero) {
    using T = decltype(zero);
    dispatch_act(act, clamp >= 0, [&](auto act_c, auto clamp_c) {
      dispatch_bool(y1.present(), [&](auto has_y1) {
        dispatch_bool(noise.present(), [&](auto has_noise) {
          dispatch_bool(mask.present(), [&](auto has_mask) {
            constexpr int kA = decltype(act_c)::value;
            constexpr bool kC = decltype(clamp_c)::value, kY1 = decltype(has_y1)::value,
                           kN = decltype(has_noise)::value, kM = decltype(has_mask)::value;
            auto kernel = channels_last
                              ? pick_isa(&generic::epilogue_nhwc_kernel<T, kA, kC, kY1, kN, kM>,
                                         &avx2::epilogue_nhwc_kernel<T, kA, kC, kY1, kN, kM>)
                              : pick_isa(&generic::epilogue_kernel<T, kA, kC, kY1, kN, kM>,
                                         &avx2::epilogue_kernel<T, kA, kC, kY1, kN, kM>);
            kernel(as_ptr<const T>(y0), as_ptr<const T>(y1), as_ptr<const T>(t),
                   as_ptr<const T>(dcoef), as_ptr<const T>(noise), noise_bstride,
                   as_ptr<const T>(ns), as_ptr<const T>(bias), as_ptr<T>(out),
                   as_ptr<std::uint8_t>(mask), batch, channels, hw, T(alpha), T(gain), T(clamp));
          });
        });
      });
    });
  });
}

void modconv_epilogue_grad_cpu(Buffer dout, Buffer mask, Buffer y0, Buffer y1, Buffer t,
                               Buffer dcoef, Buffer noise, int64_t noise_bstride, Buffer dy0,
                               Buffer dy1, Buffer dz, Buffer ddcoef, Buffer p_dz, Buffer p_dzy1,
                               Buffer p_dzn, int64_t batch, int64_t channels, int64_t hw,
                               int channels_last, int dtype, int act, double alpha, double gain,
                               double clamp) {
  if (modconv_epilogue_grad_check_args("modconv_epilogue_grad_cpu", dout, mask, y0, y1, t, dcoef,
                                       noise, noise_bstride, dy0, dy1, dz, ddcoef, p_dz, p_dzy1,
                                       p_dzn, batch, channels, hw, channels_last, dtype, act,
                                       clamp) == 0) {
    return;
  }
  dispatch_float(dtype, "modconv_epilogue_grad_cpu", [&](auto zero) {
    using T = decltype(zero);
    dispatch_act(act, clamp >= 0, [&](auto act_c, auto clamp_c) {
      dispatch_bool(y1.present(), [&](auto has_y1) {
        dispatch_bool(noise.present(), [&](auto has_noise) {
          dispatch_bool(dz.present(), [&](auto write_dz) {
            dispatch_bool(ddcoef.present(), [&](auto has_dd) {
              constexpr int kA = decltype(act_c)::value;
              constexpr bool kC = decltype(clamp_c)::value, kY1 = decltype(has_y1)::value,
                             kN = decltype(has_noise)::value, kDz = decltype(write_dz)::value,
                             kDd = decltype(has_dd)::value;
              auto kernel =
                  channels_last
                      ? pick_isa(&generic::epilogue_grad_nhwc_kernel<T, kA, kC, kY1, kN, kDz, kDd>,
                                 &avx2::epilogue_grad_nhwc_kernel<T, kA, kC, kY1, kN, kDz, kDd>)
                      : pick_isa(&generic::epilogue_grad_kernel<T, kA, kC, kY1, kN, kDz, kDd>,
                                 &avx2::epilogue_grad_kernel<T, kA, kC, kY1, kN, kDz, kDd>);
              kernel(as_ptr<const T>(dout), as_ptr<const std::uint8_t>(mask), as_ptr<const T>(y0),
                     as_ptr<const T>(y1), as_ptr<const T>(t), as_ptr<const T>(dcoef),
                     as_ptr<const T>(noise), noise_bstride, as_ptr<T>(dy0), as_ptr<T>(dy1),
                     as_ptr<T>(dz), as_ptr<T>(ddcoef), as_ptr<T>(p_dz), as_ptr<T>(p_dzy1),
                     as_ptr<T>(p_dzn), batch, channels, hw, T(alpha), T(gain), T(clamp));
            });
          });
        });
      });
    });
  });
}

}  // namespace navcuda
