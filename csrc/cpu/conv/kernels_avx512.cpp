// The convolution kernels built for AVX-512 (64-byte vectors, masked loads and two-source permutes).
#include "cpu/conv/kernels_impl.h"

namespace dlkern::cpu::conv {

template <>
const ConvKernels<float>& kernels_avx512<float>() { return table<float>(); }
template <>
const ConvKernels<double>& kernels_avx512<double>() { return table<double>(); }

}  // namespace dlkern::cpu::conv
