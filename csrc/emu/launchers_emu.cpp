// The CUDA launchers (csrc/*.cu: the *_cuda entry points of navcuda._C) compiled as host C++
// against the emulator, for navcuda._C_emu: the same launch shapes, argument checks and kernel
// sequences as on a GPU, with every kernel run through cuda_emu.h's checked execution. Python
// reaches them through navcuda.ops._native.emulated_cuda() (tests only).
#include "cuda_emu.h"  // must come first: defines NAVCUDA_CUDA_EMU, __global__, threadIdx, ...

#include "../bias_act.cu"
#include "../fir2d.cu"
#include "../modconv.cu"
#include "../svd_shift.cu"
