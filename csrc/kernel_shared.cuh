// NAVCUDA_SHARED(T, name, [n0][n1]...) declares a block's shared array `name` of T[n0][n1]...:
// `__shared__ T name[n0][n1]...` under nvcc; under cuda_emu.h (which defines the macro first) a
// checked view of the same shape, so the emulator can find races, reads of unwritten elements
// and out-of-bounds indices. Kernels index shared arrays only with [] (no pointer arithmetic on
// them, no taking their address); helpers that take one accept any indexable type (template).
#pragma once

#if !defined(NAVCUDA_SHARED)
#define NAVCUDA_SHARED(T, name, dims) __shared__ T name dims
#endif
