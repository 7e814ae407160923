// The convolution kernels built for AVX2 and FMA (32-byte vectors).
#include "cpu/conv/kernels_impl.h"

namespace dlkern::cpu::conv {

template <>
const ConvKernels<float>& kernels_avx2<float>() { return table<float>(); }
template <>
const ConvKernels<double>& kernels_avx2<double>() { return table<double>(); }

}  // namespace dlkern::cpu::conv
