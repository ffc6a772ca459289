// Run-time ISA selection of the CPU kernels (see cpu_isa.h).
#include "cpu_isa.h"

#include <atomic>

#include "common.h"

namespace navcuda {
namespace {

CpuIsa best_isa() { return cpu_isa_supported(CpuIsa::kAvx2) ? CpuIsa::kAvx2 : CpuIsa::kGeneric; }

// -1 until first use; then a CpuIsa value.
std::atomic<int> g_isa{-1};

}  // namespace

const char* cpu_isa_name(CpuIsa isa) { return isa == CpuIsa::kAvx2 ? "avx2" : "generic"; }

bool cpu_isa_supported(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::kGeneric:
      return true;
    case CpuIsa::kAvx2:
#if defined(NAVCUDA_CPU_HAVE_AVX2)
    {
      // libgcc / compiler-rt check the OS saves the YMM state (XGETBV) before reporting AVX2.
      // __builtin_cpu_init: idempotent, and needed should this run before the runtime's own
      // initialiser (e.g. from another library's static constructor).
      static const bool ok = [] {
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
      }();
      return ok;
    }
#else
      return false;
#endif
  }
  return false;
}

CpuIsa cpu_isa() {
  int v = g_isa.load(std::memory_order_relaxed);
  if (v < 0) {
    v = static_cast<int>(best_isa());
    g_isa.store(v, std::memory_order_relaxed);
  }
  return static_cast<CpuIsa>(v);
}

void set_cpu_isa(CpuIsa isa) {
  NAVCUDA_CHECK(cpu_isa_supported(isa), "set_cpu_isa: '" << cpu_isa_name(isa)
                                                         << "' kernels are not available here "
                                                            "(not built, or this CPU lacks it)");
  g_isa.store(static_cast<int>(isa), std::memory_order_relaxed);
}

void reset_cpu_isa() { g_isa.store(static_cast<int>(best_isa()), std::memory_order_relaxed); }

}  // namespace navcuda
