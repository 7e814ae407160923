// The convolution kernels built for the baseline instruction set (16-byte vectors).
#include "cpu/conv/kernels_impl.h"

namespace dlkern::cpu::conv {

template <>
const ConvKernels<float>& generic_conv_kernels<float>() {
  static const ConvKernels<float> k = make_kernels<float>();
  return k;
}

template <>
const ConvKernels<double>& generic_conv_kernels<double>() {
  static const ConvKernels<double> k = make_kernels<double>();
  return k;
}

}  // namespace dlkern::cpu::conv
