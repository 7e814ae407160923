// Run-time choice of kernels compiled once per instruction set. A family
// with such kernels (gemm, conv, pool) declares in its namespace one
// accessor per set, kernels_avx512<T>(), kernels_avx2<T>() and
// kernels_generic<T>(), defined in files named <name>_avx512.cpp,
// <name>_avx2.cpp and <name>_generic.cpp (CMake gives the first two that
// set's -m flags), and one selector, kernels<T>(), which returns by_isa() of
// the three.
#pragma once

#include "dlkern/config.h"

namespace dlkern::cpu {

// What the accessor of the instruction set in use (cpu_isa()) returns. Only
// that accessor runs: building another set's kernels may execute
// instructions this CPU lacks.
template <typename Kernels>
Kernels by_isa(Kernels (*avx512)(), Kernels (*avx2)(), Kernels (*generic)()) {
  switch (cpu_isa()) {
    case CpuIsa::avx512: return avx512();
    case CpuIsa::avx2: return avx2();
    case CpuIsa::generic: break;
  }
  return generic();
}

}  // namespace dlkern::cpu
