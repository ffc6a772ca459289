// pybind11 conversion of navcuda::Buffer (common.h) for the two binding modules: a Python tuple
// (address, bytes) of ints, as navcuda.ops._native.buffer() makes from a tensor, or None (an
// absent buffer, {0, 0}). Anything else (a bare address among them) is refused with TypeError
// before the entry point runs: an address alone would leave the entry point unable to check the
// buffer's size.
#pragma once

#include <pybind11/pybind11.h>

#include <cstdint>

#include "common.h"

namespace pybind11::detail {

template <>
struct type_caster<navcuda::Buffer> {
  PYBIND11_TYPE_CASTER(navcuda::Buffer, const_name("tuple[int, int] | None"));

  bool load(handle src, bool /*convert*/) {
    if (src.is_none()) {
      value = navcuda::Buffer{};
      return true;
    }
    if (!isinstance<tuple>(src)) return false;
    const auto parts = reinterpret_borrow<tuple>(src);
    if (parts.size() != 2) return false;
    make_caster<std::uintptr_t> ptr;
    make_caster<int64_t> bytes;
    // No implicit conversions: floats and other objects are not addresses or sizes.
    if (!ptr.load(parts[0], false) || !bytes.load(parts[1], false)) return false;
    value = navcuda::Buffer{cast_op<std::uintptr_t>(ptr), cast_op<int64_t>(bytes)};
    return true;
  }

  static handle cast(const navcuda::Buffer& b, return_value_policy, handle) {
    return make_tuple(b.ptr, b.bytes).release();
  }
};

}  // namespace pybind11::detail
