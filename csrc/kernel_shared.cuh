// Pieces shared by the CUDA kernel bodies (csrc/*_kernels.cuh).
//
// NAVCUDA_SHARED(T, name, [n0][n1]...) declares a block's shared array `name` of T[n0][n1]...:
// `__shared__ T name[n0][n1]...` under nvcc; under cuda_emu.h (which defines the macro first) a
// checked view of the same shape, so the emulator can find races, reads of unwritten elements
// and out-of-bounds indices. Kernels index shared arrays only with [] (no pointer arithmetic on
// them, no taking their address); helpers that take one accept any indexable type (template).
#pragma once

#include "common.h"  // NAVCUDA_HD

#if !defined(NAVCUDA_SHARED)
#define NAVCUDA_SHARED(T, name, dims) __shared__ T name dims
#endif

namespace navcuda {

// Coordinates of flat index e over an [outer][middle][inner] array: the grid-stride kernels
// that walk an output element by element. Two divisions and one remainder (Idx: int or long long,
// e >= 0).
template <typename Idx>
struct Coords3 {
  Idx inner, middle, outer;
};

template <typename Idx>
NAVCUDA_HD Coords3<Idx> unravel3(Idx e, Idx n_inner, Idx n_middle) {
  const Idx q = e / n_inner;
  return {e - q * n_inner, q % n_middle, q / n_middle};
}

}  // namespace navcuda
