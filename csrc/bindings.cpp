// The one pybind11 module, navcuda._C. It sees buffers as (address, bytes) tuples
// (navcuda::Buffer, csrc/py_buffer.h; navcuda.ops._native.buffer makes them from tensors), sizes,
// dtype codes and CUDA stream handles as integers, never torch. Every entry point checks its
// buffers' sizes against its sizes (and, on the CPU, index values) before touching memory, so a
// wrong size from Python raises ValueError rather than reading out of bounds; the Python ops
// check what the C++ side cannot see (devices, dtypes, layouts). Long-running entry points
// release the GIL.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <dlfcn.h>

#include <cstdint>
#include <string>
#include <vector>

#include "bias_act.h"
#include "common.h"
#include "cpu_isa.h"
#include "fir2d.h"
#include "modconv.h"
#include "py_buffer.h"
#include "svd_shift.h"

#if defined(NAVCUDA_WITH_CUDA)
#include <cuda_runtime_api.h>
#endif

namespace py = pybind11;

namespace {

// Devices visible to the (statically linked) CUDA runtime: 0 when not compiled with CUDA, when no
// driver is installed or when no device is visible; `error` says why the runtime refused ("" when
// it answered), e.g. a driver older than the runtime this module was built with. Never throws.
struct CudaDevices {
  int count = 0;
  std::string error;
};

CudaDevices cuda_devices() {
  CudaDevices out;
#if defined(NAVCUDA_WITH_CUDA)
  const cudaError_t err = cudaGetDeviceCount(&out.count);
  if (err != cudaSuccess) {
    cudaGetLastError();  // reset the runtime's last-error state so later calls start clean
    out.count = 0;
    out.error = std::string(cudaGetErrorName(err)) + ": " + cudaGetErrorString(err);
  }
#endif
  return out;
}

int cuda_device_count() { return cuda_devices().count; }

#if defined(NAVCUDA_WITH_CUDA)
std::vector<std::string> split_commas(const std::string& s) {
  std::vector<std::string> out;
  std::string cur;
  for (char ch : s) {
    if (ch == ',') {
      if (!cur.empty()) out.push_back(cur);
      cur.clear();
    } else {
      cur.push_back(ch);
    }
  }
  if (!cur.empty()) out.push_back(cur);
  return out;
}
#endif

py::dict build_info();

// Where this module's C++ runtime lives: "shared" (the process's libstdc++.so, as expected) or
// "private" (a copy linked into the module: a toolchain without the shared library's link file
// does that silently, and two copies then share one process; see navcuda::Msg in common.h).
// The module's own symbol table is asked (dlsym on its handle searches the module before its
// dependencies): the address of std::terminate taken in code would name the process's copy once
// torch has loaded libstdc++.so, whichever copy the module carries. "unknown" where dl* cannot
// tell.
std::string libstdcxx_linkage() {
  Dl_info self{}, runtime{};
  if (dladdr(reinterpret_cast<void*>(&build_info), &self) == 0 || self.dli_fname == nullptr) {
    return "unknown";
  }
  void* handle = dlopen(self.dli_fname, RTLD_NOW | RTLD_NOLOAD);
  if (handle == nullptr) return "unknown";
  void* terminate = dlsym(handle, "_ZSt9terminatev");  // std::terminate()
  const bool found = terminate != nullptr && dladdr(terminate, &runtime) != 0;
  dlclose(handle);
  if (!found) return "unknown";
  return self.dli_fbase == runtime.dli_fbase ? "private" : "shared";
}

py::dict build_info() {
  py::dict d;
  d["libstdcxx"] = libstdcxx_linkage();
  d["compiler"] = std::string(NAVCUDA_CXX_COMPILER);
  d["cxx_standard"] = static_cast<int>(NAVCUDA_CXX_STANDARD);
  d["cpu_isa"] = std::string(navcuda::cpu_isa_name(navcuda::cpu_isa()));
#if defined(NAVCUDA_WITH_OPENMP)
  d["openmp"] = true;
#else
  d["openmp"] = false;
#endif
#if defined(NAVCUDA_WITH_CUDA)
  const CudaDevices devices = cuda_devices();
  const int count = devices.count;
  d["cuda_compiled"] = true;
  d["cuda_version"] = std::string(NAVCUDA_CUDA_VERSION);
  d["cuda_compiler"] = std::string(NAVCUDA_CUDA_COMPILER);
  d["cuda_archs"] = split_commas(NAVCUDA_CUDA_ARCHS);
  d["cuda_runtime_ok"] = count > 0;
  d["cuda_device_count"] = count;
  if (devices.error.empty()) {
    d["cuda_runtime_error"] = py::none();
  } else {
    d["cuda_runtime_error"] = devices.error;
  }
#else
  d["cuda_compiled"] = false;
  d["cuda_version"] = py::none();
  d["cuda_compiler"] = py::none();
  d["cuda_archs"] = std::vector<std::string>{};
  d["cuda_runtime_ok"] = false;
  d["cuda_device_count"] = 0;
  d["cuda_runtime_error"] = py::none();
#endif
  return d;
}

#if !defined(NAVCUDA_WITH_CUDA)
[[noreturn]] void no_cuda(const char* op) {
  navcuda::throw_runtime(std::string(op) +
                         ": navcuda._C was built without CUDA; reinstall with nvcc on PATH or use "
                         "CPU tensors / impl='ref'");
}
#endif

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() =
      "navcuda native kernels (buffers as (address, bytes); use navcuda.ops, not this module)";

  m.def(
      "has_cuda", [] { return cuda_device_count() > 0; },
      "True only if compiled with CUDA and at least one CUDA device is usable now.");
  m.def("build_info", &build_info, "How this module was built, and what the CUDA runtime sees.");
  m.def("dtype_codes", [] {
    py::dict d;
    d["float32"] = static_cast<int>(navcuda::DType::kFloat32);
    d["float64"] = static_cast<int>(navcuda::DType::kFloat64);
    d["float16"] = static_cast<int>(navcuda::DType::kFloat16);
    return d;
  });

  // ---------------------------------------------------------------- CPU instruction set
  m.def(
      "cpu_isa", [] { return std::string(navcuda::cpu_isa_name(navcuda::cpu_isa())); },
      "Instruction set whose CPU kernels run now ('avx2' or 'generic').");
  m.def(
      "cpu_isas",
      [] {
        std::vector<std::string> out;
        for (auto isa : navcuda::kCpuIsas) {
          if (navcuda::cpu_isa_supported(isa)) out.emplace_back(navcuda::cpu_isa_name(isa));
        }
        return out;
      },
      "Instruction sets this build has CPU kernels for and this CPU can run.");
  m.def(
      "set_cpu_isa",
      [](const std::string& name) {
        if (name == "auto") return navcuda::reset_cpu_isa();
        for (auto isa : navcuda::kCpuIsas) {
          if (name == navcuda::cpu_isa_name(isa)) return navcuda::set_cpu_isa(isa);
        }
        navcuda::throw_invalid("set_cpu_isa: expected 'auto', 'generic' or 'avx2', got '" + name +
                               "'");
      },
      py::arg("name"), "Run the CPU kernels of `name` ('auto': the best this CPU supports).");

  // ---------------------------------------------------------------- bias_act
  using py::arg;
  auto nogil = py::call_guard<py::gil_scoped_release>();
  m.def("bias_act_cpu", &navcuda::bias_act_cpu, nogil, arg("x"), arg("b"), arg("y"), arg("outer"),
        arg("channels"), arg("inner"), arg("dtype"), arg("act"), arg("alpha"), arg("gain"),
        arg("clamp"),
        "y = clamp(act(x + b) * gain) over contiguous [outer, channels, inner]; b=None: no bias; "
        "clamp<0: no clamp. Buffers are (address, bytes) tuples.");
  m.def("bias_act_grad_cpu", &navcuda::bias_act_grad_cpu, nogil, arg("dy"), arg("y"), arg("dx"),
        arg("n"), arg("dtype"), arg("act"), arg("alpha"), arg("gain"), arg("clamp"),
        "dx = dy * gain * act'(y) * clamp mask, element-wise over n elements.");
#if defined(NAVCUDA_WITH_CUDA)
  m.def("bias_act_cuda", &navcuda::bias_act_cuda, nogil, arg("x"), arg("b"), arg("y"), arg("outer"),
        arg("channels"), arg("inner"), arg("dtype"), arg("act"), arg("alpha"), arg("gain"),
        arg("clamp"), arg("stream"));
  m.def("bias_act_grad_cuda", &navcuda::bias_act_grad_cuda, nogil, arg("dy"), arg("y"), arg("dx"),
        arg("n"), arg("dtype"), arg("act"), arg("alpha"), arg("gain"), arg("clamp"), arg("stream"));
#else
  m.def("bias_act_cuda", [](py::args, py::kwargs) { no_cuda("bias_act_cuda"); });
  m.def("bias_act_grad_cuda", [](py::args, py::kwargs) { no_cuda("bias_act_grad_cuda"); });
#endif

  // ---------------------------------------------------------------- svd_shift
  m.def("svd_shift_cpu", &navcuda::svd_shift_cpu, nogil, arg("w"), arg("u"), arg("vh"), arg("s"),
        arg("out"), arg("batch"), arg("n_out"), arg("n_in"), arg("taps"), arg("rank"), arg("dtype"),
        "out[b] = W + unflatten(u diag(s[b]) vh); see csrc/svd_shift.h.");
  m.def("svd_shift_grad_cpu", &navcuda::svd_shift_grad_cpu, nogil, arg("g"), arg("u"), arg("vh"),
        arg("e"), arg("work"), arg("batch"), arg("n_out"), arg("n_in"), arg("taps"), arg("rank"),
        arg("dtype"),
        "e[b, j] = u_j^T G_b^flat v_j (diagonal of U^T G_b V); `work` is unused on the CPU.");
  m.def("svd_shift_grad_workspace", &navcuda::svd_shift_grad_workspace, arg("batch"), arg("n_out"),
        arg("rank"),
        "Elements of scratch (the op's dtype) svd_shift_grad_cuda needs for these sizes.");
#if defined(NAVCUDA_WITH_CUDA)
  m.def("svd_shift_cuda", &navcuda::svd_shift_cuda, nogil, arg("w"), arg("u"), arg("vh"), arg("s"),
        arg("out"), arg("batch"), arg("n_out"), arg("n_in"), arg("taps"), arg("rank"), arg("dtype"),
        arg("stream"));
  m.def("svd_shift_grad_cuda", &navcuda::svd_shift_grad_cuda, nogil, arg("g"), arg("u"), arg("vh"),
        arg("e"), arg("work"), arg("batch"), arg("n_out"), arg("n_in"), arg("taps"), arg("rank"),
        arg("dtype"), arg("stream"));
#else
  m.def("svd_shift_cuda", [](py::args, py::kwargs) { no_cuda("svd_shift_cuda"); });
  m.def("svd_shift_grad_cuda", [](py::args, py::kwargs) { no_cuda("svd_shift_grad_cuda"); });
#endif

  // ---------------------------------------------------------------- modconv (shifted_modconv)
  m.def("modconv_demod_cpu", &navcuda::modconv_demod_cpu, nogil, arg("s"), arg("q0"), arg("q1"),
        arg("q2"), arg("t"), arg("index"), arg("dcoef"), arg("batch"), arg("n_out"), arg("n_in"),
        arg("n0"), arg("n_dir"), arg("dtype"), arg("scale2"),
        "Demodulation coefficients of shifted modulated kernels; see csrc/modconv.h.");
  m.def("modconv_demod_grad_cpu", &navcuda::modconv_demod_grad_cpu, nogil, arg("g"), arg("dcoef"),
        arg("s"), arg("q0"), arg("q1"), arg("q2"), arg("t"), arg("index"), arg("dn"), arg("ds"),
        arg("dt"), arg("dq0"), arg("dq1"), arg("dq2"), arg("batch"), arg("n_out"), arg("n_in"),
        arg("n0"), arg("n_dir"), arg("dtype"), arg("scale2"));
  m.def("modconv_epilogue_cpu", &navcuda::modconv_epilogue_cpu, nogil, arg("y0"), arg("y1"),
        arg("t"), arg("dcoef"), arg("noise"), arg("noise_bstride"), arg("ns"), arg("bias"),
        arg("out"), arg("mask"), arg("batch"), arg("channels"), arg("hw"), arg("channels_last"),
        arg("dtype"), arg("act"), arg("alpha"), arg("gain"), arg("clamp"),
        "out = clamp(act(dcoef (y0 + t y1) + ns noise + bias) gain); see csrc/modconv.h.");
  m.def("modconv_epilogue_grad_cpu", &navcuda::modconv_epilogue_grad_cpu, nogil, arg("dout"),
        arg("mask"), arg("y0"), arg("y1"), arg("t"), arg("dcoef"), arg("noise"),
        arg("noise_bstride"), arg("dy0"), arg("dy1"), arg("dz"), arg("ddcoef"), arg("p_dz"),
        arg("p_dzy1"), arg("p_dzn"), arg("batch"), arg("channels"), arg("hw"), arg("channels_last"),
        arg("dtype"), arg("act"), arg("alpha"), arg("gain"), arg("clamp"));
  m.def("modconv_demod_dt_parts", &navcuda::modconv_demod_dt_parts, arg("n_in"),
        "Columns of the dt partial sums written by modconv_demod_grad_{cpu,cuda}.");
#if defined(NAVCUDA_WITH_CUDA)
  m.def("modconv_demod_cuda", &navcuda::modconv_demod_cuda, nogil);
  m.def("modconv_demod_grad_cuda", &navcuda::modconv_demod_grad_cuda, nogil);
  m.def("modconv_epilogue_cuda", &navcuda::modconv_epilogue_cuda, nogil);
  m.def("modconv_epilogue_grad_cuda", &navcuda::modconv_epilogue_grad_cuda, nogil);
#else
  m.def("modconv_demod_cuda", [](py::args, py::kwargs) { no_cuda("modconv_demod_cuda"); });
  m.def("modconv_demod_grad_cuda",
        [](py::args, py::kwargs) { no_cuda("modconv_demod_grad_cuda"); });
  m.def("modconv_epilogue_cuda", [](py::args, py::kwargs) { no_cuda("modconv_epilogue_cuda"); });
  m.def("modconv_epilogue_grad_cuda",
        [](py::args, py::kwargs) { no_cuda("modconv_epilogue_grad_cuda"); });
#endif

  // ---------------------------------------------------------------- fir2d (upfirdn2d, up=down=1)
  m.def("fir2d_cpu", &navcuda::fir2d_cpu, nogil, arg("x"), arg("w"), arg("out"), arg("planes"),
        arg("h"), arg("wd"), arg("kh"), arg("kw"), arg("pad_y"), arg("pad_x"), arg("ho"), arg("wo"),
        arg("dtype"), "2-D correlation with implicit zero padding per plane; see csrc/fir2d.h.");
#if defined(NAVCUDA_WITH_CUDA)
  m.def("fir2d_cuda", &navcuda::fir2d_cuda, nogil, arg("x"), arg("w"), arg("out"), arg("planes"),
        arg("h"), arg("wd"), arg("kh"), arg("kw"), arg("pad_y"), arg("pad_x"), arg("ho"), arg("wo"),
        arg("dtype"), arg("stream"));
#else
  m.def("fir2d_cuda", [](py::args, py::kwargs) { no_cuda("fir2d_cuda"); });
#endif
}
