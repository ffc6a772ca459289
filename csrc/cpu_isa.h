// Run-time choice of the instruction set of the CPU kernels.
//
// The module is built with portable flags (baseline x86-64: SSE2) so that one build runs on any
// x86-64 CPU. Each CPU kernel source therefore compiles its kernels twice (cpu_isa_variants.inc):
// generically in the namespace `generic` and, on x86-64 with GCC or Clang, with
// `__attribute__((target("avx2,fma")))` in the namespace `avx2` (elsewhere `avx2` is an alias of
// `generic`). The target attribute reaches the bodies OpenMP outlines from a kernel, and the
// header helpers (bias_act_value, ...) inline into either variant. Entry points call
//     pick_isa(&generic::kernel<...>, &avx2::kernel<...>)(args...);
// which returns the variant of the active ISA: AVX2 where the CPU (and OS) support AVX2 and FMA,
// unless set_cpu_isa() asked for the generic one (tests run both; navcuda/ops/_native.py applies
// the environment variable NAVCUDA_CPU_ISA through it).
//
// No AVX-512 variant: on the AMD EPYC this was measured on (AVX-512 capable), kernels built with
// -march=x86-64-v4 were no faster than with -march=x86-64-v3 (benchmarks/RESULTS.md).
#pragma once

#if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__))
#define NAVCUDA_CPU_HAVE_AVX2 1
#define NAVCUDA_CPU_TARGET_AVX2 __attribute__((target("avx2,fma")))
#endif

namespace navcuda {

enum class CpuIsa : int { kGeneric = 0, kAvx2 = 1 };

// Every instruction set, least capable first.
inline constexpr CpuIsa kCpuIsas[] = {CpuIsa::kGeneric, CpuIsa::kAvx2};

// "generic" / "avx2".
const char* cpu_isa_name(CpuIsa isa);

// Whether this build has kernels for `isa` and this CPU can run them.
bool cpu_isa_supported(CpuIsa isa);

// The ISA whose kernels run now: the best supported one unless set_cpu_isa chose another.
CpuIsa cpu_isa();

// Run `isa`'s kernels from now on (all threads). Throws std::invalid_argument if unsupported.
void set_cpu_isa(CpuIsa isa);

// Back to the best supported ISA.
void reset_cpu_isa();

// The variant of a kernel for the active ISA.
template <typename Fn>
Fn* pick_isa(Fn* generic_fn, Fn* avx2_fn) {
  return cpu_isa() == CpuIsa::kAvx2 ? avx2_fn : generic_fn;
}

}  // namespace navcuda
