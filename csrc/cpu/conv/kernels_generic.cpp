// The convolution kernels built for the baseline instruction set (16-byte vectors).
#include "cpu/conv/kernels_impl.h"

namespace dlkern::cpu::conv {

template <>
const ConvKernels<float>& kernels_generic<float>() { return table<float>(); }
template <>
const ConvKernels<double>& kernels_generic<double>() { return table<double>(); }

}  // namespace dlkern::cpu::conv
